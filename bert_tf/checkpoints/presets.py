"""Named checkpoint presets: Google's released BERT checkpoints, fetched once into a cache.

    from bert_tf.checkpoints.presets import resolve
    ckpt_dir = resolve("bert-base-uncased")   # downloads ~400 MB the first time
    ckpt_dir = resolve("/data/my_bert")       # an existing path comes back unchanged

Cache: the `cache_dir` argument, else `$BERT_TF_CACHE`, else `~/.cache/bert_tf`. A preset lives
in `<cache>/<preset name>/` (with the archive's own top folder, if any), which appears by one
rename once the archive was downloaded, checked and unpacked; later calls read the disk only.
Processes sharing a cache (e.g. Horovod ranks) download once (see bert_tf.downloads).

Mirrors: `$BERT_TF_PRESET_BASE_URL` (or the `base_url` argument) replaces the prefix
`https://storage.googleapis.com/bert_models/` of every preset URL, keeping the rest of the path:
with `https://mirror.example.org/bert/`, `bert-tiny` is fetched from
`https://mirror.example.org/bert/2020_02_20/uncased_L-2_H-128_A-2.zip`. `file://` URLs work too,
for a mirror on a shared file system. Without network access, download the zip by hand, unpack
it anywhere and pass that directory instead (`--init_checkpoint=/path/to/uncased_L-12_H-768_A-12`).

Archives (.zip, .tar.gz/.tgz/.tar, recognised by content) with absolute member names, `..`
parts, links pointing outside or device files are refused and nothing is kept. This module never
imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
from pathlib import Path

from bert_tf import downloads
from bert_tf.downloads import CACHE_ENV

__all__ = ["GOOGLE_BASE_URL", "BASE_URL_ENV", "CACHE_ENV", "REQUIRED_FILES", "Preset", "PRESETS",
           "PresetError", "DownloadError", "ArchiveError", "UnsafeArchiveError",
           "default_cache_dir", "preset_url", "resolve", "find_checkpoint_dir"]

GOOGLE_BASE_URL = "https://storage.googleapis.com/bert_models/"
BASE_URL_ENV = "BERT_TF_PRESET_BASE_URL"

# Files a usable Google checkpoint directory must hold (plus at least one data shard).
REQUIRED_FILES = ("bert_config.json", "vocab.txt", "bert_model.ckpt.index")
_DATA_SHARDS = "bert_model.ckpt.data-*"


@dataclasses.dataclass(frozen=True)
class Preset:
    """One released checkpoint. `size` (bytes) and `sha256` (hex) of the archive are checked when
    known; None means unknown: then only Content-Length, the archive's own checksums (zip CRCs,
    gzip) and the required checkpoint files are."""

    name: str
    url: str
    do_lower_case: bool
    description: str
    size: int | None = None
    sha256: str | None = None


# Byte sizes and SHA-256 digests of Google's zips are NOT recorded here: Google publishes none,
# and we have not verified any ourselves. Fill in `size`/`sha256` once measured from a trusted copy.
PRESETS: dict[str, Preset] = {
    name: Preset(name, GOOGLE_BASE_URL + path, do_lower_case, description)
    for name, path, do_lower_case, description in (
        ("bert-base-uncased", "2018_10_18/uncased_L-12_H-768_A-12.zip", True,
         "BERT-Base, uncased: 12 layers, hidden 768, 12 heads (Devlin et al. 2018)"),
        ("bert-large-uncased", "2018_10_18/uncased_L-24_H-1024_A-16.zip", True,
         "BERT-Large, uncased: 24 layers, hidden 1024, 16 heads (Devlin et al. 2018)"),
        ("bert-base-cased", "2018_10_18/cased_L-12_H-768_A-12.zip", False,
         "BERT-Base, cased: 12 layers, hidden 768, 12 heads (Devlin et al. 2018)"),
        ("bert-large-cased", "2018_10_18/cased_L-24_H-1024_A-16.zip", False,
         "BERT-Large, cased: 24 layers, hidden 1024, 16 heads (Devlin et al. 2018)"),
        ("bert-tiny", "2020_02_20/uncased_L-2_H-128_A-2.zip", True,
         "BERT-Tiny, uncased: 2 layers, hidden 128, 2 heads (Turc et al. 2019)"),
        ("bert-mini", "2020_02_20/uncased_L-4_H-256_A-4.zip", True,
         "BERT-Mini, uncased: 4 layers, hidden 256, 4 heads (Turc et al. 2019)"),
        ("bert-small", "2020_02_20/uncased_L-4_H-512_A-8.zip", True,
         "BERT-Small, uncased: 4 layers, hidden 512, 8 heads (Turc et al. 2019)"),
        ("bert-medium", "2020_02_20/uncased_L-8_H-512_A-8.zip", True,
         "BERT-Medium, uncased: 8 layers, hidden 512, 8 heads (Turc et al. 2019)"),
    )
}


class PresetError(RuntimeError):
    """Fetching or unpacking a preset failed."""


class DownloadError(PresetError, downloads.DownloadError):
    """The download failed, was cut short, or did not match what was expected."""


class ArchiveError(PresetError, downloads.ArchiveError):
    """The archive is corrupt or does not hold a Google BERT checkpoint."""


class UnsafeArchiveError(ArchiveError, downloads.UnsafeArchiveError):
    """An archive member would escape the extraction directory or is not a plain file."""


default_cache_dir = downloads.cache_dir  # `$BERT_TF_CACHE`, else `~/.cache/bert_tf` (a Path)


def _known_presets() -> str:
    return "\n".join(f"  {n:<20} {p.description}" for n, p in sorted(PRESETS.items()))


def preset_url(name: str, base_url: str | None = None) -> str:
    """The URL `name` is fetched from, honouring `base_url` / `$BERT_TF_PRESET_BASE_URL`."""
    try:
        preset = PRESETS[name]
    except KeyError:
        raise ValueError(f"Unknown preset {name!r}. Known presets:\n{_known_presets()}") from None
    base = base_url or os.environ.get(BASE_URL_ENV) or ""
    if base and preset.url.startswith(GOOGLE_BASE_URL):
        return base.rstrip("/") + "/" + preset.url[len(GOOGLE_BASE_URL):]
    return preset.url


def _what_to_do(url: str) -> str:
    return (f"To work around it, download {url} by hand (e.g. `curl -fLO {url}`), unpack it, and "
            "pass the unpacked directory instead of the preset name (e.g. --init_checkpoint="
            f"/path/to/unpacked_dir), or set {BASE_URL_ENV} to a reachable mirror.")


def resolve(name_or_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
            progress: bool = True, *, base_url: str | None = None,
            timeout: float = 60.0) -> str:
    """Turn a preset name or a path into a local checkpoint location.

    An existing path (or a TF checkpoint prefix whose `.index` file exists) is returned
    unchanged. A preset name is downloaded and extracted into the cache once, and the
    directory holding `bert_config.json`, `vocab.txt` and `bert_model.ckpt.index` is
    returned. An unknown name raises ValueError; a failed download DownloadError, a corrupt
    or unsafe archive ArchiveError / UnsafeArchiveError (all PresetError, nothing kept).

    Args:
      name_or_path: a key of PRESETS, or a path.
      cache_dir: where presets are kept; default `$BERT_TF_CACHE`, else `~/.cache/bert_tf`.
      progress: show a tqdm progress bar on stderr while downloading.
      base_url: replaces `https://storage.googleapis.com/bert_models/` in the preset URL;
        default `$BERT_TF_PRESET_BASE_URL`.
      timeout: seconds a connect or a single read may block.
    """
    path = os.fspath(name_or_path)
    if os.path.exists(path) or (path and os.path.exists(path + ".index")):
        return path
    preset = PRESETS.get(path)
    if preset is None:
        raise ValueError(
            f"{path!r} is neither an existing path nor a known checkpoint preset. Known "
            f"presets:\n{_known_presets()}\nOtherwise pass the path to a checkpoint directory "
            "(holding bert_config.json, vocab.txt, bert_model.ckpt.*) or checkpoint prefix."
        )
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    final = cache / preset.name
    with contextlib.suppress(ArchiveError):  # no lock, no write, no request
        return find_checkpoint_dir(final)

    url = preset_url(preset.name, base_url)
    with downloads.building(final) as tmp:
        with contextlib.suppress(ArchiveError):  # another process finished while we waited
            return find_checkpoint_dir(final)
        try:
            archive = downloads.fetch(url, tmp, sha256=preset.sha256, advice=_what_to_do(url),
                                      progress=progress, timeout=timeout)
            if preset.size is not None and archive.stat().st_size != preset.size:
                raise downloads.DownloadError(
                    f"{url} sent {archive.stat().st_size} bytes, expected {preset.size}; nothing "
                    f"was kept. {_what_to_do(url)}")
            downloads.extract(archive, tmp / "unpacked", source=url)
            find_checkpoint_dir(tmp / "unpacked")
        except downloads.ArchiveError as e:
            unsafe = isinstance(e, downloads.UnsafeArchiveError)
            advice = (f"Check that {url} (mind {BASE_URL_ENV}) serves Google's checkpoint."
                      if unsafe else _what_to_do(url))
            raise (UnsafeArchiveError if unsafe else ArchiveError)(
                f"The archive downloaded from {url} was rejected: {e}. Nothing was kept. "
                f"{advice}") from e
        except downloads.DownloadError as e:
            raise DownloadError(str(e)) from e
        downloads.publish(tmp / "unpacked", final)
    return find_checkpoint_dir(final)


def find_checkpoint_dir(root: str | os.PathLike) -> str:
    """The one directory under `root` (inclusive) holding a Google BERT checkpoint.

    Google's 2018 zips put the files in a top folder, the 2020 ones at top level; either
    way exactly one directory may contain `bert_config.json`, and it must also hold
    `vocab.txt`, `bert_model.ckpt.index` and a `bert_model.ckpt.data-*` shard.
    Raises ArchiveError otherwise.
    """
    root = os.fspath(root)
    hits = sorted(str(p.parent) for p in Path(root).rglob("bert_config.json")
                  if "__MACOSX" not in p.parts)
    if not hits:
        raise ArchiveError(f"no bert_config.json found under {root}")
    if len(hits) > 1:
        raise ArchiveError(f"several folders hold a bert_config.json: {hits}")
    found = hits[0]
    missing = [f for f in REQUIRED_FILES if not os.path.isfile(os.path.join(found, f))]
    if not glob.glob(os.path.join(glob.escape(found), _DATA_SHARDS)):
        missing.append(_DATA_SHARDS)
    if missing:
        raise ArchiveError(f"{found} lacks {', '.join(missing)}")
    return found

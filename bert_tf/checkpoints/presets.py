"""Named checkpoint presets: Google's released BERT checkpoints, fetched once into the cache.

    resolve("bert-base-uncased")   # downloads ~400 MB the first time; returns the folder
    resolve("/data/my_bert")       # an existing path comes back unchanged

A preset lives in `<cache>/<name>/` (the `cache_dir` argument, else `$BERT_TF_CACHE`, else
`~/.cache/bert_tf`), complete or absent, downloaded once by processes sharing the cache (see
bert_tf.downloads). `$BERT_TF_PRESET_BASE_URL` (or `base_url`) replaces the prefix
`https://storage.googleapis.com/bert_models/` of every preset URL and keeps the rest: an http(s)
mirror or a `file://` folder. Offline, unpack the zip anywhere and pass that folder instead
(`--init_checkpoint=/path/to/uncased_L-12_H-768_A-12`). Never imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from pathlib import Path

from bert_tf import downloads
from bert_tf.downloads import CACHE_ENV, ArchiveError, DownloadError, UnsafeArchiveError  # noqa

PresetError = DownloadError  # any failure to fetch or unpack a preset (the CLI's clean exit)

GOOGLE_BASE_URL = "https://storage.googleapis.com/bert_models/"
BASE_URL_ENV = "BERT_TF_PRESET_BASE_URL"

# Files a usable Google checkpoint directory must hold (plus at least one data shard).
REQUIRED_FILES = ("bert_config.json", "vocab.txt", "bert_model.ckpt.index")
_DATA_SHARDS = "bert_model.ckpt.data-*"


@dataclasses.dataclass(frozen=True)
class Preset:
    """One released checkpoint. The archive's `sha256` (hex) is checked when known; None: only
    Content-Length, the archive's own checksums (zip CRCs, gzip) and the required files are.
    Google publishes no digests and none is recorded here unverified."""

    name: str
    url: str
    do_lower_case: bool
    description: str
    sha256: str | None = None


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
    """A preset name or a path -> a local checkpoint location.

    An existing path (or a TF checkpoint prefix whose `.index` exists) comes back unchanged. A
    preset (a key of PRESETS) is downloaded and unpacked into the cache once; the folder holding
    its bert_config.json, vocab.txt and bert_model.ckpt.* is returned. progress: a tqdm bar on
    stderr; base_url: see the module doc; timeout: seconds a connect or one read may block.
    Raises ValueError for an unknown name, DownloadError for a failed, cut short or mismatched
    download, ArchiveError / UnsafeArchiveError for an archive that is corrupt, not a
    checkpoint, or would escape its folder; one line naming the URL and what to do, nothing kept.
    """
    path = os.fspath(name_or_path)
    if os.path.exists(path) or (path and os.path.exists(path + ".index")):
        return path
    preset = PRESETS.get(path)
    if preset is None:
        raise ValueError(
            f"{path!r} is neither an existing path nor a known checkpoint preset. Known "
            f"presets:\n{_known_presets()}\nOtherwise pass the path to a checkpoint directory "
            "(holding bert_config.json, vocab.txt, bert_model.ckpt.*) or checkpoint prefix.")
    url = preset_url(preset.name, base_url)
    advice = _what_to_do(url)

    def build(tmp):
        archive = downloads.fetch(url, tmp, sha256=preset.sha256, advice=advice,
                                  progress=progress, timeout=timeout)
        downloads.extract(archive, tmp / "unpacked", source=url, advice=advice)
        try:
            find_checkpoint_dir(tmp / "unpacked")
        except ArchiveError as e:
            raise ArchiveError(f"the archive from {url} is not a Google BERT checkpoint: {e}; "
                               f"nothing was kept. {advice}") from None
        return tmp / "unpacked"

    cache = Path(cache_dir).expanduser() if cache_dir is not None else downloads.cache_dir()
    return find_checkpoint_dir(downloads.cached(cache / preset.name, _complete, build))


def _complete(folder: Path) -> bool:
    try:
        find_checkpoint_dir(folder)
        return True
    except ArchiveError:
        return False


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

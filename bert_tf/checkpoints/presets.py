"""Named checkpoint presets: Google's released BERT checkpoints, fetched once into a cache.

    from bert_tf.checkpoints.presets import resolve
    ckpt_dir = resolve("bert-base-uncased")   # downloads ~400 MB the first time
    ckpt_dir = resolve("/data/my_bert")       # an existing path comes back unchanged

`resolve()` returns the directory that holds `bert_config.json`, `vocab.txt` and the
checkpoint `bert_model.ckpt.{index,data-*}`. Anything that is not a preset name must be an
existing path (a directory, a file, or a TF checkpoint prefix whose `.index` exists).

Cache
    `cache_dir` argument, else the environment variable `BERT_TF_CACHE`, else
    `~/.cache/bert_tf`. A preset lives in `<cache>/<preset name>/` (the archive's own top
    folder, if it has one, is kept below that). The directory appears only by an atomic
    rename once the archive was downloaded in full, checked and extracted, so its existence
    means "complete"; later calls look at the disk only and make no network request.
    Temporary files are hidden (`.<name>.*.part`, `.<name>.*.extract`) and removed on any
    error; leftovers of a killed process are swept by the next fetch of the same preset.

Concurrency
    Processes sharing a cache (e.g. the Horovod ranks of one machine) serialise on a
    `flock` of `<cache>/.<name>.lock`: one downloads, the others wait and then find the
    finished directory. Where `flock` is unavailable (Windows, some network file systems)
    each process downloads into its own temporary files and the atomic renames still keep
    the cache consistent.

Mirrors
    The environment variable `BERT_TF_PRESET_BASE_URL` (or the `base_url` argument of
    `resolve()` / `preset_url()`) replaces the prefix `https://storage.googleapis.com/bert_models/`
    of every preset URL, keeping the rest of the path. With
    `BERT_TF_PRESET_BASE_URL=https://mirror.example.org/bert/`, `bert-tiny` is fetched from
    `https://mirror.example.org/bert/2020_02_20/uncased_L-2_H-128_A-2.zip`. `file://` URLs
    work too, for a mirror on a shared file system.

Without network access, download the zip by hand, unpack it anywhere and pass that
directory instead of the preset name (e.g. `--init_checkpoint=/path/to/uncased_L-12_H-768_A-12`).

Archives (.zip, .tar.gz/.tgz/.tar, recognised by content) are extracted member by member:
absolute paths, `..` components, links and device files are rejected before anything is
written, and nothing is ever written outside a fresh temporary directory inside the cache.

This module uses only the standard library and tqdm; it never imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import gzip
import hashlib
import http.client
import logging
import os
import shutil
import stat
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Iterator

from tqdm import tqdm

try:  # POSIX only; without it we rely on atomic renames alone.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

logger = logging.getLogger(__name__)

__all__ = [
    "GOOGLE_BASE_URL",
    "BASE_URL_ENV",
    "CACHE_ENV",
    "Preset",
    "PRESETS",
    "PresetError",
    "DownloadError",
    "ArchiveError",
    "UnsafeArchiveError",
    "default_cache_dir",
    "preset_url",
    "resolve",
    "download",
    "extract_archive",
    "find_checkpoint_dir",
]

GOOGLE_BASE_URL = "https://storage.googleapis.com/bert_models/"
BASE_URL_ENV = "BERT_TF_PRESET_BASE_URL"
CACHE_ENV = "BERT_TF_CACHE"

# Files a usable Google checkpoint directory must hold (plus at least one data shard).
REQUIRED_FILES = ("bert_config.json", "vocab.txt", "bert_model.ckpt.index")
_DATA_SHARDS = "bert_model.ckpt.data-*"

_CHUNK = 1 << 20  # 1 MiB per read: few syscalls, smooth progress bar.
_STALE_SECONDS = 24 * 3600  # temporaries older than this (and unlocked) are garbage


@dataclasses.dataclass(frozen=True)
class Preset:
    """One released checkpoint.

    `size` (bytes) and `sha256` are checked when known. None means unknown: the download is
    then checked against the server's Content-Length and by the archive's own structure
    (zip CRCs / gzip checksum, plus the required checkpoint files).
    """

    name: str
    url: str
    do_lower_case: bool
    description: str
    size: int | None = None
    sha256: str | None = None


def _p(name, path, do_lower_case, description):
    return Preset(name=name, url=GOOGLE_BASE_URL + path, do_lower_case=do_lower_case,
                  description=description)


# Byte sizes and SHA-256 digests of Google's zips are NOT recorded here: Google publishes
# none, and we have not verified any ourselves, so none are made up. Downloads are checked
# against Content-Length and the archive structure instead; fill in `size`/`sha256` once
# measured from a trusted copy.
PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        _p("bert-base-uncased", "2018_10_18/uncased_L-12_H-768_A-12.zip", True,
           "BERT-Base, uncased: 12 layers, hidden 768, 12 heads (Devlin et al. 2018)"),
        _p("bert-large-uncased", "2018_10_18/uncased_L-24_H-1024_A-16.zip", True,
           "BERT-Large, uncased: 24 layers, hidden 1024, 16 heads (Devlin et al. 2018)"),
        _p("bert-base-cased", "2018_10_18/cased_L-12_H-768_A-12.zip", False,
           "BERT-Base, cased: 12 layers, hidden 768, 12 heads (Devlin et al. 2018)"),
        _p("bert-large-cased", "2018_10_18/cased_L-24_H-1024_A-16.zip", False,
           "BERT-Large, cased: 24 layers, hidden 1024, 16 heads (Devlin et al. 2018)"),
        _p("bert-tiny", "2020_02_20/uncased_L-2_H-128_A-2.zip", True,
           "BERT-Tiny, uncased: 2 layers, hidden 128, 2 heads (Turc et al. 2019)"),
        _p("bert-mini", "2020_02_20/uncased_L-4_H-256_A-4.zip", True,
           "BERT-Mini, uncased: 4 layers, hidden 256, 4 heads (Turc et al. 2019)"),
        _p("bert-small", "2020_02_20/uncased_L-4_H-512_A-8.zip", True,
           "BERT-Small, uncased: 4 layers, hidden 512, 8 heads (Turc et al. 2019)"),
        _p("bert-medium", "2020_02_20/uncased_L-8_H-512_A-8.zip", True,
           "BERT-Medium, uncased: 8 layers, hidden 512, 8 heads (Turc et al. 2019)"),
    )
}


class PresetError(RuntimeError):
    """Fetching or unpacking a preset failed."""


class DownloadError(PresetError):
    """The download failed, was cut short, or did not match what was expected."""


class ArchiveError(PresetError):
    """The archive is corrupt or does not hold a Google BERT checkpoint."""


class UnsafeArchiveError(ArchiveError):
    """An archive member would escape the extraction directory or is not a plain file."""


# ----------------------------------------------------------------------------- names, URLs


def default_cache_dir() -> Path:
    """`$BERT_TF_CACHE`, else `~/.cache/bert_tf`."""
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/bert_tf").expanduser()


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
    return (
        f"To work around it, download {url} by hand (e.g. `curl -fLO {url}`), unpack it, and "
        "pass the unpacked directory instead of the preset name (e.g. "
        f"--init_checkpoint=/path/to/unpacked_dir), or set {BASE_URL_ENV} to a reachable mirror."
    )


# ----------------------------------------------------------------------------- resolve


def resolve(name_or_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
            progress: bool = True, *, base_url: str | None = None,
            timeout: float = 60.0) -> str:
    """Turn a preset name or a path into a local checkpoint location.

    An existing path (or a TF checkpoint prefix whose `.index` file exists) is returned
    unchanged. A preset name is downloaded and extracted into the cache once, and the
    directory holding `bert_config.json`, `vocab.txt` and `bert_model.ckpt.index` is
    returned. Anything else raises ValueError.

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
    # Fast path: no lock, no write, no network (works on a read-only cache too).
    with contextlib.suppress(ArchiveError):
        if final.is_dir():
            return find_checkpoint_dir(final)

    url = preset_url(preset.name, base_url)
    cache.mkdir(parents=True, exist_ok=True)
    with _file_lock(cache / f".{preset.name}.lock", preset.name) as locked:
        if final.is_dir():  # another process may have finished while we waited
            try:
                return find_checkpoint_dir(final)
            except ArchiveError as e:
                logger.warning("Cached preset %s is incomplete (%s); fetching it again.", final, e)
                _remove_tree(final, cache)
        archive = cache / f"{preset.name}-{_basename(url)}"
        # Holding the lock, no one else is working on this preset: every temporary of it is
        # a leftover. Without a lock only old ones are.
        _sweep_stale(cache, preset.name, archive.name, max_age=0 if locked else _STALE_SECONDS)

        # A complete archive only ever appears by rename after its checks passed, so one
        # left by a process that died while extracting can be reused.
        if not (archive.is_file() and _archive_ok(archive, preset)):
            logger.info("Downloading preset %s from %s", preset.name, url)
            download(url, archive, size=preset.size, sha256=preset.sha256,
                     progress=progress, timeout=timeout)

        tmp = Path(tempfile.mkdtemp(prefix=f".{preset.name}.", suffix=".extract", dir=cache))
        try:
            try:
                extract_archive(archive, tmp)
                find_checkpoint_dir(tmp)
            except ArchiveError as e:
                archive.unlink(missing_ok=True)  # untrusted or corrupt: do not keep it
                advice = (f"Check that {url} (mind {BASE_URL_ENV}) serves Google's checkpoint."
                          if isinstance(e, UnsafeArchiveError) else _what_to_do(url))
                raise type(e)(f"The archive downloaded from {url} was rejected: {e}. Nothing "
                              f"was kept and the archive was deleted. {advice}") from e
            os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
            try:
                os.rename(tmp, final)
            except OSError:
                # Only possible without a working lock: someone else renamed first.
                if not final.is_dir():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        archive.unlink(missing_ok=True)
        return find_checkpoint_dir(final)


def _basename(url: str) -> str:
    name = os.path.basename(urllib.parse.urlparse(url).path)
    return name or "checkpoint.zip"


def _archive_ok(archive: Path, preset: Preset) -> bool:
    if preset.size is not None and archive.stat().st_size != preset.size:
        return False
    if preset.sha256 is not None and _sha256_file(archive) != preset.sha256.lower():
        return False
    return True


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _remove_tree(path: Path, cache: Path) -> None:
    # Rename first so nobody sees a half-deleted directory under the final name.
    doomed = tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".extract", dir=cache)
    os.rename(path, os.path.join(doomed, "old"))
    shutil.rmtree(doomed, ignore_errors=True)


def _sweep_stale(cache: Path, name: str, archive_name: str, max_age: float) -> None:
    """Remove temporaries of preset `name` that a killed process left behind."""
    now = time.time()
    # The patterns match what resolve() (mkdtemp) and download() (mkstemp) create.
    for pattern in (f".{glob.escape(name)}.*.extract", f".{glob.escape(archive_name)}.*.part"):
        for p in glob.glob(os.path.join(glob.escape(str(cache)), pattern)):
            with contextlib.suppress(OSError):
                if now - os.lstat(p).st_mtime >= max_age:
                    if os.path.isdir(p) and not os.path.islink(p):
                        shutil.rmtree(p, ignore_errors=True)
                    else:
                        os.unlink(p)


@contextlib.contextmanager
def _file_lock(path: Path, what: str) -> Iterator[bool]:
    """Exclusive `flock` on `path`; yields False if locking is unavailable."""
    if fcntl is None:  # pragma: no cover - Windows
        yield False
        return
    with open(path, "a+b") as f:  # "a": create if missing, never truncate
        locked = True
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.warning("Waiting for another process to finish fetching %s (lock %s).",
                           what, path)
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        except OSError as e:  # e.g. ENOLCK on some network file systems
            logger.warning("Cannot lock %s (%s); relying on atomic renames only.", path, e)
            locked = False
        try:
            yield locked
        finally:
            if locked:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)


# ----------------------------------------------------------------------------- download


def download(url: str, dest: str | os.PathLike, *, size: int | None = None,
             sha256: str | None = None, progress: bool = True, timeout: float = 60.0) -> str:
    """Stream `url` to `dest`, all or nothing.

    The body goes to a hidden temporary file next to `dest`, is checked against the
    Content-Length header and, when given, `size` and `sha256`, and is then renamed to
    `dest` atomically. On any failure (or interruption) the temporary file is removed and
    `dest` is left untouched. Raises DownloadError naming the URL.
    """
    dest = Path(dest)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            received, length, digest = _stream(url, out, size, progress, timeout)
            out.flush()
            os.fsync(out.fileno())
        if length is not None and received != length:
            raise DownloadError(
                f"Download of {url} was cut short: received {received} of {length} bytes "
                "(Content-Length). Nothing was kept; try again. " + _what_to_do(url))
        if size is not None and received != size:
            raise DownloadError(
                f"Download of {url} has {received} bytes, expected {size}. Nothing was kept. "
                + _what_to_do(url))
        if sha256 is not None and digest != sha256.lower():
            raise DownloadError(
                f"Download of {url} has SHA-256 {digest}, expected {sha256.lower()}. Nothing "
                "was kept. " + _what_to_do(url))
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return str(dest)


def _stream(url, out, size, progress, timeout) -> tuple[int, int | None, str]:
    request = urllib.request.Request(url, headers={"User-Agent": "bert_tf-presets"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        raise DownloadError(
            f"Could not download {url}: the server answered HTTP {e.code} {e.reason}. "
            + _what_to_do(url)) from e
    except urllib.error.URLError as e:
        raise DownloadError(
            f"Could not download {url}: {e.reason}. Is there network access? "
            + _what_to_do(url)) from e
    except (OSError, http.client.HTTPException) as e:
        raise DownloadError(f"Could not download {url}: {e!r}. " + _what_to_do(url)) from e

    with response:
        status = getattr(response, "status", None)
        if status is not None and status != 200:
            raise DownloadError(
                f"Could not download {url}: unexpected HTTP status {status}. " + _what_to_do(url))
        length = _content_length(response)
        if size is not None and length is not None and length != size:
            raise DownloadError(
                f"{url} announces {length} bytes but the preset is {size} bytes: wrong file or "
                "a stale mirror. " + _what_to_do(url))
        digest = hashlib.sha256()
        received = 0
        with tqdm(total=length if length is not None else size, unit="B", unit_scale=True,
                  unit_divisor=1024, desc=_basename(url), file=sys.stderr,
                  disable=not progress, leave=True) as bar:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (OSError, http.client.HTTPException) as e:  # incl. IncompleteRead, timeout
                    raise DownloadError(
                        f"Download of {url} broke off after {received} bytes: {e!r}. Nothing "
                        "was kept; try again. " + _what_to_do(url)) from e
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    return received, length, digest.hexdigest()


def _content_length(response) -> int | None:
    value = response.headers.get("Content-Length")
    try:
        n = int(value) if value is not None else None
    except ValueError:
        return None
    return n if n is not None and n >= 0 else None


# ----------------------------------------------------------------------------- extraction


def _member_parts(name: str) -> list[str]:
    """Split an archive member name into safe path components, or raise."""
    if not name or "\x00" in name:
        raise UnsafeArchiveError(f"member with an empty or NUL-containing name {name!r}")
    slashed = name.replace("\\", "/")
    if (slashed.startswith("/") or PurePosixPath(slashed).is_absolute()
            or PureWindowsPath(name).drive or PureWindowsPath(name).root):
        raise UnsafeArchiveError(f"member {name!r} has an absolute path")
    parts = [p for p in slashed.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"member {name!r} has a '..' component")
    if any(":" in p for p in parts):  # Windows drive-relative or alternate data streams
        raise UnsafeArchiveError(f"member {name!r} has a ':' in a path component")
    return parts


def _target(root: str, parts: list[str]) -> str:
    target = os.path.join(root, *parts)
    # Belt and braces: we never create links, so this holds by construction.
    if os.path.commonpath([root, os.path.abspath(target)]) != root:
        raise UnsafeArchiveError(f"member {'/'.join(parts)!r} resolves outside the target")
    return target


def _write_member(src, target: str) -> None:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "xb") as out:  # "x": a duplicate member is an error, never an overwrite
        shutil.copyfileobj(src, out, _CHUNK)


def extract_archive(archive: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Safely extract a .zip or a (compressed) tar into the existing, empty dir `dest`.

    Rejects (UnsafeArchiveError) absolute member paths, `..` components, symlinks,
    hardlinks, device files and FIFOs. Only regular files and directories are written,
    with default permissions; ownership and modes from the archive are ignored. Raises
    ArchiveError if the file is neither a zip nor a tar, or is corrupt.
    """
    archive = os.fspath(archive)
    root = os.path.abspath(os.fspath(dest))
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, root)
        elif tarfile.is_tarfile(archive):
            _extract_tar(archive, root)
        else:
            raise ArchiveError(f"{archive} is neither a zip nor a tar archive")
    except UnsafeArchiveError as e:
        raise UnsafeArchiveError(f"unsafe archive {archive}: {e}") from None
    except FileExistsError as e:
        raise ArchiveError(f"{archive} holds {e.filename} twice") from e
    except (zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, EOFError,
            gzip.BadGzipFile, zlib.error, NotADirectoryError, IsADirectoryError) as e:
        raise ArchiveError(f"{archive} is corrupt or malformed: {e}") from e
    except RuntimeError as e:  # zipfile: encrypted member without password
        raise ArchiveError(f"{archive} cannot be read: {e}") from e


def _extract_zip(archive: str, root: str) -> None:
    with zipfile.ZipFile(archive) as zf:
        plan = []
        # Check every member before writing anything.
        for info in zf.infolist():
            parts = _member_parts(info.filename)
            mode = info.external_attr >> 16
            kind = stat.S_IFMT(mode)
            if kind == stat.S_IFLNK:
                raise UnsafeArchiveError(f"member {info.filename!r} is a symlink")
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise UnsafeArchiveError(f"member {info.filename!r} is not a regular file")
            if info.flag_bits & 0x1:
                raise ArchiveError(f"member {info.filename!r} is encrypted")
            plan.append((info, parts, info.is_dir() or kind == stat.S_IFDIR))
        for info, parts, is_dir in plan:
            if not parts:
                continue
            target = _target(root, parts)
            if is_dir:
                os.makedirs(target, exist_ok=True)
            else:
                with zf.open(info) as src:  # verifies the CRC at the end
                    _write_member(src, target)


def _extract_tar(archive: str, root: str) -> None:
    # Stream mode: one pass over a (possibly gzipped) tar. Each member is checked before
    # it is written, and only into `root`, a fresh temporary directory the caller deletes
    # on failure - so a rejected archive never writes anywhere else.
    with tarfile.open(archive, mode="r|*") as tf:
        for member in tf:
            parts = _member_parts(member.name)
            if member.issym() or member.islnk():
                raise UnsafeArchiveError(
                    f"member {member.name!r} is a {'symlink' if member.issym() else 'hardlink'}"
                    f" (to {member.linkname!r})")
            if not (member.isfile() or member.isdir()):
                raise UnsafeArchiveError(
                    f"member {member.name!r} is a device, FIFO or other special file")
            if not parts:
                continue
            target = _target(root, parts)
            if member.isdir():
                os.makedirs(target, exist_ok=True)
            else:
                src = tf.extractfile(member)
                if src is None:  # pragma: no cover - isfile() guarantees a stream
                    raise ArchiveError(f"member {member.name!r} has no data")
                with src:
                    _write_member(src, target)


# ----------------------------------------------------------------------------- layout


def find_checkpoint_dir(root: str | os.PathLike) -> str:
    """The one directory under `root` (inclusive) holding a Google BERT checkpoint.

    Google's 2018 zips put the files in a top folder, the 2020 ones at top level; either
    way exactly one directory may contain `bert_config.json`, and it must also hold
    `vocab.txt`, `bert_model.ckpt.index` and a `bert_model.ckpt.data-*` shard.
    Raises ArchiveError otherwise.
    """
    root = os.fspath(root)
    hits = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__MACOSX")
        if "bert_config.json" in filenames:
            hits.append(dirpath)
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

"""Downloads into the bert_tf cache, shared by checkpoint presets and GLUE data.

A destination in the cache either exists complete or not at all: `cached(dest, complete, build)`
takes the lock `.<name>.lock` beside it (filelock; processes sharing a cache, e.g. the Horovod
ranks of one machine, wait there, then find `dest` complete) and builds in a temporary folder
beside it: `fetch` downloads with pooch, which streams to a temporary file and renames it only
once the body arrived in full and matched its SHA-256; `extract` unpacks; one rename publishes.
"""

from __future__ import annotations

import glob
import gzip
import logging
import os
import shutil
import stat
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path, PureWindowsPath
from typing import Callable

import filelock
import pooch
import requests

logger = logging.getLogger(__name__)

CACHE_ENV = "BERT_TF_CACHE"
pooch.get_logger().setLevel(logging.WARNING)  # its INFO lines advise on pooch's own API


class DownloadError(RuntimeError):
    """A download failed, was cut short or did not match its SHA-256; the message names the URL
    and what to do instead."""


class ArchiveError(DownloadError):
    """A downloaded archive is corrupt, or neither a zip nor a tar."""


class UnsafeArchiveError(ArchiveError):
    """An archive member has an absolute name or a `..` part, or is a link or special file."""


def cache_dir() -> Path:
    """`$BERT_TF_CACHE`, else `~/.cache/bert_tf`."""
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/bert_tf").expanduser()


def cached(dest: str | os.PathLike, complete: Callable[[Path], bool],
           build: Callable[[Path], Path]) -> Path:
    """`dest`, built first unless `complete(dest)`: under the lock `.<name>.lock` beside it,
    `build(tmp)` fills a fresh temporary folder beside `dest` and returns the folder (in it) to
    publish, which is renamed to `dest` (replacing an incomplete one). Whatever fails, the
    temporary folder (and any a killed process left) is deleted and `dest` is untouched.
    Processes waiting for the lock find `dest` complete afterwards and build nothing."""
    dest = Path(dest)
    if complete(dest):  # no lock, no write, no request
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(dest.parent / f".{dest.name}.lock")
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        logger.warning("Waiting for another process to finish %s (lock %s).", dest, lock.lock_file)
        lock.acquire()
    try:
        if complete(dest):
            return dest
        for old in dest.parent.glob(f".{glob.escape(dest.name)}.*.tmp"):
            shutil.rmtree(old, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
        try:
            result = build(tmp)
            if dest.exists():
                shutil.rmtree(dest)
            os.rename(result, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        lock.release()
    return dest


def _copy_file_url(url: str, output_file: str, _pooch) -> None:
    """A pooch downloader for file:// URLs (a mirror on a shared file system)."""
    try:
        shutil.copyfile(urllib.request.url2pathname(urllib.parse.urlparse(url).path), output_file)
    except OSError as e:
        raise requests.RequestException(f"{e.strerror}: {e.filename}") from e


def _reason(e: BaseException) -> str:
    """The innermost message of a requests / urllib3 error, without object reprs."""
    while e.args and isinstance(e.args[0], BaseException):
        e = getattr(e.args[0], "reason", None) or e.args[0]
    return str(e.args[0] if e.args else e).rsplit(">: ", 1)[-1]


def fetch(url: str, folder: str | os.PathLike, *, sha256: str | None = None, advice: str = "",
          progress: bool = True, timeout: float = 60.0) -> Path:
    """Download `url` into `folder` under the URL's base name; returns the file's path.

    sha256: expected hex digest, or None (then only a body shorter than its Content-Length is
    caught). timeout: seconds a connect or one read may block. progress: a tqdm bar on stderr.
    Raises DownloadError, one line naming the URL and ending with `advice`; nothing is left under
    the file's name then.
    """
    name = os.path.basename(urllib.parse.urlparse(url).path) or "download"
    downloader = (_copy_file_url if url.startswith("file:") else pooch.HTTPDownloader(
        progressbar=progress, timeout=timeout, chunk_size=1 << 20))
    logger.info("Downloading %s", url)
    try:
        return Path(pooch.retrieve(url, sha256 and f"sha256:{sha256}", fname=name, path=folder,
                                   downloader=downloader))
    except requests.HTTPError as e:
        reason = f"the server answered HTTP {e.response.status_code} {e.response.reason}"
    except requests.ConnectionError as e:
        reason = f"{_reason(e)} (is there network access?)"
    except requests.RequestException as e:  # cut short, timed out, unreadable file:// path
        reason = _reason(e)
    except ValueError as e:  # pooch: a hash mismatch, or a URL scheme it does not know
        reason = (f"its SHA-256 is not {sha256}, so it was deleted" if sha256 and "hash" in str(e)
                  else str(e))
    raise DownloadError(f"could not download {url}: {reason}. {advice}".strip())


def _check_name(name: str) -> None:
    if name.startswith(("/", "\\")) or PureWindowsPath(name).drive:
        raise UnsafeArchiveError(f"member {name!r} is an absolute path")
    if ".." in name.replace("\\", "/").split("/"):
        raise UnsafeArchiveError(f"member {name!r} has a '..' part")


def _tar_filter(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
    _check_name(member.name)
    return tarfile.data_filter(member, path)


def extract(archive: str | os.PathLike, dest: str | os.PathLike, source: str | None = None,
            advice: str = ""):
    """Unpack the zip or tar (plain, gz, bz2 or xz; recognised by content) `archive` into `dest`.

    Members with an absolute name or a `..` part are refused (UnsafeArchiveError, naming `source`
    or the archive), as are zip symlinks; tar members also pass tarfile's "data" filter, which
    refuses links pointing outside `dest`, device files and FIFOs. Zips are checked in full
    first; tars as they stream, so extract into a folder of `cached`'s, deleted on error.
    ArchiveError: neither format, or corrupt. Messages end with `advice`.
    """
    source = source or os.fspath(archive)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    _check_name(info.filename)
                    if stat.S_ISLNK(info.external_attr >> 16):
                        raise UnsafeArchiveError(f"member {info.filename!r} is a symbolic link")
                zf.extractall(dest)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                tf.extractall(dest, filter=_tar_filter)
        else:
            raise ArchiveError("it is neither a zip nor a tar archive")
    except (UnsafeArchiveError, tarfile.FilterError) as e:
        raise UnsafeArchiveError(f"refusing to unpack {source}: {e}; nothing was kept. "
                                 f"{advice}".strip()) from None
    except (ArchiveError, zipfile.BadZipFile, tarfile.TarError, EOFError, gzip.BadGzipFile,
            zlib.error) as e:
        raise ArchiveError(f"cannot unpack {source}: {e}; nothing was kept. {advice}".strip()) from e

"""Download a GLUE task's data into a local cache (used when --data_dir is not given).

Sources are the ones GLUE's own download script uses:
- https://dl.fbaipublicfiles.com/glue/data/<zip>: CoLA.zip, SST-2.zip, QQP-clean.zip,
  STS-B.zip, MNLI.zip, QNLIv2.zip, RTE.zip, WNLI.zip (each holds a <TASK>/ folder), and the
  diagnostic set AX.tsv;
- MRPC, which GLUE may not host: SentEval's copies of the MSR paraphrase files
  (https://dl.fbaipublicfiles.com/senteval/senteval_data/msr_paraphrase_{train,test}.txt) and
  GLUE's list of dev pairs (glue/data/mrpc_dev_ids.tsv), from which train.tsv / dev.tsv /
  test.tsv are built in GLUE's layout (train and dev keep the MSR header, test gets an index
  column).

Layout: <cache>/glue/<TASK>/ (MRPC, MNLI, AX, ...); the cache is the `cache_dir` argument, else
$BERT_TF_CACHE, else ~/.cache/bert_tf. A mirror that serves all files flat under one URL (the
zips, AX.tsv, mrpc_dev_ids.tsv and both msr_paraphrase files) replaces both sources through the
`base_url` argument or $BERT_TF_GLUE_BASE_URL.

A task folder appears only once complete: everything is fetched and unpacked into a temporary
folder beside it and renamed into place, so an interrupted download leaves nothing that a later
call would mistake for data, and a second call finds the folder and makes no request. Zip members
are checked before anything is written (no absolute paths, no `..`, no links or devices).

Command line: python -m bert_tf.data.download MRPC [RTE ...] [--cache_dir DIR]
"""

from __future__ import annotations

import http.client
import os
import shutil
import stat
import tempfile
import urllib.error
import urllib.request
import zipfile

from bert_tf.data import glue

__all__ = ["DownloadError", "GLUE_BASE_URL", "SENTEVAL_BASE_URL", "default_cache_dir",
           "download_glue", "ensure_glue_data", "download_file", "safe_extract",
           "build_mrpc"]

GLUE_BASE_URL = "https://dl.fbaipublicfiles.com/glue/data"
SENTEVAL_BASE_URL = "https://dl.fbaipublicfiles.com/senteval/senteval_data"

# GLUE folder name -> archive under GLUE_BASE_URL.
_ZIPS = {
    "CoLA": "CoLA.zip",
    "SST-2": "SST-2.zip",
    "QQP": "QQP-clean.zip",
    "STS-B": "STS-B.zip",
    "MNLI": "MNLI.zip",
    "QNLI": "QNLIv2.zip",
    "RTE": "RTE.zip",
    "WNLI": "WNLI.zip",
}
_AX_FILE = "AX.tsv"
_MRPC_TRAIN = "msr_paraphrase_train.txt"
_MRPC_TEST = "msr_paraphrase_test.txt"
_MRPC_DEV_IDS = "mrpc_dev_ids.tsv"

_TIMEOUT = 60  # seconds without data before a request fails
_CHUNK = 1 << 16


class DownloadError(RuntimeError):
    """A download that failed; the message names the URL and what to do instead."""


def default_cache_dir() -> str:
    return os.environ.get("BERT_TF_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "bert_tf")


def _advice(task: str) -> str:
    return (f"Download GLUE's {task} data yourself and pass --data_dir pointing at its folder, "
            "or set BERT_TF_GLUE_BASE_URL to a mirror that serves the GLUE files.")


def download_file(url: str, path: str, task: str = "GLUE", progress: bool = True) -> str:
    """Fetch url into path, through a temporary file in the same folder renamed at the end
    (readers never see a partial file). Shows a tqdm bar unless progress is False."""
    from tqdm.auto import tqdm

    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=_TIMEOUT)
            except urllib.error.HTTPError as e:
                raise DownloadError(f"could not download {url}: HTTP {e.code} {e.reason}. "
                                    + _advice(task)) from e
            except urllib.error.URLError as e:
                raise DownloadError(f"could not download {url}: {e.reason}. "
                                    + _advice(task)) from e
            except (OSError, ValueError, http.client.HTTPException) as e:
                raise DownloadError(f"could not download {url}: {e}. " + _advice(task)) from e
            with response:
                length = response.headers.get("Content-Length")
                expected = int(length) if length and length.isdigit() else None
                received = 0
                with tqdm(total=expected, unit="B", unit_scale=True, unit_divisor=1024,
                          desc=os.path.basename(path), disable=not progress) as bar:
                    while True:
                        try:
                            chunk = response.read(_CHUNK)
                        except (OSError, http.client.HTTPException) as e:
                            raise DownloadError(f"download of {url} broke off after {received} "
                                                f"bytes: {e}. " + _advice(task)) from e
                        if not chunk:
                            break
                        out.write(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
            if expected is not None and received != expected:
                raise DownloadError(f"download of {url} is truncated: got {received} of "
                                    f"{expected} bytes. " + _advice(task))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def _check_member(info: zipfile.ZipInfo, source: str) -> str:
    """The member's relative path with / separators, or DownloadError if it could write outside
    the target folder or is not a plain file or folder."""
    name = info.filename.replace("\\", "/")
    problem = None
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        problem = "is an absolute path"
    elif ".." in name.split("/"):
        problem = "climbs out of the folder with '..'"
    else:
        # Unix zips keep st_mode in the high 16 bits; 0 there (Windows zips, Python's writestr)
        # means a plain file or folder.
        kind = stat.S_IFMT(info.external_attr >> 16)
        if kind == stat.S_IFLNK:
            problem = "is a symbolic link"
        elif kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            problem = "is not a regular file or folder"
    if problem:
        raise DownloadError(f"{source}: refusing to extract the archive: member "
                            f"{info.filename!r} {problem}")
    return name


def safe_extract(zip_path: str, dest: str, source: str | None = None) -> None:
    """Extract every member of zip_path under dest after checking all of them (see
    _check_member); `source` (the URL) is named in errors."""
    source = source or zip_path
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = [(info, _check_member(info, source)) for info in archive.infolist()]
            root = os.path.realpath(dest)
            for info, name in members:
                target = os.path.realpath(os.path.join(root, *[p for p in name.split("/") if p]))
                if target != root and not target.startswith(root + os.sep):
                    raise DownloadError(f"{source}: refusing to extract the archive: member "
                                        f"{info.filename!r} lands outside the target folder")
                if info.is_dir():
                    os.makedirs(target, exist_ok=True)
                    continue
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with archive.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
    except zipfile.BadZipFile as e:
        raise DownloadError(f"{source} is not a valid zip archive ({e}); the download may be "
                            "damaged or the URL may serve something else.") from e


def _complete(folder: str, processor: glue.GlueProcessor) -> bool:
    """All split files the processor reads are present (any one of each split's names)."""
    if not os.path.isdir(folder):
        return False
    for layout in processor.layouts.values():
        if not any(os.path.isfile(os.path.join(folder, n)) for n in layout.filenames):
            return False
    return True


def _required_files(processor: glue.GlueProcessor) -> list[str]:
    return [layout.filenames[0] for layout in processor.layouts.values()]


def build_mrpc(folder: str, train_txt: str, test_txt: str, dev_ids_tsv: str) -> None:
    """Write GLUE's MRPC train.tsv / dev.tsv / test.tsv into folder from the MSR paraphrase
    files (Quality, #1 ID, #2 ID, #1 String, #2 String) and the dev pair list (#1 ID, #2 ID a
    line): pairs in the list go to dev.tsv, the rest to train.tsv, both under the MSR header as
    it is (byte-order mark included, as GLUE's files have it); test.tsv gets GLUE's
    `index #1 ID #2 ID #1 String #2 String` header and drops the labels."""
    dev_ids = set()
    with open(dev_ids_tsv, encoding="utf-8-sig") as f:
        for line_number, line in enumerate(f, start=1):
            fields = line.strip().split("\t")
            if fields == [""]:
                continue
            if len(fields) != 2:
                raise glue.DataError(f"{dev_ids_tsv}:{line_number}: expected two tab-separated "
                                     f"ids, found {len(fields)} fields")
            dev_ids.add(tuple(fields))

    def rows(path):
        with open(path, encoding="utf-8", newline="\n") as f:
            header = f.readline()
            if not header:
                raise glue.DataError(f"{path}:1: the file is empty")
            yield header.rstrip("\r\n") + "\n"
            for line_number, line in enumerate(f, start=2):
                fields = line.strip().split("\t")
                if fields == [""]:
                    continue
                if len(fields) != 5:
                    raise glue.DataError(f"{path}:{line_number}: expected 5 tab-separated "
                                         f"columns (Quality, #1 ID, #2 ID, #1 String, #2 "
                                         f"String), found {len(fields)}")
                yield fields

    train_rows = rows(train_txt)
    header = next(train_rows)
    with open(os.path.join(folder, "train.tsv"), "w", encoding="utf-8", newline="\n") as train, \
            open(os.path.join(folder, "dev.tsv"), "w", encoding="utf-8", newline="\n") as dev:
        train.write(header)
        dev.write(header)
        for fields in train_rows:
            out = dev if (fields[1], fields[2]) in dev_ids else train
            out.write("\t".join(fields) + "\n")
    test_rows = rows(test_txt)
    next(test_rows)
    with open(os.path.join(folder, "test.tsv"), "w", encoding="utf-8", newline="\n") as test:
        test.write("index\t#1 ID\t#2 ID\t#1 String\t#2 String\n")
        for index, fields in enumerate(test_rows):
            test.write("\t".join([str(index)] + fields[1:]) + "\n")


def _find_task_folder(root: str, folder_name: str, processor) -> str | None:
    """The folder of an unpacked archive holding the task's files: <root>/<TASK>, the root
    itself, or a single top-level folder of another name."""
    candidates = [os.path.join(root, folder_name), root]
    top = [e for e in os.listdir(root) if os.path.isdir(os.path.join(root, e))
           and not e.startswith("__MACOSX")]
    if len(top) == 1:
        candidates.append(os.path.join(root, top[0]))
    for candidate in candidates:
        if _complete(candidate, processor):
            return candidate
    return None


def download_glue(task: str, cache_dir: str | None = None, base_url: str | None = None,
                  progress: bool = True) -> str:
    """The folder holding a GLUE task's files, downloading them first if the cache lacks them.

    task: any name get_processor accepts (MRPC, mnli-mm, sts-b, AX...). Returns
    <cache>/glue/<TASK>, which is what --data_dir would point at."""
    processor = glue.get_processor(task)
    name = processor.data_name
    cache_dir = cache_dir or default_cache_dir()
    base_url = base_url or os.environ.get("BERT_TF_GLUE_BASE_URL") or None
    glue_root = os.path.join(cache_dir, "glue")
    final = os.path.join(glue_root, name)
    if _complete(final, processor):
        return final

    def url_for(filename, default_base=GLUE_BASE_URL):
        return f"{(base_url or default_base).rstrip('/')}/{filename}"

    os.makedirs(glue_root, exist_ok=True)
    work = tempfile.mkdtemp(dir=glue_root, prefix=f".{name}.", suffix=".tmp")
    try:
        if name == "MRPC":
            staged = os.path.join(work, name)
            os.makedirs(staged)
            files = {}
            for filename, default_base in ((_MRPC_TRAIN, SENTEVAL_BASE_URL),
                                           (_MRPC_TEST, SENTEVAL_BASE_URL),
                                           (_MRPC_DEV_IDS, GLUE_BASE_URL)):
                files[filename] = download_file(url_for(filename, default_base),
                                                os.path.join(staged, filename), name, progress)
            try:
                build_mrpc(staged, files[_MRPC_TRAIN], files[_MRPC_TEST], files[_MRPC_DEV_IDS])
            except glue.DataError as e:
                raise DownloadError(f"the MRPC files downloaded from "
                                    f"{url_for(_MRPC_TRAIN, SENTEVAL_BASE_URL)} and beside it "
                                    f"are not in the MSR paraphrase format: {e}. "
                                    + _advice(name)) from e
        elif name == "AX":
            staged = os.path.join(work, name)
            os.makedirs(staged)
            download_file(url_for(_AX_FILE), os.path.join(staged, _AX_FILE), name, progress)
        else:
            url = url_for(_ZIPS[name])
            zip_path = download_file(url, os.path.join(work, _ZIPS[name]), name, progress)
            unpacked = os.path.join(work, "unpacked")
            os.makedirs(unpacked)
            safe_extract(zip_path, unpacked, source=url)
            staged = _find_task_folder(unpacked, name, processor)
            if staged is None:
                raise DownloadError(
                    f"the archive {url} does not hold GLUE's {name} files "
                    f"({', '.join(_required_files(processor))}). " + _advice(name))
        try:
            os.rename(staged, final)
        except OSError as e:
            # Another process (say, a second Horovod worker) finished first: use its copy.
            if not _complete(final, processor):
                raise DownloadError(f"could not move the downloaded {name} files into {final}: "
                                    f"{e}. If that folder holds an old or partial copy, delete "
                                    "it and try again.") from e
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not _complete(final, processor):
        raise DownloadError(f"{final} lacks some of {', '.join(_required_files(processor))} "
                            "after the download. " + _advice(name))
    return final


def ensure_glue_data(task: str, data_dir: str | None = None, cache_dir: str | None = None,
                     base_url: str | None = None) -> str:
    """data_dir when given (no download), else the cached download of the task."""
    if data_dir:
        return data_dir
    return download_glue(task, cache_dir=cache_dir, base_url=base_url)


def _main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Download GLUE tasks into the bert_tf cache.")
    parser.add_argument("tasks", nargs="+", help=f"task names: {', '.join(glue.TASKS)}")
    parser.add_argument("--cache_dir", default=None, help="default: $BERT_TF_CACHE or "
                        "~/.cache/bert_tf")
    parser.add_argument("--base_url", default=None, help="mirror serving the GLUE files flat")
    args = parser.parse_args(argv)
    for task in args.tasks:
        print(download_glue(task, cache_dir=args.cache_dir, base_url=args.base_url))


if __name__ == "__main__":
    _main()

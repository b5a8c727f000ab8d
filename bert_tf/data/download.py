"""Download a GLUE task's data into the cache (when --data_dir is not given), and SQuAD's files
(when --train_file / --predict_file name an official file that is not here, or a URL).

Sources are GLUE's own download script's: the task zips (each with a <TASK>/ folder) and AX.tsv
under https://dl.fbaipublicfiles.com/glue/data/; for MRPC, SentEval's copies of the MSR paraphrase
files and GLUE's dev pair list, from which GLUE's train/dev/test.tsv are built. Layout:
<cache>/glue/<TASK>/ (cache: `cache_dir`, else $BERT_TF_CACHE, else ~/.cache/bert_tf), complete
or absent, downloaded once by processes sharing it (bert_tf.downloads). A mirror serving all the
files flat under one URL: the `base_url` argument or $BERT_TF_GLUE_BASE_URL.

Command line: python -m bert_tf.data.download MRPC [RTE ...]
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from bert_tf import downloads
from bert_tf.data import glue
from bert_tf.downloads import DownloadError

logger = logging.getLogger("bert_tf")

GLUE_BASE_URL = "https://dl.fbaipublicfiles.com/glue/data"
SENTEVAL_BASE_URL = "https://dl.fbaipublicfiles.com/senteval/senteval_data"
BASE_URL_ENV = "BERT_TF_GLUE_BASE_URL"

# GLUE folder name -> archive under GLUE_BASE_URL.
_ZIPS = {"CoLA": "CoLA.zip", "SST-2": "SST-2.zip", "QQP": "QQP-clean.zip", "STS-B": "STS-B.zip",
         "MNLI": "MNLI.zip", "QNLI": "QNLIv2.zip", "RTE": "RTE.zip", "WNLI": "WNLI.zip"}
_MRPC_FILES = ("msr_paraphrase_train.txt", "msr_paraphrase_test.txt", "mrpc_dev_ids.tsv")


def _advice(task: str) -> str:
    return (f"Download GLUE's {task} data yourself and pass --data_dir pointing at its folder, "
            f"or set {BASE_URL_ENV} to a mirror that serves the GLUE files.")


def _complete(folder: str | os.PathLike, processor: glue.GlueProcessor) -> bool:
    """Every split the processor reads has one of its file names in folder."""
    return all(any(os.path.isfile(os.path.join(folder, n)) for n in layout.filenames)
               for layout in processor.layouts.values())


def build_mrpc(folder: str, train_txt: str, test_txt: str, dev_ids_tsv: str) -> None:
    """Write GLUE's MRPC train.tsv / dev.tsv / test.tsv into folder from the MSR paraphrase
    files (Quality, #1 ID, #2 ID, #1 String, #2 String) and the dev pair list (#1 ID, #2 ID a
    line): pairs in the list go to dev.tsv, the rest to train.tsv, both under the MSR header as
    it is (byte-order mark included, as GLUE's files have it); test.tsv gets GLUE's
    `index #1 ID #2 ID #1 String #2 String` header and drops the labels. A malformed line raises
    glue.DataError naming the file and line."""

    def rows(path, columns, encoding="utf-8"):
        with open(path, encoding=encoding, newline="\n") as f:
            for number, line in enumerate(f, start=1):
                fields = line.strip().split("\t")
                if fields != [""] and len(fields) != columns:
                    raise glue.DataError(f"{path}:{number}: expected {columns} tab-separated "
                                         f"columns, found {len(fields)}")
                if fields != [""]:
                    yield fields

    def write(name, lines):
        with open(os.path.join(folder, name), "w", encoding="utf-8", newline="\n") as f:
            f.writelines("\t".join(fields) + "\n" for fields in lines)

    dev_ids = {tuple(fields) for fields in rows(dev_ids_tsv, 2, "utf-8-sig")}
    train, test = list(rows(train_txt, 5)), list(rows(test_txt, 5))
    for path, lines in ((train_txt, train), (test_txt, test)):
        if not lines:
            raise glue.DataError(f"{path}:1: the file is empty")
    header, pairs = train[0], train[1:]
    write("train.tsv", [header] + [r for r in pairs if (r[1], r[2]) not in dev_ids])
    write("dev.tsv", [header] + [r for r in pairs if (r[1], r[2]) in dev_ids])
    write("test.tsv", [["index", "#1 ID", "#2 ID", "#1 String", "#2 String"]]
          + [[str(i)] + r[1:] for i, r in enumerate(test[1:])])


def download_glue(task: str, cache_dir: str | None = None, base_url: str | None = None,
                  progress: bool = True) -> str:
    """The folder holding a GLUE task's files (what --data_dir would be), downloaded first if
    the cache lacks them. task: any name get_processor accepts (MRPC, mnli-mm, AX...). Raises
    DownloadError (one line naming the URL and what to do) when a file cannot be fetched or
    unpacked or does not hold the task's files."""
    processor = glue.get_processor(task)
    name = processor.data_name
    base_url = base_url or os.environ.get(BASE_URL_ENV)

    def fetch(filename, folder, default_base=GLUE_BASE_URL):
        url = f"{(base_url or default_base).rstrip('/')}/{filename}"
        return downloads.fetch(url, folder, advice=_advice(name), progress=progress), url

    def build(tmp):
        if name == "MRPC":
            files = [fetch(f, tmp / name, SENTEVAL_BASE_URL)[0] for f in _MRPC_FILES[:2]]
            try:
                build_mrpc(tmp / name, *files, fetch(_MRPC_FILES[2], tmp / name)[0])
            except glue.DataError as e:
                raise DownloadError(f"the downloaded MRPC files are not in the MSR paraphrase "
                                    f"format ({e}). {_advice(name)}") from e
            return tmp / name
        if name == "AX":
            return fetch("AX.tsv", tmp / name)[0].parent
        archive, url = fetch(_ZIPS[name], tmp)
        downloads.extract(archive, tmp / "unpacked", url, _advice(name))
        for candidate in (tmp / "unpacked" / name, tmp / "unpacked"):
            if _complete(candidate, processor):
                return candidate
        needed = ", ".join(layout.filenames[0] for layout in processor.layouts.values())
        raise DownloadError(f"the archive {url} does not hold GLUE's {name} files ({needed}). "
                            + _advice(name))

    final = Path(cache_dir or downloads.cache_dir(), "glue", name)
    return str(downloads.cached(final, lambda folder: _complete(folder, processor), build))


def ensure_glue_data(task: str, data_dir: str | None = None, cache_dir: str | None = None,
                     base_url: str | None = None) -> str:
    """data_dir when given (no download), else the cached download of the task."""
    return data_dir or download_glue(task, cache_dir=cache_dir, base_url=base_url)


# -- SQuAD -----------------------------------------------------------------------------------------
# The official files (rajpurkar.github.io/SQuAD-explorer), with the sizes and SHA-256 of
# tensorflow/datasets' squad checksums.tsv.
SQUAD_BASE_URL = "https://rajpurkar.github.io/SQuAD-explorer/dataset"
SQUAD_BASE_URL_ENV = "BERT_TF_SQUAD_BASE_URL"
SQUAD_FILES = {
    "train-v1.1.json": "3527663986b8295af4f7fcdff1ba1ff3f72d07d61a20f487cb238a6ef92fd955",
    "dev-v1.1.json": "95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9",
    "train-v2.0.json": "68dcfbb971bd3e96d5b46c7177b16c1a4e7d4bdef19fb204502738552dede002",
    "dev-v2.0.json": "80a5225e94905956a6446d296ca1093975c4d3b3260f1d6c8f68bc2ab77182d8",
}


def ensure_squad_file(value: str, flag: str = "train_file", cache_dir: str | None = None,
                      base_url: str | None = None, progress: bool = True) -> str:
    """A SQuAD file to read: `value` itself when it exists; an http(s) URL or one of the
    official names (train-v1.1.json, dev-v1.1.json, train-v2.0.json, dev-v2.0.json, with or
    without a folder in front) downloaded once into <cache>/squad/ (official files checked
    against their SHA-256; a mirror: base_url or $BERT_TF_SQUAD_BASE_URL). Raises
    FileNotFoundError naming the flag for anything else, DownloadError when a download fails."""
    if os.path.isdir(value):
        from bert_tf.errors import UsageError

        raise UsageError(f"--{flag}={value} is a folder: pass the SQuAD JSON file in it (e.g. "
                         f"{os.path.join(value, 'dev-v1.1.json')})")
    if os.path.exists(value):
        return value
    name = os.path.basename(value.split("?", 1)[0])
    is_url = value.startswith(("http://", "https://", "file://"))
    if not is_url and name not in SQUAD_FILES:
        raise FileNotFoundError(f"--{flag}={value}: no such file (the official "
                                f"{', '.join(SQUAD_FILES)} are downloaded when named)")
    if not is_url:
        logger.warning("--%s=%s: not found here; using the official %s (downloaded once into "
                       "the cache)", flag, value, name)
    base = (base_url or os.environ.get(SQUAD_BASE_URL_ENV) or SQUAD_BASE_URL).rstrip("/")
    url = value if is_url else f"{base}/{name}"
    sha256 = SQUAD_FILES.get(name)
    if is_url and sha256 is None:  # not an official file: no checksum, a folder per URL
        import hashlib

        folder_name = f"{name}-{hashlib.sha256(url.encode()).hexdigest()[:12]}"
    else:
        folder_name = name.rsplit(".", 1)[0]
    advice = (f"Download {name} yourself and pass its path to --{flag}, or set "
              f"{SQUAD_BASE_URL_ENV} to a mirror that serves the SQuAD files.")

    def build(tmp):
        downloads.fetch(url, tmp, sha256=sha256, advice=advice, progress=progress)
        return tmp

    # One folder per file (cached() publishes a whole folder): <cache>/squad/train-v1.1/...
    folder = downloads.cached(Path(cache_dir or downloads.cache_dir(), "squad", folder_name),
                              lambda f: (f / name).is_file(), build)
    return str(folder / name)


if __name__ == "__main__":
    import sys

    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        sys.exit(f"usage: python -m bert_tf.data.download TASK [TASK ...]  (tasks: "
                 f"{', '.join(glue.TASKS)}; cache $BERT_TF_CACHE, mirror ${BASE_URL_ENV})")
    for name in sys.argv[1:]:
        try:
            print(download_glue(name))
        except (DownloadError, ValueError) as e:
            sys.exit(f"bert_tf.data.download: error: {e}")

"""Download a GLUE task's data into a local cache (used when --data_dir is not given).

Sources are those of GLUE's own download script: https://dl.fbaipublicfiles.com/glue/data/ for
the task zips (each holds a <TASK>/ folder) and AX.tsv; for MRPC, SentEval's copies of the MSR
paraphrase files (.../senteval/senteval_data/msr_paraphrase_{train,test}.txt) and GLUE's dev pair
list (glue/data/mrpc_dev_ids.tsv), from which GLUE's train.tsv / dev.tsv / test.tsv are built.

Layout: <cache>/glue/<TASK>/; the cache is the `cache_dir` argument, else $BERT_TF_CACHE, else
~/.cache/bert_tf. A mirror serving all those files flat under one URL replaces both sources
through the `base_url` argument or $BERT_TF_GLUE_BASE_URL. A task folder appears only once
complete, and processes sharing the cache download once (see bert_tf.downloads).

Command line: python -m bert_tf.data.download MRPC [RTE ...] [--cache_dir DIR] [--base_url URL]
"""
from __future__ import annotations

import os
from pathlib import Path

from bert_tf import downloads
from bert_tf.data import glue
from bert_tf.downloads import DownloadError

__all__ = ["DownloadError", "GLUE_BASE_URL", "SENTEVAL_BASE_URL", "BASE_URL_ENV",
           "default_cache_dir", "download_glue", "ensure_glue_data", "build_mrpc"]

GLUE_BASE_URL = "https://dl.fbaipublicfiles.com/glue/data"
SENTEVAL_BASE_URL = "https://dl.fbaipublicfiles.com/senteval/senteval_data"
BASE_URL_ENV = "BERT_TF_GLUE_BASE_URL"

# GLUE folder name -> archive under GLUE_BASE_URL.
_ZIPS = {"CoLA": "CoLA.zip", "SST-2": "SST-2.zip", "QQP": "QQP-clean.zip", "STS-B": "STS-B.zip",
         "MNLI": "MNLI.zip", "QNLI": "QNLIv2.zip", "RTE": "RTE.zip", "WNLI": "WNLI.zip"}
_MRPC_FILES = ("msr_paraphrase_train.txt", "msr_paraphrase_test.txt", "mrpc_dev_ids.tsv")
_TIMEOUT = 60  # seconds a connect or one read may block


def default_cache_dir() -> str:
    """`$BERT_TF_CACHE`, else `~/.cache/bert_tf`."""
    return str(downloads.cache_dir())


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
    """The folder holding a GLUE task's files, downloading them first if the cache lacks them.

    task: any name get_processor accepts (MRPC, mnli-mm, sts-b, AX...). Returns
    <cache>/glue/<TASK>, which is what --data_dir would point at. base_url: default
    $BERT_TF_GLUE_BASE_URL, else GLUE's and SentEval's servers. Raises DownloadError (one line
    naming the URL and what to do) when a file cannot be fetched or unpacked."""
    processor = glue.get_processor(task)
    name = processor.data_name
    final = Path(cache_dir or default_cache_dir(), "glue", name)
    if _complete(final, processor):
        return str(final)
    base_url = base_url or os.environ.get(BASE_URL_ENV)

    def url(filename, default_base=GLUE_BASE_URL):
        return f"{(base_url or default_base).rstrip('/')}/{filename}"

    def fetch(filename, folder, default_base=GLUE_BASE_URL):
        return downloads.fetch(url(filename, default_base), folder, advice=_advice(name),
                               progress=progress, timeout=_TIMEOUT)

    with downloads.building(final) as tmp:
        if _complete(final, processor):  # another process finished while we waited
            return str(final)
        staged = tmp / name
        if name == "MRPC":
            files = [fetch(f, staged, SENTEVAL_BASE_URL) for f in _MRPC_FILES[:2]]
            files.append(fetch(_MRPC_FILES[2], staged))
            try:
                build_mrpc(staged, *files)
            except glue.DataError as e:
                raise DownloadError(f"the downloaded MRPC files are not in the MSR paraphrase "
                                    f"format ({e}). {_advice(name)}") from e
        elif name == "AX":
            fetch("AX.tsv", staged)
        else:
            downloads.extract(fetch(_ZIPS[name], tmp), tmp / "unpacked", url(_ZIPS[name]))
            staged = _task_folder(tmp / "unpacked", name, processor, url(_ZIPS[name]))
        downloads.publish(staged, final)
    return str(final)


def _task_folder(root: Path, name: str, processor, archive: str) -> Path:
    """Where an unpacked archive holds the task's files: <root>/<TASK>, the root itself, or a
    single top-level folder of another name."""
    tops = [p for p in root.iterdir() if p.is_dir() and p.name != "__MACOSX"]
    for candidate in [root / name, root] + (tops if len(tops) == 1 else []):
        if _complete(candidate, processor):
            return candidate
    needed = ", ".join(layout.filenames[0] for layout in processor.layouts.values())
    raise DownloadError(f"the archive {archive} does not hold GLUE's {name} files ({needed}). "
                        + _advice(name))


def ensure_glue_data(task: str, data_dir: str | None = None, cache_dir: str | None = None,
                     base_url: str | None = None) -> str:
    """data_dir when given (no download), else the cached download of the task."""
    return data_dir or download_glue(task, cache_dir=cache_dir, base_url=base_url)


def _main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Download GLUE tasks into the bert_tf cache.")
    parser.add_argument("tasks", nargs="+", help=f"task names: {', '.join(glue.TASKS)}")
    parser.add_argument("--cache_dir", help="default: $BERT_TF_CACHE, else ~/.cache/bert_tf")
    parser.add_argument("--base_url", help=f"mirror serving the GLUE files flat; default "
                        f"${BASE_URL_ENV}")
    args = parser.parse_args(argv)
    for task in args.tasks:
        try:
            print(download_glue(task, cache_dir=args.cache_dir, base_url=args.base_url))
        except (DownloadError, ValueError) as e:
            parser.error(str(e))


if __name__ == "__main__":
    _main()

"""Reading text: --input_file globs -> files, files -> documents (lists of lines) in the three
input formats, paragraphs -> sentences (blingfire)."""

from __future__ import annotations

import glob
import os
import re
from typing import Iterator

from bert_tf.errors import UsageError
from bert_tf.data.text_files import DataError


# A stripped WikiText heading: "= Title =" (an article), "= = Section = =", ...
_WIKITEXT_HEADING = re.compile(r"^(=(?: =)*) .* \1$")


def expand_input_files(input_file: str) -> list[str]:
    """Google's --input_file: comma-separated globs -> files, in the order given.

    Raises DataError naming a pattern that matches no file.
    """
    files = []
    for pattern in (p.strip() for p in input_file.split(",")):
        if not pattern:
            continue
        if glob.has_magic(pattern):  # folders a glob matches are not inputs
            matches = sorted(p for p in glob.glob(pattern) if not os.path.isdir(p))
        elif os.path.isdir(pattern):
            raise DataError(f"--input_file={pattern} is a folder; pass its files (a glob such "
                            f"as {os.path.join(pattern, '*.txt')})")
        else:
            matches = [pattern] if os.path.exists(pattern) else []
        if not matches:
            raise DataError(f"--input_file={pattern}: no such file (nor files matching it); "
                            "check the path or glob")
        for path in matches:
            if os.path.isfile(path) and os.path.getsize(path) == 0:
                raise DataError(f"{path}: no text (the file is empty); remove it from "
                                "--input_file")
        files.extend(matches)
    if not files:
        raise UsageError("--input_file is empty: pass text files (comma-separated, globs allowed)")
    return files


def read_documents(paths: list[str], input_format: str = "sentences",
                   progress=None) -> Iterator[list[str]]:
    """The non-empty documents of the input files, in order, each a list of stripped lines.

    `sentences`/`paragraphs`: a blank line ends a document (Google's format). `wikitext`: a
    level-1 heading (` = Title = `) starts one; headings and blank lines are dropped. Lines
    are split at "\\n" ("\\r\\n" works: strip() takes the "\\r"). `progress(n_bytes)` is called
    now and then with the bytes read since the last call.
    Raises DataError naming file and line for non-UTF-8 or NUL-laden (binary) input, and for
    a file without any text.
    """
    wikitext = input_format == "wikitext"
    document: list[str] = []
    for path in paths:
        has_text = False
        unreported = 0
        offset = 0  # of the line in the file
        with open(path, "rb") as f:
            for line_number, raw in enumerate(f, 1):
                offset += len(raw)
                unreported += len(raw)
                if progress is not None and unreported >= 1 << 20:
                    progress(unreported)
                    unreported = 0
                start = offset - len(raw)
                if b"\x00" in raw:
                    raise DataError(
                        f"{path}:{line_number}: NUL byte (byte {start + raw.index(bytes(1))} of "
                        "the file): this looks like a binary file, not UTF-8 text. --input_file "
                        "takes text, one sentence a line and blank lines between documents")
                try:
                    line = raw.decode("utf-8").strip()
                except UnicodeDecodeError as error:
                    raise DataError(
                        f"{path}:{line_number}: not UTF-8 text ({error.reason} at byte "
                        f"{start + error.start} of the file). Convert the file to UTF-8 (iconv) "
                        "or remove it from --input_file") from None
                if wikitext:
                    heading = _WIKITEXT_HEADING.match(line)
                    if heading:
                        if heading.group(1) == "=" and document:
                            yield document
                            document = []
                        has_text = True
                        continue
                    if not line:
                        continue
                elif not line:
                    if document:
                        yield document
                        document = []
                    continue
                has_text = True
                document.append(line)
        if progress is not None and unreported:
            progress(unreported)
        if not has_text:
            raise DataError(f"{path}: no text (the file is empty or holds only blank lines); "
                            "remove it from --input_file")
        # A document never spans files (Google starts a new one only at blank lines, but a
        # file boundary is a document boundary in any sensible corpus).
        if document:
            yield document
            document = []


def split_sentences(paragraph: str) -> list[str]:
    """Sentences of one paragraph (blingfire's rule-and-model splitter; offline, C++ speed)."""
    import blingfire  # only needed for --input_format=paragraphs/wikitext

    return [s for s in blingfire.text_to_sentences(paragraph).split("\n") if s.strip()]

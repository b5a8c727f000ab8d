"""Reading users' text files line by line with errors that say where: a file that is not UTF-8
or is binary stops with one line naming the file, the line and the byte offset, never a
`UnicodeDecodeError` traceback from deep inside a reader."""

from __future__ import annotations

from typing import Iterator


class DataError(ValueError):
    """A data file that cannot be read as expected; the message names the file (and line or
    byte): `path:line: problem`. Also importable as bert_tf.data.glue.DataError."""


def utf8_lines(path: str, what: str = "text") -> Iterator[tuple[int, str]]:
    """(1-based line number, line) of a UTF-8 file, line ends kept ("\\n" only splits, as
    `open(newline="\\n")`), a leading BOM dropped.

    Raises DataError `PATH: byte N (line L): ...` for a NUL byte (a binary file) or bytes that
    are not UTF-8; `what` names what the file should be ("a GLUE TSV file", ...)."""
    offset = 0
    with open(path, "rb") as f:
        for line_number, raw in enumerate(f, start=1):
            if b"\x00" in raw:
                at = offset + raw.index(b"\x00")
                raise DataError(f"{path}: byte {at} (line {line_number}) is a NUL byte: this "
                                f"looks like a binary file, not {what}")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}: byte {offset + e.start} (line {line_number}) is not "
                                f"UTF-8 ({e.reason}): {what} must be UTF-8 text; convert it "
                                "(e.g. iconv -f latin1 -t utf-8)") from None
            if line_number == 1 and line.startswith("\ufeff"):
                line = line[1:]
            offset += len(raw)
            yield line_number, line

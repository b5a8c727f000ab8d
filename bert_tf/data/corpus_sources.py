"""The readers of raw corpora: MediaWiki dumps, JSON Lines, Parquet and plain text, each
streamed as raw documents for `bert_tf.data.corpus` to clean.

A raw document is `(kind, text)`: kind "wiki" (an article's wikitext) or "plain" (one paragraph
a line). Memory holds one document (JSONL, text, dumps) or one Parquet record batch, whatever
the file size. Invalid UTF-8 is replaced with U+FFFD and counted (`stats`), never fatal; a NUL
byte in a text or JSONL file (a binary file) is an error naming the file and byte offset.
"""

from __future__ import annotations

import bz2
import gzip
import json
import os
from typing import Callable, Iterator

from bert_tf.data import mediawiki
from bert_tf.data.glue import DataError

FORMATS = ("auto", "mediawiki", "jsonl", "parquet", "text", "lines")
# A text document longer than this is cut (and counted): text without blank lines would
# otherwise be one document held whole in memory.
MAX_DOCUMENT_CHARS = 1_000_000
Progress = Callable[[int], None] | None


def detect_format(path: str, input_format: str = "auto") -> str:
    """`input_format` unless "auto"; then by the name: `.parquet` -> parquet;
    `.jsonl`/`.json`/`.ndjson` (optionally `.gz`/`.bz2`) -> jsonl; else by the first bytes
    (decompressed): XML (`<?xml`, `<mediawiki`) -> mediawiki, Parquet's magic -> parquet, anything
    else -> text (one paragraph a line, a blank line between documents). Dump chunks are named
    like `enwiki-...-pages-articles1.xml-p1p41242.bz2`, so the name alone cannot tell."""
    if input_format != "auto":
        return input_format
    name = path.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    for suffix in (".gz", ".bz2"):
        name = name.removesuffix(suffix)
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    raw, stream = _open_lines(path)
    try:
        head = stream.read(512)
    except (EOFError, OSError):
        head = b""  # the reader reports the damage
    finally:
        stream.close()
        raw.close()
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith((b"<?xml", b"<mediawiki")):
        return "mediawiki"
    return "text"


def read_source(path: str, input_format: str, stats: dict, text_field: str = "text",
                progress: Progress = None) -> Iterator[tuple[str, str]]:
    """Raw documents `(kind, text)` of one input file in the given (detected) format.

    `stats` gains `redirects` and `not_articles` (MediaWiki pages skipped),
    `invalid_utf8_bytes` and `first_invalid_utf8`, `empty_records` (JSONL/Parquet records
    whose text is null or blank). Raises DataError naming the file (and line or row) for input
    that is not of the format.
    """
    if input_format == "mediawiki":
        yield from _read_mediawiki(path, stats, progress)
    elif input_format == "jsonl":
        yield from _read_jsonl(path, stats, text_field, progress)
    elif input_format == "parquet":
        yield from _read_parquet(path, stats, text_field, progress)
    elif input_format == "text":
        yield from _read_text(path, stats, progress)
    elif input_format == "lines":  # one document a line (the peers' intermediate format)
        for _, line in _lines(path, stats, progress):
            if line.strip():
                yield "plain", line
    else:
        raise ValueError(f"unknown input format {input_format!r}; one of {FORMATS}")


def _read_mediawiki(path, stats, progress):
    for page in mediawiki.read_dump(path, stats, progress):
        if page.redirect is not None:
            stats["redirects"] = stats.get("redirects", 0) + 1
        elif page.namespace != 0:
            stats["not_articles"] = stats.get("not_articles", 0) + 1
        else:
            yield "wiki", page.text


def _open_lines(path: str):
    """(raw file, binary line stream): `.gz` and `.bz2` decompressed on the fly."""
    raw = open(path, "rb")
    if path.endswith(".gz"):
        return raw, gzip.GzipFile(fileobj=raw)
    if path.endswith(".bz2"):
        return raw, bz2.BZ2File(raw)
    return raw, raw


def _lines(path: str, stats: dict, progress: Progress) -> Iterator[tuple[int, str]]:
    """(line number, decoded line) of a text file, compressed or not; bad UTF-8 replaced and
    counted; a NUL byte is an error (binary input); a truncated archive is an error."""
    raw, stream = _open_lines(path)
    offset = checked = reported = 0  # decompressed bytes; at the last check; on disk
    try:
        line_number = 0
        while True:
            try:
                line = stream.readline()
            except (EOFError, OSError, gzip.BadGzipFile) as error:
                raise DataError(f"{path}: the compressed file is truncated or corrupt ({error}); "
                                "download or compress it again") from None
            if not line:
                break
            line_number += 1
            if b"\x00" in line:
                nul = offset + line.index(b"\x00")
                raise DataError(
                    f"{path}: byte {nul} (line {line_number}) is a NUL "
                    "byte: this looks like a binary file, not text; remove it from "
                    "--input_file or set --input_format")
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                text = mediawiki.replace_invalid_utf8(line, path, offset, stats)
            offset += len(line)
            if progress is not None and offset - checked >= 1 << 20:
                position = raw.tell()
                progress(position - reported)
                reported, checked = position, offset
            yield line_number, text
        if progress is not None:
            progress(raw.tell() - reported)
    finally:
        stream.close()
        raw.close()


def _read_text(path, stats, progress):
    paragraphs: list[str] = []
    chars = 0
    for _, line in _lines(path, stats, progress):
        line = line.strip()
        if line:
            paragraphs.append(line)
            chars += len(line)
            if chars < MAX_DOCUMENT_CHARS:
                continue
            stats["documents_cut_at_1m_characters"] = \
                stats.get("documents_cut_at_1m_characters", 0) + 1
        if paragraphs:
            yield "plain", "\n".join(paragraphs)
            paragraphs, chars = [], 0
    if paragraphs:
        yield "plain", "\n".join(paragraphs)


def _read_jsonl(path, stats, text_field, progress):
    for line_number, line in _lines(path, stats, progress):
        if line_number == 1:
            line = line.removeprefix("\ufeff")
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as error:
            raise DataError(f"{path}:{line_number}: not a JSON object ({error}); JSON Lines "
                            "holds one object a line") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{line_number}: a JSON {type(record).__name__}, not an "
                            "object; JSON Lines holds one object a line")
        if text_field not in record:
            raise DataError(f"{path}:{line_number}: no field {text_field!r} (its fields: "
                            f"{', '.join(sorted(record)) or 'none'}); pass the text's field "
                            "as --text_field")
        text = record[text_field]
        if text is not None and not isinstance(text, str):
            raise DataError(f"{path}:{line_number}: field {text_field!r} holds a "
                            f"{type(text).__name__}, not text; pass the text's field as "
                            "--text_field")
        if not text or not text.strip():
            stats["empty_records"] = stats.get("empty_records", 0) + 1
            continue
        yield "plain", text


def _read_parquet(path, stats, text_field, progress):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise DataError(f"{path}: not a Parquet file ({error})") from None
    names = parquet.schema_arrow.names
    if text_field not in names:
        raise DataError(f"{path}: no column {text_field!r} (its columns: {', '.join(names)}); "
                        "pass the text's column as --text_field")
    kind = parquet.schema_arrow.field(text_field).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DataError(f"{path}: column {text_field!r} holds {kind}, not text; pass the text's "
                        "column as --text_field")
    size = os.path.getsize(path)
    rows = max(parquet.metadata.num_rows, 1)
    done = 0
    for batch in parquet.iter_batches(batch_size=1024, columns=[text_field]):
        for text in batch.column(0).to_pylist():
            if not text or not text.strip():
                stats["empty_records"] = stats.get("empty_records", 0) + 1
                continue
            yield "plain", text
        if progress is not None:  # bytes on disk, pro rata to the rows read
            now = size * min(done + batch.num_rows, rows) // rows
            progress(now - size * done // rows)
        done += batch.num_rows

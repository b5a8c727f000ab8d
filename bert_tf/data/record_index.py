"""The per-shard index of pre-training records: what training reads instead of the records.

Training must not read a few hundred GB to learn how many records there are, whether they fit
the flags, or where record k starts. Every shard `NAME` gets an index `NAME.idx` beside it,
written by create_pretraining_data.py with the shard, or built afterwards for records made
elsewhere (Google's or NVIDIA's scripts) by `index_records.py build`. It holds:

* the byte offset of every record (as NVIDIA DALI's `tfrecord2idx` does), so a reader seeks to
  record k without reading the records before it;
* the record count and the shard's size (a shard that was rewritten or cut short no longer
  matches its index, and is refused with what to run);
* the schema: each feature's kind and length as found in the first record, hence
  max_seq_length, max_predictions_per_seq, and whether the records carry masks;
* the vocabulary the records were made with: a fingerprint (sha256 over its tokens) and its
  size, when known. Training refuses a model vocabulary with another fingerprint.

File layout (little-endian):
    8 bytes   magic b"BTFIDX01"
    uint64    H, the length of the JSON header that follows
    H bytes   JSON header (utf-8), space-padded so the offsets start at a multiple of 8
    uint64    offsets[count + 1]: record k spans bytes [offsets[k], offsets[k + 1]) of the
              shard (its 12-byte frame header, data, 4-byte CRC); offsets[count] = file size.
A reader opens the header (a few hundred bytes) at start-up and memory-maps the offsets, so
start-up costs the same for 1 GB and 1 TB, and only the pages of the offsets it reads are
loaded.

Building an index reads the 12-byte frame header of each record and jumps over the body (one
core here: ~3 GB/s from the page cache, ~0.8 GB/s from a cold disk; bench/README.md, "Pre-training
input at scale"); the headers' CRCs are
checked for all records at once with a vectorised CRC32C. The bodies' CRCs are checked where
they are read: by the training reader, record by record, and by `verify`, which reads
everything (CRCs, schema, ids below the vocabulary size, mask consistency).

TensorFlow-free (numpy, google_crc32c): create_pretraining_data's worker processes write
indexes, and the index command starts in a fraction of a second.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import mmap
import os
import struct

import numpy as np

MAGIC = b"BTFIDX01"
INDEX_SUFFIX = ".idx"
VERSION = 1
_FRAME = 16  # bytes of TFRecord framing around each record: 8 length, 4 CRC, ..., 4 CRC


class IndexError_(ValueError):
    """Base of the index's errors (named with a trailing underscore: IndexError is Python's)."""


class MissingIndexError(IndexError_):
    """A shard has no index file (build it with `index_records.py build`)."""


class StaleIndexError(IndexError_):
    """An index that does not describe its shard (another size, another format)."""


class NotRecordsError(IndexError_):
    """A file that is not a (complete) TFRecord file."""


def index_path(path: str) -> str:
    """The index of the shard at `path`: `path + ".idx"`, beside it."""
    return path + INDEX_SUFFIX


def fallback_index_path(path: str, index_dir: str) -> str:
    """Where the index of a shard in a folder that cannot be written (a read-only mount, such
    as an Azure ML input) goes: `index_dir/<key>/<name>.idx`, the key a hash of the folder's
    NAME, the shard's name and its size, not of the full path: Azure ML mounts a job's inputs
    under a path holding the job's id, and the next job on the same data must find the same
    index."""
    folder = os.path.basename(os.path.dirname(os.path.abspath(path)))
    try:
        size = os.path.getsize(path)
    except OSError:
        size = -1
    key = f"{folder}/{os.path.basename(path)}:{size}"
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    return os.path.join(index_dir, digest, os.path.basename(path) + INDEX_SUFFIX)


def find_index(path: str, index_dir: str | None = None) -> str | None:
    """The index file of the shard at `path`: beside it, else under `index_dir`; None if
    neither exists."""
    for candidate in [index_path(path)] + ([fallback_index_path(path, index_dir)]
                                           if index_dir else []):
        if os.path.exists(candidate):
            return candidate
    return None


def writable_index_path(path: str, index_dir: str | None = None) -> str:
    """Where to write the index of the shard at `path`: beside it when its folder can be
    written, else under `index_dir`. Raises MissingIndexError when neither can."""
    if os.access(os.path.dirname(os.path.abspath(path)), os.W_OK):
        return index_path(path)
    if index_dir:
        target = fallback_index_path(path, index_dir)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        return target
    raise MissingIndexError(f"{path} has no index and its folder cannot be written: pass "
                            "--index_dir=A_WRITABLE_FOLDER (run_pretraining.py uses "
                            "OUTPUT_DIR/record_index)")


def build_command(paths, rebuild: bool = False) -> str:
    """The command that builds (rebuild: rebuilds) the index of `paths` (one file or a list),
    for messages."""
    paths = [paths] if isinstance(paths, str) else list(paths)
    shown = paths[0] if len(paths) == 1 else os.path.join(os.path.dirname(paths[0]), "*")
    flag = " --rebuild" if rebuild else ""
    return f"python index_records.py build{flag} --input_file='{shown}'"


# -- vocabulary fingerprint -----------------------------------------------------------------------

def vocab_fingerprint(vocab_file: str) -> dict:
    """{"sha256": hex digest over the tokens joined by newlines, "size": token count}.

    The tokens are read as the tokenizer reads them (`wordpiece.vocab_tokens`: one id a line,
    surrounding whitespace stripped), so the same vocabulary with CRLF line ends or another final
    newline has the same fingerprint, and a vocabulary that gives any token another id does
    not."""
    from bert_tf.tokenization.wordpiece import vocab_tokens

    tokens = vocab_tokens(vocab_file)
    digest = hashlib.sha256("\n".join(tokens).encode("utf-8")).hexdigest()
    return {"sha256": digest, "size": len(tokens)}


# A checkpoint folder's record of the vocabulary its embedding rows belong to, for when no
# vocab.txt travels with it (written by run_pretraining.py's --export and extend_vocab.py).
FINGERPRINT_FILE = "vocab_fingerprint.json"


def write_fingerprint(directory: str, fingerprint: dict) -> str:
    """Writes `fingerprint` ({"sha256", "size"}) as DIRECTORY/vocab_fingerprint.json."""
    path = os.path.join(directory, FINGERPRINT_FILE)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"sha256": fingerprint["sha256"], "size": fingerprint["size"]}, f)
        f.write("\n")
    return path


def read_fingerprint(checkpoint: str | None) -> dict | None:
    """The fingerprint stored beside a checkpoint (a folder, or a prefix inside one), or None."""
    if not checkpoint:
        return None
    directory = checkpoint if os.path.isdir(checkpoint) else os.path.dirname(checkpoint)
    path = os.path.join(directory, FINGERPRINT_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            found = json.load(f)
        return {"sha256": str(found["sha256"]), "size": int(found["size"]), "file": path}
    except (OSError, ValueError, KeyError, TypeError):
        return None


# -- the index file -------------------------------------------------------------------------------

def write_index(path: str, offsets: np.ndarray, header: dict, target: str | None = None) -> str:
    """Writes the index of the shard at `path` to `target` (default: beside it), atomically
    (a `.tmp` file renamed).

    offsets: int [count + 1], record starts then the file size. header: the JSON fields
    (`describe_schema`, `vocab`, ...); count, file_size and version are filled in here.
    Returns the index path."""
    offsets = np.asarray(offsets, dtype="<u8")
    header = dict(header, version=VERSION, records=int(len(offsets) - 1),
                  file_size=int(offsets[-1]))
    text = json.dumps(header, sort_keys=True).encode("utf-8")
    text += b" " * (-(len(MAGIC) + 8 + len(text)) % 8)
    target = target or index_path(path)
    # One temporary name per writer: ranks or jobs indexing the same shard at once each write
    # their own and rename it (the same bytes) into place.
    import threading
    tmp = f"{target}.{os.getpid()}-{threading.get_ident()}.tmp"
    with open(tmp, "wb") as f:
        f.write(MAGIC + struct.pack("<Q", len(text)) + text)
        f.write(offsets.tobytes())
    os.replace(tmp, target)
    return target


_MAX_HEADER = 1 << 20  # bytes: a header is a few hundred


def _check_header(header) -> None:
    """Raises ValueError/TypeError/KeyError unless `header` has the fields of this format."""
    if not isinstance(header, dict):
        raise TypeError("not an object")
    if header.get("version") != VERSION:  # reported as another version by the caller
        return
    for key, kind in (("records", int), ("file_size", int), ("features", dict),
                      ("masked", bool)):
        if not isinstance(header[key], kind):
            raise TypeError(key)
    if header["records"] < 0 or header["file_size"] < 16 * header["records"]:
        raise ValueError("counts")


@dataclasses.dataclass
class ShardIndex:
    """One shard's index, header read, offsets mapped on first use.

    path: the shard; header: the JSON fields (records, file_size, features, masked,
    max_seq_length, max_predictions_per_seq, vocab); offsets: uint64 [records + 1] (lazy
    memory map)."""
    path: str
    header: dict
    data_offset: int
    index_file: str = ""
    _offsets: np.ndarray | None = None

    @property
    def records(self) -> int:
        return int(self.header["records"])

    @property
    def offsets(self) -> np.ndarray:
        if self._offsets is None:
            self._offsets = np.memmap(self.index_file or index_path(self.path), dtype="<u8",
                                      mode="r",
                                      offset=self.data_offset, shape=(self.records + 1,))
        return self._offsets


def load_index(path: str, check_size: bool = True, index_dir: str | None = None) -> ShardIndex:
    """Reads the index header of the shard at `path` (its index beside it, else under
    `index_dir`: see `fallback_index_path`).

    Raises MissingIndexError when there is none, StaleIndexError when it is not an index of
    this format or was made for a shard of another size (the shard was rewritten, truncated or
    copied incompletely)."""
    ipath = find_index(path, index_dir) or index_path(path)
    try:
        with open(ipath, "rb") as f:
            head = f.read(16)
            if len(head) < 16 or head[:8] != MAGIC:
                raise StaleIndexError(f"{ipath} is not a bert_tf record index: rebuild it with "
                                      f"{build_command(path, True)}")
            (length,) = struct.unpack("<Q", head[8:])
            index_size = os.fstat(f.fileno()).st_size
            if length > min(index_size, _MAX_HEADER):
                raise ValueError("header length")
            header = json.loads(f.read(length))
            _check_header(header)
    except FileNotFoundError:
        raise MissingIndexError(f"{path} has no index ({ipath}); build it with "
                                f"{build_command(path)}") from None
    except (ValueError, UnicodeDecodeError, TypeError, KeyError):
        raise StaleIndexError(f"{ipath}: unreadable or damaged header; rebuild it with "
                              f"{build_command(path, True)}") from None
    if header.get("version") != VERSION:
        raise StaleIndexError(f"{ipath}: index version {header.get('version')}, this bert_tf "
                              f"reads {VERSION}; rebuild it with {build_command(path, True)}")
    data_offset = 16 + length
    if index_size != data_offset + 8 * (header["records"] + 1):
        raise StaleIndexError(f"{ipath} is cut short ({index_size} bytes for "
                              f"{header['records']} records); rebuild it with "
                              f"{build_command(path, True)}")
    if check_size:
        try:
            size = os.path.getsize(path)
        except FileNotFoundError:
            raise NotRecordsError(f"{path}: no such file (its index {ipath} is there)") from None
        if size != header["file_size"]:
            raise StaleIndexError(
                f"{path} has {size:,} bytes but its index {ipath} was made for "
                f"{header['file_size']:,}: the shard was rewritten or cut short since. If it is "
                f"complete, rebuild the index with {build_command(path, True)} (add "
                "--vocab_file=VOCAB to keep the vocabulary check); else recreate the shard")
    return ShardIndex(path, header, data_offset, ipath)


# -- building -------------------------------------------------------------------------------------

def _crc32c_table() -> np.ndarray:
    poly = 0x82F63B78  # CRC-32C (Castagnoli), reflected
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ poly, table >> 1).astype(np.uint32)
    return table


_TABLE = _crc32c_table()


def masked_crc32c_rows(rows: np.ndarray) -> np.ndarray:
    """TFRecord's masked CRC32C of every row of a uint8 matrix [N, L], vectorised over rows
    (one table lookup per byte column): checks N frame headers at once where a call per
    header (google_crc32c) would cost more than the whole walk."""
    crc = np.full(rows.shape[0], 0xFFFFFFFF, np.uint32)
    for column in range(rows.shape[1]):
        crc = _TABLE[(crc ^ rows[:, column]) & 0xFF] ^ (crc >> np.uint32(8))
    crc ^= np.uint32(0xFFFFFFFF)
    return (((crc >> np.uint32(15)) | (crc << np.uint32(17))) + np.uint32(0xA282EAD8)).astype(
        np.uint32)


def scan_offsets(path: str) -> np.ndarray:
    """Record offsets of a TFRecord file by walking the frame headers: int64 [count + 1], the
    file size last. Checks every header's CRC (vectorised) and that the last record ends at the
    end of the file.

    Raises NotRecordsError naming the file and the byte where the framing breaks (a text file,
    a truncated copy, a corrupt length)."""
    size = os.path.getsize(path)
    if size == 0:
        raise NotRecordsError(f"{path}: empty file, it holds no records; recreate it or leave it "
                              "out")
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        if size >= 12 and masked_crc32c_rows(np.frombuffer(mm, np.uint8, 8)[None])[0] != \
                struct.unpack_from("<I", mm, 8)[0]:
            sample = bytes(mm[:12]).decode("utf-8", errors="replace")
            looks = (f" (it starts like text: {sample!r})" if sample.isprintable() or "\n" in
                     sample else "")
            raise NotRecordsError(f"{path}: not a TFRecord file{looks}; write pre-training "
                                  "records from text with create_pretraining_data.py")
        offsets = []
        append = offsets.append
        unpack = struct.Struct("<Q").unpack_from
        offset = 0
        last = size - 12
        while offset <= last:
            append(offset)
            offset += unpack(mm, offset)[0] + _FRAME
        if offset != size:
            where = offsets[-1] if offsets else 0
            raise NotRecordsError(
                f"{path}: not a complete TFRecord file (the record at byte {where:,} runs past "
                f"the end, {size:,} bytes): it is truncated or corrupt; recreate it")
        starts = np.asarray(offsets, np.int64)
        data = np.frombuffer(mm, np.uint8)
        heads = data[starts[:, None] + np.arange(12)]  # [N, 12]
        stored = heads[:, 8:12].copy().view("<u4")[:, 0]
        bad = np.flatnonzero(masked_crc32c_rows(heads[:, :8]) != stored)
        del data, heads
    if len(bad):
        raise NotRecordsError(f"{path}: the record header at byte {int(starts[bad[0]]):,} is "
                              f"corrupt (length CRC mismatch; {len(bad)} such header(s)): "
                              "recreate the file")
    return np.append(starts, size)


def _feature_lengths(example_bytes: bytes) -> dict:
    """A serialized tf.train.Example -> {name: [kind, length]}, decoded with protobuf (no
    TensorFlow)."""
    from bert_tf.data.tfrecord import decode_example_lengths

    return decode_example_lengths(example_bytes)


def describe_schema(features: dict) -> dict:
    """{name: [kind, length]} of the first record -> the header's schema fields: features,
    masked (the masked_lm_* features are present), max_seq_length, max_predictions_per_seq
    (None without masks)."""
    masked = "masked_lm_positions" in features
    seq = features.get("input_ids", [None, None])[1]
    preds = features["masked_lm_positions"][1] if masked else None
    return {"features": {k: list(v) for k, v in sorted(features.items())}, "masked": masked,
            "max_seq_length": seq, "max_predictions_per_seq": preds}


def build_index(path: str, vocab: dict | None = None, created_by: str = "index_records.py",
                index_dir: str | None = None) -> ShardIndex:
    """Scans the shard at `path` and writes its index (beside it, or under `index_dir` when
    its folder cannot be written); returns it loaded.

    vocab: `vocab_fingerprint(...)` of the vocabulary the records were made with, if known.
    Raises NotRecordsError (not a complete TFRecord file, no records, not Examples),
    MissingIndexError (nowhere to write the index)."""
    target = writable_index_path(path, index_dir)
    offsets = scan_offsets(path)
    with open(path, "rb") as f:
        f.seek(12)
        first = f.read(int(offsets[1]) - _FRAME)
    try:
        features = _feature_lengths(first)
    except ValueError:
        raise NotRecordsError(f"{path}: its records are not tf.train.Example protos; it is not "
                              "a pre-training record file") from None
    header = describe_schema(features)
    header.update(vocab=vocab, created_by=created_by)
    write_index(path, offsets, header, target)
    return load_index(path, index_dir=index_dir)


class OffsetRecorder:
    """Collects the offsets of records as a writer frames them, then writes the index.

    rec = OffsetRecorder(); rec.add(framed_records) per write; rec.write(path, header) at the
    end. Offsets are kept as uint64 in an `array` (8 bytes a record)."""

    def __init__(self):
        import array

        self.offsets = array.array("Q", [0])

    def add(self, framed: list[bytes]) -> None:
        end = self.offsets[-1]
        for record in framed:
            end += len(record)
            self.offsets.append(end)

    def write(self, path: str, header: dict) -> str:
        offsets = np.frombuffer(self.offsets, np.uint64)
        if int(offsets[-1]) != os.path.getsize(path):
            raise RuntimeError(f"{path}: {os.path.getsize(path)} bytes written but the index "
                               f"counted {int(offsets[-1])}")
        return write_index(path, offsets, header)

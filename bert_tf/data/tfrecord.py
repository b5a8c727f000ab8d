"""TFRecord files of `tf.train.Example`s without TensorFlow: framing, CRC32C and a hand-encoded
protobuf, vectorised with numpy over many records at once.

Used by create_pretraining_data's worker processes, which must not import TensorFlow. The bytes
are those tf.io.TFRecordWriter would write for the same Example (tests read them back with
tf.data.TFRecordDataset + tf.io.parse_single_example).

TFRecord framing (tensorflow/core/lib/io/record_writer.cc), per record:
  uint64 length (little-endian) | uint32 masked_crc32c(length bytes) | data |
  uint32 masked_crc32c(data),
  with masked_crc(x) = ((crc >> 15) | (crc << 17)) + 0xa282ead8 (mod 2^32).

Example protobuf (tensorflow/core/example/{example,feature}.proto), as bytes:
  Example  { Features features = 1 }                      0x0a len Features
  Features { map<string, Feature> feature = 1 }           per entry: 0x0a len Entry
  Entry    { string key = 1; Feature value = 2 }          0x0a len key 0x12 len Feature
  Feature  { FloatList float_list = 2; Int64List int64_list = 3 }   0x12 / 0x1a len List
  List     { repeated value = 1 [packed] }                0x0a len packed-values
Int64 values are varints (negative ones as 10-byte two's complement), floats 4 bytes
little-endian. Map entries are written in one fixed order (the order of the features dict),
so equal features always give equal bytes.
"""

from __future__ import annotations

import struct
from typing import BinaryIO, Iterator, Mapping

import google_crc32c
import numpy as np

_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC32C of `data` (uint32)."""
    crc = google_crc32c.value(data)
    return ((((crc >> 15) | (crc << 17)) & _U32) + _MASK_DELTA) & _U32


_LENGTH_HEADERS: dict[int, bytes] = {}




def frame_record(data: bytes) -> bytes:
    """One TFRecord: length, its masked CRC, `data`, its masked CRC."""
    header = _LENGTH_HEADERS.get(len(data))
    if header is None:  # record lengths repeat: each header is computed once
        length = struct.pack("<Q", len(data))
        header = length + struct.pack("<I", masked_crc32c(length))
        if len(_LENGTH_HEADERS) < 1 << 16:
            _LENGTH_HEADERS[len(data)] = header
    return b"".join((header, data, struct.pack("<I", masked_crc32c(data))))


def varint(value: int) -> bytes:
    """Protobuf base-128 varint of one non-negative int (lengths, tags)."""
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def varint_rows(values: np.ndarray) -> tuple[bytes, np.ndarray]:
    """Packed varints of every row of an integer matrix, vectorised.

    Args:
      values: integer array [R, L] (any int dtype; negative values take 10 bytes, as
        protobuf writes int64).
    Returns:
      (flat, row_bytes): `flat` holds the rows' varints one row after the other;
      row_bytes int64 [R] is each row's byte count, so row r is
      flat[offset_r : offset_r + row_bytes[r]] with offset_r = sum(row_bytes[:r]).
    """
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"varint_rows takes a [rows, length] matrix, got shape {values.shape}")
    u = values.astype(np.int64).view(np.uint64)
    if u.size == 0:
        return b"", np.zeros(values.shape[0], np.int64)
    top = int(u.max())
    if top < 0x80:  # one byte per value, the common case for masks and labels
        return u.astype(np.uint8).tobytes(), np.full(values.shape[0], values.shape[1], np.int64)
    width = (top.bit_length() + 6) // 7  # bytes of the longest varint, <= 10
    # 32-bit arithmetic when it suffices (token ids): half the memory traffic of 64-bit.
    if top < 1 << 32:
        u = u.astype(np.uint32)
    nbytes = np.ones(u.shape, np.uint8)
    for k in range(1, width):
        nbytes += u >= (1 << (7 * k))
    groups = np.empty(u.shape + (width,), np.uint8)  # [R, L, width]: 7-bit groups, low first
    for k in range(width):
        groups[..., k] = (u >> (7 * k)) & 0x7F
        if k < width - 1:
            groups[..., k] |= (nbytes > k + 1).view(np.uint8) << 7  # continuation bit
    flat = groups[np.arange(width) < nbytes[..., None]]  # row-major: rows, values, bytes
    return flat.tobytes(), nbytes.sum(axis=1, dtype=np.int64)


def _split(buffer: bytes, lengths: np.ndarray) -> list[bytes]:
    """buffer cut into consecutive pieces of the given lengths."""
    ends = np.cumsum(lengths).tolist()
    return [buffer[s:e] for s, e in zip([0] + ends[:-1], ends)]


class ExampleEncoder:
    """Serialises `tf.train.Example`s of fixed features, many records per call.

    encoder = ExampleEncoder(["input_ids", "masked_lm_weights"], float_features={"masked_lm_weights"})
    encoder.encode({"input_ids": int64 [R, S], "masked_lm_weights": float32 [R, P]})
    -> list of R serialised Examples (bytes), map entries in the order of `names`.

    The values are encoded for all records at once (`varint_rows`); per record, Python joins
    one header and one slice of values per feature. (Assembling whole records in numpy as
    well, with a vectorised gather, measured no faster.)
    """

    def __init__(self, names: list[str], float_features: set[str] | frozenset = frozenset()):
        self.names = list(names)
        self.float_features = set(float_features)
        unknown = self.float_features - set(self.names)
        if unknown:
            raise ValueError(f"float_features {sorted(unknown)} are not among {self.names}")
        # Map-entry headers by (feature, packed length): lengths repeat, so each is built once.
        self._headers: dict[tuple[str, int], bytes] = {}

    def _entry_header(self, name: str, packed_len: int) -> bytes:
        """The bytes of one map entry of `name` up to its packed values (packed_len bytes)."""
        header = self._headers.get((name, packed_len))
        if header is None:
            key = name.encode("utf-8")
            list_tag = b"\x12" if name in self.float_features else b"\x1a"
            # An empty packed field is not written at all, as protobuf does.
            value_list = (b"\x0a" + varint(packed_len)) if packed_len else b""
            feature = list_tag + varint(len(value_list) + packed_len) + value_list
            entry = b"\x0a" + varint(len(key)) + key + b"\x12" + varint(len(feature) + packed_len) \
                + feature
            header = b"\x0a" + varint(len(entry) + packed_len) + entry
            self._headers[(name, packed_len)] = header
        return header

    def encode(self, features: Mapping[str, np.ndarray]) -> list[bytes]:
        """Serialised Examples, one per row of the [R, L_name] arrays in `features`."""
        columns = []  # per feature: R map entries (header + packed values)
        rows = None
        for name in self.names:
            array = np.asarray(features[name])
            if array.ndim == 1:
                array = array[:, None]
            if rows is None:
                rows = array.shape[0]
            elif array.shape[0] != rows:
                raise ValueError(f"feature {name!r} has {array.shape[0]} rows, expected {rows}")
            if name in self.float_features:
                flat = array.astype("<f4").tobytes()
                row_bytes = np.full(rows, array.shape[1] * 4, np.int64)
            else:
                flat, row_bytes = varint_rows(array)
            lengths = row_bytes.tolist()
            headers = {n: self._entry_header(name, n) for n in set(lengths)}
            columns.append([headers[n] + v for n, v in zip(lengths, _split(flat, row_bytes))])
        examples = []
        for parts in zip(*columns):
            body = b"".join(parts)
            examples.append(b"\x0a" + varint(len(body)) + body)
        return examples

    def encode_records(self, features: Mapping[str, np.ndarray]) -> list[bytes]:
        """`encode`, each Example framed as a TFRecord (ready to write)."""
        return [frame_record(example) for example in self.encode(features)]


def write_records(stream: BinaryIO, records: list[bytes]) -> None:
    """Frames and writes serialised records to an open binary file."""
    stream.write(b"".join(frame_record(r) for r in records))


def iter_framed(path: str) -> Iterator[bytes]:
    """The framed records (header, data and CRCs, as written) of a file this process wrote
    itself, without checking the CRCs: for moving whole records between temporary files."""
    with open(path, "rb") as f:
        while True:
            head = f.read(12)
            if not head:
                return
            (length,) = struct.unpack("<Q", head[:8])
            yield head + f.read(length + 4)


def read_records(path: str) -> Iterator[bytes]:
    """The records of a TFRecord file, checking both CRCs; for tests and tools, not speed.

    Raises ValueError naming the file and byte offset on a bad CRC or a truncated record.
    """
    with open(path, "rb") as f:
        offset = 0
        while True:
            head = f.read(12)
            if not head:
                return
            if len(head) < 12:
                raise ValueError(f"{path}: truncated record header at byte {offset}")
            length_bytes, (length_crc,) = head[:8], struct.unpack("<I", head[8:])
            if masked_crc32c(length_bytes) != length_crc:
                raise ValueError(f"{path}: bad length CRC at byte {offset}")
            (length,) = struct.unpack("<Q", length_bytes)
            data = f.read(length)
            tail = f.read(4)
            if len(data) < length or len(tail) < 4:
                raise ValueError(f"{path}: truncated record at byte {offset}")
            if masked_crc32c(data) != struct.unpack("<I", tail)[0]:
                raise ValueError(f"{path}: bad data CRC at byte {offset}")
            offset += 16 + length
            yield data


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """(value, next position) of the protobuf varint at data[pos:]. Raises ValueError when it
    runs past the end."""
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(data: bytes):
    """(field number, wire type, payload) of each field of a protobuf message; payload is the
    bytes of a length-delimited field, the value of a varint, the raw bytes of a fixed one."""
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(data, pos)
        elif wire == 2:
            length, pos = _read_varint(data, pos)
            value = data[pos:pos + length]
            if len(value) < length:
                raise ValueError("truncated field")
            pos += length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value = data[pos:pos + size]
            pos += size
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, wire, value


def decode_example_lengths(example: bytes) -> dict[str, list]:
    """A serialized `tf.train.Example` -> {feature name: [kind, number of values]}, kind one of
    "bytes_list", "float_list", "int64_list" (None for a feature with no list), without
    TensorFlow: what a record index stores about the schema. Raises ValueError on bytes that
    are not an Example."""
    kinds = {1: "bytes_list", 2: "float_list", 3: "int64_list"}
    out = {}
    data = bytes(example)
    for number, wire, features in _fields(data):
        if number != 1 or wire != 2:
            raise ValueError("not a tf.train.Example")
        for number, wire, entry in _fields(features):
            if number != 1 or wire != 2:
                raise ValueError("not a tf.train.Features map")
            name, kind, count = None, None, 0
            for number, wire, value in _fields(entry):
                if number == 1 and wire == 2:
                    name = value.decode("utf-8")
                elif number == 2 and wire == 2:
                    for list_number, list_wire, values in _fields(value):
                        if list_number not in kinds or list_wire != 2:
                            raise ValueError("not a tf.train.Feature")
                        kind = kinds[list_number]
                        for _, wire, item in _fields(values):
                            if kind == "int64_list" and wire == 2:  # packed varints
                                count += sum(1 for b in item if b < 0x80)
                            elif kind == "float_list" and wire == 2:  # packed floats
                                count += len(item) // 4
                            else:
                                count += 1
            if name is None:
                raise ValueError("a feature without a name")
            out[name] = [kind, count]
    return out

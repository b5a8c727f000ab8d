"""Pre-training records at the recipe's scale: opened through their indexes, read by offset.

    records = open_pretraining_records(files, max_seq_length, max_predictions_per_seq)
    batches = pretraining_batches(records, batch_size, seed, rank=r, num_workers=W, ...)
    for micro_index, batch in batches(start_step): ...

What it costs, whatever the corpus size:
* Start-up reads each shard's index header (`record_index`), never the records: counts, schema,
  lengths and the vocabulary fingerprint come from there. A shard without an index gets one
  built once (`ensure_indexes`, frame headers only: 0.7-2 GB/s here, cold and warm).
* Worker r of W reads only the records of its own slices of each global batch: 1/W of the
  bytes of an epoch, each slice one or two sequential ranges (`record_order`).
* Resuming at step k computes where step k's records are (O(1), `EpochOrder`) and seeks there:
  the first batch of a resume at 95% of an epoch comes as fast as at step 0.
* Every record's CRC is checked as it is read. A bad one raises CorruptRecordError naming the
  file and byte offset, or, with skip_corrupt=True, is left out of its batch and counted.

The data of step k is a function of (seed, k, global batch G, block_records) alone: global
batch k of epoch e is positions [k G, (k + 1) G) of `EpochOrder(N, block_records, seed)`'s
epoch e, and micro-batch a of worker r is its slice a x W + r of `batch_size` positions. So 2
workers, or 1 worker accumulating 2 micro-batches, see the same records, in the same slices.
An epoch is N // G steps; the last N mod G positions of each epoch are not used.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import os
import struct
import threading

import numpy as np

from bert_tf.data import record_index
from bert_tf.data.pretraining import DYNAMIC_MASKING_FEATURES, PRETRAINING_SCHEMA, \
    feature_lengths
from bert_tf.data.record_order import EpochOrder, runs

logger = logging.getLogger("bert_tf")

_FLAG_OF_LENGTH = {"max_seq_length": "--max_seq_length",
                   "max_predictions_per_seq": "--max_predictions_per_seq"}
DEFAULT_BLOCK_RECORDS = 64


class RecordError(ValueError):
    """Pre-training records that cannot be read as asked: the message names the file and what
    differs (schema, lengths, corruption, index) and what to do."""


class CorruptRecordError(RecordError):
    """A record whose CRC (or frame) is wrong, found while reading it: .path, .offset (byte of
    the record's frame in the file)."""

    def __init__(self, path: str, offset: int, why: str):
        self.path, self.offset = path, int(offset)
        super().__init__(f"{path}: the record at byte {offset:,} is corrupt ({why}). Restore "
                         "or recreate the file (if `python index_records.py build --rebuild` "
                         "on it succeeds, its index was damaged, not the file), or pass "
                         "--skip_corrupt_records to leave such records out (they are counted "
                         "in metrics.jsonl); `python index_records.py verify` lists every bad "
                         "record")


# What create_pretraining_data.py and the index command write beside the records; a glob over
# the records skips them.
_NOT_RECORDS = (".summary.json", ".partial", ".idx", ".tmp")


def expand_files(patterns) -> list[str]:
    """Comma-separated globs (or a list of them) -> sorted existing files. Raises RecordError
    naming a pattern that matches nothing.

    A glob skips what create_pretraining_data.py writes beside its records, the
    `*.summary.json` files, the `*.idx` record indexes and an unfinished run's `*.partial`
    files and folders (`out/train.tfrecord*` means the records); a file named exactly is
    kept."""
    import glob

    if isinstance(patterns, str):
        patterns = [patterns]
    files = []
    for pattern in (p.strip() for item in patterns for p in item.split(",")):
        if not pattern:
            continue
        matched = sorted(glob.glob(pattern))
        if not glob.has_magic(pattern) and os.path.isdir(pattern):
            raise RecordError(f"{pattern} is a folder: pass the files in it, e.g. "
                              f"'{os.path.join(pattern, '*.tfrecord*')}' (quoted)")
        if glob.has_magic(pattern):
            matched = [f for f in matched if not f.endswith(_NOT_RECORDS)
                       and not os.path.isdir(f)]
        if not matched:
            raise RecordError(f"{pattern}: no file matches (check the path; globs and comma "
                              "lists are accepted)")
        files += matched
    if not files:
        raise RecordError("no input files given")
    return sorted(dict.fromkeys(files))


# -- indexes ---------------------------------------------------------------------------------------

def _build_one(path: str, vocab: dict | None = None,
               index_dir: str | None = None) -> tuple[str, str | None]:
    """Worker of ensure_indexes: (path, None) when built, (path, message) when it failed."""
    try:
        record_index.build_index(path, vocab=vocab, index_dir=index_dir)
        return path, None
    except (record_index.IndexError_, OSError) as e:
        return path, str(e)


def ensure_indexes(files, progress: bool = True, threads: int | None = None,
                   vocab: dict | None = None, rebuild: bool = False,
                   index_dir: str | None = None) -> list[str]:
    """Builds the index of every file that has none, or of every file with rebuild=True;
    returns the files it indexed.

    A stale index (made for a shard of another size, or of another format) raises RecordError
    saying what to run: the shard may be cut short, and a silent rebuild would drop the
    vocabulary fingerprint. vocab: the `record_index.vocab_fingerprint` to record in the
    indexes built (the vocabulary the records were made with, when the user knows it).
    index_dir: where indexes go (and are looked for) when a shard's folder cannot be written
    (a read-only mount). Files are indexed in parallel threads, with a progress bar over bytes:
    the walk runs at ~3 GB/s on one core from the page cache here (~0.8 GB/s from a cold disk),
    so threads overlap reads from cold or network storage; no processes (nothing to spawn or
    fork under TensorFlow).
    Raises RecordError naming the first file that is not a complete TFRecord file."""
    todo = list(files) if rebuild else []
    for path in [] if rebuild else files:
        try:
            record_index.load_index(path, index_dir=index_dir)
        except record_index.MissingIndexError:
            todo.append(path)
        except record_index.IndexError_ as e:  # stale: never rebuilt behind the user's back
            raise RecordError(str(e)) from None
    if not todo:
        return []
    total = sum(os.path.getsize(p) for p in todo)
    logger.info("indexing %d record file(s) (%.2f GB; frame headers only, once: the index is "
                "kept beside each file)", len(todo), total / 1e9)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=total, unit="B", unit_scale=True, desc="index", dynamic_ncols=True)
    threads = threads or min(len(todo), 4)
    try:
        with concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="index") as pool:
            for path, error in pool.map(lambda p: _build_one(p, vocab, index_dir), todo):
                if error is not None:
                    pool.shutdown(cancel_futures=True)
                    raise RecordError(error)
                if bar is not None:
                    bar.update(os.path.getsize(path))
    finally:
        if bar is not None:
            bar.close()
    return todo


# -- the record set --------------------------------------------------------------------------------

class PretrainingRecords:
    """Shards of pre-training records, numbered 0..N-1 in file order, read by record number.

    files: the shards (sorted); indexes: their ShardIndex; counts: int64 [F]; records: N;
    masked: whether they carry masked_lm_* features; max_seq_length, max_predictions_per_seq
    (None without masks); vocab: {"sha256", "size"} of the vocabulary they were made with, or
    None when no index knows it. bytes_read counts the bytes read so far (all threads)."""

    def __init__(self, indexes: list):
        self.indexes = list(indexes)
        self.files = [ix.path for ix in self.indexes]
        self.counts = np.array([ix.records for ix in self.indexes], np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)])
        self.records = int(self.starts[-1])
        first = self.indexes[0].header
        self.masked = bool(first["masked"])
        self.max_seq_length = first["max_seq_length"]
        self.max_predictions_per_seq = first["max_predictions_per_seq"]
        vocabs = {ix.path: ix.header.get("vocab") for ix in self.indexes}
        known = {v["sha256"]: (p, v) for p, v in vocabs.items() if v}
        if len(known) > 1:
            (p1, v1), (p2, v2) = list(known.values())[:2]
            raise RecordError(f"{p1} and {p2} were made with different vocabularies "
                              f"({v1['size']} and {v2['size']} tokens, sha256 "
                              f"{v1['sha256'][:12]} and {v2['sha256'][:12]}): train on records "
                              "of one vocabulary")
        self.vocab = next(iter(known.values()))[1] if known else None
        self.bytes_read = 0
        self._lock = threading.Lock()
        self._fds: dict[int, int] = {}

    def __len__(self):
        return self.records

    def _fd(self, f: int) -> tuple[int, bool]:
        """(file descriptor of file f, whether the caller closes it after use). Descriptors
        are kept open up to half the process's open-file limit, never closed while the set is
        in use (another thread may be reading through one); beyond that, a read opens its own."""
        fd = self._fds.get(f)
        if fd is not None:
            return fd, False
        with self._lock:
            fd = self._fds.get(f)
            if fd is not None:
                return fd, False
            fd = os.open(self.files[f], os.O_RDONLY)
            if len(self._fds) < _max_open_files():
                self._fds[f] = fd
                return fd, False
            return fd, True

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()

    def locate(self, first: int, stop: int) -> list[tuple[int, int, int]]:
        """Global records [first, stop) -> [(file number, first, stop) within the file]."""
        out = []
        f = int(np.searchsorted(self.starts, first, side="right")) - 1
        while first < stop:
            end = min(stop, int(self.starts[f + 1]))
            if end > first:
                out.append((f, first - int(self.starts[f]), end - int(self.starts[f])))
            first = end
            f += 1
        return out

    def read(self, first: int, stop: int, skip_corrupt: bool = False) -> tuple[list, int]:
        """The serialized Examples of global records [first, stop), CRCs checked: one read
        (pread) per file the range touches. Returns (records, number skipped as corrupt).
        Raises CorruptRecordError unless skip_corrupt."""
        out, skipped = [], 0
        for f, a, b in self.locate(first, stop):
            offsets = self.indexes[f].offsets[a:b + 1].astype(np.int64)
            _check_offsets(self.indexes[f], offsets, a)
            base = int(offsets[0])
            length = int(offsets[-1]) - base
            fd, owned = self._fd(f)
            try:
                data = os.pread(fd, length, base)
            finally:
                if owned:
                    os.close(fd)
            with self._lock:
                self.bytes_read += len(data)
            if len(data) < length:
                raise RecordError(f"{self.files[f]}: ends at byte {base + len(data):,}, its "
                                  f"index says {int(offsets[-1]):,}: the file was cut short; "
                                  f"restore it, or rebuild its index with "
                                  f"{record_index.build_command(self.files[f])}")
            got, bad = _split_records(data, offsets - base)
            for i, why in bad:
                if not skip_corrupt:
                    raise CorruptRecordError(self.files[f], base + int(offsets[i] - base), why)
                logger.warning("%s: skipped the corrupt record at byte %d (%s)", self.files[f],
                               int(offsets[i]), why)
            skipped += len(bad)
            out += got
        return out, skipped


def _check_offsets(ix, offsets: np.ndarray, first: int) -> None:
    """The index's offsets of records [first, first + len - 1) must be increasing by at least a
    frame (16 bytes) and end inside the file; else the INDEX is damaged (the shard may be
    fine): RecordError naming it and the rebuild command."""
    if len(offsets) and (np.any(np.diff(offsets) < 16) or offsets[0] < 0 or
                         offsets[-1] > ix.header["file_size"]):
        raise RecordError(
            f"{ix.index_file}: the offsets of records {first:,} to {first + len(offsets) - 2:,} "
            f"of {ix.path} are damaged (not increasing, or past its end): rebuild the index "
            f"with {record_index.build_command(ix.path, True)}")


def _max_open_files() -> int:
    """How many record files a PretrainingRecords keeps open: half the soft limit on open
    files (raised to the hard limit first, once), at least 64."""
    global _MAX_OPEN
    if _MAX_OPEN is None:
        try:
            import resource

            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            if hard != resource.RLIM_INFINITY and soft < hard:
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
                soft = hard
            _MAX_OPEN = max(64, min(soft, 1 << 16) // 2)
        except (ImportError, ValueError, OSError):
            _MAX_OPEN = 64
    return _MAX_OPEN


_MAX_OPEN = None


def _split_records(data: bytes, offsets: np.ndarray) -> tuple[list, list]:
    """Framed records at `offsets` (relative, [n + 1]) of `data` -> (payloads that pass their
    checks, [(i, why)] of those that do not)."""
    from bert_tf.data.tfrecord import masked_crc32c

    view = memoryview(data)
    good, bad = [], []
    unpack_len = struct.Struct("<Q").unpack_from
    unpack_crc = struct.Struct("<I").unpack_from
    starts = offsets[:-1].tolist()
    ends = offsets[1:].tolist()
    for i, (s, e) in enumerate(zip(starts, ends)):
        if masked_crc32c(data[s:s + 8]) != unpack_crc(view, s + 8)[0]:
            bad.append((i, "frame header CRC mismatch"))
            continue
        if unpack_len(view, s)[0] != e - s - 16:
            bad.append((i, "its frame length disagrees with the index: the shard or its "
                           "index is damaged"))
            continue
        payload = data[s + 12:e - 4]
        if masked_crc32c(payload) != unpack_crc(view, e - 4)[0]:
            bad.append((i, "data CRC mismatch"))
            continue
        good.append(payload)
    return good, bad


def _check_schema(ix, max_seq_length: int, max_predictions_per_seq: int | None,
                  reference: str | None = None) -> None:
    """Google's schema with the flags' lengths, from the index header. Raises RecordError.
    reference: the file the lengths come from when they are not flags (verify)."""
    path, found = ix.path, ix.header["features"]
    file_masked = "masked_lm_positions" in found
    names = set(PRETRAINING_SCHEMA if file_masked else DYNAMIC_MASKING_FEATURES)
    if set(found) != names:
        missing = sorted(names - set(found))
        extra = sorted(set(found) - names)
        raise RecordError(
            f"{path}: not Google's pre-training schema (missing {missing or 'nothing'}, "
            f"unexpected {extra or 'nothing'}); write it with create_pretraining_data.py")
    for name in (n for n in PRETRAINING_SCHEMA if n in names):  # schema order
        length_kind, dtype = PRETRAINING_SCHEMA[name]
        kind, length = found[name]
        expect_kind = "float_list" if dtype == "float32" else "int64_list"
        if kind != expect_kind:
            raise RecordError(f"{path}: feature {name} is a {kind}, Google's schema has an "
                              f"{expect_kind}")
        if length_kind == "max_predictions_per_seq" and max_predictions_per_seq is None:
            continue
        want = {"max_seq_length": max_seq_length,
                "max_predictions_per_seq": max_predictions_per_seq}.get(length_kind, length_kind)
        if length != want and reference is not None:
            raise RecordError(f"{path}: {name} has length {length} but {reference} has {want}: "
                              "records of one length per command (check each kind apart)")
        if length != want:
            flag = _FLAG_OF_LENGTH.get(length_kind, name)
            raise RecordError(
                f"{path}: {name} has length {length} but {flag}={want}: pass {flag}={length} "
                "(the value the records were written with) or recreate the records")


def open_pretraining_records(files, max_seq_length: int,
                             max_predictions_per_seq: int | None = None,
                             build_missing: bool = True, progress: bool = True,
                             index_dir: str | None = None,
                             reference: str | None = None) -> PretrainingRecords:
    """The records of `files` through their indexes, checked against the flags.

    Reads one index header per file (and builds the missing indexes first when build_missing;
    index_dir: see `ensure_indexes`).
    Raises RecordError naming the file: no index (build_missing False), a stale index, not a
    TFRecord file, another schema or length, records with and without masks mixed, no records,
    records of two vocabularies."""
    files = list(files)
    loaded, missing = {}, []
    for path in files:  # each index header is read once
        try:
            loaded[path] = record_index.load_index(path, index_dir=index_dir)
        except record_index.MissingIndexError as e:
            if not build_missing:
                raise RecordError(str(e)) from None
            missing.append(path)
        except record_index.IndexError_ as e:
            raise RecordError(str(e)) from None
    if missing:
        ensure_indexes(missing, progress=progress, index_dir=index_dir)
        for path in missing:
            loaded[path] = record_index.load_index(path, index_dir=index_dir)
    indexes = []
    masked = None
    for path in files:
        ix = loaded[path]
        if ix.records == 0:
            raise RecordError(f"{path}: holds no records; recreate it or leave it out")
        _check_schema(ix, max_seq_length, max_predictions_per_seq, reference)
        if masked is not None and ix.header["masked"] != masked:
            raise RecordError(f"{path}: mixes records with and without masks among the input "
                              "files; use one kind")
        masked = ix.header["masked"]
        indexes.append(ix)
    if not indexes:
        raise RecordError("no input files given")
    return PretrainingRecords(indexes)


# -- parsing ---------------------------------------------------------------------------------------

def parse_pretraining(serialized, max_seq_length: int, max_predictions_per_seq: int | None):
    """A batch of serialized Examples [B] -> dict of int32 [B,S] / [B,P] tensors,
    masked_lm_weights float32 [B,P], next_sentence_labels int32 [B]. Without
    max_predictions_per_seq only the unmasked features are parsed."""
    import tensorflow as tf

    lengths = feature_lengths(max_seq_length, max_predictions_per_seq or 0,
                              dynamic_masking=max_predictions_per_seq is None)
    spec = {name: tf.io.FixedLenFeature([length], tf.as_dtype(dtype))
            for name, (length, dtype) in lengths.items()}
    parsed = tf.io.parse_example(serialized, spec)
    out = {}
    for name, value in parsed.items():
        out[name] = tf.cast(value, tf.int32) if value.dtype == tf.int64 else value
    out["next_sentence_labels"] = out["next_sentence_labels"][:, 0]
    return out


def _parser(max_seq_length: int, max_predictions_per_seq: int | None, masker):
    """(serialized [B] strings, key int64) -> batch, one traced graph for every call."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string),
                                  tf.TensorSpec([], tf.int64)])
    def parse(serialized, key):
        batch = parse_pretraining(serialized, max_seq_length,
                                  None if masker is not None else max_predictions_per_seq)
        return masker(batch, key) if masker is not None else batch

    return parse


def _prefetched(make, keys, threads: int, depth: int):
    """Yields make(key) for each key in order, computed up to `depth` ahead on `threads`
    threads; an exception in make is raised here, at its key's turn."""
    pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="records")
    pending = collections.deque()
    keys = iter(keys)
    try:
        for key in keys:
            pending.append(pool.submit(make, key))
            if len(pending) >= depth:
                break
        while pending:
            result = pending.popleft().result()
            for key in keys:
                pending.append(pool.submit(make, key))
                break
            yield result
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def pretraining_batches(records: PretrainingRecords, batch_size: int, seed: int,
                        rank: int = 0, num_workers: int = 1, accumulation: int = 1,
                        block_records: int = DEFAULT_BLOCK_RECORDS, masker=None,
                        skip_corrupt: bool = False, threads: int = 2, prefetch: int = 8):
    """The training loop's batch source over indexed pre-training records.

    Returns `batches(start_step)` -> endless iterator of (micro_index, batch), batch as in
    `parse_pretraining` ([batch_size, ...] tensors; fewer rows when corrupt records were
    skipped), micro_index = step x accumulation + a. See the module docstring for the order.
    Worker `rank` of `num_workers` reads only its own slices. `batches.stats()` -> counters
    for metrics.jsonl ({"corrupt_records_skipped": n}).

    `masker` (a DynamicMasker), if given, draws the masked_lm_* features for records written
    without them. Its key is the micro-batch's slice of the global batch counted from the first
    step (step x accumulation x workers + a x workers + rank): masks are a function of (seed,
    epoch, position in the epoch), fresh every epoch, the same after a resume and on any worker
    layout of the same global batch.

    Raises RecordError when the records do not fill one global batch."""
    global_batch = batch_size * num_workers * accumulation
    total = records.records
    per_epoch = total // global_batch
    if per_epoch == 0:
        raise RecordError(f"{total} records in {len(records.files)} file(s) do not fill one "
                          f"global batch of {global_batch} (train_batch_size {batch_size} x "
                          f"{num_workers} workers x {accumulation} accumulation steps): lower "
                          "--train_batch_size or write more records")
    order = EpochOrder(total, block_records, seed)
    parse = _parser(records.max_seq_length, records.max_predictions_per_seq, masker)
    skipped = [0]  # counted as batches are handed out, not as they are read ahead

    def micro_batch(micro_index: int):
        import tensorflow as tf

        step, a = divmod(micro_index, accumulation)
        epoch, k = divmod(step, per_epoch)
        slice_index = a * num_workers + rank
        start = k * global_batch + slice_index * batch_size
        serialized, bad = [], 0
        for first, stop in runs(order.records(epoch, start, start + batch_size)):
            got, n_bad = records.read(first, stop, skip_corrupt)
            serialized += got
            bad += n_bad
        key = step * accumulation * num_workers + slice_index
        return micro_index, parse(tf.constant(serialized, tf.string),
                                  tf.constant(key, tf.int64)), bad

    def batches(start_step: int):
        import itertools

        for micro_index, batch, bad in _prefetched(
                micro_batch, itertools.count(start_step * accumulation), threads, prefetch):
            skipped[0] += bad
            yield micro_index, batch

    batches.records = total
    batches.steps_per_epoch = per_epoch
    batches.stats = lambda: {"corrupt_records_skipped": skipped[0]}
    return batches


def eval_pretraining_batches(records: PretrainingRecords, batch_size: int,
                             max_steps: int | None = None, masker=None,
                             skip_corrupt: bool = False, threads: int = 2):
    """Held-out records in file order, once, in batches of batch_size (the last may be
    smaller); at most max_steps batches. Yields parsed batches."""
    import tensorflow as tf

    parse = _parser(records.max_seq_length, records.max_predictions_per_seq, masker)
    n = records.records if not max_steps else min(records.records, max_steps * batch_size)

    def batch(i):
        serialized, _ = records.read(i * batch_size, min(n, (i + 1) * batch_size), skip_corrupt)
        return parse(tf.constant(serialized, tf.string), tf.constant(i, tf.int64))

    yield from _prefetched(batch, range(-(-n // batch_size)), threads, 4)

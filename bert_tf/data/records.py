"""Feature tables and tf.data input pipelines for fine-tuning.

Features are tokenized once and cached as int32 arrays. Training batches are padded to a few
length buckets (multiples of `bucket_width`) rather than always to max_seq_length, so short-
sentence tasks do not pay for 128 positions, while XLA sees only a handful of shapes. The order is
a pure function of (seed, epoch): a resumed run reads exactly the batches an uninterrupted one
would, and every Horovod rank takes its own slice of the same global batch.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

SEQUENCE_FEATURES = ("input_ids", "input_mask", "segment_ids")


@dataclasses.dataclass
class FeatureTable:
    """Padded arrays [N, max_seq_length] for the sequence features, labels, and true lengths."""
    arrays: dict
    lengths: np.ndarray

    def __len__(self):
        return len(self.lengths)

    @classmethod
    def from_features(cls, features: list[dict], max_seq_length: int, label_dtype="int32",
                      token_labels: bool = False) -> "FeatureTable":
        n = len(features)
        if n == 0:
            raise ValueError("no examples to build features from")
        arrays = {k: np.zeros((n, max_seq_length), np.int32) for k in SEQUENCE_FEATURES}
        if token_labels:
            arrays["label_ids"] = np.full((n, max_seq_length), -1, np.int32)
        elif "label_ids" in features[0]:
            arrays["label_ids"] = np.zeros((n,), label_dtype)
        lengths = np.zeros((n,), np.int32)
        for i, f in enumerate(features):
            length = len(f["input_ids"])
            if length > max_seq_length:
                raise ValueError(f"feature {i} has {length} tokens > max_seq_length "
                                 f"{max_seq_length}")
            lengths[i] = length
            for k in SEQUENCE_FEATURES:
                arrays[k][i, :length] = f[k]
            if token_labels:
                arrays["label_ids"][i, :length] = f["label_ids"]
            elif "label_ids" in arrays:
                arrays["label_ids"][i] = f["label_ids"]
        return cls(arrays, lengths)

    def batch(self, rows: np.ndarray, width: int) -> dict:
        out = {}
        for k, v in self.arrays.items():
            out[k] = v[rows, :width] if v.ndim == 2 else v[rows]
        return out


def bucket(length: int, bucket_width: int, max_seq_length: int) -> int:
    return min(max_seq_length, -(-int(length) // bucket_width) * bucket_width)


def epoch_global_batches(table: FeatureTable, global_batch: int, seed: int, epoch: int,
                         sort_window: int = 50) -> list[np.ndarray]:
    """The epoch's global batches (row indexes), remainder dropped. Rows are shuffled, then
    sorted by length inside windows of `sort_window` batches so each batch pads little, and the
    batches are shuffled again so lengths do not come in order."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(table))
    n_batches = len(order) // global_batch
    order = order[:n_batches * global_batch]
    batches = []
    window = global_batch * sort_window
    for start in range(0, len(order), window):
        chunk = order[start:start + window]
        chunk = chunk[np.argsort(table.lengths[chunk], kind="stable")]
        batches += [chunk[i:i + global_batch] for i in range(0, len(chunk), global_batch)]
    perm = rng.permutation(len(batches))
    return [batches[i] for i in perm]


def train_micro_batches(table: FeatureTable, batch_size: int, seed: int, start_step: int = 0,
                        rank: int = 0, num_workers: int = 1, accumulation: int = 1,
                        bucket_width: int = 32, max_seq_length: int = 128):
    """Endless micro-batches for this worker, from optimizer step `start_step` on.

    One optimizer step reads a global batch of batch_size x num_workers x accumulation rows,
    padded to one bucket width; it is cut into accumulation x num_workers slices of batch_size
    rows, and micro-batch a of worker r is slice a * num_workers + r. So 2 workers x 4 rows, or
    1 worker x 4 rows x 2 accumulation steps, see exactly the rows of one 8-row batch.
    Yields (micro-batch index, batch dict); index = step * accumulation + a."""
    global_batch = batch_size * num_workers * accumulation
    per_epoch = len(table) // global_batch
    if per_epoch == 0:
        raise ValueError(f"{len(table)} training examples do not fill one global batch of "
                         f"{global_batch} (train_batch_size {batch_size} x {num_workers} "
                         f"workers x {accumulation} accumulation steps): lower "
                         "--train_batch_size")
    step = start_step
    epoch, offset = divmod(start_step, per_epoch)
    while True:
        batches = epoch_global_batches(table, global_batch, seed, epoch)
        for rows in batches[offset:]:
            width = bucket(table.lengths[rows].max(), bucket_width, max_seq_length)
            for a in range(accumulation):
                k = a * num_workers + rank
                yield step * accumulation + a, table.batch(
                    rows[k * batch_size:(k + 1) * batch_size], width)
            step += 1
        epoch, offset = epoch + 1, 0


def eval_batches(table: FeatureTable, batch_size: int, bucket_width: int = 32,
                 max_seq_length: int = 128):
    """Every row once, in order, each batch padded to its own bucket. Yields (rows, batch)."""
    for start in range(0, len(table), batch_size):
        rows = np.arange(start, min(start + batch_size, len(table)))
        width = bucket(table.lengths[rows].max(), bucket_width, max_seq_length)
        yield rows, table.batch(rows, width)


def to_dataset(generator_fn, table: FeatureTable, with_index: bool = True):
    """Wrap a batch generator in tf.data with prefetch, so batching overlaps the train step."""
    import tensorflow as tf

    spec = {}
    for k, v in table.arrays.items():
        shape = (None, None) if v.ndim == 2 else (None,)
        spec[k] = tf.TensorSpec(shape, tf.as_dtype(v.dtype))
    signature = (tf.TensorSpec((), tf.int64), spec) if with_index else spec
    ds = tf.data.Dataset.from_generator(generator_fn, output_signature=signature)
    return ds.prefetch(tf.data.AUTOTUNE)


def table_batches(table: FeatureTable, batch_size: int, seed: int, rank: int = 0,
                  num_workers: int = 1, accumulation: int = 1, bucket_width: int = 32,
                  max_seq_length: int = 128):
    """The training loop's batch source over an in-memory table: `batches(start_step)` ->
    iterator of (micro_index, batch dict of tensors), endless, from `train_micro_batches`
    through a prefetching tf.data pipeline."""

    def batches(start_step: int):
        return iter(to_dataset(lambda: train_micro_batches(
            table, batch_size, seed, start_step=start_step, rank=rank, num_workers=num_workers,
            accumulation=accumulation, bucket_width=bucket_width,
            max_seq_length=max_seq_length), table))

    return batches


# -- pre-training records ---------------------------------------------------------------------------

class RecordError(ValueError):
    """Pre-training records that cannot be read as asked: the message names the file and what
    differs (schema, lengths, corruption) and what to do."""


# Google's pre-training features, one definition for the writer and this reader:
# bert_tf.data.pretraining.PRETRAINING_SCHEMA (name -> (length, dtype)); integers are int64 on
# disk and int32 in the batch; masked_lm_weights is a float_list. Records written with
# --dynamic_masking carry only DYNAMIC_MASKING_FEATURES: the pipeline draws the masks.
from bert_tf.data.pretraining import (  # noqa: E402  (TF-free)
    DYNAMIC_MASKING_FEATURES, PRETRAINING_SCHEMA, feature_lengths)

_FLAG_OF_LENGTH = {"max_seq_length": "--max_seq_length",
                   "max_predictions_per_seq": "--max_predictions_per_seq"}


def expand_files(patterns) -> list[str]:
    """Comma-separated globs (or a list of them) -> sorted existing files. Raises RecordError
    naming a pattern that matches nothing.

    A glob skips what create_pretraining_data.py writes beside its records, the
    `*.summary.json` files and an unfinished run's `*.partial` files and folders
    (`out/train.tfrecord*` means the records); a file named exactly is kept."""
    import glob

    if isinstance(patterns, str):
        patterns = [patterns]
    files = []
    for pattern in (p.strip() for item in patterns for p in item.split(",")):
        if not pattern:
            continue
        matched = sorted(glob.glob(pattern))
        if glob.has_magic(pattern):
            matched = [f for f in matched if not f.endswith((".summary.json", ".partial"))
                       and not os.path.isdir(f)]
        if not matched:
            raise RecordError(f"{pattern}: no file matches (check the path; globs and comma "
                              "lists are accepted)")
        files += matched
    if not files:
        raise RecordError("no input files given")
    return sorted(dict.fromkeys(files))


def _tf_reason(message: str) -> str:
    """The reader's own words from a TensorFlow error, without the graph-function wrapper:
    "{{function_node ...}} truncated record at 299622' failed with Read less bytes than
    requested [Op:ReduceDataset] name: " -> "truncated record at 299622: Read less bytes than
    requested"."""
    import re

    text = re.sub(r"\{\{.*?\}\}\s*", "", (message.splitlines() or [""])[0])
    text = re.sub(r"\s*\[Op:[^\]]*\].*$", "", text).replace("' failed with ", ": ")
    return text.strip(" '") or "unreadable"


def _feature_lengths(example) -> dict:
    """tf.train.Example -> {name: (kind, length)} of its features."""
    out = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        out[name] = (kind, len(getattr(feature, kind).value) if kind else 0)
    return out


def inspect_records(files, max_seq_length: int, max_predictions_per_seq: int | None) -> dict:
    """Check every file before training: it must parse as TFRecords end to end (CRCs, no
    truncation), and its first record must have Google's schema with these lengths.

    max_predictions_per_seq None means records without masks (dynamic masking) are expected.
    Returns {"records": {file: count}, "masked": bool}. Raises RecordError naming the file and
    what differs."""
    import tensorflow as tf

    import struct

    from bert_tf.data.tfrecord import masked_crc32c

    counts, masked = {}, None
    for path in files:
        with open(path, "rb") as f:
            head = f.read(12)
        if len(head) == 12 and masked_crc32c(head[:8]) != struct.unpack("<I", head[8:])[0]:
            sample = head.decode("utf-8", errors="replace")
            looks = (f" (it starts like text: {sample!r})" if sample.isprintable() or "\n" in
                     sample else "")
            raise RecordError(f"{path}: not a TFRecord file{looks}; write pre-training records "
                              "from text with create_pretraining_data.py")
        try:
            first = next(iter(tf.data.TFRecordDataset(path).take(1)), None)
            count = int(tf.data.TFRecordDataset(path).reduce(
                tf.constant(0, tf.int64), lambda n, _: n + 1))
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError,
                tf.errors.OutOfRangeError) as e:
            raise RecordError(
                f"{path}: not a complete TFRecord file ({_tf_reason(e.message)}): it is "
                "truncated or corrupt; recreate it with create_pretraining_data.py") from None
        if first is None:
            raise RecordError(f"{path}: holds no records; recreate it or leave it out")
        try:
            example = tf.train.Example.FromString(first.numpy())
        except Exception:  # noqa: BLE001 - protobuf's DecodeError type differs by backend
            raise RecordError(f"{path}: its records are not tf.train.Example protos; it is not "
                              "a pre-training record file") from None
        found = _feature_lengths(example)
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
                    "max_predictions_per_seq": max_predictions_per_seq}.get(length_kind,
                                                                             length_kind)
            if length != want:
                flag = _FLAG_OF_LENGTH.get(length_kind, name)
                raise RecordError(
                    f"{path}: {name} has length {length} but {flag}={want}: pass "
                    f"{flag}={length} (the value the records were written with) or recreate "
                    "the records")
        if masked is not None and file_masked != masked:
            raise RecordError(f"{path}: mixes records with and without masks among the input "
                              "files; use one kind")
        masked = file_masked
        counts[path] = count
    return {"records": counts, "masked": bool(masked)}


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


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint32)[0])


def pretraining_batches(files, batch_size: int, max_seq_length: int,
                        max_predictions_per_seq: int | None, seed: int, rank: int = 0,
                        num_workers: int = 1, accumulation: int = 1,
                        records_per_file: dict | None = None, shuffle_buffer: int = 10000,
                        cycle_length: int = 8, masker=None):
    """The training loop's batch source over pre-training TFRecords.

    Returns `batches(start_step)` -> endless iterator of (micro_index, batch), batch as in
    `parse_pretraining` ([batch_size, ...] tensors), micro_index = step * accumulation + a.

    Order (Model Garden's, with the worker split moved after the shuffle): list files ->
    shuffle files -> interleave -> shuffle -> batch -> this worker's slices -> parse -> prefetch.
    Epoch e's order is a pure function of (seed, e): files are permuted by a generator seeded
    with (seed, e), read `cycle_length` at a time in a fixed (deterministic) interleave, and
    shuffled in a buffer of `shuffle_buffer` records seeded with (seed, e). An epoch holds
    N // G global batches of G = batch_size x num_workers x accumulation records (N records in
    all files; the remainder is dropped). Micro-batch a of worker r in a step is slice
    a x num_workers + r of the step's global batch, so the data of a step depends on the global
    batch alone: 2 workers, or 1 worker with 2 accumulation steps, see the same records.

    Exact resume: step k starts at epoch k // (N // G) and global batch k % (N // G) in it; the
    epoch's stream is rebuilt from its seeds and the records before that batch are skipped
    (read, not parsed), so a resumed run continues at the exact record where an uninterrupted
    one would be. Every worker reads every record and parses only its own slices.

    `masker` (a DynamicMasker), if given, draws the masked_lm_* features in the pipeline for
    records written without them (dynamic masking). It is keyed by the micro-batch's slice of
    the global batch counted from the first step (step x accumulation x workers + a x workers +
    r), so the masks are a function of (seed, epoch, position in the epoch): fresh every epoch,
    the same after a resume, and the same for the same global batch on any worker layout."""
    import tensorflow as tf

    files = list(files)
    if records_per_file is None:
        records_per_file = inspect_records(files, max_seq_length, max_predictions_per_seq)[
            "records"]
    total = sum(records_per_file[f] for f in files)
    global_batch = batch_size * num_workers * accumulation
    per_epoch = total // global_batch
    if per_epoch == 0:
        raise RecordError(f"{total} records in {len(files)} file(s) do not fill one global "
                          f"batch of {global_batch} (train_batch_size {batch_size} x "
                          f"{num_workers} workers x {accumulation} accumulation steps): lower "
                          "--train_batch_size or write more records")

    def epoch_dataset(epoch: int, skip_batches: int):
        order = np.random.default_rng([seed, epoch]).permutation(len(files))
        names = tf.data.Dataset.from_tensor_slices([files[i] for i in order])
        ds = names.interleave(tf.data.TFRecordDataset, cycle_length=min(cycle_length,
                              len(files)), block_length=1, num_parallel_calls=tf.data.AUTOTUNE,
                              deterministic=True)
        ds = ds.shuffle(shuffle_buffer, seed=_epoch_seed(seed, epoch),
                        reshuffle_each_iteration=False)
        ds = ds.take(per_epoch * global_batch).skip(skip_batches * global_batch)
        ds = ds.batch(batch_size, drop_remainder=True)
        ds = ds.enumerate().filter(lambda i, _: i % num_workers == rank)
        # The slice's index in the whole run, for the masks.
        first = (epoch * per_epoch + skip_batches) * accumulation * num_workers

        def parse(i, serialized):
            batch = parse_pretraining(serialized, max_seq_length,
                                      None if masker is not None else max_predictions_per_seq)
            return masker(batch, first + i) if masker is not None else batch

        ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        options = tf.data.Options()
        options.deterministic = True
        return ds.with_options(options).prefetch(tf.data.AUTOTUNE)

    def batches(start_step: int):
        epoch, offset = divmod(start_step, per_epoch)
        micro_index = start_step * accumulation
        while True:
            for batch in epoch_dataset(epoch, offset):
                yield micro_index, batch
                micro_index += 1
            epoch, offset = epoch + 1, 0

    batches.records = total
    batches.steps_per_epoch = per_epoch
    return batches


def eval_pretraining_batches(files, batch_size: int, max_seq_length: int,
                             max_predictions_per_seq: int | None, max_steps: int | None = None,
                             masker=None):
    """Held-out records in file order, once, in batches of batch_size (the last may be
    smaller); at most max_steps batches. Yields parsed batches."""
    import tensorflow as tf

    ds = tf.data.TFRecordDataset(list(files)).batch(batch_size)
    if max_steps:
        ds = ds.take(max_steps)

    def parse(i, serialized):
        batch = parse_pretraining(serialized, max_seq_length,
                                  None if masker is not None else max_predictions_per_seq)
        return masker(batch, i) if masker is not None else batch

    yield from ds.enumerate().map(parse).prefetch(tf.data.AUTOTUNE)

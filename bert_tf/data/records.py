"""Feature tables and tf.data input pipelines for fine-tuning.

Features are tokenized once and cached as int32 arrays. Training batches are padded to a few
length buckets (multiples of `bucket_width`) rather than always to max_seq_length, so short-
sentence tasks do not pay for 128 positions, while XLA sees only a handful of shapes. The order is
a pure function of (seed, epoch): a resumed run reads exactly the batches an uninterrupted one
would, and every Horovod rank takes its own slice of the same global batch.
"""

from __future__ import annotations

import dataclasses

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

    def batch_spec(self) -> dict:
        """{name: (ndim, numpy dtype)} of what `batch` returns (tf.data's signature)."""
        return {k: (v.ndim, v.dtype) for k, v in self.arrays.items()}


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

    spec = {k: tf.TensorSpec((None,) * ndim, tf.as_dtype(dtype))
            for k, (ndim, dtype) in table.batch_spec().items()}
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


# -- pre-training records --------------------------------------------------------------------------
# The reader lives in bert_tf.data.pretraining_reader (indexed shards, per-worker reads,
# constant-time resume); its names are re-exported here, where scripts and tests look.

from bert_tf.data.pretraining_reader import (  # noqa: E402,F401  (TF-free at import)
    CorruptRecordError, PretrainingRecords, RecordError, ensure_indexes,
    eval_pretraining_batches, expand_files, open_pretraining_records, parse_pretraining,
    pretraining_batches)
from bert_tf.data.record_verify import verify_records  # noqa: E402,F401

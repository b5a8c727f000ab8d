"""Writing one shard: instances (from `InstanceMaker`) masked and serialised in batches, shuffled
globally in bounded memory (random buckets on disk once a shard outgrows `shuffle_buffer`), then
written as one TFRecord file with its record index."""

from __future__ import annotations

import os
import random

import numpy as np

from bert_tf.data.pretraining.instances import InstanceMaker
from bert_tf.data.pretraining.masking import instance_features
from bert_tf.data.pretraining.options import (COUNTERS, DYNAMIC_MASKING_FEATURES,
                                              PRETRAINING_SCHEMA, PretrainingOptions, VocabIds,
                                              feature_lengths)
from bert_tf.data.record_index import OffsetRecorder, describe_schema
from bert_tf.data.tfrecord import ExampleEncoder, iter_framed

SHUFFLE_BUCKETS = 64  # temporary files per shard (and per split bucket) of the global shuffle
MASK_BATCH = 256  # instances masked and serialised per numpy call; fixed: it orders the draws


class ShardWriter:
    """Documents of one output shard -> shuffled, serialised instances in one TFRecord file.

    add_document(doc) with doc = list of sentences, each a non-empty list of token ids;
    close() flushes everything, closes the file and writes its index. `counts` holds the
    statistics.
    """

    def __init__(self, shard: int, path: str, options: PretrainingOptions, ids: VocabIds):
        self.shard = shard
        self.options = options
        self.ids = ids
        seed = options.random_seed
        # Seeded from (seed, shard) only: the shard's output does not depend on which worker
        # runs it or what else that worker runs.
        self.rng = random.Random(f"bert_tf pretraining {seed} {shard}")
        self.np_rng = np.random.default_rng([seed % 2**63, shard])
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.instances = InstanceMaker(options, self.rng, self.counts, sink=self._emit,
                                       batch_size=MASK_BATCH)
        self.buffer: list[bytes] = []
        self.path = path
        self.bucket_dir = path + ".shuffle"  # created on the first spill
        self.spilled = False
        names = DYNAMIC_MASKING_FEATURES if options.dynamic_masking else tuple(PRETRAINING_SCHEMA)
        self.encoder = ExampleEncoder(list(names), float_features={
            name for name in names if PRETRAINING_SCHEMA[name][1] == "float32"})
        self.file = open(path, "wb")
        self.offsets = OffsetRecorder()  # for the record index written beside the shard

    def add_document(self, document: list[list[int]]) -> None:
        self.instances.add_document(document)

    def close(self) -> None:
        """Processes the documents still waiting for lookahead, writes everything, closes."""
        self.instances.flush()
        if self.spilled:
            if self.buffer:
                self._spill(self.buffer, self.bucket_dir)
                self.buffer = []
            for name in sorted(os.listdir(self.bucket_dir)):
                self._write_bucket(os.path.join(self.bucket_dir, name))
            os.rmdir(self.bucket_dir)
        else:
            self.rng.shuffle(self.buffer)
            self._write(self.buffer)
            self.buffer = []
        self.file.close()
        o = self.options
        header = describe_schema({
            name: ["float_list" if dtype == "float32" else "int64_list", length]
            for name, (length, dtype) in feature_lengths(
                o.max_seq_length, o.max_predictions_per_seq, o.dynamic_masking).items()})
        header.update(vocab=self.ids.fingerprint, created_by="create_pretraining_data.py")
        self.offsets.write(self.path, header)

    def _emit(self, batch: list) -> None:
        """Masks and serialises a batch of instances, vectorised; feeds the shuffle buffer."""
        features = instance_features(batch, self.options, self.ids, self.np_rng, self.counts)
        self._shuffle_in(self.encoder.encode_records(features))

    def _shuffle_in(self, records: list[bytes]) -> None:
        """Keeps records in memory up to `shuffle_buffer`, then spills them to random buckets."""
        self.buffer += records
        if len(self.buffer) >= self.options.shuffle_buffer:
            if not self.spilled:
                os.makedirs(self.bucket_dir, exist_ok=True)
                self.spilled = True
            self._spill(self.buffer, self.bucket_dir)
            self.buffer = []

    def _spill(self, records: list[bytes], directory: str) -> None:
        """Appends each record to one of SHUFFLE_BUCKETS files of `directory`, chosen uniformly
        at random (files are opened per spill, so a worker with many shards keeps few open)."""
        buckets = self.np_rng.integers(0, SHUFFLE_BUCKETS, len(records))
        order = np.argsort(buckets, kind="stable")
        bounds = np.searchsorted(buckets[order], np.arange(SHUFFLE_BUCKETS + 1))
        for b in range(SHUFFLE_BUCKETS):
            if bounds[b] < bounds[b + 1]:
                with open(os.path.join(directory, f"{b:02d}"), "ab") as f:
                    f.write(b"".join(records[i] for i in order[bounds[b]:bounds[b + 1]]))

    def _write_bucket(self, path: str) -> None:
        """Shuffles one bucket file into the shard: in memory if it fits in `shuffle_buffer`
        records, else split into random sub-buckets first. Removes the file."""
        records = []
        split_dir = None
        for record in iter_framed(path):
            records.append(record)
            if len(records) >= self.options.shuffle_buffer:
                if split_dir is None:
                    split_dir = path + ".split"
                    os.makedirs(split_dir)
                self._spill(records, split_dir)
                records = []
        os.remove(path)
        if split_dir is None:
            self.rng.shuffle(records)
            self._write(records)
            return
        if records:
            self._spill(records, split_dir)
        for name in sorted(os.listdir(split_dir)):
            self._write_bucket(os.path.join(split_dir, name))
        os.rmdir(split_dir)

    def _write(self, framed: list[bytes]) -> None:
        self.file.write(b"".join(framed))
        self.offsets.add(framed)

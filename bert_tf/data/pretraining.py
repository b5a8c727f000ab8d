"""Pre-training data: documents -> instances -> TFRecords, streaming, multi-process, TF-free.

The semantics are those of google-research/bert's create_pretraining_data.py: one sentence a
line, blank lines between documents; Google's `create_instances_from_document` (segments
accumulated up to a target length, A = a random number of leading segments, B the actual
continuation or, with probability 1/2 and always for a one-segment chunk, a random span of
another document), `truncate_seq_pair` and `create_masked_lm_predictions` (15% of the
non-special tokens, whole words optionally, 80% [MASK] / 10% kept / 10% random), and Google's
features and dtypes (`PRETRAINING_SCHEMA`).

What differs from Google's script, which reads the whole corpus into one process:

* Streaming. The main process reads the input line by line and sends raw document text, in
  batches, over bounded queues to `num_workers` worker processes (spawned: they never import
  TensorFlow; they tokenize with `CachedTokenizer` and write with `tfrecord`).
* Sharding fixes the output. Document k (counting non-empty documents in input order) belongs
  to output shard k % num_output_shards, and shard s is processed entirely by worker
  s % num_workers, with its own random state seeded from (random_seed, s). So the output is a
  function of the inputs, the options and num_output_shards alone: 1 or 8 workers write
  byte-identical shards.
* Bounded memory. Per shard, a worker holds
  - a window of `document_window` (64) recent documents to draw random next segments from (Google
    draws from the whole corpus). A document is processed once `document_window // 2` later
    documents of its shard have arrived, so the random document comes from either side of it.
    Processed documents also leave the window while it holds more than `window_tokens`
    WordPieces (~36 bytes each as Python lists), so a corpus of books stays bounded too;
    The documents waiting for their lookahead are capped too: once they hold more than
    `window_tokens // 2` WordPieces the oldest is processed early, so book-length documents
    cannot pile up in the lookahead either.
  - at most `shuffle_buffer` serialised instances (~700 bytes each at max_seq_length 128).
* A global shuffle in bounded memory. Google shuffles all instances of the corpus before
  writing; a bounded buffer cannot, and a file written through one runs through the corpus
  topic by topic. So a shard that outgrows `shuffle_buffer` instances spills them, each to one
  of `SHUFFLE_BUCKETS` temporary files chosen uniformly at random (`NAME.partial.shuffle/`);
  at the end each bucket is read back, shuffled in memory and appended to the shard, in bucket
  order (a bucket larger than `shuffle_buffer` is split the same way again first). Random
  buckets, each uniformly shuffled, make every order of the shard's instances equally likely,
  as Google's in-memory shuffle does, at the cost of writing and reading every record once more
  (temporary disk: the shard's size). A shard that fits in the buffer never touches the disk.
  The `dupe_factor` copies of a document (different masks and pairings) are made when the
  document is processed, not in `dupe_factor` passes over the corpus.
* Crash safety. Shards are written as `NAME.partial` and renamed when every worker has
  finished; on an error, Ctrl-C or SIGTERM the workers are stopped and the partial files
  removed. After a kill -9 the workers notice their parent is gone and exit, and the next run
  removes the leftover `.partial` files and shuffle folders before it starts (never appending
  to them). Shards of an earlier run under the same name with another shard count are refused
  without `--overwrite_output`, and removed with it once the new shards are in place (only
  those the earlier run's summary lists; look-alikes are refused and kept), so a glob over the
  output never mixes two runs.
* `dynamic_masking=True` writes only input_ids, input_mask, segment_ids and
  next_sentence_labels: the training pipeline draws masks itself.

Random draws: instance creation uses Python's `random.Random` scalar draws; masking is
vectorised with numpy over batches of `_MASK_BATCH` instances of one shard. The draws differ
from Google's (so do the shards), the distributions do not; truncation draws the number of
front deletions as one binomial instead of a coin per deleted token.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import json
import logging
import multiprocessing
import os
import queue
import random
import re
import shutil
import signal
import sys
import threading
import time
import traceback
from typing import Iterator

import numpy as np

from bert_tf.assets import UsageError
from bert_tf.data.glue import DataError
from bert_tf.data.record_index import OffsetRecorder, describe_schema, index_path
from bert_tf.data.tfrecord import ExampleEncoder, iter_framed

logger = logging.getLogger("bert_tf")

CLS_TOKEN, SEP_TOKEN, MASK_TOKEN = "[CLS]", "[SEP]", "[MASK]"

# Feature name -> (length, dtype); a length is "max_seq_length", "max_predictions_per_seq" or
# a number. Google's write_instance_to_example_files writes these, in this order.
PRETRAINING_SCHEMA = {
    "input_ids": ("max_seq_length", "int64"),
    "input_mask": ("max_seq_length", "int64"),
    "segment_ids": ("max_seq_length", "int64"),
    "masked_lm_positions": ("max_predictions_per_seq", "int64"),
    "masked_lm_ids": ("max_predictions_per_seq", "int64"),
    "masked_lm_weights": ("max_predictions_per_seq", "float32"),
    "next_sentence_labels": (1, "int64"),
}
# Written with dynamic_masking: the masked_lm_* features are drawn by the training pipeline.
DYNAMIC_MASKING_FEATURES = ("input_ids", "input_mask", "segment_ids", "next_sentence_labels")

INPUT_FORMATS = {
    "sentences": "one sentence a line, blank lines between documents (Google's format)",
    "paragraphs": "one paragraph a line, blank lines between documents; paragraphs are split "
                  "into sentences (blingfire)",
    "wikitext": "WikiText raw files: a ' = Title = ' line starts a document, other headings "
                "and blank lines are dropped, paragraphs are split into sentences (blingfire)",
}

SHUFFLE_BUCKETS = 64  # temporary files per shard (and per split bucket) of the global shuffle
_MASK_BATCH = 256  # instances masked and serialised per numpy call; fixed: it orders the draws
_DISPATCH_BYTES = 256 * 1024  # text per batch sent to a worker
_QUEUE_BATCHES = 4  # batches in flight per worker: bounds the main process's lead


def feature_lengths(max_seq_length: int, max_predictions_per_seq: int,
                    dynamic_masking: bool = False) -> dict[str, tuple[int, str]]:
    """`PRETRAINING_SCHEMA` with numbers for lengths: name -> (length, dtype name).

    A tf.data reader builds `tf.io.FixedLenFeature([length], dtype)` from each entry.
    """
    sizes = {"max_seq_length": max_seq_length, "max_predictions_per_seq": max_predictions_per_seq}
    names = DYNAMIC_MASKING_FEATURES if dynamic_masking else tuple(PRETRAINING_SCHEMA)
    return {name: (sizes.get(PRETRAINING_SCHEMA[name][0], PRETRAINING_SCHEMA[name][0]),
                   PRETRAINING_SCHEMA[name][1]) for name in names}


@dataclasses.dataclass(frozen=True)
class PretrainingOptions:
    """What shapes the instances (defaults: Google's flags). All of it goes into the summary."""

    max_seq_length: int = 128
    max_predictions_per_seq: int = 20
    masked_lm_prob: float = 0.15
    short_seq_prob: float = 0.1
    dupe_factor: int = 10
    do_whole_word_mask: bool = False
    random_seed: int = 12345
    dynamic_masking: bool = False
    input_format: str = "sentences"
    document_window: int = 2048  # per shard: documents to draw random next segments from
    window_tokens: int = 1_000_000  # per shard: older documents leave beyond this many WordPieces
    shuffle_buffer: int = 10_000  # per shard: instances held in memory (see the global shuffle)

    def check(self) -> None:
        """Raises UsageError naming the flag and what to do when options do not fit together."""
        if self.max_seq_length < 5:
            raise UsageError(
                f"--max_seq_length={self.max_seq_length}: need at least 5 ([CLS] A [SEP] B "
                "[SEP] with A and B of at least one token each)")
        if not 0.0 <= self.masked_lm_prob <= 1.0:
            raise UsageError(f"--masked_lm_prob={self.masked_lm_prob}: must be in [0, 1]")
        if not 0.0 <= self.short_seq_prob <= 1.0:
            raise UsageError(f"--short_seq_prob={self.short_seq_prob}: must be in [0, 1]")
        if self.dupe_factor < 1:
            raise UsageError(f"--dupe_factor={self.dupe_factor}: must be at least 1")
        if not self.dynamic_masking:
            needed = max(1, round(self.masked_lm_prob * self.max_seq_length))
            if self.max_predictions_per_seq < needed:
                raise UsageError(
                    f"--max_predictions_per_seq={self.max_predictions_per_seq} is below "
                    f"round(masked_lm_prob x max_seq_length) = round({self.masked_lm_prob} x "
                    f"{self.max_seq_length}) = {needed}: full sequences would be masked at a "
                    f"lower rate than --masked_lm_prob. Pass --max_predictions_per_seq={needed} "
                    "(or more)")
        if self.input_format not in INPUT_FORMATS:
            raise UsageError(f"--input_format={self.input_format}: must be one of "
                             f"{', '.join(INPUT_FORMATS)}")
        if self.document_window < 2:
            raise UsageError(f"document_window={self.document_window}: must be at least 2")
        if self.window_tokens < 1:
            raise UsageError(f"window_tokens={self.window_tokens}: must be at least 1")
        if self.shuffle_buffer < 1:
            raise UsageError(f"shuffle_buffer={self.shuffle_buffer}: must be at least 1")


@dataclasses.dataclass(frozen=True)
class VocabIds:
    """The ids instance creation needs from a vocabulary (built by `vocab_ids`)."""

    cls: int
    sep: int
    mask: int
    random_ids: np.ndarray  # int64 [V]: Google draws a random replacement from vocab.keys()
    is_suffix: np.ndarray  # bool [max id + 1]: the token starts with "##" (whole-word masking)
    fingerprint: dict | None = None  # record_index.vocab_fingerprint, for the shards' indexes


def vocab_ids(vocab: dict, vocab_file: str) -> VocabIds:
    """Ids of [CLS], [SEP], [MASK] and the "##" pieces; UsageError when one is missing."""
    missing = [t for t in (CLS_TOKEN, SEP_TOKEN, MASK_TOKEN) if t not in vocab]
    if missing:
        raise UsageError(
            f"--vocab_file={vocab_file} has no {', '.join(missing)} token, which pre-training "
            "data needs. Pass a BERT WordPiece vocab.txt (Google's have [PAD], [UNK], [CLS], "
            "[SEP] and [MASK])")
    is_suffix = np.zeros(max(vocab.values()) + 1, bool)
    for token, index in vocab.items():
        if token.startswith("##"):
            is_suffix[index] = True
    from bert_tf.data.record_index import vocab_fingerprint

    return VocabIds(cls=vocab[CLS_TOKEN], sep=vocab[SEP_TOKEN], mask=vocab[MASK_TOKEN],
                    random_ids=np.array(list(vocab.values()), np.int64), is_suffix=is_suffix,
                    fingerprint=vocab_fingerprint(vocab_file))


# ---- Instances of one shard ------------------------------------------------------------------

_COUNTERS = ("documents", "multi_sentence_documents", "sentences", "tokens", "instances",
             "instance_tokens", "random_next", "truncated_instances", "truncated_tokens",
             "non_special_tokens", "masked_tokens", "replaced_by_mask", "kept", "replaced_random",
             "capped_instances", "capped_non_special_tokens", "capped_masked_tokens")


def _truncate_seq_pair(tokens_a: list, tokens_b: list, max_num_tokens: int,
                       rng: random.Random) -> tuple[list, list, int]:
    """Google's truncate_seq_pair in closed form: -> (a, b, tokens removed).

    Google removes one token at a time from the longer side (B on a tie), from the front or
    the back with probability 1/2 each. The count taken from each side follows from the
    lengths alone; the fronts taken are one binomial draw per side.
    """
    la, lb = len(tokens_a), len(tokens_b)
    excess = la + lb - max_num_tokens
    if excess <= 0:
        return tokens_a, tokens_b, 0
    # Trim the longer side down to the shorter, then alternately (B first, as on a tie).
    head = min(excess, abs(la - lb))
    rest = excess - head
    from_a = rest // 2 + (head if la > lb else 0)
    from_b = rest - rest // 2 + (head if la <= lb else 0)
    if from_a:
        front = bin(rng.getrandbits(from_a)).count("1")
        tokens_a = tokens_a[front:la - (from_a - front)]
    if from_b:
        front = bin(rng.getrandbits(from_b)).count("1")
        tokens_b = tokens_b[front:lb - (from_b - front)]
    return tokens_a, tokens_b, excess


class ShardWriter:
    """Documents of one output shard -> shuffled, serialised instances in one TFRecord file.

    add_document(doc) with doc = list of sentences, each a non-empty list of token ids;
    close() flushes everything and closes the file. `counts` holds the statistics.
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
        self.window: collections.deque = collections.deque()
        self.window_tokens = 0  # WordPieces in the window
        self.pending = 0  # the newest `pending` documents of the window are not processed yet
        self.pending_tokens = 0  # WordPieces in those
        self.lookahead = options.document_window // 2
        self.instances: list[tuple[list, list, bool]] = []
        self.buffer: list[bytes] = []
        self.path = path
        self.bucket_dir = path + ".shuffle"  # created on the first spill
        self.spilled = False
        names = DYNAMIC_MASKING_FEATURES if options.dynamic_masking else tuple(PRETRAINING_SCHEMA)
        self.encoder = ExampleEncoder(list(names), float_features={
            name for name in names if PRETRAINING_SCHEMA[name][1] == "float32"})
        self.counts = dict.fromkeys(_COUNTERS, 0)
        self.file = open(path, "wb")
        self.offsets = OffsetRecorder()  # for the record index written beside the shard

    # -- documents -> instances

    def add_document(self, document: list[list[int]]) -> None:
        if not document:
            return
        self.counts["documents"] += 1
        self.counts["sentences"] += len(document)
        tokens = sum(map(len, document))
        self.counts["tokens"] += tokens
        self.window_tokens += tokens
        if len(document) > 1:
            self.counts["multi_sentence_documents"] += 1
        self.window.append(document)
        self.pending += 1
        self.pending_tokens += tokens
        # Process the oldest waiting document once it has its lookahead, or early when the
        # waiting documents hold too many WordPieces (long documents).
        while self.pending > self.lookahead or (
                self.pending > 1 and self.pending_tokens > self.options.window_tokens // 2):
            self._process(len(self.window) - self.pending)

    def _process(self, index: int) -> None:
        self.pending -= 1
        self.pending_tokens -= sum(map(len, self.window[index]))
        for _ in range(self.options.dupe_factor):
            self._instances_from_document(index)
        if len(self.instances) >= _MASK_BATCH:
            self._emit()
        # Older documents leave the window once it is full; the pending ones (the newest) and
        # the one just processed stay.
        window, options = self.window, self.options
        while len(window) > self.pending + 1 and (len(window) > options.document_window or
                                                   self.window_tokens > options.window_tokens):
            self.window_tokens -= sum(map(len, window.popleft()))

    def _instances_from_document(self, index: int) -> None:
        """Google's create_instances_from_document for window[index], into self.instances."""
        window, rng, counts = self.window, self.rng, self.counts
        document = window[index]
        max_num_tokens = self.options.max_seq_length - 3  # [CLS] A [SEP] B [SEP]
        # Usually fill the sequence; sometimes (short_seq_prob) aim shorter, to look more like
        # fine-tuning inputs. Drawn once per document, as Google does.
        target_seq_length = max_num_tokens
        if rng.random() < self.options.short_seq_prob:
            target_seq_length = rng.randint(2, max_num_tokens)
        chunk: list[list[int]] = []
        length = 0
        i = 0
        n = len(document)
        while i < n:
            segment = document[i]
            chunk.append(segment)
            length += len(segment)
            if i == n - 1 or length >= target_seq_length:
                # A is the first a_end segments of the chunk.
                a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
                tokens_a = []
                for sentence in chunk[:a_end]:
                    tokens_a += sentence
                if len(chunk) == 1 or rng.random() < 0.5:
                    is_random_next = True
                    target_b_length = target_seq_length - len(tokens_a)
                    other = window[self._random_document(index)]
                    tokens_b = []
                    for j in range(rng.randint(0, len(other) - 1), len(other)):
                        tokens_b += other[j]
                        if len(tokens_b) >= target_b_length:
                            break
                    # The chunk's unused segments go back, to start the next chunk.
                    i -= len(chunk) - a_end
                else:
                    is_random_next = False
                    tokens_b = []
                    for sentence in chunk[a_end:]:
                        tokens_b += sentence
                tokens_a, tokens_b, removed = _truncate_seq_pair(
                    tokens_a, tokens_b, max_num_tokens, rng)
                if removed:
                    counts["truncated_instances"] += 1
                    counts["truncated_tokens"] += removed
                self.instances.append((tokens_a, tokens_b, is_random_next))
                chunk = []
                length = 0
            i += 1

    def _random_document(self, index: int) -> int:
        """A uniformly random other document of the window (itself if it is alone)."""
        n = len(self.window)
        if n == 1:
            return index
        other = self.rng.randrange(n - 1)
        return other + (other >= index)

    # -- instances -> masked, serialised, shuffled records

    def _emit(self) -> None:
        """Masks and serialises self.instances, vectorised, and feeds the shuffle buffer."""
        batch, self.instances = self.instances, []
        if not batch:
            return
        self._shuffle_in(self.encoder.encode_records(self._features(batch)))

    def _features(self, batch: list[tuple[list, list, bool]]) -> dict[str, np.ndarray]:
        """Google's features for a batch of instances: name -> array [I, length]."""
        S = self.options.max_seq_length
        ids = self.ids
        flat: list[int] = []
        for tokens_a, tokens_b, _ in batch:
            flat.append(ids.cls)
            flat += tokens_a
            flat.append(ids.sep)
            flat += tokens_b
            flat.append(ids.sep)
        len_a = np.fromiter((len(a) for a, _, _ in batch), np.int64, len(batch))
        len_b = np.fromiter((len(b) for _, b, _ in batch), np.int64, len(batch))
        lengths = len_a + len_b + 3
        positions = np.arange(S)
        valid = positions < lengths[:, None]  # [I, S]
        tokens = np.zeros(valid.shape, np.int64)
        tokens[valid] = np.array(flat, np.int64)
        segment_ids = (positions >= (len_a + 2)[:, None]) & valid
        labels = np.fromiter((r for _, _, r in batch), np.int64, len(batch))
        counts = self.counts
        counts["instances"] += len(batch)
        counts["instance_tokens"] += int(lengths.sum())
        counts["random_next"] += int(labels.sum())
        features = {"input_ids": tokens, "input_mask": valid, "segment_ids": segment_ids,
                    "next_sentence_labels": labels[:, None]}
        if not self.options.dynamic_masking:
            features.update(self._mask(tokens, valid, len_a, lengths))
        return features

    def _mask(self, tokens: np.ndarray, valid: np.ndarray, len_a: np.ndarray,
              lengths: np.ndarray) -> dict[str, np.ndarray]:
        """Google's create_masked_lm_predictions on a batch; replaces tokens in place.

        tokens int64 [I, S] (modified: masked positions get [MASK], a random id or stay),
        valid bool [I, S], len_a/lengths int64 [I]. Returns masked_lm_positions,
        masked_lm_ids (int64 [I, P], 0-padded) and masked_lm_weights (float32 [I, P]).
        """
        options, rng = self.options, self.np_rng
        I, S = tokens.shape
        P = options.max_predictions_per_seq
        rows = np.arange(I)
        # Candidates: every real token but [CLS] (position 0) and the two [SEP]s.
        candidate = valid.copy()
        candidate[:, 0] = False
        candidate[rows, len_a + 1] = False
        candidate[rows, lengths - 1] = False
        # round() on floats is Python 3's (half to even), as in Google's script on Python 3.
        num_to_predict = np.minimum(P, np.maximum(1, np.round(lengths * options.masked_lm_prob)
                                                  .astype(np.int64)))
        if options.do_whole_word_mask:
            masked = self._choose_whole_words(tokens, candidate, num_to_predict)
        else:
            # Shuffling the candidates and taking the first num_to_predict = taking those with
            # the smallest random keys.
            keys = rng.random((I, S), dtype=np.float32)
            keys[~candidate] = 2.0
            order = np.argsort(keys, axis=1)[:, :min(P, S)]
            take = ((np.arange(order.shape[1]) < num_to_predict[:, None])
                    & (np.take_along_axis(keys, order, axis=1) < 2.0))
            masked = np.zeros((I, S), bool)
            masked[np.broadcast_to(rows[:, None], order.shape)[take], order[take]] = True

        # Row-major nonzero: positions come out sorted within each instance, as Google sorts.
        mrows, mcols = np.nonzero(masked)
        original = tokens[mrows, mcols]
        u = rng.random(mrows.size)
        keep = rng.random(mrows.size) < 0.5
        random_ids = self.ids.random_ids[rng.integers(0, self.ids.random_ids.size, mrows.size)]
        to_mask = u < 0.8
        tokens[mrows, mcols] = np.where(to_mask, self.ids.mask, np.where(keep, original,
                                                                          random_ids))
        per_row = masked.sum(axis=1)
        rank = np.arange(mrows.size) - (np.cumsum(per_row) - per_row)[mrows]
        positions = np.zeros((I, P), np.int64)
        label_ids = np.zeros((I, P), np.int64)
        weights = np.zeros((I, P), np.float32)
        positions[mrows, rank] = mcols
        label_ids[mrows, rank] = original
        weights[mrows, rank] = 1.0

        counts = self.counts
        non_special = lengths - 3
        counts["non_special_tokens"] += int(non_special.sum())
        counts["masked_tokens"] += int(mrows.size)
        n_mask = int(to_mask.sum())
        n_keep = int((~to_mask & keep).sum())
        counts["replaced_by_mask"] += n_mask
        counts["kept"] += n_keep
        counts["replaced_random"] += int(mrows.size) - n_mask - n_keep
        # Instances where max_predictions_per_seq, not masked_lm_prob, set the count.
        capped = np.round(lengths * options.masked_lm_prob) > P
        counts["capped_instances"] += int(capped.sum())
        counts["capped_non_special_tokens"] += int(non_special[capped].sum())
        counts["capped_masked_tokens"] += int(per_row[capped].sum())
        return {"masked_lm_positions": positions, "masked_lm_ids": label_ids,
                "masked_lm_weights": weights}

    def _choose_whole_words(self, tokens: np.ndarray, candidate: np.ndarray,
                            num_to_predict: np.ndarray) -> np.ndarray:
        """Google's whole-word candidate choice: -> bool [I, S] of masked positions.

        A "##" piece joins the previous candidate group (even across the [SEP], as in
        Google's loop); groups are shuffled, then taken whole while they fit in
        num_to_predict, skipping those that do not.
        """
        I, S = tokens.shape
        rows = np.arange(I)
        # Position 1 (A's first token) is always a candidate, so a "##" piece has an earlier
        # candidate to join exactly when it is at position 2 or later.
        continues = candidate & self.ids.is_suffix[tokens]
        continues[:, :2] = False
        starts = candidate & ~continues
        group = np.cumsum(starts, axis=1, dtype=np.int32) - 1  # group of each candidate
        np.maximum(group, 0, out=group)  # (positions before the first group: never candidates)
        num_groups = group[:, -1] + 1
        sizes = np.bincount((rows[:, None] * S + group)[candidate], minlength=I * S).reshape(I, S)
        keys = self.np_rng.random((I, S), dtype=np.float32)
        keys[np.arange(S) >= num_groups[:, None]] = 2.0
        order = np.argsort(keys, axis=1)
        shuffled_sizes = np.take_along_axis(sizes, order, axis=1)
        taken = np.zeros((I, S), bool)
        count = np.zeros(I, np.int64)
        for col in range(int(num_groups.max(initial=0))):
            size = shuffled_sizes[:, col]
            fits = (size > 0) & (count + size <= num_to_predict)
            taken[:, col] = fits
            count += size * fits
            if col % 8 == 7 and ((count >= num_to_predict) | (col + 1 >= num_groups)).all():
                break
        group_taken = np.zeros((I, S), bool)
        np.put_along_axis(group_taken, order, taken, axis=1)
        return candidate & np.take_along_axis(group_taken, group, axis=1)

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

    def close(self) -> None:
        """Processes the documents still waiting for lookahead, writes everything, closes."""
        while self.pending:
            self._process(len(self.window) - self.pending)
        self._emit()
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

    def _write(self, framed: list[bytes]) -> None:
        self.file.write(b"".join(framed))
        self.offsets.add(framed)


# ---- Reading input ---------------------------------------------------------------------------

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


# ---- Worker processes ------------------------------------------------------------------------


def _worker_main(worker: int, num_workers: int, shard_paths: list[str], vocab_file: str,
                 do_lower_case: bool, options: PretrainingOptions, inbox, outbox,
                 parent_pid: int | None = None) -> None:
    """A worker process: tokenizes its documents and runs the ShardWriters of its shards.

    Messages in: lists of (document index, lines), then None. Out: ("done", worker, counts
    per shard) or ("error", worker, traceback text). Never imports TensorFlow. Ctrl-C is the
    main process's to handle (it stops the workers); a worker whose parent died (kill -9)
    exits instead of waiting for documents forever.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked by the parent
    if parent_pid is not None:
        threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True,
                         name="exit-with-parent").start()
    try:
        from bert_tf.tokenization.cached import CachedTokenizer

        tokenizer = CachedTokenizer(vocab_file, do_lower_case)
        ids = vocab_ids(tokenizer.vocab, vocab_file)
        num_shards = len(shard_paths)
        shards = {s: ShardWriter(s, path, options, ids) for s, path in enumerate(shard_paths)
                  if s % num_workers == worker}
        split = options.input_format != "sentences"
        tokenize = tokenizer.ids
        while True:
            batch = inbox.get()
            if batch is None:
                break
            for index, lines in batch:
                if split:
                    lines = [s for paragraph in lines for s in split_sentences(paragraph)]
                # Google drops sentences without tokens (e.g. only control characters).
                document = [t for t in map(tokenize, lines) if t]
                shards[index % num_shards].add_document(document)
        for shard in shards.values():
            shard.close()
        outbox.put(("done", worker, {s: shard.counts for s, shard in shards.items()}))
    except BaseException:  # reported to the main process, which cleans up and raises
        outbox.put(("error", worker, traceback.format_exc()))


def _exit_with_parent(parent_pid: int) -> None:
    """A worker's watchdog: once the main process is gone (kill -9), nobody will read the
    shards, so exit at once, wherever the worker is blocked (a half-sent batch leaves its
    inbox pipe waiting forever). The next run removes the partial files."""
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(1)


def output_paths(output_file: str, num_output_shards: int | None) -> list[str]:
    """Google's --output_file (comma-separated files) and --num_output_shards -> shard paths.

    One file and n > 1 shards: `{file}-00000-of-0000n`, ... . A list: one shard per file
    (num_output_shards, if given, must equal its length).
    """
    files = [f.strip() for f in output_file.split(",") if f.strip()]
    if not files:
        raise UsageError("--output_file is required")
    if num_output_shards is None:
        return files
    if num_output_shards < 1:
        raise UsageError(f"--num_output_shards={num_output_shards}: must be at least 1")
    if len(files) > 1:
        if num_output_shards != len(files):
            raise UsageError(
                f"--num_output_shards={num_output_shards} but --output_file lists {len(files)} "
                "files: give one file (shards are named FILE-00000-of-0000N) or drop "
                "--num_output_shards")
        return files
    if num_output_shards == 1:
        return files
    return [f"{files[0]}-{s:05d}-of-{num_output_shards:05d}" for s in range(num_output_shards)]


def summary_path(output_file: str) -> str:
    """Where the JSON summary goes: next to the (first) --output_file, `{file}.summary.json`."""
    first = output_file.split(",")[0].strip()
    return f"{first}.summary.json"


def create_pretraining_data(input_file: str, output_file: str, vocab_file: str,
                            do_lower_case: bool = True,
                            options: PretrainingOptions = PretrainingOptions(),
                            num_workers: int = 2, num_output_shards: int | None = None,
                            overwrite_output: bool = False, show_progress: bool = True,
                            flags_used: dict | None = None) -> dict:
    """Reads text, writes pre-training TFRecords and a JSON summary; returns the summary.

    input_file: comma-separated globs (Google's --input_file); output_file: comma-separated
    files, or one file split into `num_output_shards` shards (see `output_paths`). The shards
    are byte-identical for any `num_workers` (see the module docstring). The summary
    (`{output_file}.summary.json`) holds counts, masking and NSP statistics, per-shard
    instance counts and `flags_used`.
    Raises UsageError (flags), DataError (input files; nothing is left on disk) or
    RuntimeError (a worker failed; its traceback is in the message).
    """
    started = time.time()
    options.check()
    if num_workers < 1:
        raise UsageError(f"--num_workers={num_workers}: must be at least 1")
    from bert_tf.tokenization.wordpiece import check_vocab_has_unk, load_vocab

    if not os.path.isfile(vocab_file):
        raise UsageError(f"--vocab_file={vocab_file}: file not found")
    try:
        vocab = load_vocab(vocab_file)
        check_vocab_has_unk(vocab, vocab_file)
    except ValueError as e:  # not UTF-8, empty, no [UNK]
        raise UsageError(f"--vocab_file: {e}") from None
    vocab_ids(vocab, vocab_file)  # fails early on a missing [CLS]/[SEP]/[MASK]
    _warn_if_case_mismatch(vocab, vocab_file, do_lower_case)
    input_files = expand_input_files(input_file)
    shard_paths = output_paths(output_file, num_output_shards)
    summary_file = summary_path(output_file)
    overlap = {os.path.abspath(p) for p in shard_paths} & {os.path.abspath(p) for p in input_files}
    if overlap:
        raise UsageError(f"--output_file would overwrite the input file {sorted(overlap)[0]}")
    earlier, unknown, other_partials = _earlier_files(output_file, shard_paths)
    if unknown:
        raise UsageError(f"{unknown[0]} exists and no {summary_path(output_file)} lists it "
                         f"({len(unknown)} such file(s)): a glob over this output would mix it "
                         "in; move it away or choose another --output_file")
    if not overwrite_output:
        existing = [p for p in shard_paths + [summary_file] if os.path.exists(p)]
        if existing:
            raise UsageError(f"{existing[0]} exists; pass --overwrite_output to replace it "
                             "(or choose another --output_file)")
    for path in shard_paths:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if num_workers > len(shard_paths):
        logger.info("%d workers for %d output shards: only %d will work; raise "
                    "--num_output_shards to use more", num_workers, len(shard_paths),
                    len(shard_paths))
        num_workers = len(shard_paths)
    partials = [p + ".partial" for p in shard_paths]
    stale = _remove_leftovers(partials + [summary_file + ".partial"] + other_partials)
    if stale:
        logger.info("removed the .partial files of an interrupted run (%s ...)", stale[0])

    # Spawned workers start a fresh interpreter: nothing (TensorFlow above all) is inherited.
    context = multiprocessing.get_context("spawn")
    outbox = context.Queue()
    inboxes = [context.Queue(_QUEUE_BATCHES) for _ in range(num_workers)]
    # Exit never waits for the queues' feeder threads (a stopped worker leaves its inbox pipe
    # full: the wait would be for ever). On success every inbox has been read to the end.
    for q in inboxes + [outbox]:
        q.cancel_join_thread()
    workers = [context.Process(target=_worker_main, name=f"pretraining-worker-{w}",
                               args=(w, num_workers, partials, vocab_file, do_lower_case,
                                     options, inboxes[w], outbox, os.getpid()), daemon=True)
               for w in range(num_workers)]
    results: dict[int, dict] = {}
    progress_bar = None
    main_thread = threading.current_thread() is threading.main_thread()
    # The first Ctrl-C or SIGTERM (kill, a scheduler's stop) interrupts; later ones are ignored
    # until the workers are stopped and the partial files removed. Handlers a caller installed
    # are left alone.
    installed = {}
    if main_thread:
        for signum, default in ((signal.SIGINT, signal.default_int_handler),
                                (signal.SIGTERM, signal.SIG_DFL)):
            if signal.getsignal(signum) == default:
                signal.signal(signum, _interrupt_once)
                installed[signum] = default
    try:
        # Workers start with SIGINT blocked (the mask survives fork and exec): a Ctrl-C while
        # a worker imports is the main process's alone. The worker ignores it, then unblocks.
        with _signals_blocked(main_thread, signal.SIGINT):
            for worker in workers:
                worker.start()
        if show_progress:
            from tqdm import tqdm

            total = sum(os.path.getsize(p) for p in input_files)
            progress_bar = tqdm(total=total, unit="B", unit_scale=True, file=sys.stderr,
                                desc="create_pretraining_data", mininterval=1.0)
        _dispatch(input_files, options.input_format, len(shard_paths), inboxes, workers, outbox,
                  results, progress_bar.update if progress_bar else None)
        for inbox in inboxes:
            _put(inbox, None, workers, outbox, results)
        while len(results) < num_workers:
            _receive(outbox, workers, results, timeout=1.0)
        for worker in workers:
            worker.join()
        counts = {s: c for per_worker in results.values() for s, c in per_worker.items()}
        summary = _summary(counts, input_files, shard_paths, options, flags_used,
                           time.time() - started)
        _check_counts(summary, input_files)
        # The commit: no Ctrl-C or SIGTERM halfway (they take effect after it).
        with _signals_blocked(main_thread, signal.SIGINT, signal.SIGTERM):
            for partial, path in zip(partials, shard_paths):
                os.replace(partial, path)
                os.replace(index_path(partial), index_path(path))
            tmp = summary_file + ".partial"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(summary, f, indent=2)
                f.write("\n")
            os.replace(tmp, summary_file)
            for path in earlier:  # --overwrite_output: the earlier run's other shards go
                for name in (path, index_path(path)):
                    try:
                        os.remove(name)
                    except FileNotFoundError:
                        pass
        if earlier:
            logger.info("removed %d file(s) of an earlier run with another shard count (%s ...)",
                        len(earlier), earlier[0])
        return summary
    except BaseException:
        # A second Ctrl-C must not cut the cleanup short: it waits until the end.
        with _signals_blocked(main_thread, signal.SIGINT, signal.SIGTERM):
            _stop(workers, inboxes + [outbox])
            _remove_leftovers(partials + [summary_file + ".partial"])
        raise
    finally:
        for signum, default in installed.items():
            signal.signal(signum, default)
        if progress_bar is not None:
            progress_bar.close()


def _stop(workers, queues) -> None:
    """Stops the workers (our own children; they hold nothing worth keeping) and closes the
    queues."""
    for worker in workers:
        if worker.is_alive():
            worker.terminate()
    for worker in workers:
        if worker.pid is not None:
            worker.join()
    for q in queues:
        q.close()


class _signals_blocked:
    """Blocks the signals in this thread for the block (only in the main thread, where Python
    runs handlers); one that arrives meanwhile is delivered when the block ends."""

    def __init__(self, active: bool, *signals):
        self.active = active and hasattr(signal, "pthread_sigmask")
        self.signals = set(signals)

    def __enter__(self):
        if self.active:
            self.old = signal.pthread_sigmask(signal.SIG_BLOCK, self.signals)

    def __exit__(self, *exc):
        if self.active:
            signal.pthread_sigmask(signal.SIG_SETMASK, self.old)
        return False


def _warn_if_case_mismatch(vocab, vocab_file: str, do_lower_case: bool) -> None:
    """Google's script takes any pairing silently; a wrong one wastes a pre-training run.
    Cased vocabularies hold thousands of tokens with capitals (cased_vocab.txt: 8,368 of
    28,996), uncased ones next to none (uncased_vocab.txt: 2 of 30,522)."""
    capitals = sum(1 for token in vocab if any(c.isupper() for c in token)
                   and not (token.startswith("[") and token.endswith("]")))
    if do_lower_case and capitals >= 1000:
        logger.warning("--vocab_file=%s looks cased (%d tokens with capitals) but "
                       "--do_lower_case is true: lower-cased text never uses them; pass "
                       "--do_lower_case=false for a cased model", vocab_file, capitals)
    elif not do_lower_case and capitals < 10:
        logger.warning("--vocab_file=%s looks uncased (%d tokens with capitals) but "
                       "--do_lower_case is false: capitalised words will be split into pieces "
                       "or [UNK]; pass --do_lower_case=true for an uncased model", vocab_file,
                       capitals)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped create_pretraining_data; `signum` is the signal's number (a
    shell reports the exit as 128 + signum)."""

    def __init__(self, signum: int):
        name = signal.Signals(signum).name
        super().__init__("" if signum == signal.SIGINT else f"signal {name}")
        self.signum = signum


def _interrupt_once(signum, frame):
    """Ctrl-C / SIGTERM handler: interrupts once, then ignores both until restored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Interrupted(signum)


def _remove_leftovers(partials: list[str]) -> list[str]:
    """Removes `X.partial` files and `X.partial.shuffle/` folders (this run's, or those a
    killed run left behind: never appended to)."""
    found = [p for p in partials if os.path.exists(p) or os.path.isdir(p + ".shuffle")
             or os.path.exists(index_path(p))]
    for partial in found:
        for path in (partial, index_path(partial), index_path(partial) + ".tmp"):
            if os.path.exists(path):
                os.remove(path)
        shutil.rmtree(partial + ".shuffle", ignore_errors=True)
    return found


def _earlier_files(output_file: str, shard_paths: list[str]):
    """Files of earlier runs under the same --output_file that this run will not write (another
    shard count), which a glob such as `FILE-*` would mix with the new shards.

    Returns (earlier, unknown, partials):
      earlier   the shards `FILE.summary.json` lists (that run's own record: safe to replace);
      unknown   other `FILE-nnnnn-of-mmmmm` files (no summary lists them: refused, never
                deleted);
      partials  `FILE-nnnnn-of-mmmmm.partial` files a killed run left (removed).
    """
    files = [f.strip() for f in output_file.split(",") if f.strip()]
    if len(files) != 1:
        return [], [], []
    base = os.path.basename(files[0])
    folder = os.path.dirname(os.path.abspath(files[0]))
    mine = {os.path.abspath(p) for p in shard_paths}
    listed = set()
    try:
        with open(summary_path(output_file), encoding="utf-8") as f:
            listed = {os.path.basename(str(shard.get("file", "")))
                      for shard in json.load(f).get("shards", [])}
    except (OSError, ValueError, AttributeError):
        pass
    shard = re.compile(re.escape(base) + r"-\d{5}-of-\d{5}(\.partial)?")
    earlier, unknown, partials = [], [], []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        path = os.path.join(folder, name)
        match = shard.fullmatch(name)
        if path.removesuffix(".partial") in mine or not os.path.isfile(path):
            continue
        if match and match.group(1):
            partials.append(path)
        elif name in listed and (match or name == base):
            earlier.append(path)
        elif match:
            unknown.append(path)
    return earlier, unknown, partials


def _dispatch(input_files, input_format, num_shards, inboxes, workers, outbox, results,
              progress) -> None:
    """Sends document k to the worker of shard k % num_shards, in batches of ~256 KB."""
    num_workers = len(inboxes)
    batches: list[list] = [[] for _ in range(num_workers)]
    sizes = [0] * num_workers
    for index, lines in enumerate(read_documents(input_files, input_format, progress)):
        w = (index % num_shards) % num_workers
        batches[w].append((index, lines))
        sizes[w] += sum(map(len, lines))
        if sizes[w] >= _DISPATCH_BYTES:
            _put(inboxes[w], batches[w], workers, outbox, results)
            batches[w], sizes[w] = [], 0
    for w in range(num_workers):
        if batches[w]:
            _put(inboxes[w], batches[w], workers, outbox, results)


def _put(inbox, message, workers, outbox, results) -> None:
    """Blocking put that notices a failed worker instead of waiting for it forever."""
    while True:
        try:
            inbox.put(message, timeout=0.5)
            return
        except queue.Full:
            _receive(outbox, workers, results, timeout=0)


def _receive(outbox, workers, results, timeout: float) -> None:
    """Takes one worker message; raises on a worker error or a worker that died silently."""
    try:
        kind, worker, payload = outbox.get(timeout=timeout) if timeout else outbox.get_nowait()
    except queue.Empty:
        dead = [w for w in workers if w.exitcode not in (None, 0)]
        if dead:
            raise RuntimeError(f"{dead[0].name} exited with status {dead[0].exitcode} "
                               "(out of memory?)") from None
        return
    if kind == "error":
        raise RuntimeError(f"pretraining worker {worker} failed:\n{payload}")
    results[worker] = payload


def _summary(counts: dict[int, dict], input_files: list[str], shard_paths: list[str],
             options: PretrainingOptions, flags_used: dict | None, seconds: float) -> dict:
    total = collections.Counter()
    for c in counts.values():
        total.update(c)

    def ratio(a, b):
        return a / b if b else None

    summary = {
        "input_files": input_files,
        "documents": total["documents"],
        "multi_sentence_documents": total["multi_sentence_documents"],
        "sentences": total["sentences"],
        "tokens": total["tokens"],
        "instances": total["instances"],
        "instance_tokens": total["instance_tokens"],
        "next_sentence": {"random_next": total["random_next"],
                          "fraction_random_next": ratio(total["random_next"],
                                                        total["instances"])},
        "truncation": {"truncated_instances": total["truncated_instances"],
                       "truncated_tokens": total["truncated_tokens"]},
        "shards": [{"file": path, "instances": counts[s]["instances"]}
                   for s, path in enumerate(shard_paths)],
        "options": dataclasses.asdict(options),
        "flags": flags_used or {},
        "seconds": round(seconds, 3),
        "instances_per_second": round(total["instances"] / seconds, 1) if seconds else None,
    }
    if not options.dynamic_masking:
        masked = total["masked_tokens"]
        uncapped_tokens = total["non_special_tokens"] - total["capped_non_special_tokens"]
        summary["masked_lm"] = {
            "masked_tokens": masked,
            "non_special_tokens": total["non_special_tokens"],
            "masked_fraction": ratio(masked, total["non_special_tokens"]),
            # Where max_predictions_per_seq did not cap the count: ~masked_lm_prob.
            "masked_fraction_uncapped": ratio(masked - total["capped_masked_tokens"],
                                              uncapped_tokens),
            "capped_instances": total["capped_instances"],
            "fraction_replaced_by_mask": ratio(total["replaced_by_mask"], masked),
            "fraction_kept": ratio(total["kept"], masked),
            "fraction_replaced_random": ratio(total["replaced_random"], masked),
        }
    return summary


def _check_counts(summary: dict, input_files: list[str]) -> None:
    """Refuses output that would train nothing useful (raised before any shard is renamed)."""
    names = ", ".join(input_files[:3]) + (" ..." if len(input_files) > 3 else "")
    if summary["instances"] == 0:
        raise DataError(f"{names}: no instances (no document has any WordPiece token)")
    if summary["multi_sentence_documents"] == 0:
        raise DataError(
            f"{names}: every document has a single sentence, so every next-sentence label "
            "would be 'random next'. Put one sentence a line with blank lines only between "
            "documents, or pass --input_format=paragraphs for one paragraph a line")

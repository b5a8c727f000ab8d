"""What shapes pre-training data: the options (Google's flags), the record schema, and the ids a
vocabulary gives instance creation."""

from __future__ import annotations

import dataclasses

import numpy as np

from bert_tf.errors import UsageError


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


COUNTERS = ("documents", "multi_sentence_documents", "sentences", "tokens", "instances",
             "instance_tokens", "random_next", "truncated_instances", "truncated_tokens",
             "non_special_tokens", "masked_tokens", "replaced_by_mask", "kept", "replaced_random",
             "capped_instances", "capped_non_special_tokens", "capped_masked_tokens")

"""BERT tokenization: Google's WordPiece tokenizer, exactly, plus a fast batched path.

- `FullTokenizer` (wordpiece.py): pure Python, the reference behaviour of
  google-research/bert; no TensorFlow import.
- `FastTokenizer` (fast.py): same ids, batched, ~6x faster, on tensorflow-text;
  imported on first use, so `import bert_tf.tokenization` stays light.
- `CachedTokenizer` (cached.py): same ids, no TensorFlow (a memo of WordPiece per word),
  several times faster than FullTokenizer; the tokenizer of create_pretraining_data's workers.
- normalization.py: Google's normalisation on C-speed `str`/`re` calls, shared by both.
"""

from bert_tf.tokenization.wordpiece import (
    BasicTokenizer,
    FullTokenizer,
    WordpieceTokenizer,
    check_do_lower_case,
    load_vocab,
    vocab_size,
    vocab_tokens,
)

__all__ = [
    "BasicTokenizer",
    "CachedTokenizer",
    "FastTokenizer",
    "FullTokenizer",
    "WordpieceTokenizer",
    "check_do_lower_case",
    "load_vocab",
    "make_tokenizer",
    "vocab_size",
    "vocab_tokens",
]


def make_tokenizer(vocab_file, do_lower_case: bool = True, reference: bool = False):
    """The scripts' tokenizer: `CachedTokenizer` (Google's ids, memoised per word, no
    TensorFlow), or with reference=True Google's pure-Python `FullTokenizer`. Both have
    `tokenize`, `convert_tokens_to_ids`, `convert_ids_to_tokens` and `vocab`."""
    if reference:
        return FullTokenizer(vocab_file, do_lower_case=do_lower_case)
    from bert_tf.tokenization.cached import CachedTokenizer

    return CachedTokenizer(vocab_file, do_lower_case=do_lower_case)


def __getattr__(name):
    if name == "FastTokenizer":  # pulls in TensorFlow and tensorflow-text
        from bert_tf.tokenization.fast import FastTokenizer

        return FastTokenizer
    if name == "CachedTokenizer":
        from bert_tf.tokenization.cached import CachedTokenizer

        return CachedTokenizer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

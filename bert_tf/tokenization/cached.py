"""Google's exact WordPiece ids without TensorFlow: C-speed normalisation and splitting,
then WordPiece once per distinct word through a memo.

`CachedTokenizer` is the tokenizer of create_pretraining_data's worker processes, which must
not import TensorFlow (each import costs ~400 MB of memory). It returns exactly the ids of
`FullTokenizer` (Google's behaviour; tests/test_pretraining_data.py checks every line of the
shared corpora, both vocabularies), several times faster on real text:

1. `normalization.clean_and_fold`: drop controls, space out CJK, lower-case + NFD + drop
   non-spacing marks (whole text at once, `str` methods and `re`).
2. One `re.findall` splits into words: runs of characters that are neither whitespace (as
   `str.split` knows it) nor punctuation, and single punctuation characters.
3. Each word's ids come from a dict memo (word -> tuple of ids); a miss runs Google's greedy
   longest-match-first WordPiece (`WordpieceTokenizer`). Natural text repeats a small set of
   words, so after warm-up nearly every word is a dict hit. The memo is cleared when it
   exceeds `max_cached_words` entries, which bounds its memory (~150 MB at 1M words).
"""

from __future__ import annotations

import os
import re
from typing import Iterable

from bert_tf.tokenization import wordpiece
from bert_tf.tokenization.normalization import GoogleCharClasses, class_body, char_ranges, \
    clean_and_fold
from bert_tf.tokenization.wordpiece import (
    UNK_TOKEN,
    WordpieceTokenizer,
)

DEFAULT_MAX_CACHED_WORDS = 1_000_000


def _word_pattern(punctuation: list[str]) -> re.Pattern:
    """Words as Google splits clean text: non-space non-punctuation runs, or one punctuation char.

    `\\s` of a str pattern is exactly `str.isspace`, what Google's `str.split()` splits on.
    """
    ranges = char_ranges(punctuation)
    if not ranges:
        return re.compile(r"\S+")
    body = class_body(ranges)
    return re.compile(rf"[^\s{body}]+|[{body}]")


class WordSplitter:
    """Google's basic tokenization (BasicTokenizer.tokenize) at C speed, without a vocabulary:
    `words(text)` -> the words WordPiece then splits (lower-cased and accent-stripped when
    do_lower_case). Shared by CachedTokenizer and the vocabulary learner."""

    def __init__(self, do_lower_case: bool = True):
        self.do_lower_case = do_lower_case
        self._classes = GoogleCharClasses.get()
        punctuation = self._classes.punctuation
        # Three variants of one pattern, as in normalization.CharSet: re tests a BMP-only
        # class with a bitmap, a class with astral ranges range by range (much slower).
        self._words_ascii = _word_pattern([c for c in punctuation if c.isascii()])
        self._words_bmp = _word_pattern([c for c in punctuation if ord(c) <= 0xFFFF])
        self._words_all = _word_pattern(punctuation)

    def words(self, text: str | bytes) -> list[str]:
        text, astral = clean_and_fold(wordpiece.as_text(text), self.do_lower_case, self._classes)
        if text.isascii():
            pattern = self._words_ascii
        else:
            pattern = self._words_all if astral else self._words_bmp
        return pattern.findall(text)


class CachedTokenizer(wordpiece.VocabTokenizer):
    """FullTokenizer's ids (Google's tokenization), TensorFlow-free and fast.

    Usage:
      tokenizer = CachedTokenizer("uncased_L-12_H-768_A-12/vocab.txt", do_lower_case=True)
      tokenizer.tokenize_to_ids(["Hello, world!", "A second text."])  # list[list[int]]
      tokenizer.ids("One text.")                                      # list[int]

    `vocab`, `inv_vocab`, `convert_tokens_to_ids` and `convert_ids_to_tokens` are those of
    FullTokenizer. Not thread-safe (the memo is shared state); use one per process.
    """

    def __init__(self, vocab_file: str | os.PathLike, do_lower_case: bool = True,
                 max_cached_words: int = DEFAULT_MAX_CACHED_WORDS):
        super().__init__(vocab_file, do_lower_case)
        self.max_cached_words = max_cached_words
        self._splitter = WordSplitter(do_lower_case)
        self._wordpiece = WordpieceTokenizer(self.vocab)
        self._memo: dict[str, tuple[int, ...]] = {}

    def words(self, text: str | bytes) -> list[str]:
        """Google's basic tokenization of `text` (BasicTokenizer.tokenize): list of words."""
        return self._splitter.words(text)

    def _word_ids(self, word: str) -> tuple[int, ...]:
        """WordPiece ids of one word (a memo miss); [UNK] for words over 200 characters."""
        if len(self._memo) >= self.max_cached_words:
            self._memo.clear()  # bounds memory; the next words refill it
        vocab = self.vocab
        ids = tuple(vocab[piece] for piece in self._wordpiece._segment(word))
        self._memo[word] = ids
        return ids

    def ids(self, text: str | bytes) -> list[int]:
        """WordPiece ids of one text, no [CLS]/[SEP]: FullTokenizer's ids exactly."""
        memo_get = self._memo.get
        out: list[int] = []
        for word in self.words(text):
            pieces = memo_get(word)
            if pieces is None:
                pieces = self._word_ids(word)
            out += pieces
        return out

    def tokenize_to_ids(self, texts: Iterable[str]) -> list[list[int]]:
        """Ids of each text (list of int lists, one per text), as FullTokenizer gives them."""
        if isinstance(texts, (str, bytes)):
            raise TypeError("Pass a list of texts; for a single text, pass [text].")
        return [self.ids(text) for text in texts]

    def tokenize(self, text: str | bytes) -> list[str]:
        """Word pieces of one text, as FullTokenizer.tokenize gives them."""
        return self.convert_ids_to_tokens(self.ids(text))



__all__ = ["CachedTokenizer", "UNK_TOKEN"]

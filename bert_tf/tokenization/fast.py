"""Fast WordPiece tokenization on tensorflow-text, giving the ids of Google's tokenizer.

`FastTokenizer` returns exactly the ids of `bert_tf.tokenization.FullTokenizer`
(Google's behaviour), batched and ~6x faster: see bench/README.md, "Tokenization".

Why not simply `tensorflow_text.FastBertTokenizer`: its normaliser is not Google's.
It case-folds where Google lower-cases (final sigma becomes sigma, sharp s becomes
"ss") and applies NFKC-style mappings (one half becomes 1, fraction slash, 2; the
ellipsis three full stops; U+2011 becomes U+2010), and the ICU tables it splits
punctuation with are older than Python's `unicodedata` (27 punctuation characters
of Unicode 13-14 are letters to it); 5 of the 2,891 WikiText-2 test lines come out
differently. So the work is split in two:

1. `normalize` (Python, on C-speed `str` methods and `re`): Google's basic tokenizer
   up to, not including, the split: drop control characters, space out CJK
   ideographs, lower-case + NFD + drop non-spacing marks. It also spaces out the
   punctuation tensorflow-text does not know, and replaces each word over 200
   characters by a stand-in that tensorflow-text turns into a single [UNK]
   (and lone surrogates, which UTF-8 cannot hold, by an equivalent character).
2. `ids_from_normalized` (a TensorFlow op, usable inside tf.data): tensorflow-text's
   `FastWordpieceTokenizer` splits on whitespace and punctuation and runs WordPiece
   (its LinMaxMatch algorithm gives greedy longest-match-first output).

tests/test_tokenization.py checks the ids against FullTokenizer and Hugging Face's
BertTokenizer on every line of the shared corpora, and against FullTokenizer with
every Unicode code point.
"""

from __future__ import annotations

import os
import re
from typing import Iterable

import tensorflow as tf
import tensorflow_text as tf_text

from bert_tf.tokenization import wordpiece
from bert_tf.tokenization.wordpiece import (
    MAX_INPUT_CHARS_PER_WORD,
    SUFFIX_INDICATOR,
    UNK_TOKEN,
)
# Google's character classes and normalisation live in a TensorFlow-free module, shared
# with CachedTokenizer (the tokenizer of create_pretraining_data's worker processes).
from bert_tf.tokenization.normalization import (
    CharSet as _CharSet,
    GoogleCharClasses as _GoogleCharClasses,
    char_ranges as _ranges,
    clean_and_fold,
)

# tensorflow-text limits a word's length in UTF-8 bytes, Google in characters. At
# 4 bytes per character at most, no word of <= 200 characters reaches this limit;
# `normalize` replaces the longer words.
_MAX_BYTES_PER_WORD = 4 * MAX_INPUT_CHARS_PER_WORD
# The stand-in for a word over 200 characters: one word (no whitespace or
# punctuation) that is over the byte limit, so tensorflow-text makes it one [UNK].
_TOO_LONG_WORD = "x" * (_MAX_BYTES_PER_WORD + 1)
# A run of non-whitespace that may hold a word over 200 characters.
_LONG_RUN = re.compile(r"\S{%d}" % (MAX_INPUT_CHARS_PER_WORD + 1))
# Lone surrogates can be in a Python str but not in UTF-8 for TensorFlow.
_SURROGATE = re.compile("[\ud800-\udfff]")


class FastTokenizer(wordpiece.VocabTokenizer):
    """Batched BERT WordPiece tokenization on tensorflow-text, with Google's exact ids.

    Usage:
      tokenizer = FastTokenizer("uncased_L-12_H-768_A-12/vocab.txt", do_lower_case=True)
      tokenizer.tokenize_to_ids(["Hello, world!", "A second text."])  # list[list[int]]
      tokenizer.tokenize_to_ragged(texts)  # tf.RaggedTensor int32 [B, (T)]

    In a tf.data pipeline, normalise in Python and tokenise in the graph:
      ds = tf.data.Dataset.from_generator(
          lambda: (tokenizer.normalize(text) for text in texts),
          output_signature=tf.TensorSpec([], tf.string))
      ds = ds.batch(64).map(tokenizer.ids_from_normalized)  # [B, (T)] int32

    `vocab`, `inv_vocab`, `convert_tokens_to_ids` and `convert_ids_to_tokens` are
    those of FullTokenizer.
    """

    def __init__(self, vocab_file: str | os.PathLike, do_lower_case: bool = True):
        super().__init__(vocab_file, do_lower_case)
        self._classes = _GoogleCharClasses.get()

        # tensorflow-text takes the vocabulary as a list indexed by id. An id that no
        # token maps to (a repeated line: Google keeps the last one) and the empty
        # token get placeholders holding spaces, which no word ever contains.
        tokens = [f" unused id {i} " for i in range(max(self.vocab.values()) + 1)]
        for token, index in self.vocab.items():
            if token:
                tokens[index] = token
        self._wordpiece = tf_text.FastWordpieceTokenizer(
            vocab=tokens,
            suffix_indicator=SUFFIX_INDICATOR,
            max_bytes_per_word=_MAX_BYTES_PER_WORD,
            token_out_type=tf.int32,
            unknown_token=UNK_TOKEN,
            no_pretokenization=False,  # split on whitespace and punctuation first
        )
        self._find_characters_tf_text_misses()
        # A lone surrogate is, to Google, a letter no vocabulary token contains, so
        # its word becomes [UNK]; a private-use character no token contains stands in.
        in_vocab = set("".join(self.vocab))
        self._surrogate_stand_in = next(
            chr(cp) for cp in range(0xE000, 0xF900) if chr(cp) not in in_vocab
        )

    def _find_characters_tf_text_misses(self) -> None:
        """Finds the characters Google splits on and tensorflow-text does not.

        tensorflow-text classifies characters with its bundled ICU, whose Unicode
        version is not Python's (U+2E52..U+2E5D, punctuation since Unicode 13/14, are
        plain letters to it). Each of Google's whitespace and punctuation characters
        is tried between two letters here; `normalize` turns missed whitespace into
        spaces and puts spaces around missed punctuation. (The converse, tensorflow-
        text splitting where Google does not, would need all 1.1M code points tried;
        the tests do that.)
        """
        probe = tf_text.FastWordpieceTokenizer(
            vocab=[UNK_TOKEN, "a", "##a"], token_out_type=tf.int32
        )

        def missed(chars: list[str], pieces_when_split: int) -> list[str]:
            pieces = probe.tokenize(tf.constant([f"a{c}a" for c in chars])).row_lengths().numpy()
            return [c for c, n in zip(chars, pieces) if n != pieces_when_split]

        to_space = missed(self._classes.whitespace, pieces_when_split=2)
        split_off = missed(self._classes.punctuation, pieces_when_split=3)
        self.missed_by_tf_text = to_space + split_off  # for tests and the curious
        self._to_space = _CharSet(_ranges(to_space))
        self._split_off = _CharSet(_ranges(split_off))
        self._to_space_ascii = _CharSet(_ranges(c for c in to_space if c.isascii()))
        self._split_off_ascii = _CharSet(_ranges(c for c in split_off if c.isascii()))

    # ---- Python half: Google's normalisation ----------------------------------------

    def normalize(self, text: str | bytes) -> str:
        """Google's basic-tokenizer normalisation of `text`, for `ids_from_normalized`.

        Not meant for reading: it may hold extra spaces and, for words over 200
        characters, a long stand-in word.
        """
        text, astral = clean_and_fold(wordpiece.as_text(text), self.do_lower_case, self._classes)
        if text.isascii():
            text = self._to_space_ascii.sub(" ", text, astral=False)
            text = self._split_off_ascii.sub(r" \g<0> ", text, astral=False)
        else:
            text = self._to_space.sub(" ", text, astral)
            text = self._split_off.sub(r" \g<0> ", text, astral)
            text = _SURROGATE.sub(self._surrogate_stand_in, text)
        if len(text) > MAX_INPUT_CHARS_PER_WORD and _LONG_RUN.search(text):
            text = self._replace_long_words(text)
        return text

    @staticmethod
    def _replace_long_words(normalized: str) -> str:
        """Splits the (rare) text with a 201+ character run Google's way, replacing long words."""
        words = []
        for chunk in normalized.split():
            for word in wordpiece.split_on_punctuation(chunk):
                words.append(_TOO_LONG_WORD if len(word) > MAX_INPUT_CHARS_PER_WORD else word)
        return " ".join(words)

    # ---- TensorFlow half: split + WordPiece ------------------------------------------

    def ids_from_normalized(self, normalized: tf.Tensor) -> tf.RaggedTensor:
        """WordPiece ids of `normalize`d text: tf.string [B] -> int32 [B, (T)].

        A TensorFlow op: works eagerly, in tf.function and in tf.data `map`. A scalar
        string gives a [T] tensor.
        """
        return self._wordpiece.tokenize(normalized)

    # ---- Batched conveniences ---------------------------------------------------------

    def tokenize_to_ragged(self, texts: Iterable[str]) -> tf.RaggedTensor:
        """Ids of each text: tf.RaggedTensor int32 [B, (T)]."""
        if isinstance(texts, (str, bytes)):
            raise TypeError("Pass a list of texts; for a single text, pass [text].")
        normalized = [self.normalize(text) for text in texts]
        batch = tf.constant(normalized, dtype=tf.string, shape=[len(normalized)])
        return self.ids_from_normalized(batch)

    def tokenize_to_ids(self, texts: Iterable[str]) -> list[list[int]]:
        """Ids of each text as Python lists: FullTokenizer's ids, batched and fast."""
        ragged = self.tokenize_to_ragged(texts)
        flat = ragged.flat_values.numpy().tolist()
        splits = ragged.row_splits.numpy().tolist()
        return [flat[start:end] for start, end in zip(splits, splits[1:])]

    def tokenize(self, text: str) -> list[str]:
        """Word pieces of one text, as FullTokenizer.tokenize gives them."""
        return self.convert_ids_to_tokens(self.tokenize_to_ids([text])[0])


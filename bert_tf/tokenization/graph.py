"""Google's BERT tokenization in TensorFlow ops only, for graphs that must stand alone (a
SavedModel that takes raw text): no Python runs per text.

    tokenizer = GraphTokenizer("vocab.txt", do_lower_case=True)
    tokenizer.tokenize(tf.constant(["Hello, world!", "A second text."]))  # int64 [B, (T)]

The steps are Google's basic tokenizer then WordPiece (bert_tf.tokenization.wordpiece):
1. drop what Google's `_clean_text` drops (NUL, U+FFFD, control characters: Cc, Cf but tab
   and line ends), turn its whitespace (space, tab, line ends, Zs) into spaces;
2. space out CJK ideographs;
3. uncased: lower-case (`tf.strings.lower(encoding="utf-8")`), NFD (tensorflow-text's
   `normalize_utf8`), drop the non-spacing marks (Mn);
4. space out punctuation (Google's rule: ASCII symbols and every P* character);
5. split on spaces; a word over 200 characters becomes [UNK] (Google's
   max_input_chars_per_word), the others go through tensorflow-text's
   `FastWordpieceTokenizer` (greedy longest match first, as Google's loop).

Ops: core TensorFlow string ops, tensorflow-text's NormalizeUTF8 (uncased only) and
FastWordpieceTokenizeWithOffsets.

The character classes of steps 1, 2, 4 and 3's marks are built from Python's `unicodedata` when
the tokenizer is made (the same tables Google's Python code reads) and baked into the graph as
RE2 classes; the separators Python's `str.split` also splits on (U+2028, U+2029) join the
whitespace. tensorflow-text's own `FastBertNormalizer` is not used: it case-folds and applies
NFKC-like mappings, and gives other ids on 5 of WikiText-2's 2,891 test lines and on 3,262 code
points; this pipeline gives Google's ids on every one (tests/test_tokenization.py).
"""

from __future__ import annotations

import os
import unicodedata

import tensorflow as tf
import tensorflow_text as tf_text

from bert_tf.tokenization import wordpiece
from bert_tf.tokenization.wordpiece import MAX_INPUT_CHARS_PER_WORD, UNK_TOKEN

_MAX_CODE_POINT = 0x10FFFF


def _ranges(predicate) -> list[tuple[int, int]]:
    """The code points (surrogates left out) where `predicate(char)` holds, as ranges."""
    out, start = [], None
    for cp in range(_MAX_CODE_POINT + 1):
        holds = not 0xD800 <= cp <= 0xDFFF and predicate(chr(cp))
        if holds and start is None:
            start = cp
        elif not holds and start is not None:
            out.append((start, cp - 1))
            start = None
    if start is not None:
        out.append((start, _MAX_CODE_POINT))
    return out


def _re2_class(ranges: list[tuple[int, int]]) -> str:
    """An RE2 character class of the ranges ([\\x{41}-\\x{5a}...])."""
    body = "".join(f"\\x{{{a:x}}}" if a == b else f"\\x{{{a:x}}}-\\x{{{b:x}}}"
                   for a, b in ranges)
    return f"[{body}]"


def _is_dropped(char: str) -> bool:
    return char in ("\x00", "\ufffd") or wordpiece.is_control(char)


def _is_space(char: str) -> bool:
    # Google's whitespace, and what `str.split` splits on besides (once control characters
    # are gone: U+2028, U+2029).
    return wordpiece.is_whitespace(char) or (char.isspace() and not _is_dropped(char))


class GraphTokenizer(tf.Module):
    """Google's FullTokenizer as TensorFlow ops: same ids, in a graph a SavedModel can hold.

    vocab_file: a BERT vocab.txt; do_lower_case: as FullTokenizer's. Building the character
    classes reads every code point once (about 1.5 s). Raises ValueError (load_vocab's) for a
    vocabulary that is not UTF-8, is empty or has no [UNK].
    """

    def __init__(self, vocab_file: str | os.PathLike, do_lower_case: bool = True,
                 name: str | None = None):
        super().__init__(name=name)
        vocab = wordpiece.load_vocab(vocab_file)
        wordpiece.check_vocab_has_unk(vocab, vocab_file)
        self.do_lower_case = do_lower_case
        self.unk_id = vocab[UNK_TOKEN]
        self._drop = _re2_class(_ranges(_is_dropped))
        self._space = _re2_class(_ranges(_is_space))
        self._cjk = _re2_class(_ranges(wordpiece.is_cjk))
        self._punct = _re2_class(_ranges(wordpiece.is_punctuation))
        self._marks = _re2_class(_ranges(lambda c: unicodedata.category(c) == "Mn"))
        # Every word reaching WordPiece is at most 200 characters, 800 UTF-8 bytes.
        self._wordpiece = tf_text.FastWordpieceTokenizer(
            list(vocab), suffix_indicator="##", max_bytes_per_word=4 * MAX_INPUT_CHARS_PER_WORD,
            token_out_type=tf.int64, unknown_token=UNK_TOKEN, no_pretokenization=True)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def words(self, texts):
        """tf.string [B] -> the basic tokenizer's words, tf.string ragged [B, (W)]."""
        x = tf.strings.regex_replace(texts, self._drop, "")
        x = tf.strings.regex_replace(x, self._space, " ")
        x = tf.strings.regex_replace(x, self._cjk, " \\0 ")
        if self.do_lower_case:
            x = tf.strings.lower(x, encoding="utf-8")
            x = tf_text.normalize_utf8(x, "NFD")
            x = tf.strings.regex_replace(x, self._marks, "")
        x = tf.strings.regex_replace(x, self._punct, " \\0 ")
        words = tf.strings.split(x, sep=" ")
        return tf.ragged.boolean_mask(words, tf.strings.length(words) > 0)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def tokenize(self, texts):
        """tf.string [B] (UTF-8) -> WordPiece ids, int64 ragged [B, (T)]: FullTokenizer's."""
        # Google turns a word over 200 characters into one [UNK]: here the word becomes the
        # token "[UNK]" itself, which WordPiece finds whole (no word holds "[" any more).
        words = tf.ragged.map_flat_values(
            lambda w: tf.where(tf.strings.length(w, unit="UTF8_CHAR") > MAX_INPUT_CHARS_PER_WORD,
                               UNK_TOKEN, w), self.words(texts))
        return self._wordpiece.tokenize(words).merge_dims(1, 2)  # [B, (W), (P)] -> [B, (T)]

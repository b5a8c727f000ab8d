"""Google's BERT tokenization in TensorFlow ops only, for graphs that must stand alone (a
SavedModel that takes raw text): no Python runs per text.

    tokenizer = GraphTokenizer("vocab.txt", do_lower_case=True)
    tokenizer.tokenize(tf.constant(["Hello, world!", "A second text."]))  # int64 [B, (T)]

The steps are Google's basic tokenizer then WordPiece (bert_tf.tokenization.wordpiece), one
character at a time, so every word keeps where it came from in the text:
1. a character Google's `_clean_text` drops (NUL, U+FFFD, control characters: Cc, Cf but tab
   and line ends) is left out, its whitespace (space, tab, line ends, Zs, and what Python's
   `str.split` also splits on: U+2028, U+2029) ends a word;
2. a CJK ideograph is a word of its own;
3. uncased: each character becomes its lower case, NFD, without non-spacing marks (Mn), read
   from a table; a capital sigma becomes the final sigma where Python's `str.lower` makes it
   one (Unicode's Final_Sigma rule, on the same case-ignorable and cased characters);
4. a punctuation character (Google's rule: ASCII symbols and every P* character, tested after
   step 3) is a word of its own;
5. a word over 200 characters becomes [UNK] (Google's max_input_chars_per_word), the others go
   through tensorflow-text's `FastWordpieceTokenizer` (greedy longest match first, as Google's
   loop).

Ops: core TensorFlow (Unicode decoding, sorted-array lookups, segment joins) and one
tensorflow-text op, FastWordpieceTokenizeWithOffsets, which TensorFlow Serving links since 2.12.
tensorflow-text's NormalizeUTF8 (ICU data at run time) and FastBertNormalize are not used:
FastBertNormalizer case-folds and applies NFKC-like mappings, and gives other ids than Google's
on 5 of WikiText-2's 2,891 test lines and on 3,262 code points; this pipeline gives Google's ids
on every one (tests/test_tokenization.py).

The tables of steps 1-4 are built from Python's `unicodedata` and `str.lower` when the tokenizer
is made (the tables Google's Python code reads) and stored in the graph as sorted arrays. One
known difference, by construction: NFD reorders runs of combining marks by combining class;
per character it cannot, so two spacing combining marks (Mc with a combining class: 25 code
points, viramas and musical symbols) written out of canonical order keep their order.
"""

from __future__ import annotations

import functools
import os
import unicodedata

import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text

from bert_tf.tokenization import wordpiece
from bert_tf.tokenization.wordpiece import MAX_INPUT_CHARS_PER_WORD, UNK_TOKEN

_MAX_CODE_POINT = 0x10FFFF
_CAPITAL_SIGMA, _FINAL_SIGMA = 0x3A3, "\u03c2"

# A character's class (the low two bits of its property): how it takes part in words.
WORD, DROPPED, SPACE, ALONE = 0, 1, 2, 3
# Its case properties for the Final_Sigma rule (Python's _PyUnicode_IsCased and IsCaseIgnorable).
_CASED, _CASE_IGNORABLE = 4, 8


def _is_dropped(char: str) -> bool:
    return char in ("\x00", "\ufffd") or wordpiece.is_control(char)


def _is_space(char: str) -> bool:
    # Google's whitespace, and what `str.split` splits on besides (once control characters
    # are gone: U+2028, U+2029).
    return wordpiece.is_whitespace(char) or (char.isspace() and not _is_dropped(char))


def _uncased(char: str) -> str:
    """Google's uncased step for one character: lower case, NFD, non-spacing marks out."""
    if char.lower() == char and unicodedata.is_normalized("NFD", char):
        return "" if unicodedata.category(char) == "Mn" else char
    return "".join(c for c in unicodedata.normalize("NFD", char.lower())
                   if unicodedata.category(c) != "Mn")


def _case_properties(char: str) -> int:
    """_CASED / _CASE_IGNORABLE as Python's str.lower applies them to a capital sigma: read
    from its result, so the rule and the tables are the interpreter's own."""
    if ("A\u03a3" + char).lower()[1] == "\u03c3":  # cased and not skipped: sigma not final
        return _CASED
    if ("A\u03a3" + char + "A").lower()[1] == "\u03c3":  # skipped on the way to the A
        return _CASE_IGNORABLE
    return 0


def _properties(char: str, do_lower_case: bool, cjk: bool) -> int:
    if _is_dropped(char):
        return DROPPED | _CASE_IGNORABLE  # gone before Google lower-cases: transparent
    if _is_space(char):
        return SPACE
    if cjk:  # CJK ideographs are neither cased nor case-ignorable
        return ALONE
    text = _uncased(char) if do_lower_case else char
    case = _case_properties(char) if do_lower_case else 0
    if len(text) == 1 and wordpiece.is_punctuation(text):
        return ALONE | case
    return (WORD if text else DROPPED) | case


@functools.lru_cache(maxsize=2)
def _tables(do_lower_case: bool):
    """(starts, properties): the property of code point c is properties[i] for the last
    starts[i] <= c; and (keys, values): the characters step 3 changes, sorted. Cached: about
    3 s the first time."""
    cjk = bytearray(_MAX_CODE_POINT + 1)
    for lo, hi in wordpiece.CJK_RANGES:
        cjk[lo:hi + 1] = b"\x01" * (hi + 1 - lo)
    # Unassigned and private-use code points (most of them) have the properties of U+0378 or
    # U+E000 (ALONE in Google's CJK ranges): every rule above reads them by category alone.
    by_category = {"Cn": _properties("\u0378", do_lower_case, False),
                   "Co": _properties("\ue000", do_lower_case, False)}
    starts, props, keys, values = [], [], [], []
    for cp in range(_MAX_CODE_POINT + 1):
        char = chr(cp)
        category = unicodedata.category(char)
        if 0xD800 <= cp <= 0xDFFF:
            prop = DROPPED
        elif category in by_category:
            prop = ALONE if cjk[cp] else by_category[category]
        else:
            prop = _properties(char, do_lower_case, cjk[cp])
        if not props or prop != props[-1]:
            starts.append(cp)
            props.append(prop)
        if do_lower_case and prop & 3 != DROPPED and category not in by_category:
            text = _uncased(char)
            if text != char:
                keys.append(cp)
                values.append(text)
    return (np.array(starts, np.int32), np.array(props, np.int32),
            np.array(keys, np.int32), np.array(values, object))


def _neighbour(index, keep, row, before: bool):
    """For each position of the flat [N] arrays: the nearest other position with `keep`
    before (or after) it in the same row, and whether there is one."""
    count = tf.cumsum(tf.cast(keep, tf.int32), exclusive=before)
    kept = tf.cast(tf.squeeze(tf.where(keep), 1), tf.int32)
    slot = count - 1 if before else count
    valid = (slot >= 0) & (slot < tf.size(kept))
    # One padding entry: a text with no such position still gathers from a non-empty array.
    other = tf.gather(tf.concat([kept, [0]], 0), tf.clip_by_value(slot, 0, tf.size(kept)))
    other = tf.where(valid, other, index)
    return other, valid & (tf.gather(row, other) == row)


class GraphTokenizer(tf.Module):
    """Google's FullTokenizer as TensorFlow ops: same ids, in a graph a SavedModel can hold.

    vocab_file: a BERT vocab.txt; do_lower_case: as FullTokenizer's. Building the tables reads
    every code point once (a few seconds). Raises ValueError (load_vocab's) for a vocabulary
    that is not UTF-8, is empty or has no [UNK].
    """

    def __init__(self, vocab_file: str | os.PathLike, do_lower_case: bool = True,
                 name: str | None = None):
        super().__init__(name=name)
        vocab = wordpiece.load_vocab(vocab_file)
        wordpiece.check_vocab_has_unk(vocab, vocab_file)
        self.do_lower_case = do_lower_case
        self.unk_id = vocab[UNK_TOKEN]
        # The ids of the special tokens the vocabulary has (what a model's inputs add).
        self.special_ids = {t: vocab[t] for t in ("[PAD]", UNK_TOKEN, "[CLS]", "[SEP]", "[MASK]")
                            if t in vocab}
        starts, props, keys, values = _tables(do_lower_case)
        self._starts, self._props = tf.constant(starts), tf.constant(props)
        self._keys = tf.constant(keys if len(keys) else np.array([-1], np.int32))
        self._values = tf.constant(values if len(values) else np.array([""], object))
        # Every word reaching WordPiece is at most 200 characters, 800 UTF-8 bytes.
        self._wordpiece = tf_text.FastWordpieceTokenizer(
            list(vocab), suffix_indicator="##", max_bytes_per_word=4 * MAX_INPUT_CHARS_PER_WORD,
            token_out_type=tf.int64, unknown_token=UNK_TOKEN, no_pretokenization=True)

    def _characters(self, texts):
        """texts [B] -> (code points [N], their strings after step 3 [N], row [N], position in
        the row [N] (code points), row_splits [B+1]) over the batch's N characters."""
        chars = tf.strings.unicode_split(texts, "UTF-8", errors="replace")
        cps = tf.strings.unicode_decode(texts, "UTF-8", errors="replace").flat_values
        row = tf.cast(chars.value_rowids(), tf.int32)
        splits = tf.cast(chars.row_splits, tf.int32)
        index = tf.range(tf.size(cps))
        position = index - tf.gather(splits, row)
        text = chars.flat_values
        if self.do_lower_case:
            slot = tf.minimum(tf.searchsorted(self._keys, cps), tf.size(self._keys) - 1)
            text = tf.where(tf.gather(self._keys, slot) == cps, tf.gather(self._values, slot),
                            text)
        return cps, text, row, position, index

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def words_with_offsets(self, texts):
        """tf.string [B] (UTF-8) -> (words, start, end, token): the basic tokenizer's words,
        tf.string ragged [B, (W)]; where each is in its text, int64 ragged [B, (W)], in code
        points (Python's `text[start:end]`; characters step 1 drops inside a word are inside
        the span); and which whitespace-delimited token of its text it is part of (0, 1, ...:
        "U.N." gives four words of token 0), int64 ragged [B, (W)]. Invalid UTF-8 is read as
        U+FFFD, which Google drops."""
        cps, text, row, position, index = self._characters(texts)
        prop = tf.gather(self._props, tf.searchsorted(self._starts, cps, side="right") - 1)
        kind = prop % 4
        if self.do_lower_case:  # Final_Sigma: after a cased character, before no cased one
            opaque = prop // _CASE_IGNORABLE % 2 == 0
            cased = prop // _CASED % 2 == 1
            before, has_before = _neighbour(index, opaque, row, before=True)
            after, has_after = _neighbour(index, opaque, row, before=False)
            final = ((cps == _CAPITAL_SIGMA) & has_before & tf.gather(cased, before)
                     & ~(has_after & tf.gather(cased, after)))
            text = tf.where(final, _FINAL_SIGMA, text)
        # A word starts at a kept character that stands alone, follows one that does, is the
        # first of its row or has a space between it and the kept character before it.
        kept = tf.cast(tf.squeeze(tf.where((kind == WORD) | (kind == ALONE)), 1), tf.int32)
        spaces = tf.gather(tf.cumsum(tf.cast(kind == SPACE, tf.int32)), kept)
        alone = tf.gather(kind, kept) == ALONE
        kept_row = tf.gather(row, kept)
        first = tf.concat([[True], kept_row[1:] != kept_row[:-1]], 0)[:tf.size(kept)]
        new = (first | alone | tf.concat([[False], alone[:-1]], 0)[:tf.size(kept)]
               | tf.concat([[False], spaces[1:] != spaces[:-1]], 0)[:tf.size(kept)])
        word = tf.cumsum(tf.cast(new, tf.int32)) - 1
        count = tf.reduce_sum(tf.cast(new, tf.int32))
        # The text's whitespace-delimited tokens (a CoNLL word): one starts where a word starts
        # after a space or at the start of a row; counted from 0 in each row.
        nrows = tf.shape(texts, out_type=tf.int32)[0]
        token_new = first | tf.concat([[False], spaces[1:] != spaces[:-1]], 0)[:tf.size(kept)]
        token = tf.cumsum(tf.cast(token_new, tf.int32)) - 1
        per_row = tf.math.unsorted_segment_sum(tf.cast(token_new, tf.int32), kept_row, nrows)
        token -= tf.gather(tf.cumsum(per_row, exclusive=True), kept_row)
        words = tf.strings.unsorted_segment_join(tf.gather(text, kept), word, count)
        heads = tf.cast(tf.squeeze(tf.where(new), 1), tf.int32)
        start = tf.cast(tf.gather(tf.gather(position, kept), heads), tf.int64)
        end = tf.cast(tf.math.segment_max(tf.gather(position, kept), word) + 1, tf.int64)
        word_row = tf.cast(tf.gather(kept_row, heads), tf.int64)

        def ragged(values):
            return tf.RaggedTensor.from_value_rowids(values, word_row,
                                                     nrows=tf.cast(nrows, tf.int64))

        return (ragged(words), ragged(start), ragged(end),
                ragged(tf.cast(tf.gather(token, heads), tf.int64)))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def words(self, texts):
        """tf.string [B] -> the basic tokenizer's words, tf.string ragged [B, (W)]."""
        return self.words_with_offsets(texts)[0]

    @tf.function(input_signature=[tf.RaggedTensorSpec([None, None], tf.string)])
    def wordpieces(self, words):
        """Words, tf.string ragged [B, (W)] -> WordPiece ids, int64 ragged [B, (W), (P)]."""
        # Google turns a word over 200 characters into one [UNK]: here the word becomes the
        # token "[UNK]" itself, which WordPiece finds whole (no word holds "[" any more).
        words = tf.ragged.map_flat_values(
            lambda w: tf.where(tf.strings.length(w, unit="UTF8_CHAR") > MAX_INPUT_CHARS_PER_WORD,
                               UNK_TOKEN, w), words)
        return self._wordpiece.tokenize(words)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def tokenize(self, texts):
        """tf.string [B] (UTF-8) -> WordPiece ids, int64 ragged [B, (T)]: FullTokenizer's."""
        return self.wordpieces(self.words(texts)).merge_dims(1, 2)

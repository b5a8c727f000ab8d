"""WordPiece tokenization with the behaviour of Google's original BERT, in pure Python.

This is the reference tokenizer: `FullTokenizer` produces exactly the tokens of
google-research/bert's `tokenization.FullTokenizer`, so pre-trained checkpoints see
text the way they saw it in pre-training. `bert_tf.tokenization.fast.FastTokenizer`
is the fast path and is tested to return the same ids.

What the pipeline does, in order (the behaviour that must not drift):

1. Clean: drop U+0000, U+FFFD and every control character (Unicode categories Cc
   and Cf, except tab, newline and carriage return); turn whitespace (space, tab,
   newline, carriage return, category Zs) into a plain space.
2. Put spaces around every CJK ideograph, so each becomes its own word.
3. Split on whitespace (Python's `str.split()`).
4. If lower-casing: `str.lower()` each word, decompose it (NFD) and drop the
   non-spacing marks (category Mn), which strips accents.
   Note what is *not* done: no NFC/NFKC normalisation and no Unicode case folding
   (final sigma stays final sigma, "½" stays "½").
5. Split every punctuation character off as a word of its own. Punctuation is
   category P* plus all non-alphanumeric printable ASCII (33-47, 58-64, 91-96,
   123-126), so "$", "^", "`", "+" count as punctuation too.
6. WordPiece each word: greedy longest-match-first against the vocabulary, pieces
   after the first carry the "##" prefix; a word with no complete segmentation, or
   longer than 200 characters, becomes the single token "[UNK]".
"""

from __future__ import annotations

import collections
import os
import re
import unicodedata
from typing import Iterable

UNK_TOKEN = "[UNK]"
SUFFIX_INDICATOR = "##"
MAX_INPUT_CHARS_PER_WORD = 200

# Inclusive code point ranges of the CJK ideograph blocks that Google's tokenizer
# surrounds with spaces (Unified Ideographs, Extensions A-E, Compatibility
# Ideographs and their supplement). Hangul, Hiragana and Katakana are not included:
# those scripts separate words with spaces.
CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)


def as_text(text: str | bytes) -> str:
    """Bytes are decoded as UTF-8, dropping invalid sequences (as Google does)."""
    if isinstance(text, bytes):
        return text.decode("utf-8", "ignore")
    if not isinstance(text, str):
        raise TypeError(f"Expected text as str or bytes, got {type(text).__name__}.")
    return text


def is_whitespace(char: str) -> bool:
    """Whitespace for cleaning: space, \\t, \\n, \\r and Unicode category Zs."""
    return char in " \t\n\r" or unicodedata.category(char) == "Zs"


def is_control(char: str) -> bool:
    """Control characters that cleaning drops: categories Cc and Cf, but not \\t \\n \\r.

    Only Cc and Cf: private-use (Co) and unassigned (Cn) code points are kept, as
    Google's tokenizer keeps them (Hugging Face's port drops every C* category).
    """
    if char in "\t\n\r":
        return False
    return unicodedata.category(char) in ("Cc", "Cf")


def is_punctuation(char: str) -> bool:
    """Category P*, or any printable ASCII character that is not a letter or digit."""
    cp = ord(char)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def is_cjk(char: str) -> bool:
    cp = ord(char)
    if cp < 0x3400:  # below every CJK block: most text stops here
        return False
    return any(lo <= cp <= hi for lo, hi in CJK_RANGES)


def gfile_lines(path: str | os.PathLike) -> list[str]:
    """A UTF-8 text file's lines as Google's scripts read them with `GFile.readline()` and
    `strip()`: split at "\\n" only, a final "\\n" ends the last line without starting another,
    every "\\r" dropped (TensorFlow's `BufferedInputStream::ReadLine` skips them), each line
    stripped of surrounding whitespace. Raises UnicodeDecodeError for a file that is not UTF-8."""
    path = os.fspath(path)
    with open(path, encoding="utf-8", newline="") as reader:
        content = reader.read()
    lines = content.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.replace("\r", "").strip() for line in lines]


def _read_lines(path: str) -> list[str]:
    """Lines of a UTF-8 text file, split at "\\n" only; remote paths (gs://...) via tf.io.gfile."""
    try:
        if "://" in path:
            import tensorflow as tf  # only for remote files: keeps this module TF-free

            if not tf.io.gfile.exists(path):
                raise FileNotFoundError(_missing_vocab_message(path))
            with tf.io.gfile.GFile(path, "rb") as reader:
                content = reader.read().decode("utf-8")
        else:
            with open(path, encoding="utf-8", newline="") as reader:
                content = reader.read()
    except UnicodeDecodeError as error:
        raise ValueError(
            f"Vocabulary file {path!r} is not UTF-8 text ({error}); expected a WordPiece vocab.txt."
        ) from error
    lines = content.split("\n")
    if lines[-1] == "":  # the file ends with a newline: no token after it
        lines.pop()
    return lines


def _missing_vocab_message(path: str) -> str:
    return (
        f"Vocabulary file not found: {path!r}. Pass vocab_file= the WordPiece vocab.txt "
        "that belongs to the checkpoint (one token per line, line number = id), e.g. "
        "uncased_L-12_H-768_A-12/vocab.txt from Google's release or the vocab.txt of a "
        "Hugging Face model directory."
    )


def vocab_tokens(vocab_file: str | os.PathLike) -> list[str]:
    """The one definition of a vocabulary file: token i is line i, stripped.

    Google's `load_vocab` reads with `GFile.readline()` until it returns "", and gives each
    line the next id whatever it holds; so every line ending in "\n" is one id (an empty line,
    one of spaces, a line holding U+2028 or a lone "\r" too), and so is a last line without a
    newline. Only "\n" ends a line, and every "\r" is dropped (TensorFlow's
    `BufferedInputStream::ReadLine` under GFile skips them: "n\ro" is the token "no"). Each
    token is then `str.strip()`ped, as Google does. The number
    of ids (what `vocab_size` must equal) is the length of this list, the tokenizer's ids are
    its indices, and a checkpoint's vocab.txt is this file copied byte for byte.

    Raises FileNotFoundError, or ValueError for a file that is not UTF-8 or holds no line.
    """
    path = os.fspath(vocab_file)
    if "://" not in path and not os.path.isfile(path):
        raise FileNotFoundError(_missing_vocab_message(path))
    tokens = [line.replace("\r", "").strip() for line in _read_lines(path)]
    if not tokens:
        raise ValueError(
            f"Vocabulary file {path!r} is empty; expected one WordPiece token per line."
        )
    return tokens


def vocab_size(vocab_file: str | os.PathLike) -> int:
    """Number of ids the vocabulary file defines (see `vocab_tokens`)."""
    return len(vocab_tokens(vocab_file))


def load_vocab(vocab_file: str | os.PathLike) -> "collections.OrderedDict[str, int]":
    """Token -> id, as Google's loader builds it from `vocab_tokens`: the 0-based line number
    is the id; a token on several lines maps to its last one (the earlier ids stay unused)."""
    vocab: collections.OrderedDict[str, int] = collections.OrderedDict()
    for index, token in enumerate(vocab_tokens(vocab_file)):
        vocab[token] = index
    return vocab


def check_vocab_has_unk(
    vocab: dict, vocab_file: str | os.PathLike, unk_token: str = UNK_TOKEN
) -> None:
    if unk_token not in vocab:
        raise ValueError(
            f"Vocabulary file {os.fspath(vocab_file)!r} has no {unk_token!r} token, which "
            "WordPiece needs for words it cannot segment. Is this a BERT WordPiece vocab.txt? "
            "(A SentencePiece model is not one.)"
        )


class BasicTokenizer:
    """Cleaning, CJK spacing, optional lower-casing + accent stripping, punctuation split."""

    def __init__(self, do_lower_case: bool = True):
        self.do_lower_case = do_lower_case

    def tokenize(self, text: str | bytes) -> list[str]:
        text = self._spaced_cjk(self._clean(as_text(text)))
        words = []
        for word in text.split():
            if self.do_lower_case:
                word = _strip_accents(word.lower())
            words.extend(split_on_punctuation(word))
        return words

    @staticmethod
    def _clean(text: str) -> str:
        if text.isascii() and text.isprintable():  # no controls, no whitespace but " "
            return text
        kept = []
        for char in text:
            if char == "\x00" or char == "\ufffd" or is_control(char):
                continue
            kept.append(" " if is_whitespace(char) else char)
        return "".join(kept)

    @staticmethod
    def _spaced_cjk(text: str) -> str:
        if text.isascii():
            return text
        return "".join(f" {char} " if is_cjk(char) else char for char in text)


def _strip_accents(word: str) -> str:
    if word.isascii():  # NFD leaves ASCII alone and it has no marks
        return word
    return "".join(c for c in unicodedata.normalize("NFD", word) if unicodedata.category(c) != "Mn")


def split_on_punctuation(word: str) -> list[str]:
    """"don't!" -> ["don", "'", "t", "!"]: each punctuation character is its own piece."""
    if word.isalnum():  # letters and digits only (categories L*, N*): nothing to split
        return [word]
    pieces: list[str] = []
    current: list[str] = []
    for char in word:
        if is_punctuation(char):
            if current:
                pieces.append("".join(current))
                current = []
            pieces.append(char)
        else:
            current.append(char)
    if current:
        pieces.append("".join(current))
    return pieces


class WordpieceTokenizer:
    """Greedy longest-match-first segmentation of words into vocabulary pieces."""

    def __init__(
        self,
        vocab: dict,
        unk_token: str = UNK_TOKEN,
        max_input_chars_per_word: int = MAX_INPUT_CHARS_PER_WORD,
    ):
        self.vocab = vocab
        self.unk_token = unk_token
        self.max_input_chars_per_word = max_input_chars_per_word

    def tokenize(self, text: str | bytes) -> list[str]:
        """Segments each whitespace-separated word of `text` (already basic-tokenized)."""
        pieces: list[str] = []
        for word in as_text(text).split():
            pieces.extend(self._segment(word))
        return pieces

    def _segment(self, word: str) -> list[str]:
        if len(word) > self.max_input_chars_per_word:
            return [self.unk_token]
        pieces = []
        start = 0
        while start < len(word):
            # Longest vocabulary entry starting at `start`; continuations carry "##".
            prefix = SUFFIX_INDICATOR if start > 0 else ""
            for end in range(len(word), start, -1):
                candidate = prefix + word[start:end]
                if candidate in self.vocab:
                    pieces.append(candidate)
                    start = end
                    break
            else:
                # Some position has no matching piece: the whole word is unknown.
                return [self.unk_token]
        return pieces


class VocabTokenizer:
    """What every tokenizer of bert_tf shares: the vocabulary and the id <-> token maps.

    Attributes:
      vocab_file: the path given; do_lower_case: the casing the tokenizer applies.
      vocab: OrderedDict token -> id, in file order.
      inv_vocab: dict id -> token.
    Raises ValueError (from load_vocab / check_vocab_has_unk) for a vocabulary that is not
    UTF-8, is empty or has no [UNK].
    """

    def __init__(self, vocab_file: str | os.PathLike, do_lower_case: bool = True):
        self.vocab_file = os.fspath(vocab_file)
        self.do_lower_case = do_lower_case
        self.vocab = load_vocab(vocab_file)
        check_vocab_has_unk(self.vocab, vocab_file)
        self.inv_vocab = {index: token for token, index in self.vocab.items()}

    def convert_tokens_to_ids(self, tokens: Iterable[str]) -> list[int]:
        """Ids of `tokens`; a token not in the vocabulary gets the id of [UNK]."""
        unk_id = self.vocab[UNK_TOKEN]
        return [self.vocab.get(token, unk_id) for token in tokens]

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        tokens = []
        for index in ids:
            index = int(index)
            if index not in self.inv_vocab:
                raise ValueError(
                    f"Token id {index} is not in the vocabulary {self.vocab_file!r} "
                    f"(ids 0..{len(self.vocab) - 1}); were these ids made with another vocab?"
                )
            tokens.append(self.inv_vocab[index])
        return tokens

    def __len__(self) -> int:
        return len(self.vocab)


class FullTokenizer(VocabTokenizer):
    """Google BERT's end-to-end tokenizer: basic tokenization, then WordPiece.

    Attributes:
      vocab: OrderedDict token -> id, in file order.
      inv_vocab: dict id -> token.
    """

    def __init__(self, vocab_file: str | os.PathLike, do_lower_case: bool = True):
        super().__init__(vocab_file, do_lower_case)
        self.basic_tokenizer = BasicTokenizer(do_lower_case=do_lower_case)
        self.wordpiece_tokenizer = WordpieceTokenizer(self.vocab)

    def tokenize(self, text: str | bytes) -> list[str]:
        pieces: list[str] = []
        for word in self.basic_tokenizer.tokenize(text):
            pieces.extend(self.wordpiece_tokenizer.tokenize(word))
        return pieces


# A checkpoint name says "uncased" or "cased" as a word of its own:
# "uncased_L-12_H-768_A-12", "bert-base-cased", "multi_cased_L-12_H-768_A-12".
_CASING_WORD = re.compile(r"(?<![a-z])(un)?cased(?![a-z])", re.IGNORECASE)
# Google's released models that are lower-cased without saying "uncased".
_UNCASED_WITHOUT_THE_WORD = ("multilingual_L-12_H-768_A-12", "chinese_L-12_H-768_A-12")


def check_do_lower_case(do_lower_case: bool, init_checkpoint: str | os.PathLike | None) -> None:
    """Raises ValueError when do_lower_case contradicts the casing the checkpoint name says.

    A cased model fed lower-cased text (or the other way round) trains and predicts
    without any error, just worse, so mismatches are caught here from the name.
    The path component nearest the file that mentions casing decides; a name that
    says nothing about casing passes.
    """
    if not init_checkpoint:
        return
    path = os.fspath(init_checkpoint)
    model_name, uncased = None, None
    for part in reversed(re.split(r"[/\\]", path)):
        match = _CASING_WORD.search(part)
        if match:
            model_name, uncased = part, bool(match.group(1))
            break
        if part in _UNCASED_WITHOUT_THE_WORD:
            model_name, uncased = part, True
            break
    if model_name is None:
        return
    if uncased and not do_lower_case:
        raise ValueError(
            f"do_lower_case=False does not match init_checkpoint={path!r}: {model_name!r} is an "
            "uncased (lower-cased) model. Pass --do_lower_case=True so the model sees text the "
            "way pre-training did, or use a cased checkpoint if case matters to the task."
        )
    if not uncased and do_lower_case:
        raise ValueError(
            f"do_lower_case=True does not match init_checkpoint={path!r}: {model_name!r} is a "
            "cased model. Pass --do_lower_case=False so the model sees text the way "
            "pre-training did, or use an uncased checkpoint."
        )

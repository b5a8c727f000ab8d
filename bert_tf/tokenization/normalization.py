"""Google's BERT text normalisation on C-speed `str` methods and `re`; no TensorFlow.

Shared by `FastTokenizer` (fast.py, which hands the split and WordPiece to
tensorflow-text) and `CachedTokenizer` (cached.py, pure Python for worker processes).
`clean_and_fold` does Google's basic tokenizer up to, not including, the split on
whitespace and punctuation (see wordpiece.py for the rules, in order):
drop control characters, space out CJK ideographs, and when lower-casing, lower-case +
NFD + drop non-spacing marks.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from typing import Iterable

from bert_tf.tokenization import wordpiece
from bert_tf.tokenization.wordpiece import CJK_RANGES

ASTRAL = re.compile("[\U00010000-\U0010ffff]")


class CharSet:
    """A regex for one set of characters, in a fast BMP-only and a complete variant.

    Python's `re` tests a class that mixes BMP and astral (> U+FFFF) code points
    range by range, several times slower than its bitmap test for a BMP-only class;
    astral characters are rare, so callers look for them once per text (`ASTRAL`)
    and use the complete variant only where there are some.
    """

    def __init__(self, ranges: Iterable[tuple[int, int]]):
        ranges = list(ranges)
        bmp = [(lo, min(hi, 0xFFFF)) for lo, hi in ranges if lo <= 0xFFFF]
        astral = [(max(lo, 0x10000), hi) for lo, hi in ranges if hi > 0xFFFF]
        self.empty = not ranges
        self.bmp = re.compile(f"[{class_body(bmp)}]" if bmp else r"(?!)")
        if astral:
            # The guard keeps BMP characters off the slow astral class.
            astral_branch = f"(?=[\U00010000-\U0010ffff])[{class_body(astral)}]"
            self.all = re.compile(f"{self.bmp.pattern}|{astral_branch}")
        else:
            self.all = self.bmp

    def sub(self, replacement: str, text: str, astral: bool) -> str:
        if self.empty:
            return text
        return (self.all if astral else self.bmp).sub(replacement, text)


def class_body(ranges: list[tuple[int, int]]) -> str:
    """The inside of a regex character class matching the inclusive code point `ranges`."""
    return "".join(
        re.escape(chr(lo)) if lo == hi else f"{re.escape(chr(lo))}-{re.escape(chr(hi))}"
        for lo, hi in ranges
    )


def char_ranges(chars: Iterable[str]) -> list[tuple[int, int]]:
    """Sorted inclusive code point ranges covering `chars`."""
    ranges: list[tuple[int, int]] = []
    for cp in sorted({ord(c) for c in chars}):
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1] = (ranges[-1][0], cp)
        else:
            ranges.append((cp, cp))
    return ranges


class GoogleCharClasses:
    """Google's character classes (per this Python's unicodedata), built once (~0.3 s)."""

    _instance: "GoogleCharClasses | None" = None

    def __init__(self):
        category = unicodedata.category
        wanted = {"Cc", "Cf", "Mn", "Zs", "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po"}
        chars = [chr(cp) for cp in range(sys.maxunicode + 1) if category(chr(cp)) in wanted]
        chars += [chr(cp) for cp in range(128)]  # ASCII punctuation outside P*
        # Dropped by cleaning: NUL, U+FFFD and Cc/Cf except \t \n \r.
        controls = [c for c in chars if wordpiece.is_control(c)]
        self.dropped = CharSet(char_ranges(controls + ["\x00", "\ufffd"]))
        self.cjk = CharSet(CJK_RANGES)
        self.nonspacing_mark = CharSet(char_ranges(c for c in chars if category(c) == "Mn"))
        # What Google splits clean text on: its whitespace, the line and paragraph
        # separators that `str.split` adds, and punctuation.
        whitespace = {c for c in chars if wordpiece.is_whitespace(c)}
        self.whitespace = sorted(whitespace | {"\u2028", "\u2029"})
        self.punctuation = sorted({c for c in chars if wordpiece.is_punctuation(c)})

    @classmethod
    def get(cls) -> "GoogleCharClasses":
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance


def clean_and_fold(text: str, do_lower_case: bool, classes: GoogleCharClasses) -> tuple[str, bool]:
    """Google's basic tokenizer before its splits: returns (text, whether it has astral chars).

    Drops NUL, U+FFFD and Cc/Cf characters (not \\t \\n \\r), spaces out CJK ideographs,
    and with `do_lower_case` lower-cases, decomposes (NFD) and drops non-spacing marks.
    Whitespace is left as it is: `str.split()` splits on all of Google's whitespace.
    Doing this on the whole text equals Google's word-by-word steps: lower()'s one
    context-dependent rule, final sigma, never looks past whitespace, and NFD never
    reorders marks across a space (a starter).
    """
    if text.isascii():  # most text: only controls and case to handle
        if not text.isprintable():  # has ASCII controls; \t \n \r are whitespace
            text = classes.dropped.sub("", text, astral=False)
        if do_lower_case:
            text = text.lower()
        return text, False
    astral = ASTRAL.search(text) is not None
    text = classes.dropped.sub("", text, astral)
    text = classes.cjk.sub(r" \g<0> ", text, astral)
    if do_lower_case:
        text = unicodedata.normalize("NFD", text.lower())
        text = classes.nonspacing_mark.sub("", text, astral)
    return text, astral

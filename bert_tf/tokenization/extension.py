"""New tokens for an existing vocabulary (`extend_vocab.py`): which tokens the tokenizer can
produce, which ones a corpus would gain most from, and where each new token goes.

A token can be added only if Google's tokenization can ever emit it: after basic tokenization
(cleaning, lower-casing and accent stripping for uncased vocabularies, a split at whitespace,
punctuation and around each CJK character) a word is matched greedily against the vocabulary,
so a token with upper case or accents in an uncased vocabulary, with whitespace, punctuation,
a control character or several CJK characters inside, or longer than 200 characters, never
matches: `refusal` says why. A `##` token continues a word.
"""

from __future__ import annotations

import collections
import dataclasses
import re
from typing import Iterable

from bert_tf.tokenization.wordpiece import (
    MAX_INPUT_CHARS_PER_WORD,
    SUFFIX_INDICATOR,
    _strip_accents,
    is_cjk,
    is_control,
    is_punctuation,
)

MODES = ("replace_unused", "append", "auto")
_UNUSED = re.compile(r"\[unused\d+\]")


def refusal(token: str, vocab: dict, do_lower_case: bool) -> str | None:
    """Why the tokenizer could never produce `token` with this vocabulary, or None."""
    bare = token[len(SUFFIX_INDICATOR):] if token.startswith(SUFFIX_INDICATOR) else token
    if not bare:
        return "it is empty"
    if token in vocab:
        return "it is already in the vocabulary"
    if any(c.isspace() for c in bare):
        return "it holds whitespace (words are split there)"
    if any(is_control(c) or c in "\x00\ufffd" for c in bare):
        return "it holds a control character (removed from the text)"
    punctuation = [c for c in bare if is_punctuation(c)]
    if punctuation and (len(bare) > 1 or token != bare):
        return (f"it holds punctuation {punctuation[0]!r} (each punctuation character is a word "
                "of its own)")
    if any(is_cjk(c) for c in bare) and (len(bare) > 1 or token != bare):
        return "it holds CJK characters (each is a word of its own)"
    if do_lower_case and bare != bare.lower():
        return "it has upper case and the vocabulary is uncased (text is lower-cased first)"
    if do_lower_case and _strip_accents(bare) != bare:
        return "it has accents and the vocabulary is uncased (accents are stripped first)"
    if len(bare) > MAX_INPUT_CHARS_PER_WORD:
        return f"it is longer than {MAX_INPUT_CHARS_PER_WORD} characters (such words are [UNK])"
    return None


def segment(token: str, vocab: dict) -> list[str]:
    """The pieces the vocabulary splits `token` into today (greedy longest match, as WordPiece;
    a `##` token is split as the continuation of a word). ["[UNK]"] if it cannot."""
    continuation = token.startswith(SUFFIX_INDICATOR)
    word = token[len(SUFFIX_INDICATOR):] if continuation else token
    pieces, start = [], 0
    while start < len(word):
        prefix = SUFFIX_INDICATOR if (start > 0 or continuation) else ""
        for end in range(len(word), start, -1):
            if prefix + word[start:end] in vocab:
                pieces.append(prefix + word[start:end])
                start = end
                break
        else:
            return ["[UNK]"]
    return pieces


@dataclasses.dataclass
class Plan:
    """Where each new token goes. tokens: the new vocabulary, in id order; rows: token -> its
    id; pieces: token -> the old pieces whose rows its row starts from (their mean);
    old_size: rows before."""
    tokens: list[str]
    rows: dict[str, int]
    pieces: dict[str, list[str]]
    old_size: int

    @property
    def replaced(self) -> list[int]:
        return sorted(r for r in self.rows.values() if r < self.old_size)

    @property
    def appended(self) -> int:
        return len(self.tokens) - self.old_size


def plan(old_tokens: list[str], new_tokens: Iterable[str], mode: str,
         do_lower_case: bool) -> Plan:
    """Rows for `new_tokens` by `mode`: replace_unused (each takes the next `[unusedN]` line,
    by id; size unchanged), append (rows after the last), auto (unused first, then append).
    Raises ValueError naming every token that cannot be added and why, or when replace_unused
    runs out of `[unusedN]` lines."""
    if mode not in MODES:
        raise ValueError(f"--mode={mode}: one of {', '.join(MODES)}")
    vocab = {t: i for i, t in enumerate(old_tokens)}
    wanted = list(dict.fromkeys(t.strip() for t in new_tokens if t.strip()))
    if not wanted:
        raise ValueError("no new token given (--new_tokens, --new_tokens_file or "
                         "--corpus_file with --num_new_tokens)")
    refused = [(t, refusal(t, vocab, do_lower_case)) for t in wanted]
    refused = [f"{t!r}: {why}" for t, why in refused if why]
    if refused:
        raise ValueError(f"{len(refused)} token(s) cannot be added: " + "; ".join(refused[:10])
                         + ("; ..." if len(refused) > 10 else ""))
    unused = [i for i, t in enumerate(old_tokens) if _UNUSED.fullmatch(t)] \
        if mode != "append" else []
    if mode == "replace_unused" and len(unused) < len(wanted):
        raise ValueError(f"--mode=replace_unused: {len(wanted)} new tokens but the vocabulary "
                         f"has {len(unused)} [unusedN] lines; use --mode=auto or append")
    tokens = list(old_tokens)
    rows = {}
    for k, token in enumerate(wanted):
        if k < len(unused):
            rows[token] = unused[k]
            tokens[unused[k]] = token
        else:
            rows[token] = len(tokens)
            tokens.append(token)
    return Plan(tokens, rows, {t: segment(t, vocab) for t in wanted}, len(old_tokens))


def propose(lines: Iterable[str], old_tokens: list[str], do_lower_case: bool, count: int,
            min_frequency: int = 20) -> list[dict]:
    """The `count` words of `lines` the vocabulary splits into most pieces per use: ranked by
    frequency x pieces saved (a word of n pieces saves n - 1 each time it occurs), each with
    today's split; only words at least `min_frequency` times and that `refusal` accepts."""
    from bert_tf.tokenization.cached import WordSplitter

    splitter = WordSplitter(do_lower_case)
    vocab = {t: i for i, t in enumerate(old_tokens)}
    counts: collections.Counter = collections.Counter()
    for line in lines:
        counts.update(w for w in splitter.words(line) if w not in vocab)
    ranked = []
    for word, n in counts.items():
        if n < min_frequency or refusal(word, vocab, do_lower_case):
            continue
        pieces = segment(word, vocab)
        if len(pieces) > 1:
            ranked.append({"token": word, "count": n, "pieces": pieces,
                           "pieces_saved": n * (len(pieces) - 1)})
    ranked.sort(key=lambda r: (-r["pieces_saved"], r["token"]))
    return ranked[:count]

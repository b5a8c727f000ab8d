"""A WordPiece vocabulary learned from text, in Google's layout (`build_vocab.py`; the files and
the run are `bert_tf.vocab_building`'s).

The text is normalised and split into words exactly as the model will see it (`WordSplitter`:
Google's basic tokenization; lower-casing and accent stripping for uncased), then Hugging Face
`tokenizers`' WordPiece trainer learns the pieces from those words. Its output is then fixed:

- Google's layout: `[PAD]` at 0, `[unused0]`..`[unused98]` at 1-99, `[UNK] [CLS] [SEP] [MASK]`
  at 100-103, further `[unusedN]` rows after them (Google's uncased vocabulary has 994 in all,
  the rows `extend_vocab.py --mode=replace_unused` gives to new tokens), then the pieces.
- Every kept character both as `c` and `##c` (the trainer leaves out continuation forms of
  characters it never saw inside a word, so `ß`, `π`, `°` become `[UNK]` there, and whole
  words with them with it: WordPiece cannot segment a word with one missing piece).
- No duplicates, no blank lines, the size asked for: a first pass over the text counts the
  twins the trainer will leave out, and the trainer is asked for that many fewer pieces.
- A fixed order (whole-word pieces, then `##` pieces, each by code point). Which pieces the
  trainer keeps is not quite fixed: among merges of equal count it picks in an order that
  varies from run to run, so two runs on the same text can differ in a few rare pieces.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable


log = logging.getLogger(__name__)

SPECIAL_TOKENS = ("[UNK]", "[CLS]", "[SEP]", "[MASK]")
FIRST_SPECIAL_ID = 100  # Google's: [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103
GOOGLE_UNUSED = 994  # [unused0]..[unused993] in Google's uncased vocabulary


@dataclass
class VocabOptions:
    """vocab_size        lines of vocab.txt, all rows included (Google's uncased: 30522).
    num_unused           `[unusedN]` rows (at least 99: they hold Google's ids of [UNK] ...).
    do_lower_case        normalise as an uncased model does (lower case, accents stripped).
    min_frequency        a merge must occur this often (the trainer's min_frequency).
    limit_alphabet       keep at most this many characters, the most frequent (each costs
                         two rows: `c` and `##c`); rarer ones become [UNK].
    max_corpus_bytes     read at most about this much text: larger corpora are sampled
                         line by line (evenly, deterministically), so memory is bounded.
    """
    vocab_size: int = 30522
    num_unused: int = GOOGLE_UNUSED
    do_lower_case: bool = True
    min_frequency: int = 2
    limit_alphabet: int = 1000
    max_corpus_bytes: int = 1 << 30

    def check(self) -> None:
        if self.num_unused < FIRST_SPECIAL_ID - 1:
            raise ValueError(f"--num_unused={self.num_unused}: at least 99, so that [UNK], "
                             "[CLS], [SEP] and [MASK] keep Google's ids 100-103")
        if self.limit_alphabet < 1 or self.min_frequency < 1 or self.max_corpus_bytes < 1:
            raise ValueError("--limit_alphabet, --min_frequency and --max_corpus_bytes must be "
                             "at least 1")

    @property
    def reserved(self) -> int:
        return 1 + self.num_unused + len(SPECIAL_TOKENS)


def layout_head(num_unused: int) -> list[str]:
    """[PAD], [unused0..98], [UNK] [CLS] [SEP] [MASK], [unused99..num_unused-1]."""
    head = ["[PAD]"] + [f"[unused{i}]" for i in range(FIRST_SPECIAL_ID - 1)]
    head += list(SPECIAL_TOKENS)
    return head + [f"[unused{i}]" for i in range(FIRST_SPECIAL_ID - 1, num_unused)]


def alphabet(lines: Iterable[str], options: VocabOptions) -> tuple[list[str], int]:
    """First pass: the characters the trainer will keep (the `limit_alphabet` most frequent
    in the words) and how many of them never occur inside a word after its first character
    (their `##` twins the trainer will not produce). Returns (characters, missing twins)."""
    import collections

    from bert_tf.tokenization.cached import WordSplitter

    splitter = WordSplitter(options.do_lower_case)
    counts: collections.Counter = collections.Counter()
    inside: set[str] = set()
    for line in lines:
        found = splitter.words(line)
        if found:
            counts.update("".join(found))
            inside.update("".join(w[1:] for w in found))
    kept = [c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    kept = kept[:options.limit_alphabet]
    return kept, sum(1 for c in kept if c not in inside)


def learn_pieces(lines: Iterable[str], options: VocabOptions, missing_twins: int = 0
                 ) -> list[str]:
    """Second pass: the WordPiece pieces `tokenizers`' trainer learns from the words Google's
    basic tokenization gives, asked for `vocab_size` less the reserved rows and the
    `missing_twins` to be added after it. The set is a function of the text and options; the
    trainer's order is not (merges of equal counts come in any order), so it is not kept."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from bert_tf.tokenization.cached import WordSplitter

    splitter = WordSplitter(options.do_lower_case)

    def words():
        for line in lines:
            found = splitter.words(line)
            if found:
                yield " ".join(found)

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # words are already split
    target = options.vocab_size - options.reserved - missing_twins
    trainer = trainers.WordPieceTrainer(
        vocab_size=max(target, 1), min_frequency=options.min_frequency, special_tokens=[],
        limit_alphabet=options.limit_alphabet, continuing_subword_prefix="##",
        show_progress=False)
    tokenizer.train_from_iterator(words(), trainer)
    return sorted(tokenizer.get_vocab())


def google_layout(pieces: list[str], options: VocabOptions) -> tuple[list[str], dict]:
    """The final vocabulary: Google's head, every character and its `##` twin, then the other
    pieces (whole-word pieces, then `##` pieces, each in code-point order), `vocab_size` rows at
    most: if still over, the longest pieces give way. Returns (tokens, stats).
    Raises ValueError when vocab_size cannot hold the head and every character twice."""
    head = layout_head(options.num_unused)
    chars = sorted({p.removeprefix("##") for p in pieces if len(p.removeprefix("##")) == 1})
    singles = chars + [f"##{c}" for c in chars]
    need = len(head) + len(singles)
    if options.vocab_size < need:
        raise ValueError(
            f"--vocab_size={options.vocab_size} cannot hold the {len(head)} reserved rows and "
            f"{len(chars)} characters twice (as c and ##c): {need} rows at least. Raise "
            f"--vocab_size, or lower --limit_alphabet / --num_unused")
    taken = set(head) | set(singles)
    rest = [p for p in pieces if p not in taken and p.strip()]
    room = options.vocab_size - need
    if len(rest) > room:
        rest = sorted(rest, key=lambda p: (len(p.removeprefix("##")), p))[:room]
    rest.sort(key=lambda p: (p.startswith("##"), p))
    tokens = head + singles + rest
    learned = set(pieces)
    stats = {"characters": len(chars),
             "twins_added": [s for s in singles if s not in learned],
             "size": len(tokens)}
    return tokens, stats


def heldout_report(vocab_file: str, lines: Iterable[str], do_lower_case: bool) -> dict:
    """How a vocabulary splits held-out text: words, pieces, [UNK] tokens, pieces per word and
    the [UNK] rate (words WordPiece cannot segment, each one [UNK], per word)."""
    from bert_tf.tokenization.cached import CachedTokenizer

    tokenizer = CachedTokenizer(vocab_file, do_lower_case=do_lower_case)
    unk = tokenizer.vocab["[UNK]"]
    words = pieces = unknown = 0
    for line in lines:
        ids = tokenizer.ids(line)
        words += len(tokenizer.words(line))
        pieces += len(ids)
        unknown += ids.count(unk)
    return {"vocab_file": vocab_file, "words": words, "pieces": pieces, "unk": unknown,
            "pieces_per_word": pieces / max(words, 1), "unk_rate": unknown / max(words, 1)}


def check_layout(tokens: list[str], num_unused: int) -> None:
    """Raises ValueError if `tokens` breaks Google's layout (used on every written vocab)."""
    head = layout_head(num_unused)
    if tokens[:len(head)] != head:
        raise ValueError("the vocabulary does not start with Google's reserved rows")
    if len(set(tokens)) != len(tokens):
        raise ValueError("the vocabulary holds duplicates")
    if any(not t.strip() or t != t.strip() for t in tokens):
        raise ValueError("the vocabulary holds a blank or padded line")
    present = set(tokens)
    for t in tokens[len(head):]:
        bare = t[2:] if t.startswith("##") else t
        for c in bare:
            if c not in present or f"##{c}" not in present:
                raise ValueError(f"character {c!r} of {t!r} lacks its row or its ## twin")

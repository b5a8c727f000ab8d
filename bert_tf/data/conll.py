"""CoNLL-2003 NER: reading, IOB1 -> IOB2, word-piece features with windows, and writing
predictions for conlleval.

File format: one token a line, `word POS chunk NER` separated by spaces, a blank line between
sentences, `-DOCSTART- ...` lines between documents (dropped). The released English files tag
entities in IOB1 (an entity may start with I-X; B-X only marks an entity directly after another
of the same type); `read_conll` converts every sentence to IOB2 (each entity starts with B-X),
which is a no-op on files already in IOB2.

Features follow the usual BERT recipe for tagging: each word is split into word pieces, only the
first piece of a word carries its label (the others, [CLS] and [SEP] get label id -1 and
label_mask 0 so the loss and the metrics skip them). A sentence longer than max_seq_length pieces
is split into several windows at word boundaries, so no word is lost or cut in two; each feature
records the sentence and word span it covers, and `assemble_predictions` puts the per-window
predictions back together into one tag per word.

Plain Python, no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Sequence

from bert_tf.data.glue import DataError
from bert_tf.data.text_files import utf8_lines

__all__ = [
    "LABELS", "Sentence", "iob1_to_iob2", "read_conll", "SPLIT_FILES", "load_split",
    "convert_sentences_to_features", "assemble_predictions", "write_predictions",
]

_COLUMN_SEPARATOR = re.compile(r"[ \t]+")
ENTITY_TYPES = ("PER", "ORG", "LOC", "MISC")
# Label ids for CoNLL-2003 in IOB2; "O" is id 0.
LABELS = ("O",) + tuple(f"{p}-{t}" for t in ENTITY_TYPES for p in ("B", "I"))
IGNORE_LABEL_ID = -1

# Split name -> file name of the CoNLL-2003 English release (testa is dev, testb is test).
SPLIT_FILES = {"train": "eng.train", "dev": "eng.testa", "test": "eng.testb"}


@dataclasses.dataclass
class Sentence:
    """Words and their tags (None when unlabelled); `line` is the 1-based line of the first word
    and `document` the 0-based number of the document it is in (counting -DOCSTART- lines)."""

    words: list[str]
    tags: list[str] | None
    line: int = 0
    document: int = 0

    def __len__(self):
        return len(self.words)


def _parse_tag(tag: str):
    """('B'|'I'|'O', type) or None when the tag is not O / B-X / I-X."""
    if tag == "O":
        return "O", ""
    prefix, sep, kind = tag.partition("-")
    if sep and kind and prefix in ("B", "I"):
        return prefix, kind
    return None


def iob1_to_iob2(tags: Sequence[str]) -> list[str]:
    """IOB1 tags to IOB2: an I-X that starts an entity (after O, at the start, or after a tag of
    another type) becomes B-X; B-X and continuing I-X are unchanged. IOB2 input comes back as is.
    """
    out = []
    prev_kind = ""  # type of the previous tag, "" after O or at the start
    for tag in tags:
        parsed = _parse_tag(tag)
        if parsed is None:
            raise ValueError(f"tag {tag!r} is neither 'O' nor B-<TYPE> / I-<TYPE>")
        prefix, kind = parsed
        if prefix == "I" and kind != prev_kind:
            tag = "B-" + kind
        out.append(tag)
        prev_kind = kind
    return out


def read_conll(path: str, to_iob2: bool = True) -> list[Sentence]:
    """Sentences of a CoNLL file: the first column is the word, the last the NER tag; every
    token line must have as many columns as the file's first one (4 for CoNLL-2003).
    Malformed lines raise DataError `path:line: problem`."""
    sentences: list[Sentence] = []
    words: list[str] = []
    tags: list[str] = []
    start_line = 0
    document = 0
    seen_tokens = False
    num_columns = None

    def flush():
        nonlocal words, tags
        if words:
            try:
                final = iob1_to_iob2(tags) if to_iob2 else tags
            except ValueError as e:  # unreachable: tags were checked line by line
                raise DataError(f"{path}:{start_line}: {e}") from None
            sentences.append(Sentence(words, final, start_line, document))
        words, tags = [], []

    for line_number, line in utf8_lines(path, "a CoNLL file"):
        # Columns are separated by spaces (conlleval's delimiter; tabs accepted too), not
        # by any Unicode whitespace: a word may hold a no-break space.
        fields = _COLUMN_SEPARATOR.split(line.strip(" \t\r\n"))
        if fields == [""]:
            fields = []
        if not fields:
            flush()
            continue
        if fields[0] == "-DOCSTART-":
            flush()
            if seen_tokens:
                document += 1
                seen_tokens = False
            continue
        if num_columns is None:
            num_columns = len(fields)
            if num_columns < 2:
                raise DataError(f"{path}:{line_number}: expected a word and its tag separated "
                                f"by spaces (word POS chunk NER), found {line.strip()!r}")
        elif len(fields) != num_columns:
            raise DataError(f"{path}:{line_number}: expected {num_columns} space-separated "
                            f"columns like the first token line, found {len(fields)}: "
                            f"{line.strip()!r}")
        tag = fields[-1]
        if _parse_tag(tag) is None:
            raise DataError(f"{path}:{line_number}: tag {tag!r} in the last column is "
                            "neither 'O' nor B-<TYPE> / I-<TYPE>")
        if not words:
            start_line = line_number
        words.append(fields[0])
        tags.append(tag)
        seen_tokens = True
    flush()
    return sentences


def load_split(data_dir: str, split: str) -> list[Sentence]:
    """train / dev / test of the CoNLL-2003 English release (eng.train / eng.testa / eng.testb)
    in data_dir."""
    if split not in SPLIT_FILES:
        raise ValueError(f"unknown split {split!r}; splits: {', '.join(SPLIT_FILES)}")
    path = os.path.join(data_dir, SPLIT_FILES[split])
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path}: no such file: the CoNLL-2003 {split} set is read from "
            f"{SPLIT_FILES[split]} in the data directory {data_dir!r}. Pass --data_dir pointing "
            "at the folder holding eng.train, eng.testa and eng.testb (CoNLL-2003 is not "
            "freely redistributable, so it is not downloaded for you).")
    return read_conll(path)


# -- features -----------------------------------------------------------------------------------
def _windows(piece_counts: Sequence[int], capacity: int) -> list[tuple[int, int]]:
    """Split words with the given piece counts into consecutive (start, end) word ranges whose
    pieces fit in `capacity`; every count must already be <= capacity."""
    windows = []
    start, used = 0, 0
    for i, n in enumerate(piece_counts):
        if used + n > capacity and i > start:
            windows.append((start, i))
            start, used = i, 0
        used += n
    if start < len(piece_counts) or not windows:
        windows.append((start, len(piece_counts)))
    return windows


def convert_sentences_to_features(sentences: Sequence[Sentence], label_list: Sequence[str],
                                  max_seq_length: int, tokenizer: Any) -> list[dict]:
    """Token-classification features, unpadded; one or more per sentence.

    `tokenizer`: anything with tokenize(text) and convert_tokens_to_ids(tokens). Each feature:
        input_ids       [CLS] pieces of words word_start..word_start+num_words-1 [SEP]
        input_mask      1 per token;  segment_ids  0 per token
        label_ids       the word's label id on its first piece, -1 elsewhere (also -1 on first
                        pieces of unlabelled sentences)
        label_mask      1 on the first piece of each word (where a tag is predicted), else 0
        length          number of tokens
        sentence_index  which sentence (position in `sentences`)
        word_start, num_words   the words covered: positions with label_mask 1 are these
                        words in order
    A word with more pieces than fit in one window keeps its first max_seq_length - 2 pieces
    (its label sits on the first, so it is still predicted). A word the tokenizer turns into
    nothing (e.g. a lone control character) is fed as [UNK] so it still gets a prediction.
    """
    if max_seq_length < 3:
        raise ValueError(f"max_seq_length {max_seq_length} must be at least 3 ([CLS], one word "
                         "piece, [SEP])")
    label_map = {label: i for i, label in enumerate(label_list)}
    capacity = max_seq_length - 2
    cls_id, sep_id = tokenizer.convert_tokens_to_ids(["[CLS]", "[SEP]"])
    cache: dict[str, list[int]] = {}  # word -> piece ids; words repeat a lot

    def word_ids(word):
        ids = cache.get(word)
        if ids is None:
            pieces = list(tokenizer.tokenize(word)) or ["[UNK]"]
            ids = [int(i) for i in tokenizer.convert_tokens_to_ids(pieces)][:capacity]
            cache[word] = ids
        return ids

    features = []
    for s_index, sentence in enumerate(sentences):
        if sentence.tags is not None and len(sentence.tags) != len(sentence.words):
            raise ValueError(f"sentence {s_index} (line {sentence.line}): {len(sentence.words)} "
                             f"words but {len(sentence.tags)} tags")
        pieces = [word_ids(w) for w in sentence.words]
        labels = []
        for w, tag in enumerate(sentence.tags or [None] * len(sentence.words)):
            if tag is None:
                labels.append(IGNORE_LABEL_ID)
            elif tag in label_map:
                labels.append(label_map[tag])
            else:
                raise ValueError(f"sentence {s_index} (line {sentence.line}), word {w} "
                                 f"{sentence.words[w]!r}: tag {tag!r} is not in the label list "
                                 f"{list(label_list)}")
        for start, end in _windows([len(p) for p in pieces], capacity):
            input_ids = [cls_id]
            label_ids = [IGNORE_LABEL_ID]
            label_mask = [0]
            for w in range(start, end):
                input_ids += pieces[w]
                label_ids += [labels[w]] + [IGNORE_LABEL_ID] * (len(pieces[w]) - 1)
                label_mask += [1] + [0] * (len(pieces[w]) - 1)
            input_ids.append(sep_id)
            label_ids.append(IGNORE_LABEL_ID)
            label_mask.append(0)
            features.append({
                "input_ids": input_ids,
                "input_mask": [1] * len(input_ids),
                "segment_ids": [0] * len(input_ids),
                "label_ids": label_ids,
                "label_mask": label_mask,
                "length": len(input_ids),
                "sentence_index": s_index,
                "word_start": start,
                "num_words": end - start,
            })
    return features


def assemble_predictions(features: Sequence[dict], predictions: Sequence[Sequence[int]],
                         sentences: Sequence[Sentence], label_list: Sequence[str]
                         ) -> list[list[str]]:
    """One predicted tag per word of every sentence, from per-feature predicted label ids.

    predictions[k] holds a label id per token position of features[k] (argmax of the logits;
    padding beyond the feature's length is ignored). Raises if a word is covered by no feature or
    by more than one."""
    if len(features) != len(predictions):
        raise ValueError(f"{len(features)} features but {len(predictions)} predictions")
    tags: list[list[str | None]] = [[None] * len(s.words) for s in sentences]
    for k, (feature, pred) in enumerate(zip(features, predictions)):
        positions = [i for i, m in enumerate(feature["label_mask"]) if m]
        if len(positions) != feature["num_words"]:
            raise ValueError(f"feature {k}: label_mask marks {len(positions)} words but the "
                             f"feature covers {feature['num_words']}")
        if len(pred) < feature["length"]:
            raise ValueError(f"feature {k}: {len(pred)} predictions for {feature['length']} "
                             "tokens")
        row = tags[feature["sentence_index"]]
        for word, position in zip(range(feature["word_start"], feature["word_start"]
                                        + feature["num_words"]), positions):
            if row[word] is not None:
                raise ValueError(f"sentence {feature['sentence_index']} word {word} is covered "
                                 "by more than one feature")
            row[word] = label_list[int(pred[position])]
    for s_index, row in enumerate(tags):
        missing = [w for w, tag in enumerate(row) if tag is None]
        if missing:
            raise ValueError(f"sentence {s_index}: no prediction for words {missing[:10]}")
    return tags  # type: ignore[return-value]


def write_predictions(path: str, sentences: Sequence[Sentence],
                      predicted_tags: Sequence[Sequence[str]]) -> None:
    """Write `word gold predicted` per line, a blank line after each sentence: the input format
    of conlleval (which reads the last two columns). Unlabelled sentences get gold 'O'."""
    if len(sentences) != len(predicted_tags):
        raise ValueError(f"{len(sentences)} sentences but {len(predicted_tags)} predicted tag "
                         "lists")
    for s_index, (sentence, predicted) in enumerate(zip(sentences, predicted_tags)):
        if len(predicted) != len(sentence.words):
            raise ValueError(f"sentence {s_index}: {len(sentence.words)} words but "
                             f"{len(predicted)} predicted tags")
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for sentence, predicted in zip(sentences, predicted_tags):
            gold = sentence.tags or ["O"] * len(sentence.words)
            for word, g, p in zip(sentence.words, gold, predicted):
                f.write(f"{word} {g} {p}\n")
            f.write("\n")
    os.replace(tmp, path)

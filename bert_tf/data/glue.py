"""GLUE task readers and sentence(-pair) classification features.

One processor per GLUE task reads the task's TSV files as the GLUE benchmark distributes them
(`glue_data/<TASK>/{train,dev,test}.tsv`; MNLI has dev_matched / dev_mismatched / test_matched /
test_mismatched; the diagnostic set AX is one test file) into `InputExample`s, knows the label
set, the metrics the GLUE leaderboard reports, and how to write a GLUE submission file.

File facts the readers rely on (all checked against the real files):
- tab-separated, UTF-8; MRPC's train/dev header starts with a byte-order mark (stripped);
- quotes are ordinary characters (`"` opens no quoted field: csv.QUOTE_NONE semantics), so a
  line is split on tabs and nothing else;
- CoLA train/dev have no header (source, label, original mark, sentence); every other file,
  CoLA test included, has a header, and columns are found by their header names;
- the last line may lack its newline; trailing blank lines are ignored.

A row that does not fit (wrong column count, a label outside the task's label set, a score that
is not a number) raises `DataError` with the message `path:line: what is wrong`.

`convert_examples_to_features` turns examples into BERT inputs the way Google's run_classifier
does ([CLS] a [SEP] b [SEP], longer side truncated first) but without padding: each feature
keeps its `length`, and the input pipeline pads batches to buckets.

No TensorFlow here: this module is plain Python.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Iterator, Sequence

from bert_tf.data.text_files import DataError, utf8_lines  # DataError: defined there, public here

__all__ = [
    "DataError", "InputExample", "GlueProcessor", "PROCESSORS", "TASKS", "get_processor",
    "convert_examples_to_features", "truncate_pair", "write_submission",
]


@dataclasses.dataclass
class InputExample:
    """One example. `label` is a string from the processor's label list, a float for regression
    (STS-B), or None for test sets (GLUE hides test labels). `index` is the number GLUE's
    submission file expects for this row: the file's index/id column when it has one, else the
    row's 0-based position among the data rows."""

    guid: str
    text_a: str
    text_b: str | None = None
    label: str | float | None = None
    index: int = 0


# -- file layouts -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Layout:
    """Where the fields of one split live. Columns are header names, or 0-based positions when
    the file has no header (then `num_columns` is the exact column count)."""

    filenames: tuple[str, ...]          # tried in order; the first that exists is read
    text_a: str | int
    text_b: str | int | None = None
    label: str | int | None = None      # None: unlabelled (test)
    index: str | int | None = None      # None: the row's position
    header: bool = True
    num_columns: int | None = None      # headerless files only


def _read_tsv(path: str) -> Iterator[tuple[int, list[str]]]:
    """(1-based line number, fields) for every line; BOM stripped, line ends (\\n or \\r\\n)
    removed, fields split on tabs only. Trailing blank lines are skipped; a blank line with data
    after it is an error."""
    blank_line = None
    for line_number, line in utf8_lines(path, "a GLUE TSV file"):
        line = line[:-1] if line.endswith("\n") else line
        line = line[:-1] if line.endswith("\r") else line
        if not line.strip():
            if blank_line is None:
                blank_line = line_number
            continue
        if blank_line is not None:
            raise DataError(f"{path}:{blank_line}: blank line in the middle of the file "
                            "(rows must be consecutive)")
        yield line_number, line.split("\t")


class GlueProcessor:
    """Reads one GLUE task. Subclasses only declare data; see the module docstring.

    Class attributes:
        name: the task's GLUE name (also what `get_processor` accepts, case-insensitive).
        data_name: the folder GLUE's download puts the files in (`glue_data/<data_name>`).
        labels: label strings in label-id order; empty for regression.
        label_names: what the labels are called elsewhere, in label-id order (the names the
            Hugging Face `glue` datasets give, which fine-tuned models carry in id2label), so a
            checkpoint's head can be matched to `labels` by name.
        is_regression: STS-B only; labels are floats and the model has one output.
        metric_names: keys of `bert_tf.metrics.METRICS` the leaderboard reports, main one first.
        layouts: split name -> _Layout.
        dev_split / test_split: the splits get_dev_examples / get_test_examples read.
        submission_names: test split -> GLUE submission file name.
    """

    name: str = ""
    data_name: str = ""
    labels: tuple[str, ...] = ()
    label_names: tuple[str, ...] = ()
    is_regression: bool = False
    metric_names: tuple[str, ...] = ("accuracy",)
    layouts: dict[str, _Layout] = {}
    dev_split = "dev"
    test_split = "test"
    submission_names: dict[str, str] = {}

    # -- reading -----------------------------------------------------------------------------
    def get_labels(self) -> list[str]:
        return list(self.labels)

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.layouts)

    @property
    def is_pair_task(self) -> bool:
        """Whether an example is two texts (MRPC, MNLI, ...) rather than one (CoLA, SST-2)."""
        return any(layout.text_b is not None for layout in self.layouts.values())

    def get_train_examples(self, data_dir: str) -> list[InputExample]:
        return self.get_examples(data_dir, "train")

    def get_dev_examples(self, data_dir: str) -> list[InputExample]:
        return self.get_examples(data_dir, self.dev_split)

    def get_test_examples(self, data_dir: str) -> list[InputExample]:
        return self.get_examples(data_dir, self.test_split)

    def split_path(self, data_dir: str, split: str) -> str:
        """The file a split is read from (the first candidate name that exists, else the first);
        raises FileNotFoundError naming the path, the task and what to do."""
        layout = self._layout(split)
        candidates = [os.path.join(data_dir, name) for name in layout.filenames]
        for path in candidates:
            if os.path.isfile(path):
                return path
        names = " or ".join(layout.filenames)
        raise FileNotFoundError(
            f"{candidates[0]}: no such file: the {self.name} {split} set is read from {names} in "
            f"the data directory {data_dir!r}. Pass --data_dir pointing at the folder holding "
            f"GLUE's {self.data_name} files (glue_data/{self.data_name}), or leave --data_dir "
            "unset and the task's data will be downloaded into the cache "
            "(bert_tf.data.download.download_glue).")

    def get_examples(self, data_dir: str, split: str) -> list[InputExample]:
        """Every example of a split; DataError naming the file (and line) when it is malformed
        or holds no example."""
        layout = self._layout(split)
        path = self.split_path(data_dir, split)
        examples = list(self._read(path, split, layout))
        if not examples:
            raise DataError(f"{path}: no examples{' after the header' if layout.header else ''};"
                            f" is this GLUE's {self.name} {split} file?")
        return examples

    def _layout(self, split: str) -> _Layout:
        if split not in self.layouts:
            raise ValueError(f"{self.name} has no {split!r} split; it has "
                             f"{', '.join(self.layouts)}")
        return self.layouts[split]

    def _read(self, path: str, split: str, layout: _Layout) -> Iterator[InputExample]:
        rows = _read_tsv(path)
        if layout.header:
            try:
                header_line, header = next(rows)
            except StopIteration:
                raise DataError(f"{path}:1: the file is empty (expected a header row)") from None
            num_columns = len(header)

            def column(name):
                if name is None or isinstance(name, int):
                    return name
                if name not in header:
                    raise DataError(
                        f"{path}:{header_line}: the header has no column {name!r} (it has "
                        f"{', '.join(repr(h) for h in header)}); is this GLUE's {self.name} "
                        f"{split} file?")
                return header.index(name)
        else:
            num_columns = layout.num_columns

            def column(position):
                return position

        a_col, b_col = column(layout.text_a), column(layout.text_b)
        label_col, index_col = column(layout.label), column(layout.index)
        what = "columns as in the header" if layout.header else "tab-separated columns"
        labels = set(self.labels)
        for row_number, (line_number, fields) in enumerate(rows):
            where = f"{path}:{line_number}"
            if len(fields) != num_columns:
                raise DataError(f"{where}: expected {num_columns} {what}, found {len(fields)}")
            if index_col is None:
                index = row_number
            else:
                try:
                    index = int(fields[index_col])
                except ValueError:
                    raise DataError(f"{where}: index {fields[index_col]!r} is not an "
                                    "integer") from None
            label = None
            if label_col is not None:
                raw = fields[label_col]
                if self.is_regression:
                    try:
                        label = float(raw)
                    except ValueError:
                        label = float("nan")
                    if not math.isfinite(label):
                        raise DataError(f"{where}: score {raw!r} is not a finite number")
                else:
                    if raw not in labels:
                        raise DataError(f"{where}: label {raw!r} is not one of "
                                        f"{', '.join(self.labels)}")
                    label = raw
            yield InputExample(
                guid=f"{split}-{row_number}",
                text_a=fields[a_col],
                text_b=None if b_col is None else fields[b_col],
                label=label,
                index=index)

    # -- metrics and submissions -------------------------------------------------------------
    def compute_metrics(self, y_true, y_pred) -> dict[str, float]:
        """The leaderboard's metrics for this task: label ids (or scores for STS-B)."""
        from bert_tf import metrics

        return metrics.compute_metrics(self.metric_names, y_true, y_pred)

    def submission_label(self, pred) -> str:
        """What GLUE's submission file holds for one prediction: the label string for a label id
        (MRPC/CoLA/SST-2/QQP/WNLI "0"/"1", MNLI/AX entailment/neutral/contradiction, QNLI/RTE
        entailment/not_entailment), the score with 3 decimals for STS-B, as
        GLUE's own files print it (not clipped to 0..5)."""
        if self.is_regression:
            value = float(pred)
            if not math.isfinite(value):
                raise ValueError(f"{self.name} prediction {pred!r} is not a finite number")
            return f"{value:.3f}"
        label_id = int(pred)
        if label_id != pred or not 0 <= label_id < len(self.labels):
            raise ValueError(f"{self.name} prediction {pred!r} is not a label id in "
                             f"0..{len(self.labels) - 1}")
        return self.labels[label_id]

    def submission_filename(self, split: str | None = None) -> str:
        """GLUE's file name for a test split's predictions (MRPC.tsv, MNLI-m.tsv, AX.tsv...)."""
        split = self.test_split if split is None or split == "test" else split
        if split not in self.submission_names:
            raise ValueError(f"{self.name} split {split!r} is not submitted to GLUE; test splits: "
                             f"{', '.join(self.submission_names)}")
        return self.submission_names[split]


# -- the tasks ----------------------------------------------------------------------------------
_BINARY = ("0", "1")
_NLI3 = ("contradiction", "entailment", "neutral")
_NLI2 = ("entailment", "not_entailment")


class ColaProcessor(GlueProcessor):
    name = data_name = "CoLA"
    labels = _BINARY
    label_names = ("unacceptable", "acceptable")
    metric_names = ("mcc",)
    # train/dev: source, label, original judgement mark ('*' or empty), sentence; no header.
    layouts = {
        "train": _Layout(("train.tsv",), text_a=3, label=1, header=False, num_columns=4),
        "dev": _Layout(("dev.tsv",), text_a=3, label=1, header=False, num_columns=4),
        "test": _Layout(("test.tsv",), text_a="sentence", index="index"),
    }
    submission_names = {"test": "CoLA.tsv"}


class Sst2Processor(GlueProcessor):
    name = data_name = "SST-2"
    labels = _BINARY
    label_names = ("negative", "positive")
    layouts = {
        "train": _Layout(("train.tsv",), text_a="sentence", label="label"),
        "dev": _Layout(("dev.tsv",), text_a="sentence", label="label"),
        "test": _Layout(("test.tsv",), text_a="sentence", index="index"),
    }
    submission_names = {"test": "SST-2.tsv"}


class MrpcProcessor(GlueProcessor):
    name = data_name = "MRPC"
    labels = _BINARY
    label_names = ("not_equivalent", "equivalent")
    metric_names = ("f1", "accuracy")
    layouts = {
        "train": _Layout(("train.tsv",), text_a="#1 String", text_b="#2 String", label="Quality"),
        "dev": _Layout(("dev.tsv",), text_a="#1 String", text_b="#2 String", label="Quality"),
        "test": _Layout(("test.tsv",), text_a="#1 String", text_b="#2 String", index="index"),
    }
    submission_names = {"test": "MRPC.tsv"}


class StsbProcessor(GlueProcessor):
    name = data_name = "STS-B"
    labels = ()
    is_regression = True
    metric_names = ("pearson", "spearman")
    layouts = {
        "train": _Layout(("train.tsv",), text_a="sentence1", text_b="sentence2", label="score",
                         index="index"),
        "dev": _Layout(("dev.tsv",), text_a="sentence1", text_b="sentence2", label="score",
                       index="index"),
        "test": _Layout(("test.tsv",), text_a="sentence1", text_b="sentence2", index="index"),
    }
    submission_names = {"test": "STS-B.tsv"}


class QqpProcessor(GlueProcessor):
    name = data_name = "QQP"
    labels = _BINARY
    label_names = ("not_duplicate", "duplicate")
    metric_names = ("f1", "accuracy")
    layouts = {
        "train": _Layout(("train.tsv",), text_a="question1", text_b="question2",
                         label="is_duplicate", index="id"),
        "dev": _Layout(("dev.tsv",), text_a="question1", text_b="question2",
                       label="is_duplicate", index="id"),
        "test": _Layout(("test.tsv",), text_a="question1", text_b="question2", index="id"),
    }
    submission_names = {"test": "QQP.tsv"}


class MnliProcessor(GlueProcessor):
    """MNLI, evaluated on the matched (in-genre) sets; MnliMismatchedProcessor reads the others.
    Every split is reachable by name through get_examples(data_dir, "dev_mismatched") etc."""

    name = "MNLI"
    data_name = "MNLI"
    labels = _NLI3
    layouts = {
        "train": _Layout(("train.tsv",), text_a="sentence1", text_b="sentence2",
                         label="gold_label", index="index"),
        "dev_matched": _Layout(("dev_matched.tsv",), text_a="sentence1", text_b="sentence2",
                               label="gold_label", index="index"),
        "dev_mismatched": _Layout(("dev_mismatched.tsv",), text_a="sentence1",
                                  text_b="sentence2", label="gold_label", index="index"),
        "test_matched": _Layout(("test_matched.tsv",), text_a="sentence1", text_b="sentence2",
                                index="index"),
        "test_mismatched": _Layout(("test_mismatched.tsv",), text_a="sentence1",
                                   text_b="sentence2", index="index"),
    }
    dev_split = "dev_matched"
    test_split = "test_matched"
    submission_names = {"test_matched": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv"}


class MnliMismatchedProcessor(MnliProcessor):
    name = "MNLI-mm"
    dev_split = "dev_mismatched"
    test_split = "test_mismatched"


class QnliProcessor(GlueProcessor):
    name = data_name = "QNLI"
    labels = _NLI2
    layouts = {
        "train": _Layout(("train.tsv",), text_a="question", text_b="sentence", label="label",
                         index="index"),
        "dev": _Layout(("dev.tsv",), text_a="question", text_b="sentence", label="label",
                       index="index"),
        "test": _Layout(("test.tsv",), text_a="question", text_b="sentence", index="index"),
    }
    submission_names = {"test": "QNLI.tsv"}


class RteProcessor(GlueProcessor):
    name = data_name = "RTE"
    labels = _NLI2
    layouts = {
        "train": _Layout(("train.tsv",), text_a="sentence1", text_b="sentence2", label="label",
                         index="index"),
        "dev": _Layout(("dev.tsv",), text_a="sentence1", text_b="sentence2", label="label",
                       index="index"),
        "test": _Layout(("test.tsv",), text_a="sentence1", text_b="sentence2", index="index"),
    }
    submission_names = {"test": "RTE.tsv"}


class WnliProcessor(RteProcessor):
    name = data_name = "WNLI"
    labels = _BINARY
    label_names = ("not_entailment", "entailment")
    submission_names = {"test": "WNLI.tsv"}


class AxProcessor(GlueProcessor):
    """GLUE's diagnostic set: test only, predicted with a model fine-tuned on MNLI (same labels,
    same label ids), scored by GLUE with Matthews correlation."""

    name = "AX"
    data_name = "AX"
    labels = _NLI3
    metric_names = ("mcc",)
    # The GLUE download script saves it as diagnostic/diagnostic.tsv; the site names it AX.tsv.
    layouts = {"test": _Layout(("AX.tsv", "diagnostic.tsv"), text_a="sentence1",
                               text_b="sentence2", index="index")}
    submission_names = {"test": "AX.tsv"}

    def get_train_examples(self, data_dir):
        raise ValueError("AX (GLUE's diagnostic set) has no training data: fine-tune on MNLI "
                         "(--task_name=MNLI), then predict AX with that model")

    def get_dev_examples(self, data_dir):
        raise ValueError("AX (GLUE's diagnostic set) has no dev set; its labels are hidden and "
                         "scored by the GLUE server (evaluate on MNLI's dev sets instead)")


PROCESSORS: dict[str, type[GlueProcessor]] = {
    p.name.lower(): p for p in (
        ColaProcessor, Sst2Processor, MrpcProcessor, StsbProcessor, QqpProcessor, MnliProcessor,
        MnliMismatchedProcessor, QnliProcessor, RteProcessor, WnliProcessor, AxProcessor)
}
TASKS = tuple(p.name for p in PROCESSORS.values())
_ALIASES = {"mnli-m": "mnli", "diagnostic": "ax", "sst2": "sst-2", "stsb": "sts-b",
            "sts": "sts-b", "sst": "sst-2"}


def get_processor(task_name: str) -> GlueProcessor:
    """The processor for a GLUE task name, case-insensitive (MRPC, mrpc, MNLI-mm, sts-b, ...)."""
    key = str(task_name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in PROCESSORS:
        raise ValueError(f"unknown task {task_name!r}; tasks: {', '.join(TASKS)}")
    return PROCESSORS[key]()


# -- features -----------------------------------------------------------------------------------
def truncate_pair(tokens_a: list, tokens_b: list, max_length: int) -> None:
    """Shorten the pair in place to at most `max_length` tokens in total, one token at a time
    from the end of the longer side (of `tokens_b` when they are equal): a short sentence keeps
    all its tokens, which matters more than trimming both evenly."""
    while len(tokens_a) + len(tokens_b) > max_length:
        if len(tokens_a) > len(tokens_b):
            tokens_a.pop()
        else:
            tokens_b.pop()


def convert_examples_to_features(examples: Sequence[InputExample], label_list: Sequence[str],
                                 max_seq_length: int, tokenizer: Any,
                                 is_regression: bool = False) -> list[dict]:
    """BERT inputs for each example, unpadded.

    `tokenizer` is anything with tokenize(text) -> word pieces and convert_tokens_to_ids(pieces)
    (the project's FullTokenizer, or transformers' BertTokenizer), or with ids(text) -> ids
    (CachedTokenizer, the scripts' default). Each feature is a dict:
        input_ids    [CLS] a [SEP] (b [SEP]) as vocabulary ids, at most max_seq_length of them
        input_mask   1 for every token (padding, added later, gets 0)
        segment_ids  0 for [CLS] a [SEP], 1 for b [SEP]
        label_ids    index in label_list, or the float score when is_regression; test examples
                     (label None) get 0 / 0.0
        length       number of tokens (what the pipeline buckets by)
    """
    if max_seq_length < 3:
        raise ValueError(f"max_seq_length {max_seq_length} leaves no room for text: it must be "
                         "at least 3 ([CLS] and [SEP] take 2 tokens, 3 for a pair)")
    label_map = {label: i for i, label in enumerate(label_list)}
    cls_id, sep_id = tokenizer.convert_tokens_to_ids(["[CLS]", "[SEP]"])
    features = []
    # Truncation only counts pieces, so it may run on ids: a tokenizer with `ids(text)`
    # (CachedTokenizer) skips the round trip through token strings.
    direct = getattr(tokenizer, "ids", None)
    if direct is not None:
        def pieces(text):
            return list(direct(text))

        def to_ids(ids):
            return ids
    else:
        def pieces(text):
            return list(tokenizer.tokenize(text))

        def to_ids(tokens):
            return list(tokenizer.convert_tokens_to_ids(tokens))
    for example in examples:
        tokens_a = pieces(example.text_a)
        tokens_b = pieces(example.text_b) if example.text_b is not None else None
        if tokens_b is not None:
            truncate_pair(tokens_a, tokens_b, max_seq_length - 3)
        else:
            del tokens_a[max_seq_length - 2:]
        input_ids = [cls_id] + to_ids(tokens_a) + [sep_id]
        segment_ids = [0] * len(input_ids)
        if tokens_b is not None:
            b_ids = to_ids(tokens_b) + [sep_id]
            input_ids += b_ids
            segment_ids += [1] * len(b_ids)

        if is_regression:
            label_id = 0.0 if example.label is None else float(example.label)
        elif example.label is None:
            label_id = 0
        elif example.label in label_map:
            label_id = label_map[example.label]
        else:
            raise ValueError(f"example {example.guid}: label {example.label!r} is not in the "
                             f"label list {list(label_list)}")
        features.append({
            "input_ids": [int(i) for i in input_ids],
            "input_mask": [1] * len(input_ids),
            "segment_ids": segment_ids,
            "label_ids": label_id,
            "length": len(input_ids),
        })
    return features


def write_submission(processor: GlueProcessor, output_dir: str, examples: Sequence[InputExample],
                     predictions: Sequence, split: str | None = None) -> str:
    """Write `index<TAB>prediction` rows under GLUE's header into output_dir/<GLUE file name>
    (e.g. MRPC.tsv, MNLI-mm.tsv); predictions are label ids (scores for STS-B), one per example.
    Returns the path. Written to a temporary name and renamed, so a crash leaves no half file."""
    if len(examples) != len(predictions):
        raise ValueError(f"{len(examples)} examples but {len(predictions)} predictions")
    path = os.path.join(output_dir, processor.submission_filename(split))
    os.makedirs(output_dir, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write("index\tprediction\n")
        for example, pred in zip(examples, predictions):
            f.write(f"{example.index}\t{processor.submission_label(pred)}\n")
    os.replace(tmp, path)
    return path

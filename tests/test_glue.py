"""GLUE readers on the real files in ../shared/data/glue, hand-made malformed files, and feature
conversion checked against transformers' BertTokenizer."""

import math
import os
import subprocess
import sys

import pytest

from bert_tf.data import glue
from bert_tf.data.glue import DataError, InputExample, get_processor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Row counts from ../shared/data/README.md.
COUNTS = {
    "MRPC": (3668, 408, 1725),
    "SST-2": (67349, 872, 1821),
    "CoLA": (8551, 1043, 1063),
    "RTE": (2490, 277, 3000),
    "STS-B": (5749, 1500, 1379),
}


@pytest.fixture(scope="module")
def tokenizer():
    transformers = pytest.importorskip("transformers", reason="BertTokenizer is the oracle")
    from tests.conftest import SHARED_DATA

    vocab = SHARED_DATA / "vocab" / "uncased_vocab.txt"
    if not vocab.exists():
        pytest.skip(f"real data not available: {vocab} (set BERT_TF_SHARED_DATA)")
    return transformers.BertTokenizer(str(vocab), do_lower_case=True)


def write(path, text, bom=False):
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


# -- the real files -----------------------------------------------------------------------------
@pytest.mark.parametrize("task", sorted(COUNTS))
def test_real_files_row_counts(task, shared_data):
    data_dir = str(shared_data("glue", task))
    p = get_processor(task)
    train, dev, test = (p.get_train_examples(data_dir), p.get_dev_examples(data_dir),
                        p.get_test_examples(data_dir))
    assert (len(train), len(dev), len(test)) == COUNTS[task]
    for examples in (train, dev):
        if p.is_regression:
            assert all(isinstance(e.label, float) and 0.0 <= e.label <= 5.0 for e in examples)
        else:
            assert {e.label for e in examples} == set(p.get_labels())
    assert all(e.label is None for e in test)
    # Test rows carry GLUE's index column, which the submission file must repeat.
    assert [e.index for e in test] == list(range(len(test)))
    pair = task in ("MRPC", "RTE", "STS-B")
    for e in train + dev + test:
        assert e.text_a and not e.text_a.startswith("\ufeff")
        assert (e.text_b is not None) == pair
    assert len({e.guid for e in train}) == len(train)


def test_real_mrpc_bom_header_and_literal_quotes(shared_data):
    path = shared_data("glue", "MRPC", "dev.tsv")
    assert path.read_bytes().startswith(b"\xef\xbb\xbfQuality\t")
    dev = get_processor("MRPC").get_dev_examples(str(path.parent))
    first = dev[0]
    assert first.label == "1"
    assert first.text_a == ("He said the foodservice pie business doesn't fit the company's "
                            "long-term growth strategy.")
    # An opening quote with no closing one: a csv reader with quoting would swallow lines.
    assert first.text_b == '"The foodservice pie business does not fit our long-term growth strategy.'
    assert sum('"' in e.text_a + e.text_b for e in dev) > 10
    # 68.4% of the dev pairs are paraphrases (the README's constant-prediction accuracy).
    assert sum(e.label == "1" for e in dev) == 279


def test_real_cola_headerless_and_no_final_newline(shared_data):
    data_dir = shared_data("glue", "CoLA")
    assert not (data_dir / "dev.tsv").read_bytes().endswith(b"\n")
    p = get_processor("cola")
    dev = p.get_dev_examples(str(data_dir))
    assert dev[0].text_a == "The sailors rode the breeze clear of the rocks."
    assert dev[-1].text_a == "John talked to Bill about himself."  # the unterminated last line
    train = p.get_train_examples(str(data_dir))
    assert train[0].text_a.startswith("Our friends won't buy this analysis")  # line 1 is data
    test = p.get_test_examples(str(data_dir))
    assert test[0].text_a == "Bill whistled past the house."  # line 1 is a header


def test_real_stsb_scores(shared_data):
    dev = get_processor("sts-b").get_dev_examples(str(shared_data("glue", "STS-B")))
    assert dev[0].label == 5.0 and dev[1].label == 4.75
    assert dev[0].text_a == "A man with a hard hat is dancing."
    assert dev[0].text_b == "A man wearing a hard hat is dancing."


# -- the other tasks, from files with GLUE's real headers ---------------------------------------
MNLI_TRAIN_HEADER = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\t"
                     "sentence2_binary_parse\tsentence1_parse\tsentence2_parse\tsentence1\t"
                     "sentence2\tlabel1\tgold_label")
MNLI_DEV_HEADER = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\t"
                   "sentence2_binary_parse\tsentence1_parse\tsentence2_parse\tsentence1\t"
                   "sentence2\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label")
MNLI_TEST_HEADER = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\t"
                    "sentence2_binary_parse\tsentence1_parse\tsentence2_parse\tsentence1\t"
                    "sentence2")


def mnli_row(i, a, b, *labels):
    return "\t".join([str(i), "31193", "31193n", "government", "( x )", "( y )", "(ROOT x)",
                      "(ROOT y)", a, b, *labels])


def test_mnli_splits_and_mismatched(tmp_path):
    write(tmp_path / "train.tsv", MNLI_TRAIN_HEADER + "\n"
          + mnli_row(0, "P0", "H0", "neutral", "neutral") + "\n"
          + mnli_row(1, "P1", "H1", "entailment", "entailment") + "\n")
    for name, label in (("dev_matched", "contradiction"), ("dev_mismatched", "entailment")):
        write(tmp_path / f"{name}.tsv", MNLI_DEV_HEADER + "\n" + mnli_row(
            7, f"{name} p", "h", label, label, "neutral", label, label, label) + "\n")
    for name in ("test_matched", "test_mismatched"):
        write(tmp_path / f"{name}.tsv", MNLI_TEST_HEADER + "\n" + mnli_row(0, name, "h") + "\n"
              + mnli_row(1, name, "h2"))
    mnli, mm = get_processor("MNLI"), get_processor("mnli-MM")
    assert mnli.get_labels() == ["contradiction", "entailment", "neutral"]
    train = mnli.get_train_examples(str(tmp_path))
    assert [(e.text_a, e.text_b, e.label) for e in train] == [
        ("P0", "H0", "neutral"), ("P1", "H1", "entailment")]
    assert mnli.get_dev_examples(str(tmp_path))[0].label == "contradiction"
    assert mm.get_dev_examples(str(tmp_path))[0].label == "entailment"
    assert mnli.get_examples(str(tmp_path), "dev_mismatched")[0].text_a == "dev_mismatched p"
    assert mnli.get_test_examples(str(tmp_path))[1].text_a == "test_matched"
    assert mm.get_test_examples(str(tmp_path))[1].text_a == "test_mismatched"
    assert mnli.submission_filename() == "MNLI-m.tsv"
    assert mm.submission_filename() == "MNLI-mm.tsv"
    assert mnli.submission_filename("test_mismatched") == "MNLI-mm.tsv"
    with pytest.raises(ValueError, match="no 'dev' split"):
        mnli.get_examples(str(tmp_path), "dev")


@pytest.mark.parametrize("task,train,test,labels", [
    ("QQP", "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n5\t1\t2\tQ one?\tQ two?\t1\n",
     "id\tquestion1\tquestion2\n0\tQ one?\tQ two?\n", ("0", "1")),
    ("QNLI", "index\tquestion\tsentence\tlabel\n0\tQ one?\tS one.\tnot_entailment\n",
     "index\tquestion\tsentence\n0\tQ one?\tS one.\n", ("entailment", "not_entailment")),
    ("WNLI", "index\tsentence1\tsentence2\tlabel\n0\tQ one?\tS one.\t1\n",
     "index\tsentence1\tsentence2\n0\tQ one?\tS one.\n", ("0", "1")),
])
def test_other_pair_tasks(tmp_path, task, train, test, labels):
    write(tmp_path / "train.tsv", train)
    write(tmp_path / "dev.tsv", train)
    write(tmp_path / "test.tsv", test)
    p = get_processor(task.lower())
    assert tuple(p.get_labels()) == labels
    e = p.get_train_examples(str(tmp_path))[0]
    assert (e.text_a, e.text_b, e.label) == ("Q one?", "S one." if task != "QQP" else "Q two?",
                                             train.split("\n")[1].split("\t")[-1])
    assert p.get_test_examples(str(tmp_path))[0].label is None
    assert p.submission_filename() == f"{task}.tsv"


def test_ax_is_test_only(tmp_path):
    p = get_processor("ax")
    assert p.get_labels() == get_processor("mnli").get_labels()
    with pytest.raises(FileNotFoundError, match="AX.tsv or diagnostic.tsv"):
        p.get_test_examples(str(tmp_path))
    write(tmp_path / "diagnostic.tsv", "index\tsentence1\tsentence2\n0\tA dog.\tAn animal.\n")
    (e,) = p.get_test_examples(str(tmp_path))
    assert (e.text_a, e.text_b, e.label, e.index) == ("A dog.", "An animal.", None, 0)
    with pytest.raises(ValueError, match="MNLI"):
        p.get_train_examples(str(tmp_path))
    assert p.submission_filename() == "AX.tsv"
    assert p.metric_names == ("mcc",)


def test_get_processor_names():
    assert get_processor("mrpc").name == "MRPC"
    assert get_processor(" Sst-2 ").name == "SST-2"
    assert get_processor("STS-B").is_regression
    assert set(glue.TASKS) == {"CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "MNLI-mm",
                               "QNLI", "RTE", "WNLI", "AX"}
    with pytest.raises(ValueError) as info:
        get_processor("imdb")
    message = str(info.value)
    assert "'imdb'" in message and all(t in message for t in glue.TASKS)


def test_metric_names():
    expected = {"CoLA": ("mcc",), "SST-2": ("accuracy",), "MRPC": ("f1", "accuracy"),
                "STS-B": ("pearson", "spearman"), "QQP": ("f1", "accuracy"),
                "MNLI": ("accuracy",), "QNLI": ("accuracy",), "RTE": ("accuracy",),
                "WNLI": ("accuracy",)}
    for task, names in expected.items():
        assert get_processor(task).metric_names == names
    scores = get_processor("MRPC").compute_metrics([1, 0, 1, 1], [1, 1, 1, 0])
    assert scores == {"f1": pytest.approx(2 / 3), "accuracy": 0.5}


# -- malformed files ----------------------------------------------------------------------------
RTE_HEADER = "index\tsentence1\tsentence2\tlabel\n"


def test_wrong_column_count_names_file_and_line(tmp_path):
    write(tmp_path / "train.tsv", RTE_HEADER + "0\ta\tb\tentailment\n1\ta\tb\n")
    with pytest.raises(DataError) as info:
        get_processor("RTE").get_train_examples(str(tmp_path))
    assert str(info.value) == f"{tmp_path / 'train.tsv'}:3: expected 4 columns as in the header, found 3"
    assert isinstance(info.value, ValueError)


def test_quotes_do_not_protect_tabs(tmp_path):
    # With quoting a csv reader would read one field "a<TAB>b"; GLUE's files have no quoting.
    write(tmp_path / "dev.tsv", 'sentence\tlabel\n"a\tb"\t1\n')
    with pytest.raises(DataError, match=r"dev.tsv:2: expected 2 columns .* found 3"):
        get_processor("SST-2").get_dev_examples(str(tmp_path))
    write(tmp_path / "dev.tsv", 'sentence\tlabel\n"it\'s ""great""\t1\n')
    (e,) = get_processor("SST-2").get_dev_examples(str(tmp_path))
    assert e.text_a == '"it\'s ""great""'


def test_label_outside_label_set(tmp_path):
    write(tmp_path / "dev.tsv", "gj04\t1\t\tFine.\ngj04\t2\t*\tNot fine.\n")
    with pytest.raises(DataError, match=r"dev.tsv:2: label '2' is not one of 0, 1$"):
        get_processor("CoLA").get_dev_examples(str(tmp_path))
    write(tmp_path / "train.tsv", RTE_HEADER + "0\ta\tb\tEntailment\n")
    with pytest.raises(DataError, match="train.tsv:2: label 'Entailment' is not one of "
                                        "entailment, not_entailment"):
        get_processor("RTE").get_train_examples(str(tmp_path))


def test_cola_headerless_column_count(tmp_path):
    write(tmp_path / "train.tsv", "gj04\t1\t\tFine.\ngj04\t1\tFine too.\n")
    with pytest.raises(DataError, match=r"train.tsv:2: expected 4 tab-separated columns, found 3"):
        get_processor("CoLA").get_train_examples(str(tmp_path))


@pytest.mark.parametrize("score", ["high", "", "nan", "inf"])
def test_stsb_score_not_a_number(tmp_path, score):
    header = ("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2"
              "\tscore\n")
    row = "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane.\tA jet.\t{}\n"
    write(tmp_path / "train.tsv", header + row.format("3.5") + row.format(score))
    with pytest.raises(DataError, match=rf"train.tsv:3: score '{score}' is not a finite number"):
        get_processor("STS-B").get_train_examples(str(tmp_path))


def test_bad_index_and_missing_header_column(tmp_path):
    write(tmp_path / "test.tsv", "index\tsentence1\tsentence2\nx\ta\tb\n")
    with pytest.raises(DataError, match=r"test.tsv:2: index 'x' is not an integer"):
        get_processor("RTE").get_test_examples(str(tmp_path))
    write(tmp_path / "dev.tsv", "index\tpremise\thypothesis\tlabel\n0\ta\tb\tentailment\n")
    with pytest.raises(DataError, match=r"dev.tsv:1: the header has no column 'sentence1'"):
        get_processor("RTE").get_dev_examples(str(tmp_path))
    write(tmp_path / "dev.tsv", "")
    with pytest.raises(DataError, match=r"dev.tsv:1: the file is empty"):
        get_processor("RTE").get_dev_examples(str(tmp_path))


def test_line_endings_bom_and_blank_lines(tmp_path):
    # CRLF line ends, a BOM, no final newline: all read.
    write(tmp_path / "train.tsv", RTE_HEADER.replace("\n", "\r\n")
          + "0\ta\tb\tentailment\r\n1\tc\td\tnot_entailment", bom=True)
    examples = get_processor("RTE").get_train_examples(str(tmp_path))
    assert [(e.text_a, e.label) for e in examples] == [("a", "entailment"), ("c", "not_entailment")]
    # Trailing blank lines are ignored; a blank line between rows is an error at its line.
    write(tmp_path / "dev.tsv", RTE_HEADER + "0\ta\tb\tentailment\n\n\n")
    assert len(get_processor("RTE").get_dev_examples(str(tmp_path))) == 1
    write(tmp_path / "dev.tsv", RTE_HEADER + "0\ta\tb\tentailment\n\n1\ta\tb\tentailment\n")
    with pytest.raises(DataError, match=r"dev.tsv:3: blank line"):
        get_processor("RTE").get_dev_examples(str(tmp_path))


def test_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        get_processor("MRPC").get_train_examples(str(tmp_path))
    message = str(info.value)
    assert str(tmp_path / "train.tsv") in message
    assert "MRPC" in message and "--data_dir" in message and "download" in message


# -- submissions --------------------------------------------------------------------------------
def test_submission_labels_and_names():
    names = {t: get_processor(t).submission_filename() for t in glue.TASKS}
    assert names == {"CoLA": "CoLA.tsv", "SST-2": "SST-2.tsv", "MRPC": "MRPC.tsv",
                     "STS-B": "STS-B.tsv", "QQP": "QQP.tsv", "MNLI": "MNLI-m.tsv",
                     "MNLI-mm": "MNLI-mm.tsv", "QNLI": "QNLI.tsv", "RTE": "RTE.tsv",
                     "WNLI": "WNLI.tsv", "AX": "AX.tsv"}
    assert get_processor("MRPC").submission_label(1) == "1"
    assert get_processor("CoLA").submission_label(0) == "0"
    assert [get_processor("MNLI").submission_label(i) for i in range(3)] == [
        "contradiction", "entailment", "neutral"]
    assert get_processor("RTE").submission_label(1) == "not_entailment"
    assert get_processor("STS-B").submission_label(3.14159) == "3.142"
    with pytest.raises(ValueError, match="not a label id"):
        get_processor("MRPC").submission_label(2)
    with pytest.raises(ValueError, match="not submitted"):
        get_processor("MRPC").submission_filename("dev")


def test_write_submission(tmp_path, shared_data):
    p = get_processor("RTE")
    test = p.get_test_examples(str(shared_data("glue", "RTE")))
    path = glue.write_submission(p, str(tmp_path / "out"), test, [i % 2 for i in range(len(test))])
    assert os.path.basename(path) == "RTE.tsv"
    lines = open(path, encoding="utf-8").read().split("\n")
    assert lines[0] == "index\tprediction"
    assert lines[1:4] == ["0\tentailment", "1\tnot_entailment", "2\tentailment"]
    assert len(lines) == len(test) + 2 and lines[-1] == ""
    assert os.listdir(tmp_path / "out") == ["RTE.tsv"]


# -- features -----------------------------------------------------------------------------------
def expected_pair_lengths(la, lb, budget):
    """Google's rule in closed form: pop from the longer side (b on ties) until la + lb fits."""
    if la + lb <= budget:
        return la, lb
    a = min(la, max(math.ceil(budget / 2), budget - lb))
    return a, budget - a


def test_pair_features_match_bert_tokenizer(shared_data, tokenizer):
    p = get_processor("MRPC")
    dev = p.get_dev_examples(str(shared_data("glue", "MRPC")))[:60]
    features = glue.convert_examples_to_features(dev, p.get_labels(), 512, tokenizer)
    assert len(features) == len(dev)
    for example, feature in zip(dev, features):
        reference = tokenizer(example.text_a, example.text_b)
        assert feature["input_ids"] == reference["input_ids"]
        assert feature["segment_ids"] == reference["token_type_ids"]
        assert feature["input_mask"] == [1] * feature["length"]
        assert feature["length"] == len(feature["input_ids"])
        assert feature["label_ids"] == int(example.label)  # labels "0"/"1" are ids 0/1
        assert set(feature) == {"input_ids", "input_mask", "segment_ids", "label_ids", "length"}


@pytest.mark.parametrize("max_seq_length", [8, 20, 33])
def test_pair_truncation(shared_data, tokenizer, max_seq_length):
    p = get_processor("RTE")
    dev = p.get_dev_examples(str(shared_data("glue", "RTE")))[:40]
    features = glue.convert_examples_to_features(dev, p.get_labels(), max_seq_length, tokenizer)
    cls_id, sep_id = tokenizer.convert_tokens_to_ids(["[CLS]", "[SEP]"])
    truncated = 0
    for example, feature in zip(dev, features):
        ids_a = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(example.text_a))
        ids_b = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(example.text_b))
        la, lb = expected_pair_lengths(len(ids_a), len(ids_b), max_seq_length - 3)
        truncated += (la, lb) != (len(ids_a), len(ids_b))
        assert feature["input_ids"] == [cls_id] + ids_a[:la] + [sep_id] + ids_b[:lb] + [sep_id]
        assert feature["segment_ids"] == [0] * (la + 2) + [1] * (lb + 1)
        assert feature["length"] <= max_seq_length
    assert truncated > 10


def test_truncate_pair_rule():
    a, b = list("aaaaaaa"), list("bbbbb")
    glue.truncate_pair(a, b, 9)
    assert (len(a), len(b)) == (5, 4)
    a, b = list("aa"), list("bbbbbbbbbb")
    glue.truncate_pair(a, b, 8)
    assert (a, len(b)) == (list("aa"), 6)
    for la in range(12):
        for lb in range(12):
            for budget in range(1, 15):
                a, b = ["a"] * la, ["b"] * lb
                glue.truncate_pair(a, b, budget)
                assert (len(a), len(b)) == expected_pair_lengths(la, lb, budget)


def test_single_sentence_features(shared_data, tokenizer):
    p = get_processor("SST-2")
    dev = p.get_dev_examples(str(shared_data("glue", "SST-2")))[:50]
    features = glue.convert_examples_to_features(dev, p.get_labels(), 16, tokenizer)
    for example, feature in zip(dev, features):
        reference = tokenizer(example.text_a, truncation=True, max_length=16)
        assert feature["input_ids"] == reference["input_ids"]
        assert feature["segment_ids"] == [0] * feature["length"]
    assert max(f["length"] for f in features) == 16
    assert min(f["length"] for f in features) < 16  # no padding


def test_regression_and_test_labels(shared_data, tokenizer):
    p = get_processor("STS-B")
    data_dir = str(shared_data("glue", "STS-B"))
    dev = p.get_dev_examples(data_dir)[:5]
    features = glue.convert_examples_to_features(dev, p.get_labels(), 64, tokenizer,
                                                 is_regression=True)
    assert [f["label_ids"] for f in features] == [e.label for e in dev]
    assert isinstance(features[0]["label_ids"], float)
    test = get_processor("MRPC").get_test_examples(str(shared_data("glue", "MRPC")))[:3]
    assert [f["label_ids"] for f in glue.convert_examples_to_features(
        test, ["0", "1"], 64, tokenizer)] == [0, 0, 0]
    with pytest.raises(ValueError, match="label 'maybe' is not in the label list"):
        glue.convert_examples_to_features([InputExample("x-0", "a b", label="maybe")],
                                          ["0", "1"], 64, tokenizer)
    with pytest.raises(ValueError, match="at least 3"):
        glue.convert_examples_to_features(dev, [], 2, tokenizer, is_regression=True)


def test_imports_without_tensorflow():
    code = ("import sys, bert_tf.data.glue, bert_tf.data.conll, bert_tf.data.download, "
            "bert_tf.metrics; bad = [m for m in ('tensorflow', 'keras', 'torch') "
            "if m in sys.modules]; assert not bad, bad")
    env = dict(os.environ, PYTHONPATH=REPO)
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=REPO)

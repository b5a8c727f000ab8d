"""bert_tf.metrics is scikit-learn (accuracy, F1, Matthews), scipy.stats (Pearson, Spearman)
and seqeval (conlleval's entity chunks) behind a small wrapper. These tests check the wiring
against the libraries called the documented way (which class is positive, string labels,
conlleval's reading of IOB1 and IOBES, the per-sentence entity counts) and against values known
by hand (perfect and inverted correlations, CoNLL-2003 dev's 5,942 entities), on real GLUE /
CoNLL-2003 labels, random inputs and the degenerate cases."""

import math
import random
import warnings

import numpy as np
import pytest

from bert_tf import metrics

sklearn_metrics = pytest.importorskip("sklearn.metrics", reason="scikit-learn is the oracle")
stats = pytest.importorskip("scipy.stats", reason="scipy is the oracle")
seqeval_metrics = pytest.importorskip("seqeval.metrics", reason="seqeval is the oracle")


def quiet(fn, *args, **kwargs):
    """Call an oracle with its undefined-metric / constant-input warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def words(text):
    return set(text.lower().split())


def overlap(example):
    a, b = words(example.text_a), words(example.text_b)
    return len(a & b) / max(1, len(a | b))


# -- real inputs --------------------------------------------------------------------------------
def test_binary_metrics_on_real_mrpc_dev(shared_data):
    from bert_tf.data.glue import get_processor

    examples = get_processor("MRPC").get_dev_examples(str(shared_data("glue", "MRPC")))
    y_true = [int(e.label) for e in examples]
    # A real, imperfect classifier: word overlap above a threshold means "paraphrase".
    y_pred = [int(overlap(e) > 0.5) for e in examples]
    assert 0 < sum(y_pred) < len(y_pred)
    for got, want in [
        (metrics.accuracy(y_true, y_pred), sklearn_metrics.accuracy_score(y_true, y_pred)),
        (metrics.f1(y_true, y_pred), sklearn_metrics.f1_score(y_true, y_pred)),
        (metrics.matthews_corrcoef(y_true, y_pred),
         sklearn_metrics.matthews_corrcoef(y_true, y_pred)),
    ]:
        assert type(got) is float
        assert got == pytest.approx(want, abs=1e-12)
    # The README's fact: a constant "paraphrase" scores 68.4% accuracy, F1 81.2 on MRPC dev.
    constant = [1] * len(y_true)
    assert metrics.accuracy(y_true, constant) == pytest.approx(0.684, abs=5e-4)
    assert metrics.f1(y_true, constant) == pytest.approx(0.812, abs=5e-4)
    assert metrics.matthews_corrcoef(y_true, constant) == 0.0


def test_mcc_on_real_cola_dev(shared_data):
    from bert_tf.data.glue import get_processor

    examples = get_processor("CoLA").get_dev_examples(str(shared_data("glue", "CoLA")))
    y_true = [e.label for e in examples]  # strings "0"/"1" work as labels too
    y_pred = ["1" if len(e.text_a.split()) < 9 else "0" for e in examples]
    assert metrics.matthews_corrcoef(y_true, y_pred) == pytest.approx(
        sklearn_metrics.matthews_corrcoef(y_true, y_pred), abs=1e-12)
    assert metrics.f1(y_true, y_pred, positive="1") == pytest.approx(
        sklearn_metrics.f1_score(y_true, y_pred, pos_label="1"), abs=1e-12)


def test_correlations_on_real_stsb_dev(shared_data):
    from bert_tf.data.glue import get_processor

    examples = get_processor("STS-B").get_dev_examples(str(shared_data("glue", "STS-B")))
    gold = [e.label for e in examples]
    pred = [5 * overlap(e) for e in examples]
    # Real STS-B scores tie a lot (many 0.000, 5.000, ...), so Spearman's tie handling matters.
    assert len(set(gold)) < len(gold) / 5
    assert metrics.pearson(gold, pred) == pytest.approx(stats.pearsonr(gold, pred)[0], abs=1e-12)
    assert metrics.spearman(gold, pred) == pytest.approx(stats.spearmanr(gold, pred)[0],
                                                         abs=1e-12)
    assert type(metrics.pearson(gold, pred)) is float


# -- random inputs and edge cases ---------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_classification_random(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 300))
    y_true = rng.integers(0, 2, n)
    y_pred = np.where(rng.random(n) < 0.7, y_true, rng.integers(0, 2, n))
    assert metrics.accuracy(y_true, y_pred) == pytest.approx(
        sklearn_metrics.accuracy_score(y_true, y_pred), abs=1e-12)
    assert metrics.f1(y_true, y_pred) == pytest.approx(
        quiet(sklearn_metrics.f1_score, y_true, y_pred), abs=1e-12)
    assert metrics.matthews_corrcoef(y_true, y_pred) == pytest.approx(
        quiet(sklearn_metrics.matthews_corrcoef, y_true, y_pred), abs=1e-12)
    # Three classes (MNLI): Matthews' multi-class form.
    t3, p3 = rng.integers(0, 3, n), rng.integers(0, 3, n)
    assert metrics.matthews_corrcoef(t3, p3) == pytest.approx(
        quiet(sklearn_metrics.matthews_corrcoef, t3, p3), abs=1e-12)


@pytest.mark.parametrize("y_true,y_pred", [
    ([1, 1, 1, 1], [1, 1, 1, 1]),   # all one class, all right
    ([0, 0, 0, 0], [0, 0, 0, 0]),   # no positive anywhere: F1 undefined -> 0
    ([0, 0, 0, 0], [1, 1, 1, 1]),
    ([1, 0, 1, 0], [0, 0, 0, 0]),   # constant prediction: Matthews undefined -> 0
    ([1, 0, 1, 0], [0, 1, 0, 1]),   # perfectly wrong: Matthews -1
    ([1], [1]),
])
def test_classification_edge_cases(y_true, y_pred):
    assert metrics.accuracy(y_true, y_pred) == sklearn_metrics.accuracy_score(y_true, y_pred)
    assert metrics.f1(y_true, y_pred) == pytest.approx(
        quiet(sklearn_metrics.f1_score, y_true, y_pred, zero_division=0.0))
    assert metrics.matthews_corrcoef(y_true, y_pred) == pytest.approx(
        quiet(sklearn_metrics.matthews_corrcoef, y_true, y_pred))


@pytest.mark.parametrize("seed", range(5))
def test_correlations_random_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 200))
    x = rng.integers(0, 6, n).astype(float)  # few distinct values: many ties
    y = x + rng.normal(0, 2, n)
    y[: n // 3] = np.round(y[: n // 3])
    assert metrics.pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    assert metrics.spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)


def test_correlation_edge_cases():
    assert metrics.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert metrics.spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    # All tied: undefined, nan as scipy says.
    assert math.isnan(metrics.pearson([1, 1, 1], [1, 2, 3]))
    assert math.isnan(quiet(stats.pearsonr, [1, 1, 1], [1, 2, 3])[0])
    assert math.isnan(metrics.spearman([2, 2, 2, 2], [1, 2, 3, 4]))
    assert math.isnan(quiet(stats.spearmanr, [2, 2, 2, 2], [1, 2, 3, 4])[0])
    # Large offsets do not lose precision.
    x = np.arange(50.0) + 1e9
    y = np.sin(np.arange(50.0))
    assert metrics.pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-9)
    with pytest.raises(ValueError, match="3 values but y_pred has 2"):
        metrics.pearson([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least 2"):
        metrics.spearman([1], [1])


def test_compute_metrics_by_name():
    got = metrics.compute_metrics(["accuracy", "f1", "mcc"], [1, 0, 1], [1, 1, 1])
    assert got == {"accuracy": pytest.approx(2 / 3), "f1": pytest.approx(0.8), "mcc": 0.0}
    with pytest.raises(ValueError, match="both be strings or both be numbers"):
        metrics.f1(["1", "0"], ["1", "1"])  # would silently be 0.0 with positive=1
    assert metrics.f1(["1", "0"], ["1", "1"], positive="1") == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="unknown metric 'auc'"):
        metrics.compute_metrics(["auc"], [1], [1])


# -- entity-level NER scores --------------------------------------------------------------------
def check_against_seqeval(gold, pred):
    got = metrics.entity_scores(gold, pred)
    assert got["precision"] == pytest.approx(quiet(seqeval_metrics.precision_score, gold, pred))
    assert got["recall"] == pytest.approx(quiet(seqeval_metrics.recall_score, gold, pred))
    assert got["f1"] == pytest.approx(quiet(seqeval_metrics.f1_score, gold, pred))
    report = quiet(seqeval_metrics.classification_report, gold, pred, output_dict=True)
    types = {k for k in report if not k.endswith(" avg")}
    # seqeval lists the types that occur in the gold or the predicted tags.
    assert set(got["per_type"]) == types
    for kind in types:
        mine = got["per_type"][kind]
        assert mine["precision"] == pytest.approx(report[kind]["precision"])
        assert mine["recall"] == pytest.approx(report[kind]["recall"])
        assert mine["f1"] == pytest.approx(report[kind]["f1-score"])
        assert mine["support"] == report[kind]["support"]
    return got


def corrupt(sentences, rng):
    """Plausible model errors: wrong types, shifted boundaries, dropped and invented entities."""
    out = []
    for tags in sentences:
        tags = list(tags)
        for i in range(len(tags)):
            r = rng.random()
            if r < 0.03:
                tags[i] = "O"
            elif r < 0.06:
                tags[i] = rng.choice(["B-", "I-"]) + rng.choice(["PER", "ORG", "LOC", "MISC"])
            elif r < 0.08 and tags[i] != "O":
                tags[i] = tags[i][:2] + rng.choice(["PER", "ORG", "LOC", "MISC"])
        out.append(tags)
    return out


def test_entity_scores_on_real_conll_dev(shared_data):
    from bert_tf.data.conll import read_conll

    path = str(shared_data("conll2003", "eng.testa"))
    gold = [s.tags for s in read_conll(path)]
    pred = corrupt(gold, random.Random(0))
    got = check_against_seqeval(gold, pred)
    assert 0.5 < got["f1"] < 0.95
    assert got["num_true"] == 5942  # CoNLL-2003 dev has 5942 entities
    perfect = metrics.entity_scores(gold, gold)
    assert (perfect["precision"], perfect["recall"], perfect["f1"]) == (1.0, 1.0, 1.0)
    # conlleval reads IOB1 and IOB2 alike: the file's raw IOB1 tags hold the same entities.
    raw = [s.tags for s in read_conll(path, to_iob2=False)]
    assert raw != gold
    assert metrics.entity_scores(gold, raw)["f1"] == 1.0
    check_against_seqeval(gold, raw)


@pytest.mark.parametrize("seed", range(20))
def test_entity_scores_random_tags(seed):
    rng = random.Random(seed)
    tags = ["O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-ORG", "B-ORG"]
    if seed % 2:
        tags += ["E-PER", "S-PER", "E-LOC", "S-ORG"]  # IOBES too, as conlleval/seqeval read them

    def sentences():
        return [[rng.choice(tags) for _ in range(rng.randint(1, 12))] for _ in range(30)]

    gold = sentences()
    pred = [[rng.choice(tags) for _ in s] for s in gold]
    check_against_seqeval(gold, pred)


def test_get_entities_chunk_rules():
    assert metrics.get_entities(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 2), ("LOC", 3, 4)]
    # IOB1-style starts and type changes start a chunk, as in conlleval.
    assert metrics.get_entities(["I-PER", "I-PER", "I-LOC", "B-LOC", "I-LOC"]) == [
        ("PER", 0, 2), ("LOC", 2, 3), ("LOC", 3, 5)]
    assert metrics.get_entities(["O", "I-MISC"]) == [("MISC", 1, 2)]
    assert metrics.get_entities([]) == []
    with pytest.raises(ValueError, match="'PER'"):
        metrics.get_entities(["PER"])


def test_entity_scores_edge_cases():
    # Nothing predicted: precision and F1 are 0, not an error.
    got = check_against_seqeval([["B-PER", "O"]], [["O", "O"]])
    assert (got["precision"], got["recall"], got["f1"]) == (0.0, 0.0, 0.0)
    # Boundary off by one token is wrong; type wrong is wrong.
    got = check_against_seqeval([["B-PER", "I-PER", "O"], ["B-ORG"]],
                                [["B-PER", "O", "O"], ["B-LOC"]])
    assert got["num_correct"] == 0 and got["num_pred"] == 2 and got["num_true"] == 2
    with pytest.raises(ValueError, match="sentence 0: 2 gold tags but 1 predicted"):
        metrics.entity_scores([["O", "O"]], [["O"]])


def test_a_metric_waits_for_pyarrow_half_imported_by_another_thread(tmp_path):
    """The MLflow thread imports pyarrow while the main thread scores dev; scikit-learn looks up
    `sys.modules["pyarrow"].Table`, which a half-imported module lacks (a CI failure). A stand-in
    pyarrow that takes 2 s to define its classes must make the metric wait, not raise."""
    import subprocess
    import sys

    fake = tmp_path / "pyarrow"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "import threading, time\n"
        "import builtins; builtins._fake_pyarrow_started.set()\n"
        "time.sleep(2)\n"
        "class Table: pass\nclass RecordBatch: pass\nclass Array: pass\nclass ChunkedArray: pass\n")
    script = (
        "import builtins, threading, sys\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "import sklearn.metrics\n"
        "from bert_tf import metrics\n"
        "builtins._fake_pyarrow_started = threading.Event()\n"
        "t = threading.Thread(target=lambda: __import__('pyarrow'))\n"
        "t.start()\n"
        "builtins._fake_pyarrow_started.wait()\n"
        "print(metrics.accuracy([1, 0, 1], [1, 1, 1]))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == str(2 / 3)

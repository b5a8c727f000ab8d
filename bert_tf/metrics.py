"""Evaluation metrics for fine-tuning: GLUE's classification and regression scores, and
entity-level precision / recall / F1 for NER as the CoNLL shared task's `conlleval` counts them.

The scores are the well-kept libraries' own: scikit-learn (accuracy, F1, Matthews correlation),
scipy.stats (Pearson, Spearman) and seqeval (conlleval's entity chunks). This module checks the
inputs, names the metrics each task reports and returns plain Python floats (no numpy scalars),
so results go straight into JSON, MLflow and TensorBoard. Scores are fractions in [0, 1]
(conlleval prints percentages; multiply by 100 to compare).

Which GLUE task reports what (the GLUE leaderboard's choice):
    CoLA: mcc            SST-2, MNLI, QNLI, RTE, WNLI: accuracy
    MRPC, QQP: f1 and accuracy                 STS-B: pearson and spearman
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections import Counter
from typing import Iterable, Sequence

import numpy as np

__all__ = [
    "accuracy", "f1", "matthews_corrcoef", "pearson", "spearman",
    "get_entities", "entity_scores", "compute_metrics", "METRICS",
]


def _settle_dataframe_imports() -> None:
    """Wait for any half-done import of pandas, polars or pyarrow in another thread.

    scikit-learn (1.8+) asks `sys.modules["pyarrow"].Table` on every metric call. While the
    MLflow thread (`bert_tf.training.tracking`) is importing mlflow, pyarrow can sit in
    sys.modules half initialised, and that lookup raised AttributeError in a CI run. Importing a
    module another thread is initialising blocks on its module lock until it is done, so this
    turns the race into a short wait; it costs nothing when the modules are absent or complete.
    """
    for name in ("pyarrow", "pandas", "polars"):
        if name in sys.modules:
            importlib.import_module(name)


def _pair(y_true, y_pred, min_length=1):
    """The two inputs as 1-D arrays of equal length; raises with both lengths when they differ."""
    _settle_dataframe_imports()
    t = np.asarray(y_true)
    p = np.asarray(y_pred)
    if t.ndim != 1 or p.ndim != 1:
        raise ValueError(f"expected two 1-D sequences, got shapes {t.shape} and {p.shape}")
    if len(t) != len(p):
        raise ValueError(f"y_true has {len(t)} values but y_pred has {len(p)}")
    if len(t) < min_length:
        raise ValueError(f"need at least {min_length} value(s), got {len(t)}")
    return t, p


# -- classification (scikit-learn) --------------------------------------------------------------
def accuracy(y_true, y_pred) -> float:
    """Fraction of positions where the prediction equals the label (sklearn accuracy_score)."""
    from sklearn.metrics import accuracy_score

    t, p = _pair(y_true, y_pred)
    return float(accuracy_score(t, p))


def f1(y_true, y_pred, positive=1) -> float:
    """F1 of the `positive` class, 2·TP / (2·TP + FP + FN) (sklearn f1_score restricted to that
    label); 0.0 when there is no positive label and no positive prediction (zero_division=0)."""
    from sklearn.metrics import f1_score

    t, p = _pair(y_true, y_pred)
    if (t.dtype.kind in "US" or p.dtype.kind in "US") != isinstance(positive, str):
        # "1" == 1 is False: without this check string labels would silently score 0.
        raise ValueError(f"positive={positive!r} and the labels ({t.dtype}, {p.dtype}) must both "
                         "be strings or both be numbers")
    return float(f1_score(t, p, labels=[positive], average=None, zero_division=0.0)[0])


def matthews_corrcoef(y_true, y_pred) -> float:
    """Matthews correlation coefficient (CoLA's metric; sklearn's, multi-class form of Gorodkin
    2004). 0.0 when undefined (all labels or all predictions one class)."""
    from sklearn.metrics import matthews_corrcoef as mcc

    t, p = _pair(y_true, y_pred)
    return float(mcc(t, p))


# -- regression (STS-B; scipy.stats) ------------------------------------------------------------
def _correlation(test, x, y) -> float:
    a, b = _pair(x, y, min_length=2)
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    if np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")  # undefined for a constant input (scipy warns and returns nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(test(a, b).statistic)


def pearson(x, y) -> float:
    """Pearson correlation (scipy.stats.pearsonr); nan when either input is constant."""
    from scipy.stats import pearsonr

    return _correlation(pearsonr, x, y)


def spearman(x, y) -> float:
    """Spearman rank correlation, ties sharing their mean rank (scipy.stats.spearmanr); nan
    when either input is constant."""
    from scipy.stats import spearmanr

    return _correlation(spearmanr, x, y)


# -- NER: entity-level scores as conlleval counts them (seqeval's chunks) -----------------------
def _check_tag(tag: str) -> None:
    if tag == "O":
        return
    prefix, sep, kind = tag.partition("-")
    if not sep or prefix not in ("B", "I", "E", "S") or not kind:
        raise ValueError(f"tag {tag!r} is neither 'O' nor of the form B-/I-/E-/S-<TYPE>")


def get_entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Entity chunks of one tag sequence as (type, start, end) with `end` exclusive.

    seqeval's default (conlleval-compatible) chunking, so IOB1 input and ill-formed IOB2 are
    read the way the official scorer reads them: a chunk starts at B-X (and S-X), and also at
    I-X / E-X when no chunk of type X is open; it ends before O, B-, S- or a change of type,
    and right after E- or S-. Raises ValueError on a tag that is not O or B-/I-/E-/S-<TYPE>.
    """
    from seqeval.metrics.sequence_labeling import get_entities as chunks

    tags = list(tags)
    for tag in tags:
        _check_tag(tag)
    return [(kind, start, end + 1) for kind, start, end in chunks(tags)]


def entity_scores(true_tags: Iterable[Sequence[str]], pred_tags: Iterable[Sequence[str]]) -> dict:
    """Entity-level micro precision / recall / F1 over sentences of tags, conlleval's definition:
    an entity counts as correct only when its type, first and last token all match exactly.

    Returns {"precision", "recall", "f1", "num_true", "num_pred", "num_correct",
    "per_type": {type: {"precision", "recall", "f1", "support"}}} where support is the number of
    gold entities of that type. A score whose denominator is zero is 0.0.
    """
    true_tags = list(true_tags)
    pred_tags = list(pred_tags)
    if len(true_tags) != len(pred_tags):
        raise ValueError(f"{len(true_tags)} gold sentences but {len(pred_tags)} predicted ones")
    gold, found = set(), set()
    for s, (t, p) in enumerate(zip(true_tags, pred_tags)):
        if len(t) != len(p):
            raise ValueError(f"sentence {s}: {len(t)} gold tags but {len(p)} predicted tags")
        gold.update((s,) + e for e in get_entities(t))
        found.update((s,) + e for e in get_entities(p))
    correct = gold & found

    def prf(n_correct, n_pred, n_true):
        precision = n_correct / n_pred if n_pred else 0.0
        recall = n_correct / n_true if n_true else 0.0
        f = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return float(precision), float(recall), float(f)

    gold_by_type = Counter(e[1] for e in gold)
    found_by_type = Counter(e[1] for e in found)
    correct_by_type = Counter(e[1] for e in correct)
    per_type = {}
    for kind in sorted(set(gold_by_type) | set(found_by_type)):
        p, r, f = prf(correct_by_type[kind], found_by_type[kind], gold_by_type[kind])
        per_type[kind] = {"precision": p, "recall": r, "f1": f, "support": gold_by_type[kind]}
    p, r, f = prf(len(correct), len(found), len(gold))
    return {"precision": p, "recall": r, "f1": f, "num_true": len(gold), "num_pred": len(found),
            "num_correct": len(correct), "per_type": per_type}


# -- by name ------------------------------------------------------------------------------------
METRICS = {
    "accuracy": accuracy,
    "f1": f1,
    "mcc": matthews_corrcoef,
    "pearson": pearson,
    "spearman": spearman,
}


def compute_metrics(names: Iterable[str], y_true, y_pred) -> dict[str, float]:
    """{name: score} for metric names from METRICS (a GLUE processor's `metric_names`)."""
    result = {}
    for name in names:
        if name not in METRICS:
            raise ValueError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
        result[name] = METRICS[name](y_true, y_pred)
    return result


# -- SQuAD ------------------------------------------------------------------------------------------
# Written here: the `evaluate` package's "squad" / "squad_v2" metrics are scripts it fetches from
# the Hugging Face Hub at run time (its wheel holds none), which fails offline and inside locked-down
# jobs, and torchmetrics' copy needs PyTorch. The definitions are those of the official scripts
# (evaluate-v1.1.py, evaluate-v2.0.py, Rajpurkar et al.); tests/test_squad.py checks the numbers
# against both scripts on real predictions. Scores here are percentages, as the scripts print them.

_SQUAD_PUNCTUATION = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")  # string.punctuation
_SQUAD_ARTICLES = None


def squad_normalize(text: str) -> str:
    """The official normalisation: lower case, ASCII punctuation removed, the articles a/an/the
    removed as whole words, whitespace collapsed."""
    import re

    global _SQUAD_ARTICLES
    if _SQUAD_ARTICLES is None:
        _SQUAD_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
    text = "".join(c for c in text.lower() if c not in _SQUAD_PUNCTUATION)
    return " ".join(_SQUAD_ARTICLES.sub(" ", text).split())


def squad_f1(prediction: str, gold: str, version_2: bool = False) -> float:
    """Token F1 (0..1) of normalised prediction against one gold answer. version_2: an empty
    side scores 1 when both are empty, else 0 (evaluate-v2.0.py; v1.1 gives 0)."""
    pred, ref = squad_normalize(prediction).split(), squad_normalize(gold).split()
    if version_2 and (not pred or not ref):
        return float(pred == ref)
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def squad_scores(examples, predictions: dict, null_odds: dict | None = None,
                 version_2: bool = False) -> dict:
    """EM and F1 of `predictions` ({question id: text}) over `examples` (squad.SquadExample with
    answers; an unanswerable one has none), in percent, the best over each question's reference
    answers; a question without a prediction scores 0.

    1.1: {"exact_match", "f1"} (evaluate-v1.1.py). 2.0 (evaluate-v2.0.py): {"exact", "f1",
    "total", "HasAns_exact", "HasAns_f1", "HasAns_total", "NoAns_exact", "NoAns_f1",
    "NoAns_total"} for the predictions as given (the threshold the run used), and with
    null_odds ({id: null score minus best non-null score}) also "best_exact", "best_f1" and
    their thresholds "best_exact_thresh", "best_f1_thresh": the scores had every question whose
    null odds exceed the threshold been answered "" (the official best-threshold search)."""
    exact, f1, has_answer, ids = [], [], [], []
    for ex in examples:
        golds = [a["text"] for a in ex.answers]
        if version_2:
            golds = [g for g in golds if squad_normalize(g)] or [""]
        pred = predictions.get(ex.qas_id)
        if pred is None:
            exact.append(0.0)
            f1.append(0.0)
        else:
            exact.append(max(float(squad_normalize(pred) == squad_normalize(g)) for g in golds))
            f1.append(max(squad_f1(pred, g, version_2) for g in golds))
        has_answer.append(bool(ex.answers))  # as evaluate-v2.0.py: answers listed or not
        ids.append(ex.qas_id)
    exact, f1, has_answer = np.array(exact), np.array(f1), np.array(has_answer, bool)
    if not version_2:
        return {"exact_match": 100.0 * exact.mean(), "f1": 100.0 * f1.mean()}
    out = {"exact": 100.0 * exact.mean(), "f1": 100.0 * f1.mean(), "total": len(ids)}
    for name, subset in (("HasAns", has_answer), ("NoAns", ~has_answer)):
        if subset.any():
            out.update({f"{name}_exact": 100.0 * exact[subset].mean(),
                        f"{name}_f1": 100.0 * f1[subset].mean(),
                        f"{name}_total": int(subset.sum())})
    if null_odds is not None:
        answered = np.array([bool(predictions.get(q)) for q in ids])
        odds = [null_odds.get(q) for q in ids]
        for metric, raw in (("exact", exact), ("f1", f1)):
            score, thresh = _best_threshold(raw, has_answer, answered, odds)
            out[f"best_{metric}"], out[f"best_{metric}_thresh"] = score, thresh
    return out


def _best_threshold(raw, has_answer, answered, odds):
    """The official search: walk the questions by increasing null odds (stable), as if every
    question up to here kept its answer and every later one were answered ""; the best total
    and the odds where it was reached. Questions without odds are left out of the walk."""
    score = best = float((~has_answer).sum())  # all answered "": right on every NoAns question
    thresh = 0.0
    known = [i for i, o in enumerate(odds) if o is not None]
    for i in sorted(known, key=lambda i: odds[i]):
        if has_answer[i]:
            score += raw[i]
        elif answered[i]:
            score -= 1
        if score > best:
            best, thresh = score, odds[i]
    return 100.0 * best / len(raw), float(thresh)

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

import warnings
from collections import Counter
from typing import Iterable, Sequence

import numpy as np

__all__ = [
    "accuracy", "f1", "matthews_corrcoef", "pearson", "spearman",
    "get_entities", "entity_scores", "compute_metrics", "METRICS",
]


def _pair(y_true, y_pred, min_length=1):
    """The two inputs as 1-D arrays of equal length; raises with both lengths when they differ."""
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

"""Evaluation metrics for fine-tuning: GLUE's classification and regression scores, and
entity-level precision / recall / F1 for NER as the CoNLL shared task's `conlleval` counts them.

Pure Python + numpy; every function returns plain Python floats (no numpy scalars), so results go
straight into JSON, MLflow and TensorBoard. Scores are fractions in [0, 1] (conlleval prints
percentages; multiply by 100 to compare).

Which GLUE task reports what (the GLUE leaderboard's choice):
    CoLA: mcc            SST-2, MNLI, QNLI, RTE, WNLI: accuracy
    MRPC, QQP: f1 and accuracy                 STS-B: pearson and spearman
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Iterable, Sequence

import numpy as np

__all__ = [
    "accuracy", "f1", "matthews_corrcoef", "pearson", "spearman", "rankdata",
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


# -- classification -----------------------------------------------------------------------------
def accuracy(y_true, y_pred) -> float:
    """Fraction of positions where the prediction equals the label."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean(t == p))


def f1(y_true, y_pred, positive=1) -> float:
    """Binary F1 of the `positive` class: 2·TP / (2·TP + FP + FN); 0.0 when there is no positive
    label and no positive prediction (scikit-learn's zero_division default)."""
    t, p = _pair(y_true, y_pred)
    if (t.dtype.kind in "US" or p.dtype.kind in "US") != isinstance(positive, str):
        # "1" == 1 is False: without this check string labels would silently score 0.
        raise ValueError(f"positive={positive!r} and the labels ({t.dtype}, {p.dtype}) must both "
                         "be strings or both be numbers")
    t_pos = t == positive
    p_pos = p == positive
    tp = int(np.sum(t_pos & p_pos))
    fp = int(np.sum(~t_pos & p_pos))
    fn = int(np.sum(t_pos & ~p_pos))
    denominator = 2 * tp + fp + fn
    return 0.0 if denominator == 0 else float(2 * tp / denominator)


def matthews_corrcoef(y_true, y_pred) -> float:
    """Matthews correlation coefficient (CoLA's metric), multi-class form (Gorodkin 2004), which
    for two classes is (TP·TN − FP·FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)).

    0.0 when undefined (all labels or all predictions one class), as scikit-learn does."""
    t, p = _pair(y_true, y_pred)
    classes, encoded = np.unique(np.concatenate([t, p]), return_inverse=True)
    k = len(classes)
    t_idx, p_idx = encoded[: len(t)], encoded[len(t):]
    confusion = np.zeros((k, k), dtype=np.float64)  # [true class, predicted class]
    np.add.at(confusion, (t_idx, p_idx), 1.0)
    true_counts = confusion.sum(axis=1)
    pred_counts = confusion.sum(axis=0)
    correct = np.trace(confusion)
    n = confusion.sum()
    cov_tp = correct * n - np.dot(true_counts, pred_counts)
    cov_tt = n * n - np.dot(true_counts, true_counts)
    cov_pp = n * n - np.dot(pred_counts, pred_counts)
    denominator = cov_tt * cov_pp
    if denominator == 0:
        return 0.0
    return float(cov_tp / math.sqrt(denominator))


# -- regression (STS-B) -------------------------------------------------------------------------
def pearson(x, y) -> float:
    """Pearson correlation; nan when either input is constant (undefined, as in scipy)."""
    a, b = _pair(x, y, min_length=2)
    a = a.astype(np.float64) - np.mean(a, dtype=np.float64)
    b = b.astype(np.float64) - np.mean(b, dtype=np.float64)
    # Normalise first so long inputs with large values cannot overflow the dot products.
    norm_a = np.linalg.norm(a)
    norm_b = np.linalg.norm(b)
    if norm_a == 0 or norm_b == 0:
        return float("nan")
    r = float(np.dot(a / norm_a, b / norm_b))
    return max(-1.0, min(1.0, r))


def rankdata(values) -> np.ndarray:
    """1-based ranks (float64); tied values share the average of the ranks they span."""
    v = np.asarray(values)
    if v.ndim != 1:
        raise ValueError(f"expected a 1-D sequence, got shape {v.shape}")
    order = np.argsort(v, kind="mergesort")
    sorted_v = v[order]
    # Start of each run of equal values in sorted order.
    starts = np.flatnonzero(np.concatenate([[True], sorted_v[1:] != sorted_v[:-1]]))
    ends = np.concatenate([starts[1:], [len(v)]])  # exclusive
    # Positions start..end-1 hold ranks start+1..end; their mean is (start + 1 + end) / 2.
    run_rank = (starts + 1 + ends) / 2.0
    ranks = np.empty(len(v), dtype=np.float64)
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks


def spearman(x, y) -> float:
    """Spearman rank correlation: Pearson on average ranks (ties share their mean rank)."""
    a, b = _pair(x, y, min_length=2)
    return pearson(rankdata(a), rankdata(b))


# -- NER: entity-level scores as conlleval counts them ------------------------------------------
def _split_tag(tag: str) -> tuple[str, str]:
    """'B-PER' -> ('B', 'PER'); 'O' -> ('O', '')."""
    if tag == "O":
        return "O", ""
    prefix, sep, kind = tag.partition("-")
    if not sep or prefix not in ("B", "I", "E", "S") or not kind:
        raise ValueError(f"tag {tag!r} is neither 'O' nor of the form B-/I-/E-/S-<TYPE>")
    return prefix, kind


def get_entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Entity chunks of one tag sequence as (type, start, end) with `end` exclusive.

    Follows conlleval's chunk rules, so IOB1 input and ill-formed IOB2 are read the way the
    official scorer reads them: a chunk starts at B-X (and S-X), and also at I-X / E-X when no
    chunk of type X is open (after O, after another type, or after a chunk closed by E-/S-); it
    ends before O, B-, S- or a change of type, and right after E- or S-.
    """
    entities = []
    open_type, open_start = None, 0
    prev_prefix = "O"
    for i, tag in enumerate(tags):
        prefix, kind = _split_tag(tag)
        if open_type is not None and (
                prefix in ("O", "B", "S") or prev_prefix in ("E", "S") or kind != open_type):
            entities.append((open_type, open_start, i))
            open_type = None
        if prefix != "O" and open_type is None:
            open_type, open_start = kind, i
        prev_prefix = prefix
    if open_type is not None:
        entities.append((open_type, open_start, len(tags)))
    return entities


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

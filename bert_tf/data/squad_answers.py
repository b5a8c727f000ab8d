"""SQuAD post-processing: start/end logits of every window -> each question's n best answers
(text projected back onto the context), its prediction and, for 2.0, its null odds; written as
Google's run_squad.py writes them (predictions.json, nbest_predictions.json, null_odds.json).

Google's rules, kept: a candidate is a (start, end) pair of document pieces in one window, the
start in the window where it has the most context (`max_context`), end >= start, at most
max_answer_length pieces; candidates are ranked by start_logit + end_logit (ties in window,
start, end order); the n_best distinct texts are kept; for 2.0 the null answer scores the
smallest [CLS] start + end logit over the windows, and a question is answered "" when that score
minus the best non-null answer's exceeds null_score_diff_threshold.

Two departures, both on purpose:
  - the n_best starts and ends of a window are drawn from the positions that can hold an answer
    (Google draws them from all 384 positions, question and padding included, and then drops
    the invalid ones, so a window can give it fewer than n_best^2 candidates); this never ranks
    a lower-scoring valid pair first, and the pairs are scored at once with numpy, not in a
    Python double loop per window;
  - a 2.0 question whose n-best holds only the null answer is predicted "" (Google's script
    crashes there), with null odds from the best span it ranked, or 1e6 when there is none (a
    context without a word piece has no window at all).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os

import numpy as np

logger = logging.getLogger("bert_tf")

NO_SPAN_NULL_ODDS = 1e6  # null odds of a 2.0 question without any span candidate


@dataclasses.dataclass(frozen=True)
class AnswerSettings:
    n_best_size: int = 20
    max_answer_length: int = 30
    do_lower_case: bool = True
    version_2_with_negative: bool = False
    null_score_diff_threshold: float = 0.0


def _non_space_positions(text: str) -> np.ndarray:
    """Indexes of text's characters other than " " (int64 [len(text) - text.count(" ")])."""
    codes = np.frombuffer(text.encode("utf-32-le"), np.uint32)
    return np.flatnonzero(codes != 32)


def final_text(pred_text: str, orig_text: str, words) -> str:
    """The part of orig_text (the context's words under the predicted pieces, e.g. "Smith's")
    that the detokenized prediction pred_text ("smith") spells, with the context's case and
    accents: "Smith". Google's get_final_text: `words(orig_text)` (the basic tokenizer) is
    aligned to orig_text character by character once " " characters are removed from both; when
    the two do not align (normalisation changed the length), pred_text is not found, or it
    starts or ends on a space, orig_text itself."""
    tok_text = " ".join(words(orig_text))
    start = tok_text.find(pred_text)
    if start == -1:
        return orig_text
    end = start + len(pred_text) - 1
    if len(orig_text) - orig_text.count(" ") != len(tok_text) - tok_text.count(" "):
        return orig_text
    if tok_text[start] == " " or tok_text[end] == " ":
        return orig_text
    # The n-th non-space character of tok_text is the n-th of orig_text.
    ns_start = start - tok_text.count(" ", 0, start)
    ns_end = end - tok_text.count(" ", 0, end)
    if " " not in orig_text:
        return orig_text[ns_start:ns_end + 1]
    positions = _non_space_positions(orig_text)
    return orig_text[positions[ns_start]:positions[ns_end] + 1]


def max_context(span_starts: np.ndarray, span_lengths: np.ndarray, window: int) -> np.ndarray:
    """bool [span_lengths[window]]: for each piece of `window`, whether this window is the one
    where the piece has the most context (Google's _check_is_max_context: the largest
    min(left, right) + 0.01 * window length, the first window on ties)."""
    positions = span_starts[window] + np.arange(span_lengths[window])  # [L]
    starts, ends = span_starts[:, None], (span_starts + span_lengths - 1)[:, None]  # [F,1]
    inside = (positions >= starts) & (positions <= ends)  # [F,L]
    score = np.minimum(positions - starts, ends - positions) + 0.01 * span_lengths[:, None]
    score = np.where(inside, score, -np.inf)
    return np.argmax(score, axis=0) == window


def _top(logits: np.ndarray, allowed: np.ndarray, n: int) -> np.ndarray:
    """Indexes of the n highest logits among the allowed positions, highest first, ties in
    index order (as Python's stable sorted(reverse=True))."""
    candidates = np.flatnonzero(allowed)
    order = np.argsort(-logits[candidates], kind="stable")[:n]
    return candidates[order]


def example_candidates(rows: np.ndarray, features, start_logits, end_logits,
                       settings: AnswerSettings):
    """The ranked candidates of one question: (candidates, null).

    rows: the question's feature rows (its windows, in order); features: the store's (or its
    columns as arrays) span_start, span_length, query_length; start_logits / end_logits
    float32 [N,S]. `null` is (score, start_logit, end_logit) at the window with the smallest
    [CLS] score (None for 1.1). `candidates` yields (score, start_logit, end_logit, row, start,
    end) best first, made one at a time as the n-best walk asks for them, with the null answer
    (row -1) after every span of its score or more, as Google ranks it (it appends the null
    before a stable sort)."""
    span_starts = np.asarray(features["span_start"][rows], np.int64)
    span_lengths = np.asarray(features["span_length"][rows], np.int64)
    parts = []
    null = None
    for w, row in enumerate(rows):
        s = start_logits[row].astype(np.float64)
        e = end_logits[row].astype(np.float64)
        if settings.version_2_with_negative:
            score = s[0] + e[0]
            if null is None or score < null[0]:
                null = (score, s[0], e[0])
        offset = int(features["query_length"][row]) + 2
        length = int(span_lengths[w])
        in_doc = np.zeros(len(s), bool)
        in_doc[offset:offset + length] = True
        start_ok = in_doc.copy()
        start_ok[offset:offset + length] = max_context(span_starts, span_lengths, w)
        starts = _top(s, start_ok, settings.n_best_size)
        ends = _top(e, in_doc, settings.n_best_size)
        si, ei = np.meshgrid(starts, ends, indexing="ij")  # [n,n], start-major as Google loops
        si, ei = si.ravel(), ei.ravel()
        keep = (ei >= si) & (ei - si + 1 <= settings.max_answer_length)
        si, ei = si[keep], ei[keep]
        parts.append((s[si] + e[ei], s[si], e[ei], np.full(len(si), int(row)), si, ei))
    return _ranked(parts, null), null


def _ranked(parts, null):
    columns = [np.concatenate(c) for c in zip(*parts)] if parts else [np.zeros(0)] * 6
    order = np.argsort(-columns[0], kind="stable")
    pending_null = null
    for i in order:
        score = columns[0][i]
        if pending_null is not None and score < pending_null[0]:
            yield (*pending_null, -1, 0, 0)
            pending_null = None
        yield (score, columns[1][i], columns[2][i], int(columns[3][i]), int(columns[4][i]),
               int(columns[5][i]))
    if pending_null is not None:
        yield (*pending_null, -1, 0, 0)


def _softmax(scores: list[float]) -> list[float]:
    x = np.asarray(scores, np.float64)
    e = np.exp(x - x.max())
    return (e / e.sum()).tolist()


def predict_answers(data, features, start_logits: np.ndarray, end_logits: np.ndarray,
                    tokenizer, settings: AnswerSettings):
    """Every question's prediction, n-best list and (2.0) null odds.

    data: squad.SquadData; features: squad.SquadFeatures of it (prediction settings);
    start_logits / end_logits: float32 [N,S] by feature row. tokenizer: the one the features
    were made with (its vocabulary turns ids back into pieces; its basic tokenizer aligns the
    answer text). Returns (predictions {id: text}, nbest {id: [{text, probability,
    start_logit, end_logit}]}, null_odds {id: float} (empty for 1.1)), in file order."""
    from bert_tf.data.squad import doc_tokens
    from bert_tf.tokenization import BasicTokenizer

    words = getattr(tokenizer, "words", None) or \
        BasicTokenizer(do_lower_case=settings.do_lower_case).tokenize
    inv_vocab = tokenizer.inv_vocab
    # Plain arrays: element access on the store's memory maps costs microseconds a call.
    columns = {k: np.asarray(features[k]) for k in ("example_index", "span_start",
                                                     "span_length", "query_length")}
    input_ids, splits = np.asarray(features["input_ids"]), np.asarray(features["row_splits"])
    example_index = columns["example_index"]
    bounds = np.searchsorted(example_index, np.arange(len(data.examples) + 1))
    doc_words = {}
    predictions, all_nbest, null_odds = {}, {}, {}
    for i, example in enumerate(data.examples):
        rows = np.arange(bounds[i], bounds[i + 1])
        candidates, null = example_candidates(rows, columns, start_logits, end_logits,
                                              settings)
        if example.paragraph not in doc_words:
            if len(doc_words) > 64:
                doc_words.clear()
            doc_words[example.paragraph] = (doc_tokens(data.contexts[example.paragraph])[0],
                                            features.paragraph_tok_to_orig(example.paragraph))
        context_words, tok_to_orig = doc_words[example.paragraph]
        nbest, seen = [], set()
        for score, start_logit, end_logit, row, start, end in candidates:
            if len(nbest) >= settings.n_best_size:
                break
            if row < 0:
                text = ""
            else:
                ids = input_ids[splits[row] + start:splits[row] + end + 1].tolist()
                pieces = " ".join([inv_vocab[t] for t in ids])
                pred = " ".join(pieces.replace(" ##", "").replace("##", "").split())
                first = int(columns["span_start"][row]) + start - \
                    (int(columns["query_length"][row]) + 2)
                last = first + (end - start)
                orig = " ".join(context_words[tok_to_orig[first]:tok_to_orig[last] + 1])
                text = final_text(pred, orig, words)
                if text in seen:
                    continue
            seen.add(text)
            nbest.append((text, start_logit, end_logit))
        if null is not None and "" not in seen:
            nbest.append(("", null[1], null[2]))
        if not nbest and settings.version_2_with_negative:
            # No window at all (a context without a single word piece): nothing to answer from
            null_odds[example.qas_id] = NO_SPAN_NULL_ODDS
            predictions[example.qas_id] = ""
            all_nbest[example.qas_id] = [collections.OrderedDict(
                text="", probability=1.0, start_logit=0.0, end_logit=0.0)]
            continue
        if not nbest:  # Google's nonce answer when no window gave a candidate
            nbest.append(("empty", 0.0, 0.0))
        probs = _softmax([s + e for _, s, e in nbest])
        all_nbest[example.qas_id] = [
            collections.OrderedDict(text=t, probability=p, start_logit=float(s),
                                    end_logit=float(e))
            for (t, s, e), p in zip(nbest, probs)]
        if null is None:
            predictions[example.qas_id] = nbest[0][0]
            continue
        best = next(((t, s, e) for t, s, e in nbest if t), None)
        if best is None:  # only the null answer: "" (Google's script fails here)
            span = next((c for c in candidates if c[3] >= 0), None)  # the best one unranked
            null_odds[example.qas_id] = (NO_SPAN_NULL_ODDS if span is None else
                                         float(null[0] - span[1] - span[2]))
            predictions[example.qas_id] = ""
            continue
        diff = float(null[0] - best[1] - best[2])
        null_odds[example.qas_id] = diff
        predictions[example.qas_id] = "" if diff > settings.null_score_diff_threshold \
            else best[0]
    return predictions, all_nbest, null_odds


def write_predictions(output_dir: str, predictions: dict, nbest: dict, null_odds: dict,
                      prefix: str = "") -> list[str]:
    """predictions.json, nbest_predictions.json and (2.0) null_odds.json in Google's layout
    (json.dumps with indent 4). Returns the paths written."""
    os.makedirs(output_dir, exist_ok=True)
    paths = []
    outputs = [("predictions.json", predictions), ("nbest_predictions.json", nbest)]
    if null_odds:
        outputs.append(("null_odds.json", null_odds))
    for name, value in outputs:
        path = os.path.join(output_dir, prefix + name)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(value, indent=4) + "\n")
        os.replace(tmp, path)
        paths.append(path)
    return paths

"""Masking: a batch of instances -> Google's features, with create_masked_lm_predictions
vectorised over the batch (15% of the non-special tokens, whole words optionally; 80% [MASK],
10% kept, 10% a random id). Counts for the summary go into `counts`."""

from __future__ import annotations

import numpy as np

from bert_tf.data.pretraining.options import PretrainingOptions, VocabIds


def instance_features(batch: list[tuple[list, list, bool]], options: PretrainingOptions,
                      ids: VocabIds, rng: np.random.Generator, counts: dict
                      ) -> dict[str, np.ndarray]:
    """Google's features for a batch of I instances (tokens_a, tokens_b, is_random_next):
    name -> array [I, length] (input_ids, input_mask, segment_ids [I, S];
    next_sentence_labels [I, 1]; unless options.dynamic_masking, the masked_lm_* of
    `mask_tokens`, input_ids then holding the replacements)."""
    S = options.max_seq_length
    flat: list[int] = []
    for tokens_a, tokens_b, _ in batch:
        flat.append(ids.cls)
        flat += tokens_a
        flat.append(ids.sep)
        flat += tokens_b
        flat.append(ids.sep)
    len_a = np.fromiter((len(a) for a, _, _ in batch), np.int64, len(batch))
    len_b = np.fromiter((len(b) for _, b, _ in batch), np.int64, len(batch))
    lengths = len_a + len_b + 3
    positions = np.arange(S)
    valid = positions < lengths[:, None]  # [I, S]
    tokens = np.zeros(valid.shape, np.int64)
    tokens[valid] = np.array(flat, np.int64)
    segment_ids = (positions >= (len_a + 2)[:, None]) & valid
    labels = np.fromiter((r for _, _, r in batch), np.int64, len(batch))
    counts["instances"] += len(batch)
    counts["instance_tokens"] += int(lengths.sum())
    counts["random_next"] += int(labels.sum())
    features = {"input_ids": tokens, "input_mask": valid, "segment_ids": segment_ids,
                "next_sentence_labels": labels[:, None]}
    if not options.dynamic_masking:
        features.update(mask_tokens(tokens, valid, len_a, lengths, options, ids, rng, counts))
    return features


def mask_tokens(tokens: np.ndarray, valid: np.ndarray, len_a: np.ndarray, lengths: np.ndarray,
                options: PretrainingOptions, ids: VocabIds, rng: np.random.Generator,
                counts: dict) -> dict[str, np.ndarray]:
    """Google's create_masked_lm_predictions on a batch; replaces tokens in place.

    tokens int64 [I, S] (modified: masked positions get [MASK], a random id or stay),
    valid bool [I, S], len_a/lengths int64 [I]. Returns masked_lm_positions,
    masked_lm_ids (int64 [I, P], 0-padded) and masked_lm_weights (float32 [I, P]).
    """
    I, S = tokens.shape
    P = options.max_predictions_per_seq
    rows = np.arange(I)
    # Candidates: every real token but [CLS] (position 0) and the two [SEP]s.
    candidate = valid.copy()
    candidate[:, 0] = False
    candidate[rows, len_a + 1] = False
    candidate[rows, lengths - 1] = False
    # round() on floats is Python 3's (half to even), as in Google's script on Python 3.
    num_to_predict = np.minimum(P, np.maximum(1, np.round(lengths * options.masked_lm_prob)
                                              .astype(np.int64)))
    if options.do_whole_word_mask:
        masked = choose_whole_words(tokens, candidate, num_to_predict, ids.is_suffix, rng)
    else:
        masked = _choose_tokens(candidate, num_to_predict, P, rng)

    # Row-major nonzero: positions come out sorted within each instance, as Google sorts.
    mrows, mcols = np.nonzero(masked)
    original = tokens[mrows, mcols]
    u = rng.random(mrows.size)
    keep = rng.random(mrows.size) < 0.5
    random_ids = ids.random_ids[rng.integers(0, ids.random_ids.size, mrows.size)]
    to_mask = u < 0.8
    tokens[mrows, mcols] = np.where(to_mask, ids.mask, np.where(keep, original, random_ids))
    per_row = masked.sum(axis=1)
    rank = np.arange(mrows.size) - (np.cumsum(per_row) - per_row)[mrows]
    positions = np.zeros((I, P), np.int64)
    label_ids = np.zeros((I, P), np.int64)
    weights = np.zeros((I, P), np.float32)
    positions[mrows, rank] = mcols
    label_ids[mrows, rank] = original
    weights[mrows, rank] = 1.0

    non_special = lengths - 3
    counts["non_special_tokens"] += int(non_special.sum())
    counts["masked_tokens"] += int(mrows.size)
    n_mask = int(to_mask.sum())
    n_keep = int((~to_mask & keep).sum())
    counts["replaced_by_mask"] += n_mask
    counts["kept"] += n_keep
    counts["replaced_random"] += int(mrows.size) - n_mask - n_keep
    # Instances where max_predictions_per_seq, not masked_lm_prob, set the count.
    capped = np.round(lengths * options.masked_lm_prob) > P
    counts["capped_instances"] += int(capped.sum())
    counts["capped_non_special_tokens"] += int(non_special[capped].sum())
    counts["capped_masked_tokens"] += int(per_row[capped].sum())
    return {"masked_lm_positions": positions, "masked_lm_ids": label_ids,
            "masked_lm_weights": weights}


def _choose_tokens(candidate: np.ndarray, num_to_predict: np.ndarray, P: int,
                   rng: np.random.Generator) -> np.ndarray:
    """Google's token choice: -> bool [I, S], num_to_predict random candidates a row.
    Shuffling the candidates and taking the first num_to_predict = taking those with the
    smallest random keys."""
    I, S = candidate.shape
    keys = rng.random((I, S), dtype=np.float32)
    keys[~candidate] = 2.0
    order = np.argsort(keys, axis=1)[:, :min(P, S)]
    take = ((np.arange(order.shape[1]) < num_to_predict[:, None])
            & (np.take_along_axis(keys, order, axis=1) < 2.0))
    masked = np.zeros((I, S), bool)
    masked[np.broadcast_to(np.arange(I)[:, None], order.shape)[take], order[take]] = True
    return masked


def choose_whole_words(tokens: np.ndarray, candidate: np.ndarray, num_to_predict: np.ndarray,
                       is_suffix: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Google's whole-word candidate choice: -> bool [I, S] of masked positions.

    A "##" piece (is_suffix[id]) joins the previous candidate group (even across the [SEP],
    as in Google's loop); groups are shuffled, then taken whole while they fit in
    num_to_predict, skipping those that do not.
    """
    I, S = tokens.shape
    rows = np.arange(I)
    # Position 1 (A's first token) is always a candidate, so a "##" piece has an earlier
    # candidate to join exactly when it is at position 2 or later.
    continues = candidate & is_suffix[tokens]
    continues[:, :2] = False
    starts = candidate & ~continues
    group = np.cumsum(starts, axis=1, dtype=np.int32) - 1  # group of each candidate
    np.maximum(group, 0, out=group)  # (positions before the first group: never candidates)
    num_groups = group[:, -1] + 1
    sizes = np.bincount((rows[:, None] * S + group)[candidate], minlength=I * S).reshape(I, S)
    keys = rng.random((I, S), dtype=np.float32)
    keys[np.arange(S) >= num_groups[:, None]] = 2.0
    order = np.argsort(keys, axis=1)
    shuffled_sizes = np.take_along_axis(sizes, order, axis=1)
    taken = np.zeros((I, S), bool)
    count = np.zeros(I, np.int64)
    for col in range(int(num_groups.max(initial=0))):
        size = shuffled_sizes[:, col]
        fits = (size > 0) & (count + size <= num_to_predict)
        taken[:, col] = fits
        count += size * fits
        if col % 8 == 7 and ((count >= num_to_predict) | (col + 1 >= num_groups)).all():
            break
    group_taken = np.zeros((I, S), bool)
    np.put_along_axis(group_taken, order, taken, axis=1)
    return candidate & np.take_along_axis(group_taken, group, axis=1)

"""Dynamic masking: Google's masked-LM rules applied in the tf.data pipeline, fresh every epoch.

Records written by `create_pretraining_data.py --dynamic_masking` hold the token ids without
masks; `DynamicMasker` draws them per batch with the rules of Google's
create_masked_lm_predictions:
  * candidates are the real tokens other than [CLS] and [SEP]; with whole-word masking a piece
    starting with `##` belongs to the word before it, and words are masked whole;
  * num_to_predict = min(max_predictions_per_seq, max(1, round(len(tokens) * masked_lm_prob)))
    with len(tokens) counting [CLS] and [SEP];
  * words are visited in random order and taken while they fit (a word that would overshoot is
    skipped and later, shorter ones may still be taken);
  * each chosen position becomes [MASK] with probability 0.8, keeps its token with 0.1, and
    becomes a uniformly random vocabulary id with 0.1;
  * masked_lm_positions are sorted, padded with 0 (weight 0) to max_predictions_per_seq.
Randomness is stateless: a function of (seed, key) where the key is the batch's position in the
run, so masks are reproducible, resumable, and differ between epochs.

Dimensions: B batch, S sequence, P predictions.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from bert_tf.tokenization.wordpiece import vocab_tokens


class DynamicMasker:
    """Callable (batch, key) -> batch with masked input_ids and the masked_lm_* features.

    batch: input_ids, input_mask, segment_ids int32 [B,S], next_sentence_labels int32 [B].
    key: int64 scalar tensor, the batch's index in the run. Adds masked_lm_positions and
    masked_lm_ids int32 [B,P] and masked_lm_weights float32 [B,P]. Raises ValueError at
    construction when the vocabulary lacks [MASK], [CLS] or [SEP]."""

    def __init__(self, vocab_file: str, max_predictions_per_seq: int,
                 masked_lm_prob: float = 0.15, do_whole_word_mask: bool = False, seed: int = 0):
        tokens = vocab_tokens(vocab_file)
        vocab = {token: index for index, token in enumerate(tokens)}
        missing = [t for t in ("[MASK]", "[CLS]", "[SEP]") if t not in vocab]
        if missing:
            raise ValueError(f"{vocab_file}: no {', '.join(missing)} token; dynamic masking "
                             "needs the vocabulary the records were written with")
        size = len(tokens)
        continuation = np.zeros(size, bool)
        for token, index in vocab.items():
            if token.startswith("##"):
                continuation[index] = True
        self.vocab_size = size
        self.mask_id, self.cls_id, self.sep_id = (vocab[t] for t in ("[MASK]", "[CLS]", "[SEP]"))
        self.continuation = tf.constant(continuation)
        self.max_predictions_per_seq = max_predictions_per_seq
        self.masked_lm_prob = masked_lm_prob
        self.do_whole_word_mask = do_whole_word_mask
        self.seed = int(seed)

    def __call__(self, batch: dict, key) -> dict:
        P = self.max_predictions_per_seq
        ids = tf.cast(batch["input_ids"], tf.int32)  # [B,S]
        real = tf.cast(batch["input_mask"], tf.bool)
        B, S = tf.shape(ids)[0], tf.shape(ids)[1]
        seeds = tf.random.experimental.stateless_split(
            tf.stack([tf.constant(self.seed, tf.int64), tf.cast(key, tf.int64)]), 3)

        candidate = real & (ids != self.cls_id) & (ids != self.sep_id)  # [B,S]
        if self.do_whole_word_mask:
            inside = tf.gather(self.continuation, tf.clip_by_value(ids, 0, self.vocab_size - 1))
            before = tf.pad(candidate[:, :-1], [[0, 0], [1, 0]])  # a candidate to join
            start = candidate & ~(inside & before)
        else:
            start = candidate
        word = tf.cumsum(tf.cast(start, tf.int32), axis=1) - 1  # [B,S] word of each position
        word = tf.where(candidate, word, -1)
        # word_length[b, w]: the pieces of word w (0 past the row's last word).
        word_length = tf.reduce_sum(tf.one_hot(word, S, dtype=tf.int32), axis=1)  # [B,S]

        # Google: num_to_predict from len(tokens), [CLS] and [SEP] included.
        length = tf.reduce_sum(tf.cast(real, tf.float32), axis=1)
        to_predict = tf.minimum(P, tf.maximum(1, tf.cast(
            tf.round(length * self.masked_lm_prob), tf.int32)))  # [B]
        # tf.round rounds half to even as Python's round() does.

        # Visit words in random order (absent words last), taking each that still fits.
        order_key = tf.random.stateless_uniform([B, S], seeds[0])
        order_key = tf.where(word_length > 0, order_key, 2.0)
        order = tf.argsort(order_key, axis=1, stable=True)  # [B,S] words by visit
        visit_length = tf.gather(word_length, order, batch_dims=1)  # [B,S]

        def take(total, lengths):  # one visit for every row: total [B], lengths [B]
            fits = (lengths > 0) & (total + lengths <= to_predict)
            return total + tf.where(fits, lengths, 0)

        totals = tf.scan(take, tf.transpose(visit_length),
                         initializer=tf.zeros([B], tf.int32))  # [S,B], after each visit
        before_visit = tf.concat([tf.zeros([1, B], tf.int32), totals[:-1]], axis=0)
        taken_in_visit = tf.transpose(totals > before_visit)  # [B,S]
        inverse = tf.argsort(order, axis=1)
        word_taken = tf.gather(taken_in_visit, inverse, batch_dims=1)  # [B,S] by word
        chosen = candidate & tf.gather(word_taken, tf.maximum(word, 0), batch_dims=1)

        # Sorted positions, padded with 0.
        position = tf.range(S)[None, :]
        sort_key = tf.where(chosen, position, S + position)
        positions = tf.sort(sort_key, axis=1)[:, :P]
        positions = tf.pad(positions, [[0, 0], [0, tf.maximum(P - S, 0)]],
                           constant_values=S)[:, :P]
        valid = positions < S
        positions = tf.where(valid, positions, 0)
        targets = tf.where(valid, tf.gather(ids, positions, batch_dims=1), 0)

        # 80% [MASK], 10% the token itself, 10% a random vocabulary id (Google draws from the
        # whole vocabulary).
        draw = tf.random.stateless_uniform([B, S], seeds[1])
        random_ids = tf.random.stateless_uniform([B, S], seeds[2], minval=0,
                                                 maxval=self.vocab_size, dtype=tf.int32)
        replacement = tf.where(draw < 0.8, self.mask_id, tf.where(draw < 0.9, ids, random_ids))
        out = dict(batch)
        out["input_ids"] = tf.where(chosen, replacement, ids)
        out["masked_lm_positions"] = positions
        out["masked_lm_ids"] = targets
        out["masked_lm_weights"] = tf.cast(valid, tf.float32)
        return out

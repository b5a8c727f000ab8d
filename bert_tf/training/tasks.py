"""Losses of the fine-tuning and pre-training tasks, computed in float32 whatever the compute
dtype."""

from __future__ import annotations

import tensorflow as tf


def sparse_cross_entropy(labels, logits):
    """Softmax cross-entropy of float32 logits [..., V] against int labels [...] in [0, V):
    log(sum(exp(logits))) - logits[label], per row, [...] float32.

    The values of tf.nn.sparse_softmax_cross_entropy_with_logits (to float rounding), computed as
    log(sum(exp(logits - max))) - (logits[label] - max) with the gradient written out,
    softmax - one_hot(label), from the forward's exp: on a 2-core CPU this takes 14.3 ms
    instead of TF's fused kernel's 28.0 for the masked-LM's [320, 30522] logits, forward and
    backward (bench/profile_step.py kernels). A label outside [0, V) gives NaN for its row on every
    device (as TF's kernel does on a GPU), which the training loop's non-finite guard turns
    into an error that names label ids as a cause."""
    shape = tf.shape(labels)
    vocab = tf.shape(logits)[-1]
    rows = tf.reshape(logits, [-1, vocab])  # [N,V]
    flat = tf.reshape(tf.cast(labels, tf.int32), [-1])  # [N]
    valid = tf.logical_and(flat >= 0, flat < vocab)
    index = tf.stack([tf.range(tf.shape(flat)[0]), tf.clip_by_value(flat, 0, vocab - 1)],
                     axis=1)  # [N,2], in range whatever the labels

    @tf.custom_gradient
    def cross_entropy(x):
        top = tf.reduce_max(x, axis=-1, keepdims=True)  # [N,1]
        e = tf.exp(x - top)
        total = tf.reduce_sum(e, axis=-1, keepdims=True)
        # log-sum-exp minus the label's logit, both relative to the max: no ulp of a large max
        loss = tf.math.log(total[:, 0]) - (tf.gather_nd(x, index) - top[:, 0])
        loss = tf.where(valid, loss, tf.constant(float("nan"), loss.dtype))

        def grad(d_loss):  # [N] -> [N,V]: d_loss * (softmax - one_hot)
            with tf.name_scope("sparse_cross_entropy_grad"):  # named for profiles
                return tf.tensor_scatter_nd_sub(e * (d_loss[:, None] / total), index, d_loss)

        return loss, grad

    with tf.name_scope("sparse_cross_entropy"):
        return tf.reshape(cross_entropy(rows), shape)


def classification_loss(model, batch):
    """Mean softmax cross-entropy of logits [B,L] against label_ids [B]."""
    logits = tf.cast(model(batch, training=True)["logits"], tf.float32)
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(batch["label_ids"], tf.int32), logits=logits))


def regression_loss(model, batch):
    """Mean squared error of logits [B,1] against float label_ids [B] (STS-B)."""
    pred = tf.cast(model(batch, training=True)["logits"], tf.float32)[:, 0]
    return tf.reduce_mean(tf.square(pred - tf.cast(batch["label_ids"], tf.float32)))


def token_classification_loss(model, batch):
    """Cross-entropy over positions whose label id is >= 0 (first word piece of each word);
    other pieces, [CLS], [SEP] and padding carry -1 and are ignored."""
    logits = tf.cast(model(batch, training=True)["logits"], tf.float32)  # [B,S,L]
    labels = tf.cast(batch["label_ids"], tf.int32)  # [B,S]
    valid = labels >= 0
    per_token = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.maximum(labels, 0), logits=logits)
    weights = tf.cast(valid, tf.float32)
    return tf.reduce_sum(per_token * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)


def span_loss(model, batch):
    """SQuAD's loss (Google's run_squad.py): the mean of the start and end positions' softmax
    cross-entropies over each window's positions, float32. start_logits / end_logits [B,W]
    against start_positions / end_positions [B] (0, [CLS], for a window without the answer).
    Padding positions (input_mask 0) are left out of the softmax, so a batch's padded width
    does not change the loss."""
    out = model(batch, training=True)
    padding = (1.0 - tf.cast(batch["input_mask"], tf.float32)) * -10000.0  # [B,W]

    def cross_entropy(logits, positions):
        logits = tf.cast(logits, tf.float32) + padding
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.cast(positions, tf.int32), logits=logits))

    return 0.5 * (cross_entropy(out["start_logits"], batch["start_positions"]) +
                  cross_entropy(out["end_logits"], batch["end_positions"]))


def _pretraining_terms(model, batch, training):
    """Per-prediction and per-example terms of Google's pre-training loss, float32.

    mlm_logits [B,P,V] against masked_lm_ids [B,P] weighted by masked_lm_weights [B,P] (0 on
    padding predictions); nsp_logits [B,2] against next_sentence_labels [B]. The logits are
    BertPretrainer.pretraining_logits' (the last layer only where the heads read it)."""
    out = model.pretraining_logits(batch, training=training)
    mlm_logits = tf.cast(out["mlm_logits"], tf.float32)
    nsp_logits = tf.cast(out["nsp_logits"], tf.float32)
    ids = tf.cast(batch["masked_lm_ids"], tf.int32)
    weights = tf.cast(batch["masked_lm_weights"], tf.float32)
    mlm_ce = sparse_cross_entropy(ids, mlm_logits)
    mlm_hit = tf.cast(tf.equal(tf.argmax(mlm_logits, -1, output_type=tf.int32), ids),
                      tf.float32)
    labels = tf.cast(batch["next_sentence_labels"], tf.int32)
    nsp_ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=nsp_logits)
    nsp_hit = tf.cast(tf.equal(tf.argmax(nsp_logits, -1, output_type=tf.int32), labels),
                      tf.float32)
    return mlm_ce, mlm_hit, weights, nsp_ce, nsp_hit


def pretraining_loss(model, batch):
    """Google's pre-training loss: masked-LM cross-entropy averaged over the real predictions
    (sum(w * ce) / (sum(w) + 1e-5), run_pretraining.py's get_masked_lm_output) plus the mean
    next-sentence cross-entropy. Returns (loss, {mlm_loss, nsp_loss, mlm_accuracy,
    nsp_accuracy}), all float32 scalars."""
    mlm_ce, mlm_hit, weights, nsp_ce, nsp_hit = _pretraining_terms(model, batch, True)
    denominator = tf.reduce_sum(weights) + 1e-5
    mlm_loss = tf.reduce_sum(mlm_ce * weights) / denominator
    nsp_loss = tf.reduce_mean(nsp_ce)
    return mlm_loss + nsp_loss, {
        "mlm_loss": mlm_loss, "nsp_loss": nsp_loss,
        "mlm_accuracy": tf.reduce_sum(mlm_hit * weights) / denominator,
        "nsp_accuracy": tf.reduce_mean(nsp_hit)}


def pretraining_eval_metrics(model, batch):
    """{name: (sum, count)} for loop.evaluate: masked-LM loss and accuracy over the real
    predictions, next-sentence loss and accuracy over the examples (dropout off)."""
    mlm_ce, mlm_hit, weights, nsp_ce, nsp_hit = _pretraining_terms(model, batch, False)
    n_pred = tf.reduce_sum(weights)
    n_ex = tf.cast(tf.shape(nsp_ce)[0], tf.float32)
    return {"masked_lm_loss": (tf.reduce_sum(mlm_ce * weights), n_pred),
            "masked_lm_accuracy": (tf.reduce_sum(mlm_hit * weights), n_pred),
            "next_sentence_loss": (tf.reduce_sum(nsp_ce), n_ex),
            "next_sentence_accuracy": (tf.reduce_sum(nsp_hit), n_ex)}

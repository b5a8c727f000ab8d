"""Losses of the fine-tuning tasks, computed in float32 whatever the compute dtype."""

from __future__ import annotations

import tensorflow as tf


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

"""BERT's forward pass for inference, written in TensorFlow's own ops over a fine-tuned model's
variables: what an export's graph runs in place of the Keras model (the same weights, read
from the model's layers; nothing copied).

Why not call the Keras model: its graph is built for training, and at serving sizes the
difference shows. bench/bench_serving.py, MRPC demo model on 2 CPU cores, raw text to
probabilities: 1.47x Hugging Face PyTorch's p50 at batch 1 x 128 through Keras, 1.24x with
this; at batch 32, 1.09x and 0.75x (bench/README.md). What differs:
  - each projection is MatMul + BiasAdd (+ the activation), the pattern TensorFlow's graph
    optimizer fuses into one oneDNN kernel; the training layers' add and custom-gradient GELU
    (modeling/layers.py) are separate kernels;
  - the GELU is tf.nn.gelu(approximate=False), the exact erf form BERT uses (Hendrycks &
    Gimpel 2016), which the fusion recognises;
  - a classifier's last layer runs its queries, attention output, feed-forward and LayerNorms
    on the [CLS] row alone (keys and values on all rows), the only row its head reads, as
    `BertEncoder.outputs_at` does for pre-training.
The maths is the Keras model's in float32 (no dropout): tests/test_serving.py holds the two
within 1e-5 (random weights and ids, padding, both segments, every hidden_act), and the exports
to run_classifier.py's probabilities and run_ner.py's tags on real text.
"""

from __future__ import annotations

import math

import tensorflow as tf


def _value(weight):
    """The tf.Variable behind a Keras 3 weight (what a tf.function captures)."""
    return weight.value if hasattr(weight, "value") else weight


def _dense(x, layer, activation=None):
    """x [R, I] -> [R, O] with `layer`'s kernel [I, O] and bias [O]."""
    y = tf.nn.bias_add(tf.matmul(x, _value(layer.kernel)), _value(layer.bias))
    return activation(y) if activation is not None else y


def _layer_norm(x, layer):
    """Keras LayerNormalization over the last axis: (x - mean) / sqrt(var + eps) * g + b."""
    mean = tf.reduce_mean(x, -1, keepdims=True)
    centred = x - mean
    variance = tf.reduce_mean(tf.square(centred), -1, keepdims=True)
    return (centred * tf.math.rsqrt(variance + layer.epsilon) * _value(layer.gamma)
            + _value(layer.beta))


def activation(hidden_act: str):
    """The config's hidden_act as a TensorFlow op (bert_tf.modeling.layers.activation_fn's
    names: gelu is the exact erf form, gelu_tanh the tanh approximation)."""
    if hidden_act == "gelu":
        return lambda x: tf.nn.gelu(x, approximate=False)
    if hidden_act == "gelu_tanh":
        return lambda x: tf.nn.gelu(x, approximate=True)
    if hidden_act == "relu":
        return tf.nn.relu
    raise ValueError(f"unknown hidden_act {hidden_act!r}; use gelu, gelu_tanh or relu")


def _heads(x, batch, rows, heads, size):
    """[B*R, H] -> [B, N, R, D]."""
    return tf.transpose(tf.reshape(x, [batch, rows, heads, size]), [0, 2, 1, 3])


def encode(encoder, input_ids, input_mask, segment_ids, cls_only: bool = False):
    """A bert_tf BertEncoder's last-layer states, float32.

    input_ids, input_mask, segment_ids: int32 [B, S] (B, S > 0). Returns [B, S, H], or with
    cls_only the [CLS] row alone, [B, H] (the last layer computed on that row only)."""
    config = encoder.config
    act = activation(config.hidden_act)
    emb = encoder.embeddings
    batch, seq = tf.shape(input_ids)[0], tf.shape(input_ids)[1]
    x = (tf.gather(_value(emb.word_embeddings), input_ids)
         + tf.gather(_value(emb.token_type_embeddings), segment_ids)
         + _value(emb.position_embeddings)[:seq][None])
    x = tf.reshape(_layer_norm(x, emb.layer_norm), [-1, config.hidden_size])  # [B*S, H]
    # The additive mask of bert_tf.modeling.layers.AttentionMask: 0 on tokens, -10000 on padding.
    mask = (1.0 - tf.cast(input_mask, tf.float32))[:, None, None, :] * -10000.0  # [B,1,1,S]
    blocks = encoder.transformer_layers
    for i, block in enumerate(blocks):
        n, d = block.num_attention_heads, block.head_size
        last_cls = cls_only and i == len(blocks) - 1
        rows, queries = (1, tf.reshape(x, [batch, seq, -1])[:, 0]) if last_cls else (seq, x)
        q = _heads(_dense(queries, block.query) * (1.0 / math.sqrt(d)), batch, rows, n, d)
        k = _heads(_dense(x, block.key), batch, seq, n, d)
        v = _heads(_dense(x, block.value), batch, seq, n, d)
        probs = tf.nn.softmax(tf.matmul(q, k, transpose_b=True) + mask, axis=-1)  # [B,N,R,S]
        context = tf.reshape(tf.transpose(tf.matmul(probs, v), [0, 2, 1, 3]),
                             [-1, config.hidden_size])  # [B*R, H]
        a = _layer_norm(_dense(context, block.attention_output) + queries,
                        block.attention_layer_norm)
        ffn = _dense(_dense(a, block.intermediate, act), block.output_dense)
        x = _layer_norm(ffn + a, block.output_layer_norm)
    return x if cls_only else tf.reshape(x, [batch, seq, config.hidden_size])


def logits(model, features: dict):
    """A BertClassifier's logits [B, L] or a BertTokenClassifier's [B, S, L], float32, from
    input_ids / input_mask / segment_ids int32 [B, S]."""
    from bert_tf.modeling import BertClassifier, BertTokenClassifier

    inputs = (features["input_ids"], features["input_mask"], features["segment_ids"])
    if isinstance(model, BertClassifier):
        cls = encode(model.encoder, *inputs, cls_only=True)
        pooled = _dense(cls, model.encoder.pooler, tf.tanh)
        return _dense(pooled, model.head.dense)
    if isinstance(model, BertTokenClassifier):
        states = encode(model.encoder, *inputs)
        batch, seq = tf.shape(states)[0], tf.shape(states)[1]
        flat = _dense(tf.reshape(states, [-1, model.config.hidden_size]), model.head.dense)
        return tf.reshape(flat, [batch, seq, model.num_labels])
    raise TypeError(f"no serving forward pass for {type(model).__name__}")

"""BERT's forward pass for inference, written in TensorFlow's own ops over a fine-tuned model's
variables: what an export's graph runs in place of the Keras model (the same weights, read
from the model's layers; nothing copied).

Why not call the Keras model: its graph is built for training, and at serving sizes the
difference shows. bench/bench_serving.py, MRPC demo model on 2 CPU cores, raw text to
probabilities: 1.47x Hugging Face PyTorch's p50 at batch 1 x 128 through Keras, 1.24x with
this in one chain, 0.88x in two chains with TensorFlow's threads set for them; at batch 32,
1.09x, 0.75x and 0.71x (bench/README.md). What differs:
  - each projection is MatMul + BiasAdd (+ the activation), the pattern TensorFlow's graph
    optimizer fuses into one oneDNN kernel; the training layers' add and custom-gradient GELU
    (modeling/layers.py) are separate kernels;
  - the GELU is tf.nn.gelu(approximate=False), the exact erf form BERT uses (Hendrycks &
    Gimpel 2016), which the fusion recognises;
  - a classifier's last layer runs its queries, attention output, feed-forward and LayerNorms
    on the [CLS] row alone (keys and values on all rows), the only row its head reads, as
    `BertEncoder.outputs_at` does for pre-training;
  - the positions can be cut into chains that run side by side, one per core (`encode`'s
    `chains`; bert_tf.serving.saved_model, "Threads").
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


def _heads(x, batch, heads, size):
    """[B*R, H] -> [B, N, R, D]."""
    return tf.transpose(tf.reshape(x, [batch, -1, heads, size]), [0, 2, 1, 3])


def encode(encoder, input_ids, input_mask, segment_ids, cls_only: bool = False,
           chains: int = 1):
    """A bert_tf BertEncoder's last-layer states, float32.

    input_ids, input_mask, segment_ids: int32 [B, S] (B, S > 0). Returns [B, S, H], or with
    cls_only the [CLS] row alone, [B, H] (the last layer computed on that row only).

    chains: the positions are cut into this many chunks of ceil(S / chains) (the last ones
    shorter, or empty when S < chains), each carried through the layers by its own chain of
    kernels. The chains meet once per layer, where every chunk's keys and values are joined
    for all queries to read; everything else is per position. TensorFlow runs independent
    kernels on separate inter-op threads, so `chains` requests go to `chains` cores with
    single-threaded kernels (intra_op_parallelism_threads=1) and nothing hands work between
    threads inside a chain, which at serving sizes costs more than it saves (module doc).
    Every chunk's rows get the same arithmetic as an unsplit pass (tests/test_serving.py).
    """
    config = encoder.config
    act = activation(config.hidden_act)
    emb = encoder.embeddings
    width = config.hidden_size
    batch, seq = tf.shape(input_ids)[0], tf.shape(input_ids)[1]
    size = (seq + chains - 1) // chains
    spans = [(c * size, tf.minimum((c + 1) * size, seq)) for c in range(chains)]
    chunks = []  # each [B*R_c, H]
    for lo, hi in spans:
        x = (tf.gather(_value(emb.word_embeddings), input_ids[:, lo:hi])
             + tf.gather(_value(emb.token_type_embeddings), segment_ids[:, lo:hi])
             + _value(emb.position_embeddings)[lo:hi][None])
        chunks.append(tf.reshape(_layer_norm(x, emb.layer_norm), [-1, width]))
    # The additive mask of bert_tf.modeling.layers.AttentionMask: 0 on tokens, -10000 on padding.
    mask = (1.0 - tf.cast(input_mask, tf.float32))[:, None, None, :] * -10000.0  # [B,1,1,S]
    blocks = encoder.transformer_layers
    for i, block in enumerate(blocks):
        n, d = block.num_attention_heads, block.head_size
        k = tf.concat([_heads(_dense(x, block.key), batch, n, d) for x in chunks], axis=2)
        v = tf.concat([_heads(_dense(x, block.value), batch, n, d) for x in chunks], axis=2)
        if cls_only and i == len(blocks) - 1:  # [CLS] is the first row of the first chunk
            chunks = [tf.reshape(chunks[0], [batch, -1, width])[:, 0]]
        new = []
        for x in chunks:
            q = _heads(_dense(x, block.query) * (1.0 / math.sqrt(d)), batch, n, d)
            probs = tf.nn.softmax(tf.matmul(q, k, transpose_b=True) + mask, axis=-1)  # [B,N,R,S]
            context = tf.reshape(tf.transpose(tf.matmul(probs, v), [0, 2, 1, 3]), [-1, width])
            a = _layer_norm(_dense(context, block.attention_output) + x,
                            block.attention_layer_norm)
            ffn = _dense(_dense(a, block.intermediate, act), block.output_dense)
            new.append(_layer_norm(ffn + a, block.output_layer_norm))
        chunks = new
    if cls_only:
        return chunks[0]
    return tf.concat([tf.reshape(x, [batch, -1, width]) for x in chunks], axis=1)


def logits(model, features: dict, chains: int = 1):
    """A BertClassifier's logits [B, L] or a BertTokenClassifier's [B, S, L], float32, from
    input_ids / input_mask / segment_ids int32 [B, S]; chains as in `encode`."""
    from bert_tf.modeling import BertClassifier, BertTokenClassifier

    inputs = (features["input_ids"], features["input_mask"], features["segment_ids"])
    if isinstance(model, BertClassifier):
        cls = encode(model.encoder, *inputs, cls_only=True, chains=chains)
        pooled = _dense(cls, model.encoder.pooler, tf.tanh)
        return _dense(pooled, model.head.dense)
    if isinstance(model, BertTokenClassifier):
        states = encode(model.encoder, *inputs, chains=chains)
        batch, seq = tf.shape(states)[0], tf.shape(states)[1]
        flat = _dense(tf.reshape(states, [-1, model.config.hidden_size]), model.head.dense)
        return tf.reshape(flat, [batch, seq, model.num_labels])
    raise TypeError(f"no serving forward pass for {type(model).__name__}")

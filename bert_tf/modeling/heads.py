"""Task heads. Each takes encoder outputs and returns float32 logits."""

from __future__ import annotations

import keras
from keras import ops

from bert_tf.modeling.layers import (Dropout, activation_fn, gather_positions, layer_norm,
                                     matmul_transposed, rows_transposed_matmul, truncated_normal)


@ops.custom_gradient
def _tied_decoder(x, table):
    """x [B,P,H] @ table[V,H]^T -> logits [B,P,V] as `matmul_transposed` (a batched matmul,
    faster in TensorFlow's float32 CPU kernel than the 2-D transpose_b form), with the
    gradients written out so that the table's comes straight out of one matmul,
    d_table = d_logits^T @ x [V,H]. Autodiff would make it [H,V] and transpose it, a pass over
    the whole table every step (7-10 ms of a BERT-Small step on a CPU,
    bench/profile_step.py trace)."""

    def grad(*args, upstream=None):
        upstream = args[0] if upstream is None else upstream  # TF/JAX pass it first
        return ops.matmul(upstream, table), rows_transposed_matmul(upstream, x)  # [B,P,H], [V,H]

    return matmul_transposed(x, table), grad


class MaskedLMHead(keras.layers.Layer):
    """Masked-LM head: Dense + activation + LayerNorm, then a decoder tied to the word embeddings.

    Only the P masked positions go through the head (gather first, then the [H,V] projection): the
    vocabulary projection is the costliest matmul of pre-training and scoring all S positions would
    do S/P times the work for nothing.

    Call with sequence_output [B,S,H] and masked_lm_positions [B,P]; returns logits [B,P,V] float32.
    Without masked_lm_positions, sequence_output is taken to be the [B,P,H] states already
    gathered at the masked positions.
    """

    def __init__(self, embeddings, hidden_act="gelu", initializer_range=0.02,
                 layer_norm_eps=1e-12, **kwargs):
        super().__init__(**kwargs)
        # Kept outside Keras' tracking: the embedding table belongs to the encoder, and tracking it
        # here too would list it twice among the model's weights.
        object.__setattr__(self, "_embeddings", embeddings)
        self.hidden_act = hidden_act
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.hidden_size = embeddings.hidden_size
        self.vocab_size = embeddings.vocab_size
        self.transform = keras.layers.Dense(
            self.hidden_size, activation=activation_fn(hidden_act), name="transform",
            kernel_initializer=truncated_normal(initializer_range))
        self.transform_layer_norm = layer_norm(layer_norm_eps, "transform_LayerNorm")

    def build(self, input_shape=None):
        self.transform.build((None, None, self.hidden_size))
        self.transform_layer_norm.build((None, None, self.hidden_size))
        self.output_bias = self.add_weight(shape=(self.vocab_size,), initializer="zeros",
                                           name="output_bias")
        self.built = True

    def call(self, sequence_output, masked_lm_positions=None):
        x = sequence_output
        if masked_lm_positions is not None:
            x = gather_positions(sequence_output, masked_lm_positions)  # [B,P,H]
        x = self.transform_layer_norm(self.transform(x))  # float32 [B,P,H]
        x = ops.cast(x, self.compute_dtype)
        table = ops.cast(self._embeddings.word_embeddings, self.compute_dtype)  # [V,H]
        logits = _tied_decoder(x, table)  # [B,P,V]
        return ops.cast(logits, "float32") + ops.cast(self.output_bias, "float32")

    def compute_output_shape(self, sequence_output_shape, masked_lm_positions_shape=None):
        if masked_lm_positions_shape is None:
            return tuple(sequence_output_shape[:-1]) + (self.vocab_size,)
        return tuple(masked_lm_positions_shape) + (self.vocab_size,)

    def get_config(self):
        config = super().get_config()
        config.update(hidden_act=self.hidden_act, initializer_range=self.initializer_range,
                      layer_norm_eps=self.layer_norm_eps)
        return config


class _DenseLogits(keras.layers.Layer):
    """Dropout then Dense(num_labels) with float32 logits; base of the simple heads."""

    def __init__(self, num_labels, dropout_rate=0.1, initializer_range=0.02, **kwargs):
        super().__init__(**kwargs)
        self.num_labels = num_labels
        self.dropout_rate = dropout_rate
        self.initializer_range = initializer_range
        self.dropout = Dropout(dropout_rate)
        self.dense = keras.layers.Dense(num_labels, name="logits",
                                        kernel_initializer=truncated_normal(initializer_range))

    def build(self, input_shape):
        self.dense.build(input_shape)
        self.built = True

    def call(self, x, training=None):
        return ops.cast(self.dense(self.dropout(x, training=training)), "float32")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.num_labels,)

    def get_config(self):
        config = super().get_config()
        config.update(num_labels=self.num_labels, dropout_rate=self.dropout_rate,
                      initializer_range=self.initializer_range)
        return config


class NextSentenceHead(_DenseLogits):
    """pooled_output [B,H] -> next-sentence logits [B,2] (0 = B follows A, 1 = random)."""

    def __init__(self, initializer_range=0.02, **kwargs):
        kwargs.pop("num_labels", None)
        kwargs.pop("dropout_rate", None)
        super().__init__(2, dropout_rate=0.0, initializer_range=initializer_range, **kwargs)


class ClassificationHead(_DenseLogits):
    """pooled_output [B,H] -> logits [B,num_labels]; num_labels=1 is regression."""


class TokenClassificationHead(_DenseLogits):
    """sequence_output [B,S,H] -> logits [B,S,num_labels]."""


class SpanHead(keras.layers.Layer):
    """sequence_output [B,S,H] -> start_logits [B,S], end_logits [B,S] (SQuAD-style extraction)."""

    def __init__(self, initializer_range=0.02, **kwargs):
        super().__init__(**kwargs)
        self.initializer_range = initializer_range
        self.dense = keras.layers.Dense(2, name="logits",
                                        kernel_initializer=truncated_normal(initializer_range))

    def build(self, input_shape):
        self.dense.build(input_shape)
        self.built = True

    def call(self, sequence_output):
        logits = ops.cast(self.dense(sequence_output), "float32")  # [B,S,2]
        return logits[..., 0], logits[..., 1]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]), tuple(input_shape[:-1])

    def get_config(self):
        config = super().get_config()
        config.update(initializer_range=self.initializer_range)
        return config

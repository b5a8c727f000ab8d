"""BERT building blocks in pure Keras 3: embeddings, self-attention, the transformer block.

Only `keras.ops` and `keras.layers` are used here (no `tf.*`), so the same model runs under the
TensorFlow, JAX and PyTorch Keras backends.

Dimension legend used in shape comments:
  B batch size, S sequence length, H hidden size, N attention heads, D head size (H / N),
  I intermediate (feed-forward) size, V vocabulary size, P predictions per sequence, T token types.

Mixed precision: every layer follows the global dtype policy (set in one place,
`bert_tf.training.precision`), except LayerNorm and the attention softmax, which always run in
float32, as in Model Garden; the heads return float32 logits.
"""

from __future__ import annotations

import math

import keras
from keras import ops

# Google's modeling.py fills masked attention scores with -10000 before the softmax: large enough
# to give exactly zero weight after exp() in float32, small enough not to overflow float16.
MASK_VALUE = -10000.0


def gather_positions(sequence, positions):
    """sequence [B,S,H], positions int [B,P] -> [B,P,H] (the hidden states at the positions)."""
    index = ops.expand_dims(ops.cast(positions, "int32"), -1)  # [B,P,1]
    return ops.take_along_axis(sequence, index, axis=1)


def truncated_normal(stddev: float, seed=None):
    """Google's initializer: a normal cut at two standard deviations."""
    return keras.initializers.TruncatedNormal(stddev=stddev, seed=seed)


def activation_fn(name: str):
    """hidden_act -> a function. "gelu" is the exact erf form, "gelu_tanh" the tanh approximation."""
    if name == "gelu":
        return lambda x: ops.gelu(x, approximate=False)
    if name == "gelu_tanh":
        return lambda x: ops.gelu(x, approximate=True)
    if name == "relu":
        return ops.relu
    raise ValueError(f"unknown hidden_act {name!r}; use gelu, gelu_tanh or relu")


def layer_norm(epsilon: float, name: str):
    # dtype float32 whatever the global policy: LayerNorm statistics in bf16/fp16 lose too much.
    return keras.layers.LayerNormalization(epsilon=epsilon, dtype="float32", name=name)


class BertEmbeddings(keras.layers.Layer):
    """word + position + token type embeddings, then LayerNorm and dropout.

    Call with input_ids [B,S] and segment_ids [B,S] (int32); returns [B,S,H].
    `word_embeddings` is public: the masked-LM head ties its decoder to it.
    """

    def __init__(self, vocab_size, hidden_size, max_position_embeddings, type_vocab_size,
                 initializer_range=0.02, dropout_rate=0.1, layer_norm_eps=1e-12, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.initializer_range = initializer_range
        self.dropout_rate = dropout_rate
        self.layer_norm_eps = layer_norm_eps
        self.layer_norm = layer_norm(layer_norm_eps, "LayerNorm")
        self.dropout = keras.layers.Dropout(dropout_rate)

    def build(self, input_shape=None):
        init = truncated_normal(self.initializer_range)
        self.word_embeddings = self.add_weight(
            shape=(self.vocab_size, self.hidden_size), initializer=init, name="word_embeddings")
        self.position_embeddings = self.add_weight(
            shape=(self.max_position_embeddings, self.hidden_size), initializer=init,
            name="position_embeddings")
        self.token_type_embeddings = self.add_weight(
            shape=(self.type_vocab_size, self.hidden_size), initializer=init,
            name="token_type_embeddings")
        self.layer_norm.build((None, None, self.hidden_size))
        self.built = True

    def call(self, input_ids, segment_ids, training=None):
        seq_length = ops.shape(input_ids)[1]
        words = ops.take(self.word_embeddings, input_ids, axis=0)  # [B,S,H]
        types = ops.take(self.token_type_embeddings, segment_ids, axis=0)  # [B,S,H]
        positions = ops.expand_dims(self.position_embeddings[:seq_length], 0)  # [1,S,H]
        x = words + types + ops.cast(positions, words.dtype)
        x = self.layer_norm(x)
        return self.dropout(x, training=training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.hidden_size,)

    def get_config(self):
        config = super().get_config()
        config.update(vocab_size=self.vocab_size, hidden_size=self.hidden_size,
                      max_position_embeddings=self.max_position_embeddings,
                      type_vocab_size=self.type_vocab_size,
                      initializer_range=self.initializer_range, dropout_rate=self.dropout_rate,
                      layer_norm_eps=self.layer_norm_eps)
        return config


class AttentionMask(keras.layers.Layer):
    """input_mask [B,S] (1 = real token, 0 = padding) -> additive mask [B,1,1,S] in float32."""

    def call(self, input_mask):
        mask = ops.cast(input_mask, "float32")
        return (1.0 - mask[:, None, None, :]) * MASK_VALUE

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1, 1, input_shape[1])


class TransformerBlock(keras.layers.Layer):
    """One post-LayerNorm transformer layer of the original BERT.

        a = LayerNorm(x + Dropout(Dense(SelfAttention(x))))
        y = LayerNorm(a + Dropout(Dense(act(Dense(a)))))

    Sub-layer names follow Google's checkpoint layout (attention/self/query, attention/output/dense,
    intermediate/dense, output/dense, ...) to keep the checkpoint mapping readable.
    """

    def __init__(self, hidden_size, num_attention_heads, intermediate_size, hidden_act="gelu",
                 hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                 initializer_range=0.02, layer_norm_eps=1e-12, **kwargs):
        super().__init__(**kwargs)
        if hidden_size % num_attention_heads:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of "
                             f"num_attention_heads {num_attention_heads}")
        self.hidden_size = hidden_size
        self.num_attention_heads = num_attention_heads
        self.head_size = hidden_size // num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps

        def dense(units, name, activation=None):
            return keras.layers.Dense(units, activation=activation, name=name,
                                      kernel_initializer=truncated_normal(initializer_range))

        self.query = dense(hidden_size, "query")
        self.key = dense(hidden_size, "key")
        self.value = dense(hidden_size, "value")
        self.attention_output = dense(hidden_size, "attention_output")
        self.attention_layer_norm = layer_norm(layer_norm_eps, "attention_LayerNorm")
        self.intermediate = dense(intermediate_size, "intermediate",
                                  activation=activation_fn(hidden_act))
        self.output_dense = dense(hidden_size, "output")
        self.output_layer_norm = layer_norm(layer_norm_eps, "output_LayerNorm")
        self.attention_dropout = keras.layers.Dropout(attention_probs_dropout_prob)
        self.hidden_dropout = keras.layers.Dropout(hidden_dropout_prob)

    def build(self, input_shape):
        h = (None, None, self.hidden_size)
        for layer in (self.query, self.key, self.value, self.attention_output):
            layer.build(h)
        self.attention_layer_norm.build(h)
        self.intermediate.build(h)
        self.output_dense.build((None, None, self.intermediate_size))
        self.output_layer_norm.build(h)
        self.built = True

    def _split_heads(self, x, batch, seq):
        x = ops.reshape(x, (batch, seq, self.num_attention_heads, self.head_size))  # [B,S,N,D]
        return ops.transpose(x, (0, 2, 1, 3))  # [B,N,S,D]

    def call(self, x, attention_mask, training=None, positions=None):
        """x: [B,S,H]; attention_mask: additive float32 [B,1,1,S]; returns [B,S,H].

        With positions (int [B,Q]) the layer's output is computed only at those positions and
        has shape [B,Q,H]: the queries, the attention output, the feed-forward and both
        LayerNorms run on Q rows, the keys and values on all S. The values are those of the full
        layer at the positions (the rows of a transformer layer are independent once keys and
        values are made). Pre-training uses it on the last layer, whose states only the heads
        read, at [CLS] and the masked positions: MLPerf's BERT submissions do the same.
        """
        batch, seq = ops.shape(x)[0], ops.shape(x)[1]
        rows, n_rows = x, seq
        if positions is not None:
            rows, n_rows = gather_positions(x, positions), ops.shape(positions)[1]  # [B,Q,H]
        # Scale the queries, not the [B,N,S,S] scores: fewer multiplies, same result.
        q = self._split_heads(self.query(rows) * (1.0 / math.sqrt(self.head_size)), batch, n_rows)
        k = self._split_heads(self.key(x), batch, seq)
        v = self._split_heads(self.value(x), batch, seq)
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2)))  # [B,N,Q,S]
        # Softmax in float32 whatever the compute dtype.
        probs = ops.softmax(ops.cast(scores, "float32") + ops.cast(attention_mask, "float32"),
                            axis=-1)
        probs = self.attention_dropout(ops.cast(probs, v.dtype), training=training)
        context = ops.matmul(probs, v)  # [B,N,Q,D]
        context = ops.reshape(ops.transpose(context, (0, 2, 1, 3)),
                              (batch, n_rows, self.hidden_size))  # [B,Q,H]
        attn = self.hidden_dropout(self.attention_output(context), training=training)
        attn = self.attention_layer_norm(ops.cast(rows, "float32") + ops.cast(attn, "float32"))
        ffn = self.output_dense(self.intermediate(attn))
        ffn = self.hidden_dropout(ffn, training=training)
        return self.output_layer_norm(ops.cast(attn, "float32") + ops.cast(ffn, "float32"))

    def compute_output_shape(self, x_shape, attention_mask_shape=None, positions_shape=None):
        if positions_shape is None:
            return tuple(x_shape)
        return (x_shape[0], positions_shape[1], x_shape[2])

    def get_config(self):
        config = super().get_config()
        config.update(hidden_size=self.hidden_size, num_attention_heads=self.num_attention_heads,
                      intermediate_size=self.intermediate_size, hidden_act=self.hidden_act,
                      hidden_dropout_prob=self.hidden_dropout_prob,
                      attention_probs_dropout_prob=self.attention_probs_dropout_prob,
                      initializer_range=self.initializer_range,
                      layer_norm_eps=self.layer_norm_eps)
        return config

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


@ops.custom_gradient
def gelu(x):
    """The exact GELU (Hendrycks & Gimpel 2016), x * Phi(x), Phi the standard normal CDF,
    with its derivative written out: Phi(x) + x * phi(x), phi the normal density, Phi kept
    from the forward pass. Same values as keras.ops.gelu(approximate=False) to float rounding,
    in fewer kernels: 11.1 instead of 13.8 ms for a float32 [16,128,2048] forward and backward
    on a 2-core CPU (bench/profile_step.py kernels). x: any float tensor; returns its shape and dtype."""
    with keras.name_scope("gelu"):
        cdf = 0.5 * (1.0 + ops.erf(x * (1.0 / math.sqrt(2.0))))

    def grad(*args, upstream=None):
        upstream = args[0] if upstream is None else upstream  # TF/JAX pass it first
        with keras.name_scope("gelu_grad"):  # named for profiles (bench/profile_step.py trace)
            pdf = ops.exp(-0.5 * ops.square(x)) * (1.0 / math.sqrt(2.0 * math.pi))
            return upstream * (cdf + x * pdf)

    return x * cdf, grad


def activation_fn(name: str):
    """hidden_act -> a function. "gelu" is the exact erf form, "gelu_tanh" the tanh approximation."""
    if name == "gelu":
        return gelu
    if name == "gelu_tanh":
        return lambda x: ops.gelu(x, approximate=True)
    if name == "relu":
        return ops.relu
    raise ValueError(f"unknown hidden_act {name!r}; use gelu, gelu_tanh or relu")


def matmul_transposed(a, m):
    """a [..., K] @ m[J, K]^T -> [..., J], run as one batched matmul against m transposed,
    [B|1, N, K] x [1, K, J] (TensorFlow folds the transpose into the kernel: no copy).

    Why not the 2-D MatMul with transpose_b that autodiff (and tf.matmul(transpose_b=True))
    gives: TensorFlow's oneDNN float32 kernel for that form is slow when K is large. The
    feed-forward's input gradient, [2048,2048] x [512,2048]^T, took 28.6 ms that way and 20.6
    batched; BERT-Small's masked-LM decoder, [320,512] x [30522,512]^T, 58.9 against 50.6
    (bench/profile_step.py kernels, 2-core CPU). bfloat16 is level either way."""
    if len(a.shape) == 3:
        return ops.matmul(a, ops.transpose(ops.expand_dims(m, 0), (0, 2, 1)))
    rows = ops.reshape(a, (1, -1, ops.shape(a)[-1]))  # [1,N,K]
    out = ops.matmul(rows, ops.transpose(ops.expand_dims(m, 0), (0, 2, 1)))  # [1,N,J]
    return ops.reshape(out, tuple(ops.shape(a)[:-1]) + (ops.shape(m)[0],))


def rows_transposed_matmul(a, b):
    """a [..., K], b [..., J] with the same leading axes -> a^T @ b [K, J] over all their rows:
    the weight gradient of a projection, with no transpose of the result."""
    return ops.matmul(ops.transpose(ops.reshape(a, (-1, ops.shape(a)[-1]))),
                      ops.reshape(b, (-1, ops.shape(b)[-1])))


@ops.custom_gradient
def _matmul_batched_input_grad(x, kernel):
    """x [..., I] @ kernel [I,O] -> [..., O], with the gradients written out so that d_x is
    `matmul_transposed(d_y, kernel)`, not autodiff's slower 2-D transpose_b form:
    BERT-Small's 512->2048 feed-forward projection, forward and backward at batch 16 x seq 128,
    takes 62.9 ms this way against 75.9 for keras.layers.Dense; the 512->512 projections 16.2
    against 17.2 (bench/profile_step.py kernels, 2-core CPU, float32; bfloat16 is level). Same values
    as autodiff's to float rounding (tests/test_modeling.py)."""

    def grad(*args, upstream=None):
        upstream = args[0] if upstream is None else upstream  # TF/JAX pass it first
        return matmul_transposed(upstream, kernel), rows_transposed_matmul(x, upstream)

    return ops.matmul(x, kernel), grad


class Dense(keras.layers.Dense):
    """`keras.layers.Dense` (same weights, names and config) whose input gradient is one batched
    matmul (`_matmul_batched_input_grad`): faster on TensorFlow's CPU kernels in float32.

    inputs [..., I] in the compute dtype -> [..., units]; kernel [I, units], bias [units].
    """

    def call(self, inputs, training=None):
        kernel = ops.cast(self.kernel, self.compute_dtype)  # the autocast value, as a tensor
        x = _matmul_batched_input_grad(inputs, kernel)
        if self.bias is not None:
            x = ops.add(x, self.bias)
        if self.activation is not None:
            x = self.activation(x)
        return x


class LayerNorm(keras.layers.LayerNormalization):
    """`keras.layers.LayerNormalization` over the last axis (same weights gamma, beta and config)
    with its gradient written out (Ba et al. 2016, "Layer Normalization"):

        y = x̂ * gamma + beta,  x̂ = (x - mean) / sqrt(var + epsilon)   (per row, over the last axis)
        d_x = r * (g - mean(g) - x̂ * mean(g * x̂)),  g = d_y * gamma,  r = 1 / sqrt(var + epsilon)

    Fewer element-wise kernels than autodiff of Keras' formulation: 3.6 instead of 4.5 ms per
    [16,128,512] LayerNorm, forward and backward, on a 2-core CPU (bench/profile_step.py kernels).
    Values equal Keras' to float rounding (tests/test_modeling.py).
    Other axes or rms_scaling fall back to Keras' own call.
    """

    def call(self, inputs):
        if (self.axis not in (-1, [-1], len(inputs.shape) - 1, [len(inputs.shape) - 1])
                or self.rms_scaling or self.gamma is None or self.beta is None):
            return super().call(inputs)
        epsilon = self.epsilon

        @ops.custom_gradient
        def normalize(x, gamma, beta):
            mean = ops.mean(x, axis=-1, keepdims=True)
            centered = x - mean
            r = ops.rsqrt(ops.mean(ops.square(centered), axis=-1, keepdims=True) + epsilon)
            x_hat = centered * r

            def grad(*args, upstream=None):
                d_y = args[0] if upstream is None else upstream
                with keras.name_scope("layer_norm_grad"):  # named for profiles
                    width = ops.shape(x)[-1]
                    d_gamma = ops.sum(ops.reshape(d_y * x_hat, (-1, width)), axis=0)
                    d_beta = ops.sum(ops.reshape(d_y, (-1, width)), axis=0)
                    g = d_y * gamma
                    d_x = r * (g - ops.mean(g, axis=-1, keepdims=True)
                               - x_hat * ops.mean(g * x_hat, axis=-1, keepdims=True))
                    return d_x, d_gamma, d_beta

            return x_hat * gamma + beta, grad

        x = ops.cast(inputs, "float32")
        outputs = normalize(x, ops.cast(self.gamma, "float32"), ops.cast(self.beta, "float32"))
        return ops.cast(outputs, self.compute_dtype)


def layer_norm(epsilon: float, name: str):
    # dtype float32 whatever the global policy: LayerNorm statistics in bf16/fp16 lose too much.
    return LayerNorm(epsilon=epsilon, dtype="float32", name=name)


# Dropout masks come two to a random number: the 23 random mantissa bits of a float32 uniform
# give an 11-bit and a 12-bit uniform, and each half-mask compares one of them to the rate.
_MASK_BITS = 11


class Dropout(keras.layers.Layer):
    """Inverted dropout (Srivastava et al. 2014): in training, each element is zeroed with
    probability `rate` and the others scaled by 1 / (1 - rate); the identity otherwise.

    Two differences from `keras.layers.Dropout`, both for speed: random numbers were 70% of
    Keras dropout's kernel time in a float32 BERT-Small step on a CPU (36 of 51 ms,
    bench/results/pretrain_step_floor_sparse_2026-12-01.json), and a [16,8,128,128] attention dropout
    now takes 6.0 instead of 8.0 ms forward and backward in float32, 6.0 instead of 10.2 in
    bfloat16 (bench/profile_step.py kernels):
    - one float32 uniform u draws two elements' masks: keep the first if floor(2048 u) >= t,
      the second if frac(2048 u) >= t / 2048, t = round(2048 rate). So the drop probability
      is rate rounded to a multiple of 1/2048 (0.1 -> 0.10010; a rate below 1/4096 rounds to
      no dropout), and the scale is 2048 / (2048 - t), which keeps the expectation exact in
      float32 (in bfloat16 the scale itself rounds, as in Keras). Keras' bfloat16 dropout
      draws bfloat16 uniforms: 0.1 becomes 13/128 = 0.1016.
    - the mask is applied as a product, x * m, so the backward pass is one multiply.
    Masks come from a SeedGenerator like Keras' (its state is what the training loop seeds
    per micro-batch: bert_tf.training.step.seed_dropout).

    inputs: any float tensor [..., W]; returns the same shape and dtype.
    Raises ValueError for a rate outside [0, 1) or so close to 1 that it rounds to 1.
    """

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= rate < 1:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
        self.rate = rate
        self.seed = seed
        resolution = 1 << _MASK_BITS  # the drop probability is a multiple of 1/2048
        self._threshold = round(rate * resolution)
        if self._threshold >= resolution:
            raise ValueError(f"dropout rate {rate} rounds to 1 at 1/{resolution} resolution")
        self._keep_scale = resolution / (resolution - self._threshold)
        self.supports_masking = True
        if self._threshold:  # as Keras: no generator (no seed state to set) when it never draws
            self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True

    def call(self, inputs, training=False):
        if not training or self._threshold == 0:
            return inputs
        shape = ops.shape(inputs)
        width = shape[-1]  # an int, or a scalar tensor when traced with a dynamic width
        half = (width + 1) // 2
        u = keras.random.uniform(tuple(shape[:-1]) + (half,), dtype="float32",
                                 seed=self.seed_generator)
        scaled = u * float(1 << _MASK_BITS)
        high = ops.floor(scaled)  # 11-bit uniform integer
        low = scaled - high  # 12-bit uniform fraction in [0, 1)
        keep = ops.concatenate([high >= self._threshold,
                                low >= self._threshold / float(1 << _MASK_BITS)], axis=-1)
        if not isinstance(width, int) or width % 2:
            keep = keep[..., :width]
        mask = ops.where(keep, ops.cast(self._keep_scale, inputs.dtype),
                         ops.cast(0, inputs.dtype))
        return inputs * mask

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, seed=self.seed)
        return config


class BertEmbeddings(keras.layers.Layer):
    """word + position + token type embeddings, then LayerNorm and dropout.

    Call with input_ids [B,S] and segment_ids [B,S] (int32); returns [B,S,H].
    `word_embeddings` is public: the masked-LM head ties its decoder to it.
    """

    def __init__(self, vocab_size, hidden_size, max_position_embeddings, type_vocab_size,
                 initializer_range=0.02, dropout_rate=0.1, layer_norm_eps=1e-12, **kwargs):
        # float32 whatever the global policy: the lookup then gathers B*S float32 rows instead
        # of casting the whole [V,H] table to bfloat16 first (autocast), and the sum goes to a
        # float32 LayerNorm anyway. The dropout after it follows the global policy. +2% a
        # BERT-Small bfloat16 pre-training step (bench/README.md).
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.initializer_range = initializer_range
        self.dropout_rate = dropout_rate
        self.layer_norm_eps = layer_norm_eps
        self.layer_norm = layer_norm(layer_norm_eps, "LayerNorm")
        self.dropout = Dropout(dropout_rate)

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
        x = self.layer_norm(words + types + positions)  # float32
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
            return Dense(units, activation=activation, name=name,
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
        self.attention_dropout = Dropout(attention_probs_dropout_prob)
        self.hidden_dropout = Dropout(hidden_dropout_prob)

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

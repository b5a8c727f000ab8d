"""BertConfig and the Keras model: shapes, config errors, mixed precision, backend independence."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, random_batch, tiny_config

import keras  # noqa: E402

from bert_tf import BertConfig, ConfigError  # noqa: E402
from bert_tf.modeling import (BertClassifier, BertEncoder, BertPretrainer,  # noqa: E402
                              BertSpanExtractor, BertTokenClassifier)


# -- config ---------------------------------------------------------------------------------------

def test_config_round_trip_keeps_unknown_keys(tmp_path):
    path = tmp_path / "bert_config.json"
    path.write_text(json.dumps({"vocab_size": 100, "hidden_size": 64, "num_attention_heads": 4,
                                "directionality": "bidi", "hidden_act": "gelu_new"}))
    config = BertConfig.from_json_file(path)
    assert config.hidden_act == "gelu_tanh"  # Hugging Face's alias
    assert config.extra == {"directionality": "bidi"}
    config.to_json_file(tmp_path / "out.json")
    again = BertConfig.from_json_file(tmp_path / "out.json")
    assert again == config and again.extra == config.extra


@pytest.mark.parametrize("values,message", [
    ({"vocab_size": 100, "hidden_size": 30, "num_attention_heads": 4}, "not a multiple"),
    ({"vocab_size": 100, "hidden_act": "swish"}, "hidden_act 'swish'"),
    ({"vocab_size": 0}, "vocab_size must be at least 1"),
    ({"vocab_size": "30522"}, "vocab_size must be an integer"),
    ({"vocab_size": 100, "hidden_dropout_prob": 1.5}, "hidden_dropout_prob"),
    ({"hidden_size": 64}, "missing required key 'vocab_size'"),
])
def test_config_validation_messages(tmp_path, values, message):
    path = tmp_path / "bert_config.json"
    path.write_text(json.dumps(values))
    with pytest.raises(ConfigError, match=message) as info:
        BertConfig.from_json_file(path)
    assert str(path) in str(info.value)


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        BertConfig.from_json_file(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "vocab_size": 10,\n  "hidden_size": \n}')
    with pytest.raises(ConfigError, match=r"bad.json:4: not valid JSON"):
        BertConfig.from_json_file(bad)


# -- model ----------------------------------------------------------------------------------------

def test_output_shapes_and_names():
    config = tiny_config()
    batch = random_batch(config, batch=3, seq=12, predictions=4)
    pre = BertPretrainer(config)
    out = pre(batch, training=False)
    assert out["mlm_logits"].shape == (3, 4, 99) and out["nsp_logits"].shape == (3, 2)
    enc = pre.encoder(batch, training=False)
    assert enc["sequence_output"].shape == (3, 12, 32)
    assert enc["pooled_output"].shape == (3, 32)
    assert len(enc["encoder_outputs"]) == 2
    np.testing.assert_array_equal(enc["encoder_outputs"][-1], enc["sequence_output"])
    assert BertClassifier(config, 1)(batch)["logits"].shape == (3, 1)
    assert BertTokenClassifier(config, 9)(batch)["logits"].shape == (3, 12, 9)
    span = BertSpanExtractor(config)(batch)
    assert span["start_logits"].shape == span["end_logits"].shape == (3, 12)


def test_missing_feature_is_named():
    config = tiny_config()
    batch = random_batch(config)
    del batch["segment_ids"]
    with pytest.raises((KeyError, ValueError), match="segment_ids"):
        BertEncoder(config)(batch)


def test_padding_does_not_change_real_positions():
    """Appending padding must leave every real token's output unchanged (the mask works)."""
    config = tiny_config()
    encoder = BertEncoder(config)
    batch = random_batch(config, batch=2, seq=8, pad=False)
    short = encoder(batch, training=False)["sequence_output"]
    padded = {k: np.pad(batch[k], ((0, 0), (0, 5))) for k in
              ("input_ids", "input_mask", "segment_ids")}
    padded["input_ids"][:, 8:] = 7  # garbage under the mask
    long = encoder(padded, training=False)["sequence_output"]
    np.testing.assert_allclose(long[:, :8], short, atol=1e-5)


def test_encoder_reused_between_task_models():
    config = tiny_config()
    pre = BertPretrainer(config)
    clf = BertClassifier(config, 2, encoder=pre.encoder)
    assert clf.encoder is pre.encoder
    # the tied decoder is the word-embedding table, listed once
    ids = [id(w) for w in pre.weights]
    assert len(ids) == len(set(ids))
    with pytest.raises(ValueError, match="another config"):
        BertClassifier(tiny_config(hidden_size=64), 2, encoder=pre.encoder)


def test_dropout_only_in_training():
    config = tiny_config(hidden_dropout_prob=0.5)
    model = BertClassifier(config, 2)
    batch = random_batch(config)
    a = model(batch, training=False)["logits"]
    np.testing.assert_array_equal(a, model(batch, training=False)["logits"])
    assert not np.allclose(a, model(batch, training=True)["logits"])


def test_get_config_rebuilds_same_architecture():
    model = BertClassifier(tiny_config(), 3)
    again = BertClassifier.from_config(model.get_config())
    assert [w.shape for w in again.weights] == [w.shape for w in model.weights]


def _pretraining_loss_and_grads(model, batch, logits_fn):
    import tensorflow as tf

    rng = np.random.default_rng(3)
    ids = rng.integers(0, model.config.vocab_size, batch["masked_lm_positions"].shape)
    labels = rng.integers(0, 2, batch["input_ids"].shape[0])
    with tf.GradientTape() as tape:
        out = logits_fn(batch)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=ids, logits=out["mlm_logits"])) + tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels,
                                                           logits=out["nsp_logits"]))
    return out, loss, tape.gradient(loss, model.trainable_variables)


def test_pretraining_logits_and_gradients_match_the_full_model():
    """pretraining_logits (the last layer only at [CLS] and the masked positions, what training
    uses) gives the full model's logits and the same gradient for every weight, padding and a
    masked position at 0 included."""
    import tensorflow as tf

    config = tiny_config(num_hidden_layers=3)
    model = BertPretrainer(config)
    batch = random_batch(config, batch=4, seq=16, predictions=5)
    batch["masked_lm_positions"][1, 0] = 0  # Google pads the positions with 0
    full, full_loss, full_grads = _pretraining_loss_and_grads(
        model, batch, lambda b: model(b, training=False))
    sparse, sparse_loss, sparse_grads = _pretraining_loss_and_grads(
        model, batch, lambda b: model.pretraining_logits(b, training=False))
    for key in ("mlm_logits", "nsp_logits"):
        assert sparse[key].dtype == "float32" and sparse[key].shape == full[key].shape
        np.testing.assert_allclose(np.asarray(sparse[key]), np.asarray(full[key]), atol=1e-5)
    np.testing.assert_allclose(float(sparse_loss), float(full_loss), rtol=1e-6)
    for var, a, b in zip(model.trainable_variables, full_grads, sparse_grads):
        assert b is not None, var.path
        a, b = np.asarray(tf.convert_to_tensor(a)), np.asarray(tf.convert_to_tensor(b))
        assert np.abs(a - b).max() <= 1e-5 * max(1.0, np.abs(a).max()), var.path
    # No predictions at all: empty masked-LM logits, the same next-sentence logits.
    empty = dict(batch, masked_lm_positions=np.zeros((4, 0), "int32"))
    got = model.pretraining_logits(empty, training=False)
    assert got["mlm_logits"].shape == (4, 0, config.vocab_size)
    np.testing.assert_allclose(np.asarray(got["nsp_logits"]), np.asarray(full["nsp_logits"]),
                               atol=1e-5)
    # Extra features are ignored and a missing one is named, as when calling the model.
    with pytest.raises(KeyError, match="masked_lm_positions"):
        model.pretraining_logits({k: v for k, v in batch.items() if k != "masked_lm_positions"})


def test_tied_decoder_gradients_are_autodiffs():
    """The masked-LM decoder's hand-written gradients (no transpose of the table) equal what
    TensorFlow's autodiff gives for x @ table^T."""
    import tensorflow as tf

    from bert_tf.modeling.heads import _tied_decoder

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(3, 5, 16)).astype("float32"))
    table = tf.constant(rng.normal(size=(40, 16)).astype("float32"))
    weights = tf.constant(rng.normal(size=(3, 5, 40)).astype("float32"))
    got, want = [], []
    for fn, out in ((_tied_decoder, got), (lambda a, b: tf.matmul(a, b, transpose_b=True), want)):
        with tf.GradientTape() as tape:
            tape.watch([x, table])
            logits = fn(x, table)
            loss = tf.reduce_sum(tf.sin(logits) * weights)
        out += [logits] + tape.gradient(loss, [x, table])
    for a, b in zip(got, want):
        assert a.shape == b.shape
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5)


def _values_and_grads(fn, inputs, weights):
    """fn(*inputs) and the gradients of sum(sin(fn(...)) * weights) w.r.t. inputs."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(inputs)
        out = fn(*inputs)
        loss = tf.reduce_sum(tf.sin(tf.cast(out, tf.float32)) * weights)
    return [out] + tape.gradient(loss, inputs)


@pytest.mark.parametrize("shape", [(3, 5, 16), (7, 16)])
def test_dense_gradients_are_keras_dense_autodiffs(shape):
    """bert_tf's Dense (input gradient as a batched matmul) gives Keras Dense's outputs and
    TensorFlow autodiff's gradients for the input, kernel and bias, 3-D and 2-D inputs."""
    import tensorflow as tf

    from bert_tf.modeling.layers import Dense

    rng = np.random.default_rng(1)
    ours = Dense(24, activation="tanh")
    ref = keras.layers.Dense(24, activation="tanh")
    ours.build(shape)
    ref.build(shape)
    ref.set_weights(ours.get_weights())
    x = tf.constant(rng.normal(size=shape).astype("float32"))
    weights = tf.constant(rng.normal(size=shape[:-1] + (24,)).astype("float32"))
    got, want = [], []
    for layer, out in ((ours, got), (ref, want)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.sin(layer(x)) * weights)
        out += tape.gradient(loss, [x] + [v.value for v in layer.trainable_variables])
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours(x).numpy(), ref(x).numpy(), rtol=1e-6, atol=1e-6)


def test_layer_norm_matches_keras_values_and_gradients():
    """bert_tf's LayerNorm (gradient written out) against keras.layers.LayerNormalization with
    the same gamma and beta: outputs and the gradients of x, gamma and beta."""
    import tensorflow as tf

    from bert_tf.modeling.layers import LayerNorm

    rng = np.random.default_rng(2)
    shape = (4, 6, 32)
    ours = LayerNorm(epsilon=1e-12, dtype="float32")
    ref = keras.layers.LayerNormalization(epsilon=1e-12, dtype="float32")
    ours.build(shape)
    ref.build(shape)
    ours.set_weights([rng.normal(size=32).astype("float32") for _ in range(2)])
    ref.set_weights(ours.get_weights())
    x = tf.constant((3.0 + 2.0 * rng.normal(size=shape)).astype("float32"))
    weights = tf.constant(rng.normal(size=shape).astype("float32"))
    got, want = [], []
    for layer, out in ((ours, got), (ref, want)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(tf.sin(y) * weights)
        out += [y] + tape.gradient(loss, [x] + [v.value for v in layer.trainable_variables])
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)
    # the written-out gradient is the one taken (its ops are name-scoped layer_norm_grad)
    def grad_of(t):
        with tf.GradientTape() as tape:
            tape.watch(t)
            y = ours(t)
        return tape.gradient(y, t)

    graph = tf.function(grad_of).get_concrete_function(x).graph
    assert any("layer_norm_grad" in op.name for op in graph.get_operations())
    # any other axis falls back to Keras' own computation
    axis0 = LayerNorm(axis=0, epsilon=1e-3)
    ref0 = keras.layers.LayerNormalization(axis=0, epsilon=1e-3)
    np.testing.assert_allclose(axis0(x[:, 0]).numpy(), ref0(x[:, 0]).numpy(), atol=1e-6)


def test_gelu_values_and_gradient_match_keras():
    import tensorflow as tf

    from bert_tf.modeling.layers import gelu

    x = tf.constant(np.linspace(-8, 8, 401, dtype="float32"))
    weights = tf.constant(np.cos(np.arange(401)).astype("float32"))
    got = _values_and_grads(gelu, [x], weights)
    want = _values_and_grads(lambda t: keras.ops.gelu(t, approximate=False), [x], weights)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_dropout_statistics_scale_and_gradient():
    """Drop probability round(2048 rate) / 2048 on each half of the draw (binomial bounds),
    kept elements scaled so the expectation is exact, no correlation between the two masks
    one uniform draws, the gradient is the mask, and different masks on each call."""
    import tensorflow as tf

    from bert_tf.modeling.layers import Dropout

    layer = Dropout(0.1, seed=7)
    x = tf.ones((64, 256, 128))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
    grad = tape.gradient(y, x).numpy()
    y = y.numpy()
    np.testing.assert_array_equal(grad, y)  # d(x * m)/dx = m
    kept = y != 0
    p_drop = 205 / 2048
    n = kept.size // 2
    sd = np.sqrt(p_drop * (1 - p_drop) / n)
    for half in (kept[..., :64], kept[..., 64:]):  # first-mask and second-mask elements
        assert abs((1 - half.mean()) - p_drop) < 5 * sd
    np.testing.assert_allclose(np.unique(y[kept]), [2048 / (2048 - 205)], rtol=1e-6)
    assert abs(y.mean() - 1.0) < 5 * sd * 1.12
    a, b = kept[..., :64].ravel().astype(float), kept[..., 64:].ravel().astype(float)
    assert abs(np.corrcoef(a, b)[0, 1]) < 5 / np.sqrt(n)
    assert not np.array_equal(kept, layer(x, training=True).numpy() != 0)
    np.testing.assert_array_equal(layer(x, training=False).numpy(), x.numpy())
    # odd widths, bfloat16, rate 0
    odd = Dropout(0.3, dtype="mixed_bfloat16")(tf.ones((5, 7), tf.bfloat16), training=True)
    assert odd.shape == (5, 7) and odd.dtype == tf.bfloat16
    np.testing.assert_array_equal(Dropout(0.0)(x, training=True).numpy(), x.numpy())
    # traced with a dynamic width (fine-tuning buckets the sequence length)
    traced = tf.function(lambda t: layer(t, training=True),
                         input_signature=[tf.TensorSpec([None, None], tf.float32)])
    for width in (6, 7):
        out = traced(tf.ones((300, width))).numpy()
        assert out.shape == (300, width) and 0.8 < (out != 0).mean() < 0.97
    for rate in (-0.1, 1.0, 0.9999):
        with pytest.raises(ValueError, match="rate"):
            Dropout(rate)


def test_dropout_masks_follow_the_seed_generator_state():
    """The training loop makes masks a function of (seed, micro-batch) by setting every
    dropout layer's SeedGenerator state (step.seed_dropout): same state, same mask."""
    import tensorflow as tf

    from bert_tf.modeling import BertPretrainer
    from bert_tf.training.step import seed_dropout, seed_variables

    config = tiny_config()
    model = BertPretrainer(config)
    batch = random_batch(config)
    model(batch)
    seeds = seed_variables(model)
    # embeddings + (attention, hidden) per layer + the classifier-head-free pretrainer
    assert len(seeds) >= 1 + 2 * config.num_hidden_layers
    outs = []
    for micro in (3, 3, 4):
        seed_dropout(seeds, tf.constant(11, tf.int64), micro)
        outs.append(model(batch, training=True)["mlm_logits"].numpy())
    np.testing.assert_array_equal(outs[0], outs[1])
    assert not np.allclose(outs[0], outs[2])


def test_transformer_block_at_positions_is_the_full_block_gathered():
    from bert_tf.modeling.layers import AttentionMask, TransformerBlock, gather_positions

    block = TransformerBlock(32, 4, 64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 10, 32)).astype("float32")
    mask = AttentionMask()(np.array([[1] * 10, [1] * 6 + [0] * 4], "int32"))
    positions = np.array([[0, 9, 3], [0, 2, 5]], "int32")
    full = block(x, mask)
    rows = block(x, mask, positions=positions)
    assert rows.shape == (2, 3, 32)
    symbolic = block(keras.Input((10, 32)), keras.Input((1, 1, 10)),
                     positions=keras.Input((3,), dtype="int32"))
    assert tuple(symbolic.shape) == (None, 3, 32)
    np.testing.assert_allclose(np.asarray(rows), np.asarray(gather_positions(full, positions)),
                               atol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_close_to_float32(policy):
    config = tiny_config()
    batch = random_batch(config)
    reference = BertPretrainer(config)
    want = reference(batch, training=False)
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = BertPretrainer(config)
        model.set_weights(reference.get_weights())
        got = model(batch, training=False)
        norms = [l for l in model.weights if "LayerNorm" in l.path or "layer_norm" in l.path.lower()]
        assert all(w.dtype == "float32" for w in model.weights)  # master weights stay float32
        assert norms and all(l.dtype == "float32" for l in norms)
        ln = model.encoder.transformer_layers[0].output_layer_norm
        assert ln.compute_dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")
    for key in ("mlm_logits", "nsp_logits"):
        assert got[key].dtype == "float32"
        tol = 0.05 if policy == "mixed_bfloat16" else 0.01
        assert np.abs(np.asarray(got[key]) - np.asarray(want[key])).max() < tol
    assert np.isfinite(got["mlm_logits"]).all()


def test_same_outputs_under_torch_backend(tmp_path):
    """modeling/ is pure Keras: the PyTorch backend gives the same numbers from the same weights."""
    pytest.importorskip("torch")
    config = tiny_config()
    model = BertPretrainer(config)
    batch = random_batch(config)
    want = model(batch, training=False)
    np.savez(tmp_path / "weights.npz", *model.get_weights())
    np.savez(tmp_path / "batch.npz", **batch)
    config.to_json_file(tmp_path / "config.json")
    script = f"""
import numpy as np, keras
assert keras.backend.backend() == "torch", keras.backend.backend()
from bert_tf import BertConfig
from bert_tf.modeling import BertPretrainer
config = BertConfig.from_json_file({str(tmp_path / 'config.json')!r})
model = BertPretrainer(config)
w = np.load({str(tmp_path / 'weights.npz')!r})
model.set_weights([w[f"arr_{{i}}"] for i in range(len(w.files))])
batch = dict(np.load({str(tmp_path / 'batch.npz')!r}))
out = model(batch, training=False)
np.savez({str(tmp_path / 'out.npz')!r}, **{{k: keras.ops.convert_to_numpy(out[k])
         for k in ("mlm_logits", "nsp_logits", "sequence_output")}})
"""
    env = dict(os.environ, KERAS_BACKEND="torch", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(tmp_path / "out.npz")
    for key in ("mlm_logits", "nsp_logits"):
        assert np.abs(got[key] - np.asarray(want[key])).max() <= 1e-5
    mask = batch["input_mask"].astype(bool)
    assert np.abs(got["sequence_output"][mask] - np.asarray(want["sequence_output"])[mask]).max() <= 1e-5


def test_modeling_has_no_tensorflow_calls():
    """The backend-independence boundary of DESIGN.md, checked on the source."""
    import ast

    for path in (REPO / "bert_tf" / "modeling").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert not any(a.name.split(".")[0] == "tensorflow" for a in node.names), path
            elif isinstance(node, ast.ImportFrom):
                assert (node.module or "").split(".")[0] != "tensorflow", path
            elif isinstance(node, ast.Name):
                assert node.id != "tf", f"{path}:{node.lineno}"

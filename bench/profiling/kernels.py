"""The pieces of bert_tf's pre-training step that are written out by hand, each against the stock
form it replaces, forward and backward, on BERT-Small's pre-training shapes (batch 16, seq 128,
H 512, I 2048, 8 heads, 20 predictions, vocab 30522).

    case                 stock form                                   bert_tf's form
    dense_512_to_512,    autodiff of keras.layers.Dense (d_x is a     modeling.layers.Dense (d_x is a
    dense_512_to_2048,   MatMul with transpose_b)                     batched matmul)
    dense_2048_to_512
    decoder_forward      x @ table^T as a 2-D MatMul(transpose_b)     heads._tied_decoder's batched form
    dropout_attention_   keras.layers.Dropout                         modeling.layers.Dropout
    probs
    layer_norm           keras.layers.LayerNormalization              modeling.layers.LayerNorm
    gelu                 keras.ops.gelu(approximate=False)            modeling.layers.gelu
    cross_entropy        tf.nn.sparse_softmax_cross_entropy_with_     training.tasks.sparse_cross_entropy
                         logits
    weight_decay         w.assign_sub(w * lr wd) on the [30522,512]   w.assign(w * (1 - lr wd)), as
                         word table                                   optimization.AdamWeightDecay

Each case's forms are timed alternately (A, B, A, B, ...), `--calls` calls of one tf.function per
timing; the figure is the median over `--repeats` timings, in ms per call. Dense is timed on the
three projections of a layer (512->512, 512->2048, 2048->512). (The forms of every case are built
before timing, whatever --only says: a few seconds.)

    PYTHONPATH=. TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python bench/profile_step.py kernels --dtype fp32 bf16 \\
        --json bench/results/kernel_forms.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from keras import ops

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from bert_tf.modeling import layers  # noqa: E402
from bert_tf.modeling.heads import _tied_decoder  # noqa: E402
from bert_tf.training.tasks import sparse_cross_entropy  # noqa: E402

B, S, H, I, N, P, V = 16, 128, 512, 2048, 8, 20, 30522
TF_DTYPE = {"fp32": tf.float32, "bf16": tf.bfloat16}
POLICY = {"fp32": "float32", "bf16": "mixed_bfloat16"}


def _normal(shape, dtype, scale=1.0):
    return tf.cast(tf.random.normal(shape, stddev=scale, seed=1), dtype)


def _fwd_bwd(fn, inputs, upstream, variables=()):
    """A no-argument function: fn(*inputs) and its gradients for inputs + variables."""

    def run():
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            out = fn(*inputs)
        return [out] + tape.gradient(out, list(inputs) + list(variables),
                                     output_gradients=upstream)

    return run


def cases(dtype: str) -> dict:
    """{case: {form: no-argument function}} for one dtype."""
    dt = TF_DTYPE[dtype]
    keras.mixed_precision.set_global_policy(POLICY[dtype])
    out = {}
    for fan_in, units in ((H, H), (H, I), (I, H)):
        x, dy = _normal((B, S, fan_in), dt), _normal((B, S, units), dt)
        stock = keras.layers.Dense(units)
        ours = layers.Dense(units)
        stock.build((None, None, fan_in))
        ours.build((None, None, fan_in))
        out[f"dense_{fan_in}_to_{units}"] = {
            "keras Dense": _fwd_bwd(stock, [x], dy, stock.trainable_variables),
            "bert_tf Dense": _fwd_bwd(ours, [x], dy, ours.trainable_variables)}
    rows, table = _normal((B, P, H), dt), _normal((V, H), dt, 0.02)
    out["decoder_forward"] = {
        "MatMul transpose_b": lambda: tf.matmul(tf.reshape(rows, (-1, H)), table,
                                                transpose_b=True),
        "bert_tf _tied_decoder": lambda: _tied_decoder(rows, table)}
    probs, d_probs = _normal((B, N, S, S), dt), _normal((B, N, S, S), dt)
    stock_drop, our_drop = keras.layers.Dropout(0.1, seed=1), layers.Dropout(0.1, seed=1)
    out["dropout_attention_probs"] = {
        "keras Dropout": _fwd_bwd(lambda t: stock_drop(t, training=True), [probs], d_probs),
        "bert_tf Dropout": _fwd_bwd(lambda t: our_drop(t, training=True), [probs], d_probs)}
    h, dh = _normal((B, S, H), tf.float32), _normal((B, S, H), tf.float32)
    stock_ln = keras.layers.LayerNormalization(epsilon=1e-12, dtype="float32")
    our_ln = layers.LayerNorm(epsilon=1e-12, dtype="float32")
    stock_ln.build((None, None, H))
    our_ln.build((None, None, H))
    out["layer_norm"] = {
        "keras LayerNormalization": _fwd_bwd(stock_ln, [h], dh, stock_ln.trainable_variables),
        "bert_tf LayerNorm": _fwd_bwd(our_ln, [h], dh, our_ln.trainable_variables)}
    a, da = _normal((B, S, I), dt), _normal((B, S, I), dt)
    out["gelu"] = {
        "keras.ops.gelu": _fwd_bwd(lambda t: ops.gelu(t, approximate=False), [a], da),
        "bert_tf gelu": _fwd_bwd(layers.gelu, [a], da)}
    logits = _normal((B * P, V), tf.float32, 3.0)
    labels = tf.random.uniform((B * P,), 0, V, tf.int32, seed=2)
    d_ce = tf.ones((B * P,))
    out["cross_entropy"] = {
        "tf.nn sparse_softmax_cross_entropy_with_logits": _fwd_bwd(
            lambda t: tf.nn.sparse_softmax_cross_entropy_with_logits(labels, t), [logits], d_ce),
        "bert_tf sparse_cross_entropy": _fwd_bwd(
            lambda t: sparse_cross_entropy(labels, t), [logits], d_ce)}
    table_var = tf.Variable(tf.random.normal((V, H), stddev=0.02, seed=3))
    factor = tf.constant(1e-7)
    out["weight_decay"] = {
        "w.assign_sub(w * lr wd)": lambda: table_var.assign_sub(table_var * factor).read_value()[0, 0],
        "bert_tf: w.assign(w * (1 - lr wd))":
            lambda: table_var.assign(table_var * (1.0 - factor)).read_value()[0, 0]}
    return out


def time_case(forms: dict, calls: int, repeats: int) -> dict:
    fns = {name: tf.function(fn) for name, fn in forms.items()}
    for fn in fns.values():  # trace, and warm the allocator
        for _ in range(2):
            tf.nest.map_structure(lambda t: t.numpy(), fn())
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                result = fn()
            tf.nest.map_structure(lambda t: t.numpy(), result)
            times[name].append(1000 * (time.perf_counter() - t0) / calls)
    return {name: {"median_ms": statistics.median(v), "ms": v} for name, v in times.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dtype", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"])
    p.add_argument("--calls", type=int, default=10)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--only", default="", help="comma-separated case names (default: all)")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    report = {"args": vars(a), "tensorflow": tf.__version__, "keras": keras.__version__,
              "results": {}}
    only = set(filter(None, a.only.split(",")))
    for dtype in a.dtype:
        built = cases(dtype)
        unknown = only - set(built)
        if unknown:
            raise SystemExit(f"--only: no case {sorted(unknown)}; the cases are {list(built)}")
        for case, forms in built.items():
            if only and case not in only:
                continue
            r = time_case(forms, a.calls, a.repeats)
            report["results"][f"{dtype} {case}"] = r
            (stock, s), (ours, o) = r.items()
            print(f"{dtype} {case:26s} {stock}: {s['median_ms']:7.2f} ms   {ours}: "
                  f"{o['median_ms']:7.2f} ms   {s['median_ms'] / o['median_ms']:.2f}x", flush=True)
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()

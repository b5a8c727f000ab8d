"""A/B timings of pieces of bert_tf's pre-training step, for the changes the profile of
bench/profile_step.py trace points at. Nothing in bert_tf is edited: the alternatives are
built here from the same weights, in one process, and timed alternately (A, B, A, B, ...) so a
busy spell on the shared machine hits every variant; medians of the repetitions.

1. decoder: the masked-LM head's tied [H,V] projection, forward + backward (the gradient reaching
   the float32 word-embedding table), on [B,P,H] = [16,20,512] and V = 30522:
     tied_decoder ops.matmul(x, ops.transpose(table)) with its gradients written out, the
                  table's as one matmul (bert_tf.modeling.heads._tied_decoder, what
                  MaskedLMHead uses)
     autodiff     the same forward, TF's own gradients (a transpose of the [H,V] table
                  gradient; MaskedLMHead before 2026-12-01)
     einsum       ops.einsum("bph,vh->bpv", x, table)
     tensordot    ops.tensordot(x, table, axes=[[2], [1]])
     keras_2d     ops.matmul(ops.reshape(x, [B*P,H]), ops.transpose(table)), reshaped back
     matmul_2d_tb tf.matmul(reshape(x, [B*P,H]), table, transpose_b=True)  (Model Garden's)
2. ffn: the feed-forward half of a transformer block as Keras Dense layers build it,
   Dense(I, gelu) then Dense(H), forward + backward, on the encoder's [B,S,H] = [16,128,512]
   activations (3-D, as bert_tf's TransformerBlock calls them: tf.tensordot, i.e. reshape ->
   MatMul -> reshape, then BiasAdd and GELU) against the same layers on [B*S,H] (2-D: MatMul
   directly followed by BiasAdd and GELU, which Grappler's remapper can fuse into one oneDNN
   kernel).
3. step: the whole optimizer step of BertPretrainer + tasks.pretraining_loss, split in two
   tf.functions as bert_tf.training.loop.train does (grad_step returning every gradient, then
   update: global norm, clip, AdamW) against one tf.function doing both; each with and
   without jit_compile (dropout seeding and the fp16/Horovod paths of the loop left out: they
   are no-ops here).
5. matmul: GFLOP/s of tf.matmul on the step's shapes in the compute dtype (what oneDNN gives
   the feed-forward layer forward, its input gradient (transpose_b) and weight gradient
   (transpose_a), the tied decoder, against a 2048^3 square).
4. update: the loop's update function (global norm, clip, bert_tf AdamW or LAMB over
   BERT-Small's variables, step counter) as bert_tf.training.loop.train builds it, with
   jit_compile False (the loop's choice on a CPU) and True (its choice under --use_xla on a
   GPU), XLA with the CPU's default runtime and with the thunk runtime off (XLA_FLAGS is per
   process: run the script twice, see --help).

    PYTHONPATH=. TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python bench/profile_step.py pieces --dtype bf16
    XLA_FLAGS=--xla_cpu_use_thunk_runtime=false PYTHONPATH=. TF_CPP_MIN_LOG_LEVEL=2 \\
        .venv/bin/python bench/profile_step.py pieces --dtype bf16 --only update,step
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # bench/
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "peers"))
sys.path.insert(0, HERE)
FEATURES = None  # the batch npz of the step piece


def alternate(variants: dict, repeats: int, inner: int) -> dict:
    """{name: fn} -> {name: median ms per call} over `repeats` alternating blocks of `inner`."""
    for fn in variants.values():  # trace / compile, and a first call
        fn()
        fn()
    times = {k: [] for k in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            times[name].append(1000 * (time.perf_counter() - t0) / inner)
    return {k: {"median_ms": statistics.median(v), "all_ms": v} for k, v in times.items()}


def decoder_variants(dtype: str):
    import keras
    import tensorflow as tf
    from keras import ops

    from bert_tf.modeling.heads import _tied_decoder

    compute = "bfloat16" if dtype == "bf16" else "float32"
    b, p, h, v = 16, 20, 512, 30522
    table = tf.Variable(tf.random.normal([v, h], stddev=0.02))
    x0 = tf.cast(tf.random.normal([b, p, h]), compute)
    dy = tf.random.normal([b, p, v])

    def make(project):
        @tf.function
        def fwd_bwd():
            with tf.GradientTape() as tape:
                tape.watch(x0)
                t = ops.cast(table, compute)  # as MaskedLMHead.call casts the table
                logits = ops.cast(project(x0, t), "float32")
                loss = tf.reduce_sum(logits * dy)
            gx, gt = tape.gradient(loss, [x0, table])
            return tf.reduce_sum(tf.cast(gx, tf.float32)) + tf.reduce_sum(gt)
        return lambda: float(fwd_bwd())

    del keras
    return {
        "tied_decoder": make(_tied_decoder),
        "autodiff": make(lambda x, t: ops.matmul(x, ops.transpose(t))),
        "einsum": make(lambda x, t: ops.einsum("bph,vh->bpv", x, t)),
        "tensordot": make(lambda x, t: ops.tensordot(x, t, axes=[[2], [1]])),
        "keras_2d": make(lambda x, t: ops.reshape(
            ops.matmul(ops.reshape(x, (b * p, h)), ops.transpose(t)), (b, p, v))),
        "matmul_2d_tb": make(lambda x, t: tf.reshape(
            tf.matmul(tf.reshape(x, [b * p, h]), t, transpose_b=True), [b, p, v])),
    }


def ffn_variants(dtype: str):
    import keras
    import tensorflow as tf

    from bert_tf.modeling.layers import activation_fn
    from bert_tf.training.precision import set_dtype

    set_dtype(dtype)
    b, s, h, i = 16, 128, 512, 2048
    inter = keras.layers.Dense(i, activation=activation_fn("gelu"))
    out = keras.layers.Dense(h)
    inter.build((None, h))
    out.build((None, i))
    x3 = tf.random.normal([b, s, h])
    tvars = inter.trainable_variables + out.trainable_variables

    def make(two_d):
        @tf.function
        def fwd_bwd():
            with tf.GradientTape() as tape:
                x = tf.reshape(x3, [b * s, h]) if two_d else x3
                y = tf.cast(out(inter(x)), tf.float32)
                loss = tf.reduce_sum(y * y)
            grads = tape.gradient(loss, tvars)
            return tf.add_n([tf.reduce_sum(g) for g in grads])
        return lambda: float(fwd_bwd())

    return {"3-D [B,S,H] (current)": make(False), "2-D [B*S,H]": make(True)}


def matmul_variants(dtype: str):
    import tensorflow as tf

    compute = tf.bfloat16 if dtype == "bf16" else tf.float32
    shapes = {  # name: (a shape, b shape, transpose_a, transpose_b)
        "ffn fwd [2048,512]x[512,2048]": ((2048, 512), (512, 2048), False, False),
        "ffn dX [2048,2048]x[512,2048]^T": ((2048, 2048), (512, 2048), False, True),
        "ffn dW [2048,512]^T x[2048,2048]": ((2048, 512), (2048, 2048), True, False),
        "decoder [320,512]x[30522,512]^T": ((320, 512), (30522, 512), False, True),
        "square 2048^3": ((2048, 2048), (2048, 2048), False, False),
    }
    variants, flops = {}, {}
    for name, (sa, sb, ta, tb) in shapes.items():
        x = tf.cast(tf.random.normal(sa), compute)
        y = tf.cast(tf.random.normal(sb), compute)
        m, k = (sa[1], sa[0]) if ta else sa
        n = sb[0] if tb else sb[1]
        flops[name] = 2.0 * m * k * n

        def make(x=x, y=y, ta=ta, tb=tb):
            f = tf.function(lambda: tf.reduce_sum(tf.cast(
                tf.matmul(x, y, transpose_a=ta, transpose_b=tb), tf.float32)))
            return lambda: float(f())

        variants[name] = make()
    return variants, flops


def step_variants(dtype: str):
    import tensorflow as tf

    import bert_tf_step  # bench/peers
    from bert_tf.training.optimization import create_optimizer
    from bert_tf.training.precision import set_dtype

    set_dtype(dtype)
    a = argparse.Namespace(bert_config_file=os.path.join(ROOT, "configs",
                                                         "bert_small_config.json"),
                           features=FEATURES, batch_size=16, max_seq_length=128, warmup=0,
                           steps=1)
    model, loss_fn, source, _, _ = bert_tf_step.pretrain_source(a)
    _, batch = next(source(0))
    tvars = list(model.trainable_variables)

    def make(jit, fused):
        optimizer = create_optimizer("adamw", 1e-4, 10 ** 6, 1000)
        optimizer.build(tvars)
        step = tf.Variable(0, dtype=tf.int64)

        def grads_of(batch):
            with tf.GradientTape() as tape:
                loss, _ = loss_fn(model, batch)
            return loss, [tf.convert_to_tensor(g) for g in tape.gradient(loss, tvars)]

        def apply(grads):
            norm = tf.linalg.global_norm(grads)

            def do_apply():
                clipped, _ = tf.clip_by_global_norm(grads, 1.0, use_norm=norm)
                optimizer.apply(clipped, tvars)
                return tf.constant(True)

            applied = tf.cond(tf.math.is_finite(norm), do_apply, lambda: tf.constant(False))
            step.assign_add(1)
            return norm, applied

        if fused:
            @tf.function(jit_compile=jit)
            def one(batch):
                loss, grads = grads_of(batch)
                apply(grads)
                return loss

            return lambda: float(one(batch))
        grad_step = tf.function(grads_of, jit_compile=jit)
        update = tf.function(apply, jit_compile=jit)

        def two():
            loss, grads = grad_step(batch)
            update(grads)
            return float(loss)

        return two

    return {"split, no XLA (loop)": make(False, False), "fused, no XLA": make(False, True),
            "split, XLA (loop)": make(True, False), "fused, XLA": make(True, True)}


def update_variants(dtype: str):
    """The loop's update() (bert_tf/training/loop.py) on BERT-Small's trainable variables."""
    import tensorflow as tf

    from bert_tf.config import BertConfig
    from bert_tf.modeling import BertPretrainer
    from bert_tf.training.optimization import create_optimizer
    from bert_tf.training.precision import set_dtype

    set_dtype(dtype)
    model = BertPretrainer(BertConfig.from_json_file(
        os.path.join(ROOT, "configs", "bert_small_config.json")))
    tvars = list(model.trainable_variables)
    grads = [tf.random.normal(v.shape, stddev=1e-3) for v in tvars]

    def make(jit, name):
        optimizer = create_optimizer(name, 1e-4, 10 ** 6, 1000)
        optimizer.build(tvars)
        step = tf.Variable(0, dtype=tf.int64)

        @tf.function(jit_compile=jit)
        def update(grads):
            norm = tf.linalg.global_norm(grads)

            def do_apply():
                clipped, _ = tf.clip_by_global_norm(grads, 1.0, use_norm=norm)
                optimizer.apply(clipped, tvars)
                return tf.constant(True)

            applied = tf.cond(tf.math.is_finite(norm), do_apply, lambda: tf.constant(False))
            step.assign_add(1)
            return norm, applied

        return lambda: float(update(grads)[0])

    return {f"{name} jit_compile={jit}": make(jit, name)
            for name in ("adamw", "lamb") for jit in (False, True)}, \
        sum(int(tf.size(v)) for v in tvars)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--only", default="decoder,ffn,update",
                   help="comma list of decoder, ffn, step, matmul, update")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--inner", type=int, default=5)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    out = {"dtype": a.dtype, "xla_flags": os.environ.get("XLA_FLAGS", ""),
           "load_average_start": os.getloadavg()}
    pieces = a.only.split(",")
    if "decoder" in pieces:
        out["decoder"] = alternate(decoder_variants(a.dtype), a.repeats, a.inner)
    if "ffn" in pieces:
        out["ffn"] = alternate(ffn_variants(a.dtype), a.repeats, a.inner)
    if "step" in pieces:
        global FEATURES
        import tempfile

        from bench_pretrain_step import prepare_batch

        with tempfile.TemporaryDirectory() as tmp:
            FEATURES = os.path.join(tmp, "batch.npz")
            prepare_batch(FEATURES, 16, 128, 20)
            out["step"] = alternate(step_variants(a.dtype), a.repeats, max(1, a.inner // 5))
    if "matmul" in pieces:
        variants, flops = matmul_variants(a.dtype)
        out["matmul"] = alternate(variants, a.repeats, a.inner)
        for name, r in out["matmul"].items():
            r["gflops"] = flops[name] / r["median_ms"] / 1e6
    if "update" in pieces:
        variants, n = update_variants(a.dtype)
        out["update"] = alternate(variants, a.repeats, a.inner)
        out["update_parameters"] = n
    out["load_average_end"] = os.getloadavg()
    print(f"dtype {a.dtype}, XLA_FLAGS={out['xla_flags']!r}, load average "
          f"{out['load_average_start'][0]:.1f} -> {out['load_average_end'][0]:.1f}")
    for piece in ("decoder", "ffn", "step", "matmul", "update"):
        for name, r in out.get(piece, {}).items():
            rate = f" {r['gflops']:6.0f} GFLOP/s" if "gflops" in r else ""
            print(f"  {piece:<8} {name:<34} {r['median_ms']:8.1f} ms{rate}  "
                  f"({', '.join(f'{x:.0f}' for x in r['all_ms'])})")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()

"""Where the time of one pre-training step goes: TF profiler traces of the bert_tf step (the real
`bert_tf.training.loop.train`) and of Model Garden's (bench/peers/model_garden_step.py), each
summed by function, by part of the model and by kind of op.

Same model, batch and optimizer as bench/bench_pretrain_step.py (BERT-Small, batch 16, seq 128,
20 predictions, AdamW). Traces `--steps` steps after `--warmup` untraced ones (tracing and XLA
compilation happen there). The trace is TF's host tracer: every kernel of the TF executor is an
event "op_name:OpType" on the thread that ran it; each is assigned to the tf.function call
(grad_step / reduce / update for bert_tf; train_step for Model Garden) whose window holds its
start, to forward or backward ("gradient_tape/" names), and to a part of the model by its name.
With two inter-op threads kernels may overlap, so op times add up to more than the wall time;
the shares are what to read. Under XLA a compiled cluster is one event (no per-op split).

    # bert_tf (project venv)
    PYTHONPATH=. TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python bench/profile_step.py trace --dtype fp32
    # Model Garden (peers venv)
    TF_USE_LEGACY_KERAS=1 PYTHONPATH=. TF_CPP_MIN_LOG_LEVEL=2 .venv-peers/bin/python \\
        bench/profile_step.py trace --framework model_garden --dtype fp32
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # bench/
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "peers"))
sys.path.insert(0, HERE)

import worker  # noqa: E402  (bench/peers/worker.py)

# Kind of op by OpType (oneDNN's _Mkl* names folded into the plain ones).
KINDS = [
    ("matmul", r"MatMul|Einsum|BatchMatMul|Conv"),
    ("transpose", r"Transpose"),
    ("random (dropout)", r"Random|Stateless|Philox"),
    ("softmax / cross-entropy", r"Softmax|CrossEntropy|LogSoftmax"),
    ("gather / scatter / embedding", r"Gather|Scatter|Unsorted|SegmentSum|ResourceGather"
                                     r"|TensorScatter|Dynamic"),
    ("optimizer kernels", r"ResourceApply|AssignSub|AssignAdd|Assign|ResourceApplyAdam"),
    ("reductions", r"Sum|Mean|Max|Min|ArgMax|Prod|Norm|L2Loss"),
    ("cast", r"^Cast$"),
    ("element-wise", r"Mul|Add|Sub|Div|Rsqrt|Sqrt|Square|Erf|Tanh|Exp|Neg|Select|Where"
                     r"|Maximum|Minimum|Pow|Reciprocal|Greater|Less|Equal|Relu|Gelu|BiasAdd"
                     r"|SquaredDifference|Log|Fused|Cwise|Abs|Sign|Floor|IsFinite|All|Any"),
    ("copies / reshapes", r"Reshape|Identity|Concat|Slice|Pack|Unpack|Split|Tile|Pad|Fill"
                          r"|ZerosLike|OnesLike|Broadcast|Squeeze|ExpandDims|Shape|Const"),
]


def kind_of(op_type: str) -> str:
    t = op_type.replace("_Mkl", "").replace("_FusedMatMul", "MatMul")
    for name, pattern in KINDS:
        if re.search(pattern, t):
            return name
    return "other"


def part_of(op_name: str) -> str:
    """Part of the model from a TF op name (bert_tf's layer names, then Model Garden's)."""
    n = op_name
    if re.search(r"predictions|masked_lm|cls/predictions|lm_output", n):
        return "masked-LM head"
    if re.search(r"seq_relationship|next_sentence", n):
        return "next-sentence head"
    if re.search(r"pooler|pooled", n):
        return "pooler"
    if re.search(r"embeddings|word_embedding|position_embedding|type_embedding", n):
        return "embeddings"
    m = re.search(r"(?:layer_|transformer/layer_)(\d+)", n)
    if m:
        if re.search(r"intermediate|output_dense|/output_?\d*/|output_LayerNorm|intermediate"
                     r"|_intermediate|_output_dense|output_layer_norm", n):
            return "encoder: feed-forward + its LayerNorm"
        return "encoder: attention + its LayerNorm"
    if re.search(r"adam|lamb|optimizer|clip|global_norm|update", n, re.I):
        return "optimizer / clip"
    return "loss, casts, other"


# A kernel event: "op/name:OpType" (not "ExecutorState::Process" nor "EagerExecute: ...").
LEAF = re.compile(r"[^:\s][^:]*:[A-Za-z_][A-Za-z0-9_]*")


def load_xspace(logdir: str):
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    path = sorted(glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb")))[-1]
    xs = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        xs.ParseFromString(f.read())
    return xs


# Which piece of a layer a kernel belongs to, by its op name (forward and gradient alike).
COMPONENTS = (("dropout", r"dropout"), ("LayerNorm", r"layer_?norm"), ("GELU", r"gelu"),
              ("attention softmax", r"softmax(?!_?cross)"),
              ("cross-entropy", r"SoftmaxCrossEntropy|cross_entropy"),
              ("optimizer / clip", r"adam|lamb|clip|global_norm|ResourceApply"))


def component_of(op_name: str, op_type: str) -> str:
    for label, pattern in COMPONENTS:
        if re.search(pattern, op_name, re.I):
            return label
    return "matmuls" if kind_of(op_type) == "matmul" else "other"


def analyse(xs, steps: int, functions: tuple[str, ...]) -> dict:
    """Function windows on the python thread, and the leaf kernels inside each."""
    plane = next(p for p in xs.planes if p.name == "/host:CPU")
    md = plane.event_metadata
    windows = []  # (start_ps, end_ps, function)
    leaves = []  # (start_ps, duration_ps, op_name, op_type)
    for line in plane.lines:
        base = line.timestamp_ns * 1000
        for ev in line.events:
            name = md[ev.metadata_id].name
            start = base + ev.offset_ps
            if name.startswith("EagerLocalExecute: __inference_"):
                fn = name.split("__inference_", 1)[1].rsplit("_", 1)[0]
                if fn in functions:
                    windows.append((start, start + ev.duration_ps, fn))
            elif LEAF.fullmatch(name):
                op_name, op_type = name.rsplit(":", 1)
                leaves.append((start, ev.duration_ps, op_name, op_type))
    windows.sort()
    wall = collections.Counter()
    calls = collections.Counter()
    for s, e, fn in windows:
        wall[fn] += (e - s) / 1e9  # ms
        calls[fn] += 1
    by_part = collections.Counter()
    by_kind = collections.Counter()
    by_fn = collections.Counter()
    top = collections.Counter()
    other = collections.Counter()  # kernels of no named piece of the layer
    by_type = collections.Counter()
    by_component = collections.Counter()
    import bisect
    starts = [w[0] for w in windows]
    for start, dur, op_name, op_type in leaves:
        i = bisect.bisect_right(starts, start) - 1
        if i < 0 or start > windows[i][1]:
            continue
        fn = windows[i][2]
        ms = dur / 1e9
        direction = "backward" if "gradient_tape/" in op_name else "forward"
        part = part_of(op_name) if fn in ("grad_step", "train_step") else {
            "update": "optimizer + clip (update function)"}.get(fn, fn)
        if fn == "train_step" and re.search(r"adam|clip|global_norm|Assign|ResourceApply",
                                            op_name + op_type, re.I) \
                and "gradient_tape/" not in op_name:
            part, direction = "optimizer / clip", "update"
        if fn != "grad_step" and fn != "train_step":
            direction = "update"
        by_fn[fn] += ms
        by_part[(direction, part)] += ms
        by_kind[kind_of(op_type)] += ms
        top[(op_name, op_type)] += ms
        by_type[(direction, part, op_type)] += ms
        by_component[component_of(op_name, op_type)] += ms
        if component_of(op_name, op_type) == "other":
            other[(op_name, op_type)] += ms
    per_step = {k: v / steps for k, v in wall.items()}
    return {"wall_ms_per_step": per_step, "calls": dict(calls),
            "kernel_ms_per_step": {k: v / steps for k, v in by_fn.items()},
            "by_part_ms_per_step": {f"{d} / {p}": v / steps
                                    for (d, p), v in by_part.most_common()},
            "by_kind_ms_per_step": {k: v / steps for k, v in by_kind.most_common()},
            "by_component_ms_per_step": {k: v / steps for k, v in by_component.most_common()},
            "top_kernels_ms_per_step": [(f"{n}:{t}", v / steps)
                                        for (n, t), v in top.most_common(25)],
            "top_non_matmul_kernels_ms_per_step": [
                (f"{n}:{t}", v / steps) for (n, t), v in top.most_common()
                if kind_of(t) != "matmul"][:40],
            "top_other_kernels_ms_per_step": [(f"{n}:{t}", v / steps)
                                              for (n, t), v in other.most_common(40)],
            "top_op_types_ms_per_step": [(f"{d} / {p} / {t}", v / steps)
                                         for (d, p, t), v in by_type.most_common(40)]}


def profile_bert_tf(a, logdir: str) -> tuple[dict, float]:
    import keras
    import tensorflow as tf

    import bert_tf_step
    from bert_tf.training.distributed import Distributed
    from bert_tf.training.loop import TrainSettings, train
    from bert_tf.training.precision import set_dtype

    keras.utils.set_random_seed(a.seed)
    set_dtype(a.dtype)
    model, loss_fn, source, _, _ = bert_tf_step.pretrain_source(a)
    clock = {}

    def traced_source(start_step):
        # The loop asks for step i's batch when step i starts: trace steps [warmup, warmup+steps).
        for i, batch in source(start_step):
            if i == a.warmup:
                tf.profiler.experimental.start(logdir, tf.profiler.experimental.ProfilerOptions(
                    host_tracer_level=2, python_tracer_level=0))
                clock["t0"] = time.perf_counter()
            if i == a.warmup + a.steps:
                clock["t1"] = time.perf_counter()
                tf.profiler.experimental.stop()
            yield i, batch

    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as out:
        settings = TrainSettings(
            output_dir=out, train_batch_size=a.batch_size,
            num_train_steps=a.warmup + a.steps + 1, learning_rate=a.learning_rate,
            num_warmup_steps=1, optimizer="adamw", dtype=a.dtype, use_xla=a.xla == "on",
            save_checkpoints_steps=10 ** 9, log_steps=10 ** 9, seed=a.seed)
        train(model, loss_fn, traced_source, settings, Distributed(False), progress=False)
    return analyse(load_xspace(logdir), a.steps, ("grad_step", "reduce", "update")), \
        (clock["t1"] - clock["t0"]) / a.steps


def profile_model_garden(a, logdir: str) -> tuple[dict, float]:
    import tensorflow as tf

    import model_garden_step

    step, it, _ = model_garden_step.build(a)
    for _ in range(a.warmup):
        step(next(it))
    tf.profiler.experimental.start(logdir, tf.profiler.experimental.ProfilerOptions(
        host_tracer_level=2, python_tracer_level=0))
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step(next(it))
    seconds = (time.perf_counter() - t0) / a.steps
    tf.profiler.experimental.stop()
    return analyse(load_xspace(logdir), a.steps, ("train_step",)), seconds


def print_report(r: dict, a, step_seconds: float) -> None:
    print(f"\n{a.framework} {a.dtype} xla-{a.xla} inter-op threads "
          f"{a.inter_op_threads or 'default'}: {1000 * step_seconds:.0f} ms per step traced "
          f"({a.batch_size / step_seconds:.1f} seq/s; tracing adds a little), load average "
          f"{os.getloadavg()[0]:.1f}")
    print("tf.function wall time per step: " + ", ".join(
        f"{k} {v:.0f} ms" for k, v in r["wall_ms_per_step"].items()))
    total = sum(r["by_part_ms_per_step"].values()) or 1.0
    print(f"\nkernel time per step by part ({total:.0f} ms of kernels in all):")
    for k, v in r["by_part_ms_per_step"].items():
        print(f"  {v:7.1f} ms {100 * v / total:5.1f}%  {k}")
    print("\nkernel time per step by kind:")
    for k, v in r["by_kind_ms_per_step"].items():
        print(f"  {v:7.1f} ms {100 * v / total:5.1f}%  {k}")
    print("\nkernel time per step by piece of the layer (op name; forward and backward):")
    for k, v in r["by_component_ms_per_step"].items():
        print(f"  {v:7.1f} ms {100 * v / total:5.1f}%  {k}")
    print("\nby direction / part / op type (largest first):")
    for k, v in r["top_op_types_ms_per_step"]:
        print(f"  {v:7.1f} ms  {k}")
    print("\nlongest kernels per step:")
    for k, v in r["top_kernels_ms_per_step"]:
        print(f"  {v:7.1f} ms  {k}")
    print("\nlongest kernels other than matmuls, per step:")
    for k, v in r["top_non_matmul_kernels_ms_per_step"]:
        print(f"  {v:7.1f} ms  {k}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--framework", choices=("bert_tf", "model_garden"), default="bert_tf")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--xla", choices=("off", "on"), default="off")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--max_seq_length", type=int, default=128)
    p.add_argument("--max_predictions_per_seq", type=int, default=20)
    p.add_argument("--learning_rate", type=float, default=1e-4)
    p.add_argument("--bert_config_file",
                   default=os.path.join(ROOT, "configs", "bert_small_config.json"))
    p.add_argument("--features", default=None,
                   help="a batch npz of bench_pretrain_step.py; built here when absent "
                        "(needs the project venv)")
    p.add_argument("--inter_op_threads", type=int, default=0,
                   help="TF inter-op threads (0 = TF's default, one per core). With 1, kernels run "
                        "one at a time, each on every core, so kernel times add up to wall time "
                        "and the matmul sum is the step's matmul floor")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    if a.inter_op_threads:
        import tensorflow as tf

        tf.config.threading.set_inter_op_parallelism_threads(a.inter_op_threads)
    a.task, a.padding, a.seed, a.rounds, a.model_dir = "pretrain", "fixed", 42, 1, None
    with tempfile.TemporaryDirectory(prefix="profile_pretrain_") as tmp:
        if a.features is None:
            from bench_pretrain_step import prepare_batch

            a.features = os.path.join(tmp, "batch.npz")
            prepare_batch(a.features, a.batch_size, a.max_seq_length, a.max_predictions_per_seq)
        worker.check_args(a)
        logdir = os.path.join(tmp, "trace")
        profile = profile_bert_tf if a.framework == "bert_tf" else profile_model_garden
        r, step_seconds = profile(a, logdir)
    print_report(r, a, step_seconds)
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump({"args": vars(a), "step_seconds": step_seconds,
                       "load_average": os.getloadavg(), **r}, f, indent=1)


if __name__ == "__main__":
    main()

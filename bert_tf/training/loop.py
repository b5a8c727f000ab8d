"""The one training loop every script uses.

A script hands `train` three things: a model, a batch source and a loss. Fine-tuning and
pre-training differ only in those.

    batches(start_step) -> iterator of (micro_index, batch)
        micro-batches for THIS worker, from optimizer step `start_step` on; micro_index =
        step * num_accumulation_steps + a. Deterministic in (seed, step), so a resumed run
        reads what an uninterrupted one would.
    loss_fn(model, batch) -> loss or (loss, metrics)
        a float32 scalar, optionally with a dict of float32 scalars (e.g. masked-LM accuracy)
        that are averaged over micro-batches and workers and logged beside the loss.

    for each optimizer step:
        for each of num_accumulation_steps micro-batches:
            loss, grads = grad_step(batch)          # forward + backward; XLA under use_xla
        grads = allreduce(sum of grads)             # Horovod, outside the XLA cluster
        if grads finite: clip to global norm, optimizer.apply
        else: skip the step, count it, halve the fp16 loss scale
        chief: log (tracking.TrackingLog: metrics.jsonl, TensorBoard, MLflow), checkpoint

Resuming is exact: the checkpoint holds weights, optimizer slots, the step, the loss scale and
counters; the data order is a function of (seed, epoch) and the dropout RNG a function of
(seed, slice of the global batch), so a restarted run sees the same batches and masks, and the
same global batch cut over 2 workers or accumulated on 1 gives the same masks too.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import time

import numpy as np
import tensorflow as tf

from bert_tf.checkpoints import write_marker
from bert_tf.training.optimization import create_optimizer
from bert_tf.training import preemption
from bert_tf.training.preemption import (DEFAULT_GRACE_SECONDS, EvaluationInterrupted,
                                         Preempted, StopRequest)
from bert_tf.training.tracking import TrackingLog, flatten_params

logger = logging.getLogger("bert_tf.training")


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. losses stay NaN); the message says what to try."""


@dataclasses.dataclass
class TrainSettings:
    output_dir: str
    train_batch_size: int  # per worker and per micro-batch
    num_train_steps: int  # optimizer steps
    learning_rate: float
    num_warmup_steps: int
    optimizer: str = "adamw"
    dtype: str = "fp32"
    use_xla: bool = False
    num_accumulation_steps: int = 1
    save_checkpoints_steps: int = 1000
    keep_checkpoint_max: int = 3
    log_steps: int = 10
    seed: int = 42
    weight_decay_rate: float = 0.01
    adam_bias_correction: bool = False
    clip_norm: float = 1.0
    max_consecutive_nonfinite: int = 20
    initial_loss_scale: float = 2.0 ** 15
    loss_scale_growth_interval: int = 2000
    # MLflow, when train() opens its own TrackingLog (the scripts pass theirs): the store URI
    # (None: metrics.jsonl and TensorBoard only), the experiment and the run's name.
    tracking_uri: str | None = None
    experiment_name: str = "bert_tf"
    run_name: str | None = None
    # SIGTERM / first Ctrl-C: stop at the next step boundary, checkpoint, raise Preempted;
    # exit without a checkpoint if no boundary comes within this many seconds (0: wait).
    preemption_grace_seconds: float = DEFAULT_GRACE_SECONDS


def checkpoint_dir(output_dir: str) -> str:
    return os.path.join(output_dir, "checkpoints")


# Each call of a dropout layer advances its SeedGenerator's counter by one, and a layer may be
# called more than once per forward pass (the transformer block's hidden dropout is called twice).
# Micro-batch m starts every counter at m * SEED_STRIDE, so the seeds two micro-batches draw
# never overlap (with a stride of 1, micro-batch m's second call would reuse m+1's first mask).
SEED_STRIDE = 1024


def _seed_variables(model):
    """The state variables of every dropout layer's SeedGenerator (not saved in checkpoints)."""
    return [v for v in model.variables if "seed_generator_state" in v.path]


def seed_dropout(seed_vars, seed_base, micro_index) -> None:
    """Dropout masks as a function of (seed, rank, micro-batch) only: resumable and
    reproducible. Generator i of micro-batch m draws seeds (seed_base + i, m * SEED_STRIDE + k)."""
    for i, var in enumerate(seed_vars):
        var.assign(tf.cast(tf.stack([seed_base + i, micro_index * SEED_STRIDE]), var.dtype))


def compile_update(use_xla: bool) -> bool:
    """Whether train() XLA-compiles the optimizer update (global norm, clip, AdamW/LAMB over
    every variable) as it does the grad step under use_xla: on a GPU only. There XLA fuses the
    update's element-wise passes over each weight into one kernel. On a CPU the optimizers'
    fused kernels (ResourceApplyAdam) beat XLA's loops: BERT-Small's AdamW update took 46.5 ms
    a step against 72.1 compiled, LAMB 110 against 115 (bench/ab_update_bf16.json, from
    bench/ab_pretrain_pieces.py --only update)."""
    return bool(use_xla) and bool(tf.config.list_logical_devices("GPU"))


def _split_loss(out):
    """loss_fn's result -> (loss, metrics dict)."""
    if isinstance(out, (tuple, list)):
        loss, metrics = out
        return loss, dict(metrics)
    return out, {}


def train(model, loss_fn, batches, settings: TrainSettings, dist,
          progress: bool = True, eval_fn=None, eval_every_steps: int = 0,
          log: TrackingLog | None = None) -> dict:
    """Train `model` with `loss_fn` on the micro-batches `batches(start_step)` yields.

    `settings.train_batch_size` is the rows of one micro-batch on one worker (for throughput
    figures only; the source decides what a batch holds). Returns a summary dict: final step,
    mean loss of the last logging window, its metrics, non-finite steps skipped, seconds.
    Raises TrainingError when more than max_consecutive_nonfinite steps in a row are not
    finite.

    eval_fn(step) -> {name: float}, if given, runs on the chief every eval_every_steps steps
    before the last (the caller evaluates the final model); its results go to metrics.jsonl and
    TensorBoard under "eval".

    log: where metrics go (a script passes the TrackingLog its evaluation writes to as well, and
    ends it). Without one, train() opens a TrackingLog from settings (MLflow when
    settings.tracking_uri is set, with the settings as parameters) and ends its MLflow run when
    training ends: FINISHED, or FAILED when this function raises."""
    if log is not None:
        return _train(model, loss_fn, batches, settings, dist, progress, eval_fn,
                      eval_every_steps, log)
    with TrackingLog(settings.output_dir, dist.is_chief, settings.tracking_uri,
                     settings.experiment_name, settings.run_name,
                     flatten_params(dataclasses.asdict(settings))) as log:
        return _train(model, loss_fn, batches, settings, dist, progress, eval_fn,
                      eval_every_steps, log)


def _train(model, loss_fn, batches, settings, dist, progress, eval_fn, eval_every_steps, log):
    s = settings
    accum = s.num_accumulation_steps
    # Variables no loss reaches (the pooler under a token-level head) are left out of the
    # optimizer: no None gradients, and no weight decay slowly shrinking a pooler nobody trains.
    unused = {id(v) for v in getattr(model, "unused_variables", [])}
    tvars = [v for v in model.trainable_variables if id(v) not in unused]
    optimizer = create_optimizer(s.optimizer, s.learning_rate, s.num_train_steps,
                                 s.num_warmup_steps, weight_decay_rate=s.weight_decay_rate,
                                 adam_bias_correction=s.adam_bias_correction)
    optimizer.build(tvars)
    fp16 = s.dtype == "fp16"

    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
    loss_scale = tf.Variable(s.initial_loss_scale if fp16 else 1.0, dtype=tf.float32,
                             trainable=False, name="loss_scale")
    good_since_growth = tf.Variable(0, dtype=tf.int64, trainable=False)
    nonfinite_total = tf.Variable(0, dtype=tf.int64, trainable=False)
    consecutive_bad = tf.Variable(0, dtype=tf.int64, trainable=False)

    ckpt = tf.train.Checkpoint(model=model, encoder=model.encoder, optimizer=optimizer,
                               step=step, loss_scale=loss_scale,
                               good_since_growth=good_since_growth,
                               nonfinite_total=nonfinite_total)
    manager = tf.train.CheckpointManager(ckpt, checkpoint_dir(s.output_dir),
                                         max_to_keep=s.keep_checkpoint_max,
                                         checkpoint_name="ckpt")
    if manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        if dist.is_chief:
            logger.info("resuming from %s (step %d)", manager.latest_checkpoint, int(step))
    state_vars = [step, loss_scale, good_since_growth, nonfinite_total]
    dist.broadcast_variables(list(model.variables) + list(optimizer.variables) + state_vars)

    seed_vars = _seed_variables(model)
    # Dropout is seeded by the micro-batch's slice of the global batch (slice a x workers + rank
    # of the step, as the batch sources cut it), not by the rank: 2 workers, or 1 worker
    # accumulating 2 micro-batches, draw the same masks for the same rows.
    seed_base = np.int64(s.seed) * 1000003

    @tf.function(jit_compile=s.use_xla, reduce_retracing=True)
    def grad_step(batch, micro_index):
        seed_dropout(seed_vars, seed_base, micro_index)
        with tf.GradientTape() as tape:
            loss, step_metrics = _split_loss(loss_fn(model, batch))
            scaled = loss * loss_scale
        grads = tape.gradient(scaled, tvars)
        return loss, step_metrics, [tf.convert_to_tensor(g) for g in grads]

    if accum > 1:
        buffers = [tf.Variable(tf.zeros_like(v), trainable=False) for v in tvars]

        @tf.function
        def accumulate(grads):
            for b, g in zip(buffers, grads):
                b.assign_add(g)

    @tf.function
    def reduce(grads, scalars):
        # Unscale (fp16 loss scale, accumulated micro-batches), then average over workers:
        # Horovod's ops stay outside any XLA cluster. `scalars` = [loss, *metrics].
        if fp16 or accum > 1:
            grads = [g / (loss_scale * accum) for g in grads]
        return dist.average(grads), dist.average(scalars)

    update_xla = compile_update(s.use_xla)

    @tf.function(jit_compile=update_xla)
    def update(grads):
        norm = tf.linalg.global_norm(grads)
        finite = tf.math.is_finite(norm)

        def do_apply():
            clipped, _ = tf.clip_by_global_norm(grads, s.clip_norm, use_norm=norm)
            optimizer.apply(clipped, tvars)
            consecutive_bad.assign(0)
            if fp16:
                good_since_growth.assign_add(1)
                grow = good_since_growth >= s.loss_scale_growth_interval
                loss_scale.assign(tf.where(grow, loss_scale * 2.0, loss_scale))
                good_since_growth.assign(tf.where(grow, tf.zeros_like(good_since_growth),
                                                  good_since_growth))
            return tf.constant(True)

        def skip():
            # The schedule reads optimizer.iterations: advance it as `step` and the data do, so
            # skipped steps do not shift the schedule (which would leave lr > 0 at the end).
            optimizer.iterations.assign_add(1)
            nonfinite_total.assign_add(1)
            consecutive_bad.assign_add(1)
            if fp16:
                loss_scale.assign(tf.maximum(loss_scale / 2.0, 1.0))
                good_since_growth.assign(0)
            return tf.constant(False)

        applied = tf.cond(finite, do_apply, skip)
        step.assign_add(1)
        return norm, applied

    def apply_step(grads, scalars):
        grads, scalars = reduce(grads, scalars)
        norm, applied = update(grads)
        return scalars, norm, applied

    start = int(step)
    examples_per_step = s.train_batch_size * dist.size * accum
    # What the flags resolved to (they may say "default"): under run.* in MLflow.
    log.log_params({"run": {"num_train_steps": s.num_train_steps,
                            "num_warmup_steps": s.num_warmup_steps, "use_xla": s.use_xla,
                            "dtype": s.dtype, "num_workers": dist.size,
                            "num_accumulation_steps": accum,
                            "global_batch_size": examples_per_step, "start_step": start}})
    stream = iter(batches(start))
    metric_names = None
    source_stats = getattr(batches, "stats", None)  # e.g. corrupt records skipped
    stats = {}

    bar = None
    if dist.is_chief and progress:
        from tqdm import tqdm
        bar = tqdm(total=s.num_train_steps, initial=start, unit="step", desc="train",
                   dynamic_ncols=True)
    t0 = time.time()
    window_start, window_steps, window = time.time(), 0, []
    last_loss, last_metrics = float("nan"), {}
    stop_request = StopRequest(s.preemption_grace_seconds)
    saved = None
    with stop_request, _active(stop_request):
        for current in range(start, s.num_train_steps):
            sums = None
            for _ in range(accum):
                try:
                    micro_index, batch = next(stream)
                except StopIteration:
                    raise TrainingError(
                        f"the input ended at step {current} of {s.num_train_steps}: the batch "
                        "source must yield num_train_steps x num_accumulation_steps micro-"
                        "batches (repeat the data or lower the number of steps)") from None
                # A tensor, never a Python int: each new int would retrace the step.
                global_index = tf.convert_to_tensor(
                    int(micro_index) * dist.size + dist.rank, tf.int64)
                loss, step_metrics, grads = grad_step(batch, global_index)
                if metric_names is None:
                    metric_names = sorted(step_metrics)
                scalars = [loss] + [step_metrics[k] for k in metric_names]
                if accum > 1:
                    # The step's loss and metrics are the means over its micro-batches.
                    sums = scalars if sums is None else [a + b for a, b in zip(sums, scalars)]
                    accumulate(grads)
            if accum > 1:
                scalars = [x / accum for x in sums]
            # A stop request (SIGTERM, Ctrl-C) rides on the step's allreduce as one more scalar:
            # every rank sees it at the same step, whichever rank got the signal.
            flag = tf.constant(1.0 if stop_request.requested else 0.0)
            if accum > 1:
                scalars, norm, applied = apply_step([b.read_value() for b in buffers],
                                                    scalars + [flag])
                for b in buffers:
                    b.assign(tf.zeros_like(b))
            else:
                scalars, norm, applied = apply_step(grads, scalars + [flag])
            scalars, stop = scalars[:-1], float(scalars[-1]) > 0
            window.append(scalars)
            window_steps += 1
            done = current + 1
            if int(consecutive_bad) > s.max_consecutive_nonfinite:
                raise TrainingError(
                    f"{int(consecutive_bad)} consecutive steps with non-finite gradients up to "
                    f"step {done}: the run is diverging. Try a lower --learning_rate, more "
                    "warm-up, --dtype=bf16 or fp32 instead of fp16, and check the inputs (label "
                    "ids in range, vocab matching the checkpoint). The limit is "
                    "--max_consecutive_nonfinite")
            if done % s.log_steps == 0 or done == s.num_train_steps:
                elapsed = max(time.time() - window_start, 1e-9)
                means = np.mean([[float(x) for x in row] for row in window], axis=0)
                last_loss = float(means[0])
                last_metrics = {k: float(v) for k, v in zip(metric_names, means[1:])}
                # The rate this step was taken with (iterations has already moved past it).
                lr = float(optimizer.learning_rate) if not callable(
                    optimizer._learning_rate) else float(optimizer._learning_rate(
                        optimizer.iterations - 1))
                values = {"loss": last_loss, **last_metrics, "learning_rate": lr,
                          "grad_norm": float(norm),
                          "examples_per_second": window_steps * examples_per_step / elapsed,
                          "nonfinite_steps": int(nonfinite_total)}
                if fp16:
                    values["loss_scale"] = float(loss_scale)
                if source_stats is not None:
                    stats = _summed_over_workers(source_stats(), dist)
                    values.update(stats)
                log.write(done, values)
                if bar is not None:
                    bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lr:.2e}",
                                    ex_s=f"{values['examples_per_second']:.1f}")
                window_start, window_steps, window = time.time(), 0, []
            if bar is not None:
                bar.update(1)
            saved = None
            if stop:
                stop_request.cancel_timer()  # every rank: the boundary came, let the save end
            if dist.is_chief and (done % s.save_checkpoints_steps == 0 or
                                  done == s.num_train_steps or stop):
                saved = manager.save(checkpoint_number=done)
                write_marker(manager.directory, model)  # ckpt-N names its model class
                log.flush()
            if stop:
                _stop(bar, dist, stop_request, done, saved)
            if (eval_fn is not None and dist.is_chief and eval_every_steps and
                    done % eval_every_steps == 0 and done < s.num_train_steps):
                try:
                    log.write(done, eval_fn(done), "eval")
                except EvaluationInterrupted:  # a stop request: the next step boundary stops
                    logger.info("evaluation at step %d cut short by the stop request", done)
        # A signal that came after the last step's request was read: the ranks agree on it
        # once more, and the run (its final checkpoint saved) stops instead of going on to
        # evaluate and export.
        if start < s.num_train_steps:
            late = dist.average([tf.constant(1.0 if stop_request.requested else 0.0)])[0]
            if float(late) > 0:
                _stop(bar, dist, stop_request, s.num_train_steps, saved)
    if bar is not None:
        bar.close()
    dist.barrier()
    return {"step": int(step), "loss": last_loss, "metrics": last_metrics,
            "nonfinite_steps": int(nonfinite_total), "seconds": time.time() - t0,
            "source_stats": stats}


def _stop(bar, dist, stop_request, step: int, saved) -> None:
    """Every rank at the agreed step, the chief's checkpoint saved: raise Preempted."""
    stop_request.cancel_timer()
    if bar is not None:
        bar.close()
    dist.barrier()
    signum = stop_request.signum or signal.SIGTERM
    if dist.is_chief:
        logger.info("stopped by %s at step %d: checkpoint %s", signal.Signals(signum).name,
                    step, saved)
    raise Preempted(signum, step, saved)


class _active:
    """preemption.active = the loop's request while it runs, so evaluations inside it stop
    early on a stop request."""

    def __init__(self, request):
        self.request = request

    def __enter__(self):
        self.previous, preemption.active = preemption.active, self.request

    def __exit__(self, *exc):
        preemption.active = self.previous


def _summed_over_workers(counters: dict, dist) -> dict:
    """{name: count on this worker} -> {name: total over workers} (an allreduce; every rank
    calls it at the same steps)."""
    if not counters:
        return {}
    names = sorted(counters)
    totals = dist.average([tf.constant([float(counters[k]) for k in names])])[0] * dist.size
    return {k: int(round(float(v))) for k, v in zip(names, totals.numpy())}


def evaluate(model, metrics_fn, batches, use_xla: bool = False, progress: bool = False,
             desc: str = "eval") -> dict:
    """Weighted means of `metrics_fn(model, batch) -> {name: (sum, count)}` over `batches`.

    Each metric is a pair of float32 scalars (its sum over the batch and the count it is a
    mean over: masked positions for masked-LM accuracy, examples for NSP), so the result is the
    exact mean over the whole set whatever the batch sizes. Runs on the calling worker only.
    Returns {name: float}, plus `examples` (rows seen)."""

    @tf.function(jit_compile=use_xla, reduce_retracing=True)
    def step(batch):
        return metrics_fn(model, batch)

    sums, counts, rows = {}, {}, 0
    it = batches
    if progress:
        from tqdm import tqdm
        it = tqdm(it, unit="batch", desc=desc, dynamic_ncols=True)
    for batch in it:
        if preemption.active is not None:
            preemption.active.check()  # raises EvaluationInterrupted on a stop request
        for name, (total, count) in step(batch).items():
            sums[name] = sums.get(name, 0.0) + float(total)
            counts[name] = counts.get(name, 0.0) + float(count)
        rows += int(tf.shape(next(iter(batch.values())))[0])
    out = {name: sums[name] / max(counts[name], 1e-12) for name in sums}
    out["examples"] = rows
    return out


def _forward_fn(model, keys: tuple, use_xla: bool):
    """The traced inference function of `model` for these outputs, made once per model: a
    server answering one question at a time would otherwise trace it again on every call."""
    cache = model.__dict__.setdefault("_bert_tf_forward", {})
    if (keys, use_xla) not in cache:
        @tf.function(jit_compile=use_xla, reduce_retracing=True)
        def forward(batch):
            out = model(batch, training=False)
            return {k: out[k] for k in keys}
        cache[(keys, use_xla)] = forward
    return cache[(keys, use_xla)]


def predict(model, table, batch_size: int, output_key="logits",
            use_xla: bool = False, bucket_width: int = 32, max_seq_length: int = 128,
            progress: bool = False, pad_sequence: bool = False):
    """Model outputs for every row of `table` (a records.FeatureTable or anything with its
    `lengths` / `batch`), in order, float32 numpy. output_key: one output name (returns its
    array) or a tuple of names (returns {name: array}). Batches are cut to their bucket's
    width; per-position outputs are padded back to max_seq_length along axis 1: 3-D ones
    ([B,W,L]) always, and with pad_sequence=True any ([B,W] span logits)."""
    from bert_tf.data import records

    keys = (output_key,) if isinstance(output_key, str) else tuple(output_key)
    forward = _forward_fn(model, keys, use_xla)

    outputs = {k: [] for k in keys}
    it = records.eval_batches(table, batch_size, bucket_width, max_seq_length)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, total=-(-len(table) // batch_size), unit="batch", desc="predict")
    for rows, batch in it:
        if preemption.active is not None:
            preemption.active.check()  # raises EvaluationInterrupted on a stop request
        out = forward({k: tf.constant(batch[k]) for k in records.SEQUENCE_FEATURES})
        for k in keys:
            value = np.asarray(out[k], np.float32)
            if (value.ndim == 3 or (pad_sequence and value.ndim >= 2)) and \
                    value.shape[1] < max_seq_length:  # per-position outputs: pad back to S
                pad = [(0, 0)] * value.ndim
                pad[1] = (0, max_seq_length - value.shape[1])
                value = np.pad(value, pad)
            outputs[k].append(value)
    result = {k: np.concatenate(v) for k, v in outputs.items()}
    return result[output_key] if isinstance(output_key, str) else result

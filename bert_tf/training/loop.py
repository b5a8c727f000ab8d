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

`_train` reads top to bottom: the set-up (`step.TrainState.create`: optimizer, counters,
checkpoint manager, resume), then per step `step.StepRunner.run` (one optimizer step) and the
periodic work: logging (`_Reporter`), checkpointing, evaluation, a stop request.

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
from bert_tf.training import preemption
from bert_tf.training.preemption import (DEFAULT_GRACE_SECONDS, EvaluationInterrupted,
                                         Preempted, StopRequest)
from bert_tf.training.step import StepRunner, TrainingError, TrainState
from bert_tf.training.tracking import TrackingLog, flatten_params

logger = logging.getLogger("bert_tf.training")


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
    state = TrainState.create(model, s, dist, checkpoint_dir(s.output_dir))
    runner = StepRunner(model, loss_fn, state, s, dist)
    start = int(state.step)
    report = _Reporter(s, dist, state, log, batches, start, progress)
    stream = iter(batches(start))
    t0 = time.time()
    stop_request = StopRequest(s.preemption_grace_seconds)
    saved = None
    with stop_request, _active(stop_request):
        for current in range(start, s.num_train_steps):
            scalars, norm, stop = runner.run(stream, current, stop_request.requested)
            done = current + 1
            _check_finite(state, s, done)
            report.step_done(done, scalars, norm, runner.metric_names)
            if stop:
                stop_request.cancel_timer()  # every rank: the boundary came, let the save end
            saved = None
            if dist.is_chief and (done % s.save_checkpoints_steps == 0 or
                                  done == s.num_train_steps or stop):
                saved = state.manager.save(checkpoint_number=done)
                write_marker(state.manager.directory, model)  # ckpt-N names its model class
                log.flush()
            if stop:
                _stop(report.bar, dist, stop_request, done, saved)
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
                _stop(report.bar, dist, stop_request, s.num_train_steps, saved)
    report.close()
    dist.barrier()
    return {"step": int(state.step), "loss": report.last_loss, "metrics": report.last_metrics,
            "nonfinite_steps": int(state.nonfinite_total), "seconds": time.time() - t0,
            "source_stats": report.stats}


def _check_finite(state: TrainState, s, done: int) -> None:
    """TrainingError once more than max_consecutive_nonfinite steps in a row were skipped."""
    if int(state.consecutive_bad) > s.max_consecutive_nonfinite:
        raise TrainingError(
            f"{int(state.consecutive_bad)} consecutive steps with non-finite gradients up to "
            f"step {done}: the run is diverging. Try a lower --learning_rate, more "
            "warm-up, --dtype=bf16 or fp32 instead of fp16, and check the inputs (label "
            "ids in range, vocab matching the checkpoint). The limit is "
            "--max_consecutive_nonfinite")


class _Reporter:
    """The run's logging: its resolved settings once, then every log_steps steps the means of
    the window (loss, metrics), the learning rate, the gradient norm, examples/s, non-finite
    steps, the fp16 loss scale and the batch source's counters (summed over workers); the
    chief's progress bar."""

    def __init__(self, s, dist, state: TrainState, log, batches, start: int, progress: bool):
        self.s, self.dist, self.state, self.log = s, dist, state, log
        self.examples_per_step = s.train_batch_size * dist.size * s.num_accumulation_steps
        # What the flags resolved to (they may say "default"): under run.* in MLflow.
        log.log_params({"run": {"num_train_steps": s.num_train_steps,
                                "num_warmup_steps": s.num_warmup_steps, "use_xla": s.use_xla,
                                "dtype": s.dtype, "num_workers": dist.size,
                                "num_accumulation_steps": s.num_accumulation_steps,
                                "global_batch_size": self.examples_per_step,
                                "start_step": start}})
        self.source_stats = getattr(batches, "stats", None)  # e.g. corrupt records skipped
        self.stats = {}
        self.bar = None
        if dist.is_chief and progress:
            from tqdm import tqdm
            self.bar = tqdm(total=s.num_train_steps, initial=start, unit="step", desc="train",
                            dynamic_ncols=True)
        self.window_start, self.window = time.time(), []
        self.last_loss, self.last_metrics = float("nan"), {}

    def step_done(self, done: int, scalars: list, norm, metric_names: list) -> None:
        s = self.s
        self.window.append(scalars)
        if done % s.log_steps == 0 or done == s.num_train_steps:
            self._write(done, norm, metric_names)
        if self.bar is not None:
            self.bar.update(1)

    def _write(self, done: int, norm, metric_names: list) -> None:
        state = self.state
        elapsed = max(time.time() - self.window_start, 1e-9)
        means = np.mean([[float(x) for x in row] for row in self.window], axis=0)
        self.last_loss = float(means[0])
        self.last_metrics = {k: float(v) for k, v in zip(metric_names, means[1:])}
        lr = state.learning_rate()
        values = {"loss": self.last_loss, **self.last_metrics, "learning_rate": lr,
                  "grad_norm": float(norm),
                  "examples_per_second": len(self.window) * self.examples_per_step / elapsed,
                  "nonfinite_steps": int(state.nonfinite_total)}
        if self.s.dtype == "fp16":
            values["loss_scale"] = float(state.loss_scale)
        if self.source_stats is not None:
            self.stats = _summed_over_workers(self.source_stats(), self.dist)
            values.update(self.stats)
        self.log.write(done, values)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{self.last_loss:.4f}", lr=f"{lr:.2e}",
                                 ex_s=f"{values['examples_per_second']:.1f}")
        self.window_start, self.window = time.time(), []

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


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

"""One optimizer step of the training loop, and the state it changes.

`TrainState.create` sets a run up: the optimizer over the variables a loss reaches, the step and
loss-scale counters, the checkpoint manager (a resumed run restores all of it), every worker
starting from the chief's values. `StepRunner.run` takes one optimizer step: the micro-batches'
forward and backward passes (XLA under use_xla), gradient accumulation, the allreduce, the
clipped update or the skip of a non-finite step (fp16: the loss scale halves).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import tensorflow as tf

from bert_tf.training.optimization import create_optimizer

logger = logging.getLogger("bert_tf.training")

# Each call of a dropout layer advances its SeedGenerator's counter by one, and a layer may be
# called more than once per forward pass (the transformer block's hidden dropout is called twice).
# Micro-batch m starts every counter at m * SEED_STRIDE, so the seeds two micro-batches draw
# never overlap (with a stride of 1, micro-batch m's second call would reuse m+1's first mask).
SEED_STRIDE = 1024


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. losses stay NaN); the message says what to try."""


def seed_variables(model):
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
    a step against 72.1 compiled, LAMB 110 against 115 (bench/results/ab_update_bf16.json, from
    bench/profile_step.py pieces --only update)."""
    return bool(use_xla) and bool(tf.config.list_logical_devices("GPU"))


def split_loss(out):
    """loss_fn's result -> (loss, metrics dict)."""
    if isinstance(out, (tuple, list)):
        loss, metrics = out
        return loss, dict(metrics)
    return out, {}


@dataclasses.dataclass
class TrainState:
    """What a step changes and a checkpoint holds (besides the model), and the manager that
    writes checkpoints: the optimizer over `tvars`, the global step, the fp16 loss scale and
    its growth counter, the non-finite steps (in total; in a row, not checkpointed)."""
    optimizer: object
    tvars: list
    step: tf.Variable
    loss_scale: tf.Variable
    good_since_growth: tf.Variable
    nonfinite_total: tf.Variable
    consecutive_bad: tf.Variable
    manager: tf.train.CheckpointManager

    @classmethod
    def create(cls, model, s, dist, directory: str) -> "TrainState":
        """Set-up: the optimizer over the variables a loss reaches, the counters, the
        checkpoint manager of `directory`; restores its latest checkpoint (a resumed run) and
        broadcasts the chief's values to every worker."""
        # Variables no loss reaches (the pooler under a token-level head) are left out of the
        # optimizer: no None gradients, and no weight decay slowly shrinking a pooler nobody
        # trains.
        unused = {id(v) for v in getattr(model, "unused_variables", [])}
        tvars = [v for v in model.trainable_variables if id(v) not in unused]
        optimizer = create_optimizer(s.optimizer, s.learning_rate, s.num_train_steps,
                                     s.num_warmup_steps, weight_decay_rate=s.weight_decay_rate,
                                     adam_bias_correction=s.adam_bias_correction)
        optimizer.build(tvars)
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        loss_scale = tf.Variable(s.initial_loss_scale if s.dtype == "fp16" else 1.0,
                                 dtype=tf.float32, trainable=False, name="loss_scale")
        good_since_growth = tf.Variable(0, dtype=tf.int64, trainable=False)
        nonfinite_total = tf.Variable(0, dtype=tf.int64, trainable=False)
        consecutive_bad = tf.Variable(0, dtype=tf.int64, trainable=False)
        ckpt = tf.train.Checkpoint(model=model, encoder=model.encoder, optimizer=optimizer,
                                   step=step, loss_scale=loss_scale,
                                   good_since_growth=good_since_growth,
                                   nonfinite_total=nonfinite_total)
        manager = tf.train.CheckpointManager(ckpt, directory, max_to_keep=s.keep_checkpoint_max,
                                             checkpoint_name="ckpt")
        if manager.latest_checkpoint:
            ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
            if dist.is_chief:
                logger.info("resuming from %s (step %d)", manager.latest_checkpoint, int(step))
        state_vars = [step, loss_scale, good_since_growth, nonfinite_total]
        dist.broadcast_variables(list(model.variables) + list(optimizer.variables) + state_vars)
        return cls(optimizer, tvars, step, loss_scale, good_since_growth, nonfinite_total,
                   consecutive_bad, manager)

    def learning_rate(self) -> float:
        """The rate the last step was taken with (iterations has already moved past it)."""
        optimizer = self.optimizer
        if not callable(optimizer._learning_rate):
            return float(optimizer.learning_rate)
        return float(optimizer._learning_rate(optimizer.iterations - 1))


class StepRunner:
    """The compiled pieces of one optimizer step, built once a run:

        grad_step(batch, micro_index)  forward + backward of one micro-batch (XLA: use_xla)
        accumulate(grads)              into the buffers (num_accumulation_steps > 1)
        reduce(grads, scalars)         unscale, then average over workers (Horovod, no XLA)
        update(grads)                  global norm; clip + apply, or skip a non-finite step
    """

    def __init__(self, model, loss_fn, state: TrainState, s, dist):
        self.state, self.s, self.dist = state, s, dist
        self.accum = s.num_accumulation_steps
        self.metric_names = None
        self.grad_step = self._grad_step_fn(model, loss_fn)
        if self.accum > 1:
            self.buffers = [tf.Variable(tf.zeros_like(v), trainable=False) for v in state.tvars]
        self.reduce = self._reduce_fn()
        self.update = self._update_fn()

    def run(self, stream, current: int, stop_requested: bool):
        """One optimizer step from the next num_accumulation_steps micro-batches of `stream`.
        Returns (scalars [loss, *metrics] averaged over micro-batches and workers, the gradient
        norm, whether any worker asked to stop). Raises TrainingError when the input ends."""
        s, dist, accum = self.s, self.dist, self.accum
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
            loss, step_metrics, grads = self.grad_step(batch, global_index)
            if self.metric_names is None:
                self.metric_names = sorted(step_metrics)
            scalars = [loss] + [step_metrics[k] for k in self.metric_names]
            if accum > 1:
                # The step's loss and metrics are the means over its micro-batches.
                sums = scalars if sums is None else [a + b for a, b in zip(sums, scalars)]
                self.accumulate(grads)
        if accum > 1:
            scalars = [x / accum for x in sums]
            grads = [b.read_value() for b in self.buffers]
        # A stop request (SIGTERM, Ctrl-C) rides on the step's allreduce as one more scalar:
        # every rank sees it at the same step, whichever rank got the signal.
        flag = tf.constant(1.0 if stop_requested else 0.0)
        grads, scalars = self.reduce(grads, scalars + [flag])
        norm, _ = self.update(grads)
        if accum > 1:
            for b in self.buffers:
                b.assign(tf.zeros_like(b))
        return scalars[:-1], norm, float(scalars[-1]) > 0

    @tf.function
    def accumulate(self, grads):
        for b, g in zip(self.buffers, grads):
            b.assign_add(g)

    def _grad_step_fn(self, model, loss_fn):
        s, state = self.s, self.state
        seed_vars = seed_variables(model)
        # Dropout is seeded by the micro-batch's slice of the global batch (slice a x workers +
        # rank of the step, as the batch sources cut it), not by the rank: 2 workers, or 1
        # worker accumulating 2 micro-batches, draw the same masks for the same rows.
        seed_base = np.int64(s.seed) * 1000003

        @tf.function(jit_compile=s.use_xla, reduce_retracing=True)
        def grad_step(batch, micro_index):
            seed_dropout(seed_vars, seed_base, micro_index)
            with tf.GradientTape() as tape:
                loss, step_metrics = split_loss(loss_fn(model, batch))
                scaled = loss * state.loss_scale
            grads = tape.gradient(scaled, state.tvars)
            return loss, step_metrics, [tf.convert_to_tensor(g) for g in grads]

        return grad_step

    def _reduce_fn(self):
        state, dist, accum = self.state, self.dist, self.accum
        unscale = self.s.dtype == "fp16" or accum > 1

        @tf.function
        def reduce(grads, scalars):
            # Unscale (fp16 loss scale, accumulated micro-batches), then average over workers:
            # Horovod's ops stay outside any XLA cluster. `scalars` = [loss, *metrics, flag].
            if unscale:
                grads = [g / (state.loss_scale * accum) for g in grads]
            return dist.average(grads), dist.average(scalars)

        return reduce

    def _update_fn(self):
        s, state = self.s, self.state
        fp16 = s.dtype == "fp16"

        @tf.function(jit_compile=compile_update(s.use_xla))
        def update(grads):
            norm = tf.linalg.global_norm(grads)
            finite = tf.math.is_finite(norm)

            def do_apply():
                clipped, _ = tf.clip_by_global_norm(grads, s.clip_norm, use_norm=norm)
                state.optimizer.apply(clipped, state.tvars)
                state.consecutive_bad.assign(0)
                if fp16:
                    good = state.good_since_growth
                    good.assign_add(1)
                    grow = good >= s.loss_scale_growth_interval
                    state.loss_scale.assign(tf.where(grow, state.loss_scale * 2.0,
                                                     state.loss_scale))
                    good.assign(tf.where(grow, tf.zeros_like(good), good))
                return tf.constant(True)

            def skip():
                # The schedule reads optimizer.iterations: advance it as `step` and the data
                # do, so skipped steps do not shift the schedule (which would leave lr > 0 at
                # the end).
                state.optimizer.iterations.assign_add(1)
                state.nonfinite_total.assign_add(1)
                state.consecutive_bad.assign_add(1)
                if fp16:
                    state.loss_scale.assign(tf.maximum(state.loss_scale / 2.0, 1.0))
                    state.good_since_growth.assign(0)
                return tf.constant(False)

            applied = tf.cond(finite, do_apply, skip)
            state.step.assign_add(1)
            return norm, applied

        return update

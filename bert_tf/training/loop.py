"""The one training loop every script uses.

    for each optimizer step:
        for each of num_accumulation_steps micro-batches:
            loss, grads = grad_step(batch)          # forward + backward; XLA under use_xla
        grads = allreduce(sum of grads)             # Horovod, outside the XLA cluster
        if grads finite: clip to global norm, optimizer.apply
        else: skip the step, count it, halve the fp16 loss scale
        chief: log, summaries, checkpoint

Resuming is exact: the checkpoint holds weights, optimizer slots, the step, the loss scale and
counters; the data order is a function of (seed, epoch) and the dropout RNG a function of
(seed, rank, micro-batch index), so a restarted run sees the same batches and masks.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time

import numpy as np
import tensorflow as tf

from bert_tf.data import records
from bert_tf.training.optimization import create_optimizer

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
    bucket_width: int = 32
    max_seq_length: int = 128


def checkpoint_dir(output_dir: str) -> str:
    return os.path.join(output_dir, "checkpoints")


class MetricsLog:
    """metrics.jsonl and TensorBoard scalars, written by the chief only."""

    def __init__(self, output_dir: str, enabled: bool):
        self.enabled = enabled
        if enabled:
            os.makedirs(output_dir, exist_ok=True)
            self.path = os.path.join(output_dir, "metrics.jsonl")
            self.writer = tf.summary.create_file_writer(os.path.join(output_dir, "tensorboard"))

    def write(self, step: int, values: dict, prefix: str = "train") -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": int(step), "split": prefix, **values}) + "\n")
        with self.writer.as_default():
            for k, v in values.items():
                if isinstance(v, (int, float)) and np.isfinite(v):
                    tf.summary.scalar(f"{prefix}/{k}", v, step=int(step))
        self.writer.flush()


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


def train(model, loss_fn, table: records.FeatureTable, settings: TrainSettings, dist,
          progress: bool = True) -> dict:
    """Train `model` on `table` with `loss_fn(model, batch) -> scalar float32 loss`.

    Returns a summary dict (final step, last loss, non-finite steps skipped, seconds)."""
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
    seed_base = np.int64(s.seed) * 1000003 + dist.rank * 7919

    @tf.function(jit_compile=s.use_xla, reduce_retracing=True)
    def grad_step(batch, micro_index):
        seed_dropout(seed_vars, seed_base, micro_index)
        with tf.GradientTape() as tape:
            loss = loss_fn(model, batch)
            scaled = loss * loss_scale
        grads = tape.gradient(scaled, tvars)
        return loss, [tf.convert_to_tensor(g) for g in grads]

    if accum > 1:
        buffers = [tf.Variable(tf.zeros_like(v), trainable=False) for v in tvars]

        @tf.function
        def accumulate(grads):
            for b, g in zip(buffers, grads):
                b.assign_add(g)

    @tf.function
    def reduce(grads, loss):
        # Unscale (fp16 loss scale, accumulated micro-batches), then average over workers:
        # Horovod's ops stay outside any XLA cluster.
        if fp16 or accum > 1:
            grads = [g / (loss_scale * accum) for g in grads]
        return dist.average(grads), dist.average_scalar(loss)

    # Under --use_xla the update (global norm, clip, AdamW/LAMB over every variable) is compiled
    # too: XLA fuses the optimizer's dozen element-wise passes over each weight into one loop.
    @tf.function(jit_compile=s.use_xla)
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

    def apply_step(grads, loss):
        grads, loss = reduce(grads, loss)
        norm, applied = update(grads)
        return loss, norm, applied

    metrics = MetricsLog(s.output_dir, dist.is_chief)
    start = int(step)
    examples_per_step = s.train_batch_size * dist.size * accum
    batches = iter(records.to_dataset(
        lambda: records.train_micro_batches(
            table, s.train_batch_size, s.seed, start_step=start, rank=dist.rank,
            num_workers=dist.size, accumulation=accum, bucket_width=s.bucket_width,
            max_seq_length=s.max_seq_length), table))

    bar = None
    if dist.is_chief and progress:
        from tqdm import tqdm
        bar = tqdm(total=s.num_train_steps, initial=start, unit="step", desc="train",
                   dynamic_ncols=True)
    t0 = time.time()
    window_start, window_steps, losses = time.time(), 0, []
    last_loss = float("nan")
    for current in range(start, s.num_train_steps):
        loss_sum = 0.0
        for _ in range(accum):
            micro_index, batch = next(batches)
            loss, grads = grad_step(batch, micro_index)
            if accum > 1:
                loss_sum += loss
                accumulate(grads)
        if accum > 1:
            loss = loss_sum / accum  # the step's loss, not its last micro-batch's
            loss, norm, applied = apply_step([b.read_value() for b in buffers], loss)
            for b in buffers:
                b.assign(tf.zeros_like(b))
        else:
            loss, norm, applied = apply_step(grads, loss)
        losses.append(loss)
        window_steps += 1
        done = current + 1
        if int(consecutive_bad) > s.max_consecutive_nonfinite:
            raise TrainingError(
                f"{int(consecutive_bad)} consecutive steps with non-finite gradients up to step "
                f"{done}: the run is diverging. Try a lower --learning_rate, more warm-up, "
                "--dtype=bf16 or fp32 instead of fp16, and check the inputs (label ids in "
                "range, vocab matching the checkpoint). The limit is --max_consecutive_nonfinite")
        if done % s.log_steps == 0 or done == s.num_train_steps:
            elapsed = max(time.time() - window_start, 1e-9)
            last_loss = float(np.mean([float(x) for x in losses]))
            # The rate this step was taken with (iterations has already moved past it).
            lr = float(optimizer.learning_rate) if not callable(
                optimizer._learning_rate) else float(optimizer._learning_rate(
                    optimizer.iterations - 1))
            values = {"loss": last_loss, "learning_rate": lr, "grad_norm": float(norm),
                      "examples_per_second": window_steps * examples_per_step / elapsed,
                      "nonfinite_steps": int(nonfinite_total)}
            if fp16:
                values["loss_scale"] = float(loss_scale)
            metrics.write(done, values)
            if bar is not None:
                bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lr:.2e}",
                                ex_s=f"{values['examples_per_second']:.1f}")
            window_start, window_steps, losses = time.time(), 0, []
        if bar is not None:
            bar.update(1)
        if dist.is_chief and (done % s.save_checkpoints_steps == 0 or
                              done == s.num_train_steps):
            manager.save(checkpoint_number=done)
    if bar is not None:
        bar.close()
    dist.barrier()
    return {"step": int(step), "loss": last_loss, "nonfinite_steps": int(nonfinite_total),
            "seconds": time.time() - t0}


def predict(model, table: records.FeatureTable, batch_size: int, output_key: str = "logits",
            use_xla: bool = False, bucket_width: int = 32, max_seq_length: int = 128,
            progress: bool = False) -> np.ndarray:
    """Model outputs for every row of `table`, in order (float32 numpy)."""

    @tf.function(jit_compile=use_xla, reduce_retracing=True)
    def forward(batch):
        return model(batch, training=False)[output_key]

    outputs = []
    it = records.eval_batches(table, batch_size, bucket_width, max_seq_length)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, total=-(-len(table) // batch_size), unit="batch", desc="predict")
    for rows, batch in it:
        out = forward({k: tf.constant(v) for k, v in batch.items() if k != "label_ids"})
        out = np.asarray(out, np.float32)
        if out.ndim == 3 and out.shape[1] < max_seq_length:  # token outputs: pad back to S
            out = np.pad(out, ((0, 0), (0, max_seq_length - out.shape[1]), (0, 0)))
        outputs.append(out)
    return np.concatenate(outputs)

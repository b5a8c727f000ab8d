"""bert_tf training rounds for bench/bench_finetune.py and bench/bench_pretrain_step.py (a worker
subprocess, project venv).

The step is the project's own: `bert_tf.training.loop.train` with `TrainSettings` and Google's
AdamW (`optimizer="adamw"`), the batch source and loss a script hands it:
- finetune: a `BertClassifier` loaded from the all-MiniLM-L6-v2 checkpoint with
  `bert_tf.checkpoints.load`, `tasks.classification_loss`, and `records.table_batches` over a
  `FeatureTable` (the source run_classifier.py uses), padded to buckets of 32 (dynamic) or to
  max_seq_length (fixed);
- pretrain: a `BertPretrainer` of --bert_config_file's dimensions (random weights),
  `tasks.pretraining_loss` (masked-LM on the masked positions + next sentence, with its
  accuracies, as run_pretraining.py), and a source yielding one fixed batch in Google's
  pre-training schema, as tensors (what records.pretraining_batches yields).
Nothing is re-implemented: the number is what a run_classifier.py / run_pretraining.py user gets.

Protocol: bench/peers/worker.py. A round is one call of train() (a fresh
optimizer and output_dir; the weights carry on; the same batches every round, from the seed) of
warmup + timed steps with log_steps=1, so metrics.jsonl has one examples_per_second per step (a
window's clock starts after the previous window's log write: logging is not counted). Steady
state = the timed steps: not the warm-up steps (each train() call traces its step functions
again, and under XLA compiles them) and, with bucketed (dynamic) padding, not a step whose batch
width is new in the round (a new trace, or a new XLA executable); more steps are run so that
`--steps` steps are timed.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

T_START = time.time()

import numpy as np  # noqa: E402

import worker  # noqa: E402  (bench/peers/worker.py)


def parse_args(argv=None):
    # padding: fixed = every batch max_seq_length wide (bucket_width=max_seq_length); dynamic =
    # the project's default bucketing (bucket_width=32)
    p = worker.arg_parser(__doc__.split("\n")[0])
    p.add_argument("--xla", choices=("off", "on"), default="off")
    return p.parse_args(argv)


def load_features(path: str) -> list[dict]:
    """npz -> the unpadded feature dicts convert_examples_to_features returns."""
    d = dict(np.load(path))  # an NpzFile would re-read an array on every access
    feats = []
    for i, n in enumerate(d["lengths"]):
        feats.append({"input_ids": d["input_ids"][i, :n].tolist(),
                      "input_mask": d["input_mask"][i, :n].tolist(),
                      "segment_ids": d["segment_ids"][i, :n].tolist(),
                      "label_ids": int(d["label_ids"][i]), "length": int(n)})
    return feats



def finetune_source(a):
    """(model, loss_fn, batch source, widths of every step, indices of the timed steps)."""
    from bert_tf import checkpoints
    from bert_tf.config import BertConfig
    from bert_tf.data import records
    from bert_tf.modeling import BertClassifier
    from bert_tf.training import tasks

    config = BertConfig.from_json_file(os.path.join(a.model_dir, "config.json"))
    model = BertClassifier(config, 2)
    checkpoints.load(model, a.model_dir)
    table = records.FeatureTable.from_features(load_features(a.features), a.max_seq_length)
    bucket_width = a.max_seq_length if a.padding == "fixed" else 32

    # The widths train() will see (its batch order is a pure function of the seed): run enough
    # steps that `steps` of them are steady state.
    gen = records.train_micro_batches(table, a.batch_size, a.seed, bucket_width=bucket_width,
                                      max_seq_length=a.max_seq_length)
    widths, timed, seen = [], [], set()
    while len(timed) < a.steps:
        _, batch = next(gen)
        w = batch["input_ids"].shape[1]
        if len(widths) >= a.warmup and w in seen:
            timed.append(len(widths))
        seen.add(w)
        widths.append(w)
    source = records.table_batches(table, a.batch_size, a.seed, bucket_width=bucket_width,
                                   max_seq_length=a.max_seq_length)
    return model, tasks.classification_loss, source, widths, timed


def pretrain_source(a):
    """(model, loss_fn, batch source, widths of every step, indices of the timed steps)."""
    import tensorflow as tf

    from bert_tf.config import BertConfig
    from bert_tf.modeling import BertPretrainer
    from bert_tf.training import tasks

    model = BertPretrainer(BertConfig.from_json_file(a.bert_config_file))
    batch = {k: tf.constant(v) for k, v in worker.load_pretraining_batch(a).items()}

    def source(start_step: int):
        # The loop's contract: (micro_index, batch), endless; the same batch every step.
        step = start_step
        while True:
            yield step, batch
            step += 1

    num_steps = a.warmup + a.steps
    return (model, tasks.pretraining_loss, source, [a.max_seq_length] * num_steps,
            list(range(a.warmup, num_steps)))


def main(argv=None) -> None:
    a = parse_args(argv)
    worker.check_args(a)
    import keras
    import tensorflow as tf

    from bert_tf.training.distributed import Distributed
    from bert_tf.training.loop import TrainSettings, train
    from bert_tf.training.precision import set_dtype

    keras.utils.set_random_seed(a.seed)
    set_dtype(a.dtype)  # before the model is built
    setup = finetune_source if a.task == "finetune" else pretrain_source
    model, loss_fn, source, widths, timed = setup(a)
    num_steps = len(widths)
    setup_seconds = time.time() - T_START

    # train() always saves a checkpoint at its last step (weights + 2 Adam slots: ~270 MB for
    # MiniLM, ~350 MB for BERT-Small); on this VM's disk that write sometimes stalls ~40 s. Off
    # the clock, but it slows the benchmark.
    scratch = "/dev/shm" if os.path.isdir("/dev/shm") else None

    def run_round() -> dict:
        with tempfile.TemporaryDirectory(prefix="bench_bert_tf_", dir=scratch) as out:
            settings = TrainSettings(
                output_dir=out, train_batch_size=a.batch_size, num_train_steps=num_steps,
                learning_rate=a.learning_rate, num_warmup_steps=max(1, num_steps // 10),
                optimizer="adamw", dtype=a.dtype, use_xla=a.xla == "on",
                num_accumulation_steps=1, save_checkpoints_steps=10 ** 9, log_steps=1,
                seed=a.seed)
            t0 = time.time()
            summary = train(model, loss_fn, source, settings, Distributed(False),
                            progress=False)
            train_seconds = time.time() - t0
            with open(os.path.join(out, "metrics.jsonl"), encoding="utf-8") as f:
                rows = [json.loads(line) for line in f]
        step_seconds = {r["step"]: a.batch_size / r["examples_per_second"] for r in rows}
        times = [step_seconds[i + 1] for i in timed]  # metrics steps are 1-based
        info = {"step_seconds": times, "timed_widths": [widths[i] for i in timed],
                "first_steps_seconds": [step_seconds[i + 1] for i in range(num_steps)
                                        if i not in timed],
                "round_seconds": train_seconds, "final_loss": summary["loss"],
                "final_metrics": summary["metrics"]}
        return worker.result(a, "bert_tf", a.xla, os.environ.get("XLA_FLAGS", ""),
                             setup_seconds, info, tf_version=tf.__version__,
                             keras_version=keras.__version__, optimizer="adamw (Google's "
                             "AdamWeightDecay, no bias correction)")

    worker.serve(run_round)

if __name__ == "__main__":
    main()

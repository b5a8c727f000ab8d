"""What the three bench workers share: the command line, the stdin/stdout protocol with
bench_finetune.py and bench_pretrain_step.py, and the timing of a round. Imports only the
standard library, so it loads in both the project venv and the Model Garden venv (each worker
script's folder is on sys.path).

Two tasks (--task): `finetune` (bench_finetune.py: sequence classification on MRPC features,
a Hugging Face model directory for the dimensions and weights) and `pretrain`
(bench_pretrain_step.py: masked-LM + next-sentence on one fixed batch in Google's pre-training
schema, random weights of --bert_config_file's dimensions). The worker scripts keep one timing
and one optimizer per framework for both; only the model, its loss and the batches differ.

Protocol: after setup a worker prints `READY`; each `round` line on stdin runs one round and
prints `RESULT {json}`; `quit` or end of input exits.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time


def arg_parser(description: str, paddings=("fixed", "dynamic")) -> argparse.ArgumentParser:
    """The flags every worker takes; a worker adds its own."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--task", choices=("finetune", "pretrain"), default="finetune")
    p.add_argument("--features", required=True,
                   help="npz written by bench_finetune.py (finetune) or bench_pretrain_step.py "
                        "(pretrain: one batch in Google's pre-training schema)")
    p.add_argument("--model_dir", default=None,
                   help="finetune: Hugging Face directory (MiniLM: config.json + weights)")
    p.add_argument("--bert_config_file", default=None,
                   help="pretrain: Google-style bert_config.json (random initial weights)")
    p.add_argument("--learning_rate", type=float, default=None,
                   help="peak rate (default 5e-5 finetune, 1e-4 pretrain)")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--padding", choices=paddings, default="fixed")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--max_seq_length", type=int, default=128)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per round")
    p.add_argument("--steps", type=int, default=10, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3, help="for the length of the LR schedule")
    p.add_argument("--seed", type=int, default=42)
    return p


def check_args(a) -> None:
    """The flags each task needs, checked once for every worker."""
    if a.task == "finetune" and not a.model_dir:
        raise SystemExit("--task=finetune needs --model_dir")
    if a.task == "pretrain" and not a.bert_config_file:
        raise SystemExit("--task=pretrain needs --bert_config_file")
    if a.task == "pretrain" and a.padding != "fixed":
        raise SystemExit("--task=pretrain batches are always max_seq_length wide (--padding=fixed)")
    if a.learning_rate is None:
        a.learning_rate = 5e-5 if a.task == "finetune" else 1e-4


def load_config(a) -> dict:
    """The model's dimensions, Google's / Hugging Face's keys (they coincide for BERT)."""
    import os

    path = a.bert_config_file if a.task == "pretrain" else os.path.join(a.model_dir,
                                                                        "config.json")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# Google's pre-training features (run_pretraining.py), as bench_pretrain_step.py writes them.
PRETRAINING_KEYS = ("input_ids", "input_mask", "segment_ids", "masked_lm_positions",
                    "masked_lm_ids", "masked_lm_weights", "next_sentence_labels")


def load_pretraining_batch(a) -> dict:
    """--features (pretrain) -> {name: numpy array} of one batch, its shapes checked against
    --batch_size and --max_seq_length: int32 [B,S] ids/mask/segments, int32 [B,P] positions and
    ids, float32 [B,P] weights, int32 [B] next-sentence labels."""
    import numpy as np

    d = np.load(a.features)
    batch = {k: d[k] for k in PRETRAINING_KEYS}
    b, s = a.batch_size, a.max_seq_length
    p = batch["masked_lm_positions"].shape[1]
    want = {"input_ids": (b, s), "input_mask": (b, s), "segment_ids": (b, s),
            "masked_lm_positions": (b, p), "masked_lm_ids": (b, p),
            "masked_lm_weights": (b, p), "next_sentence_labels": (b,)}
    for k, shape in want.items():
        if batch[k].shape != shape:
            raise SystemExit(f"{a.features}: {k} has shape {batch[k].shape}, expected {shape} "
                             f"(--batch_size {b}, --max_seq_length {s})")
    return batch


def timed_round(step, batches, warmup: int, steps: int, width_of) -> dict:
    """Run warmup + steps calls of step(batch) -> float loss (the float ends the step: the
    frameworks run asynchronously otherwise), each timed on its own with the batch fetch
    included; the warm-up steps are reported apart. `width_of(batch)` -> padded width."""
    times, widths, first, loss = [], [], [], float("nan")
    t_round = time.perf_counter()
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        batch = next(batches)
        loss = step(batch)
        dt = time.perf_counter() - t0
        if i < warmup:
            first.append(dt)
        else:
            times.append(dt)
            widths.append(int(width_of(batch)))
    return {"step_seconds": times, "timed_widths": widths, "first_steps_seconds": first,
            "round_seconds": time.perf_counter() - t_round, "final_loss": loss}


def result(a, framework: str, xla: str, xla_flags: str, setup_seconds: float,
           round_info: dict, **extra) -> dict:
    """One RESULT record: the setting, examples/s over the timed steps, the raw timings."""
    times = round_info["step_seconds"]
    return {"framework": framework, "task": a.task, "dtype": a.dtype, "xla": xla,
            "padding": a.padding, "xla_flags": xla_flags,
            "examples_per_second": a.batch_size * len(times) / sum(times),
            "setup_seconds": setup_seconds, **round_info, **extra}


def serve(run_round) -> None:
    print("READY", flush=True)
    for line in sys.stdin:
        if line.strip() == "round":
            record = run_round()
            record["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print("RESULT " + json.dumps(record), flush=True)
        elif line.strip() == "quit":
            break

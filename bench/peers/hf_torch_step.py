"""Hugging Face PyTorch fine-tuning rounds (the peer) for bench_finetune.py: a worker subprocess
in the project venv.

transformers' BertForSequenceClassification from the all-MiniLM-L6-v2 directory (2 labels),
torch on the CPU with 2 threads, and the optimizer step the HF Trainer takes by default:
AdamW (torch.optim, lr 5e-5, weight decay 0.01 except biases and LayerNorm), linear warm-up and
decay, gradients clipped to global norm 1.0. bf16 is the Trainer's CPU path, torch.autocast("cpu",
dtype=torch.bfloat16) around the forward pass (weights and optimizer stay float32).

Padding: fixed = every batch max_seq_length wide; dynamic = DataCollatorWithPadding's default,
each shuffled batch padded to its longest row (no length grouping, the Trainer default).
Protocol: after setup the worker prints `READY`; each `round` line on stdin runs warmup + timed
steps (training goes on from the previous round, on the same batches as every round) and prints
`RESULT {json}`; `quit` or end of input exits. Each step is timed on its own (torch on the CPU is
synchronous; `float(loss)` ends it), batch assembly included; the warm-up steps are excluded.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

T_START = time.time()

import numpy as np  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--features", required=True)
    p.add_argument("--model_dir", required=True)
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--padding", choices=("fixed", "dynamic"), default="fixed")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--max_seq_length", type=int, default=128)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3, help="for the length of the LR schedule")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args(argv)


def batches(d, batch_size, max_seq_length, padding, seed):
    """Shuffled batches (remainder dropped, as the other frameworks), endless."""
    rng = np.random.default_rng(seed)
    n = len(d["lengths"])
    while True:
        order = rng.permutation(n)
        for i in range(0, n - batch_size + 1, batch_size):
            rows = order[i:i + batch_size]
            width = max_seq_length if padding == "fixed" else int(d["lengths"][rows].max())
            yield {k: d[k][rows, :width] for k in ("input_ids", "input_mask", "segment_ids")}, \
                d["label_ids"][rows]


def main(argv=None) -> None:
    a = parse_args(argv)
    import torch
    import transformers
    from transformers import BertForSequenceClassification, get_linear_schedule_with_warmup

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    model = BertForSequenceClassification.from_pretrained(a.model_dir, num_labels=2)
    model.train()
    no_decay = ("bias", "LayerNorm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)],
         "weight_decay": 0.01},
        {"params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)],
         "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=5e-5)
    total = (a.warmup + a.steps) * a.rounds
    scheduler = get_linear_schedule_with_warmup(optimizer, max(1, total // 10), total + 1)
    d = dict(np.load(a.features))
    setup_seconds = time.time() - T_START

    def step(features, labels):
        inputs = {"input_ids": torch.from_numpy(features["input_ids"]).long(),
                  "attention_mask": torch.from_numpy(features["input_mask"]).long(),
                  "token_type_ids": torch.from_numpy(features["segment_ids"]).long(),
                  "labels": torch.from_numpy(labels).long()}
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.dtype == "bf16"):
            loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss)

    def run_round() -> dict:
        times, widths, first, loss = [], [], [], float("nan")
        it = batches(d, a.batch_size, a.max_seq_length, a.padding, a.seed)  # same every round
        t_round = time.perf_counter()
        for i in range(a.warmup + a.steps):
            t0 = time.perf_counter()
            features, labels = next(it)  # batch assembly counts, as a DataLoader's would
            loss = step(features, labels)
            dt = time.perf_counter() - t0
            if i < a.warmup:
                first.append(dt)
            else:
                times.append(dt)
                widths.append(int(features["input_ids"].shape[1]))
        return {
            "framework": "hf_torch", "dtype": a.dtype, "xla": "off", "padding": a.padding,
            "xla_flags": "", "examples_per_second": a.batch_size * len(times) / sum(times),
            "step_seconds": times, "timed_widths": widths, "first_steps_seconds": first,
            "setup_seconds": setup_seconds, "round_seconds": time.perf_counter() - t_round,
            "final_loss": loss, "torch_version": torch.__version__,
            "transformers_version": transformers.__version__,
            "threads": torch.get_num_threads(),
        }

    serve(run_round)


def serve(run_round) -> None:
    print("READY", flush=True)
    for line in sys.stdin:
        if line.strip() == "round":
            result = run_round()
            result["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print("RESULT " + json.dumps(result), flush=True)
        elif line.strip() == "quit":
            break


if __name__ == "__main__":
    main()

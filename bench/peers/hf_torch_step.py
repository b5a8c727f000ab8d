"""Hugging Face PyTorch fine-tuning rounds (the peer) for bench_finetune.py: a worker subprocess
in the project venv.

transformers' BertForSequenceClassification from the all-MiniLM-L6-v2 directory (2 labels),
torch on the CPU with 2 threads, and the optimizer step the HF Trainer takes by default:
AdamW (torch.optim, lr 5e-5, weight decay 0.01 except biases and LayerNorm), linear warm-up and
decay, gradients clipped to global norm 1.0. bf16 is the Trainer's CPU path, torch.autocast("cpu",
dtype=torch.bfloat16) around the forward pass (weights and optimizer stay float32).

Padding: fixed = every batch max_seq_length wide; dynamic = DataCollatorWithPadding's default,
each shuffled batch padded to its longest row (no length grouping, the Trainer default).
Protocol and timing: bench/peers/worker.py. A round is warmup + timed steps (training goes on
from the previous round, on the same batches every round); torch on the CPU is synchronous and
`float(loss)` ends a step; batch assembly counts, as a DataLoader's would.
"""

from __future__ import annotations

import time

T_START = time.time()

import numpy as np  # noqa: E402

import worker  # noqa: E402  (bench/peers/worker.py)


def parse_args(argv=None):
    p = worker.arg_parser(__doc__.split("\n")[0])
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

    def step(batch):
        features, labels = batch
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
        it = batches(d, a.batch_size, a.max_seq_length, a.padding, a.seed)  # same every round
        info = worker.timed_round(step, it, a.warmup, a.steps,
                                  lambda batch: batch[0]["input_ids"].shape[1])
        return worker.result(a, "hf_torch", "off", "", setup_seconds, info,
                             torch_version=torch.__version__,
                             transformers_version=transformers.__version__,
                             threads=torch.get_num_threads())

    worker.serve(run_round)


if __name__ == "__main__":
    main()

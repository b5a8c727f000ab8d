"""The accuracy peer: fine-tune Hugging Face's PyTorch BertForSequenceClassification on a GLUE task
with the same checkpoint and hyperparameters as bert_tf, and print the dev metrics.

  .venv/bin/python bench/hf_glue_reference.py --task=MRPC --seed=42 \
      --model=../shared/data/models/all-MiniLM-L6-v2 --data_dir=../shared/data/glue/MRPC

Hyperparameters as in the issue's reference: AdamW (lr 5e-5, weight decay 0.01, not on biases
and LayerNorm), 10% linear warm-up then linear decay, batch 32, 3 epochs, max_seq_length 128,
dynamic padding, gradient clipping at 1.0. The data are read with bert_tf's GLUE reader (the
files are the same either way) and tokenized with transformers' own BertTokenizer.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import transformers

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bert_tf.data import glue  # noqa: E402
from bert_tf import metrics  # noqa: E402


def encode(tokenizer, examples, labels, regression, max_len):
    label_map = {l: i for i, l in enumerate(labels)}
    rows = []
    for e in examples:
        enc = tokenizer(e.text_a, e.text_b, truncation="longest_first", max_length=max_len)
        label = float(e.label) if regression else label_map[e.label]
        rows.append((enc["input_ids"], enc["token_type_ids"], label))
    return rows


def collate(rows, regression):
    width = max(len(r[0]) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    types = torch.zeros_like(ids)
    mask = torch.zeros_like(ids)
    for i, (a, t, _) in enumerate(rows):
        ids[i, :len(a)] = torch.tensor(a)
        types[i, :len(t)] = torch.tensor(t)
        mask[i, :len(a)] = 1
    labels = torch.tensor([r[2] for r in rows],
                          dtype=torch.float32 if regression else torch.long)
    return ids, types, mask, labels


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--task", default="MRPC")
    p.add_argument("--model", default="../shared/data/models/all-MiniLM-L6-v2")
    p.add_argument("--data_dir", default=None)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--learning_rate", type=float, default=5e-5)
    p.add_argument("--max_seq_length", type=int, default=128)
    p.add_argument("--bf16", action="store_true", help="torch.autocast(cpu, bfloat16)")
    p.add_argument("--output", default=None, help="append the result as a JSON line here")
    args = p.parse_args()

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(os.cpu_count())
    proc = glue.get_processor(args.task)
    data_dir = args.data_dir or f"../shared/data/glue/{proc.data_name}"
    labels = proc.get_labels()
    regression = proc.is_regression
    tok = transformers.BertTokenizer(os.path.join(args.model, "vocab.txt"), do_lower_case=True)
    train = encode(tok, proc.get_train_examples(data_dir), labels, regression,
                   args.max_seq_length)
    dev = encode(tok, proc.get_dev_examples(data_dir), labels, regression, args.max_seq_length)
    model = transformers.BertForSequenceClassification.from_pretrained(
        args.model, num_labels=1 if regression else len(labels))
    no_decay = ("bias", "LayerNorm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)],
         "weight_decay": 0.01},
        {"params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)],
         "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=args.learning_rate)
    steps_per_epoch = len(train) // args.batch_size
    total = int(steps_per_epoch * args.epochs)
    scheduler = transformers.get_linear_schedule_with_warmup(optimizer, int(0.1 * total), total)
    g = torch.Generator().manual_seed(args.seed)
    epoch_times, step = [], 0
    model.train()
    while step < total:
        t0 = time.time()
        order = torch.randperm(len(train), generator=g).tolist()
        for b in range(steps_per_epoch):
            if step >= total:
                break
            ids, types, mask, y = collate([train[i] for i in
                                           order[b * args.batch_size:(b + 1) * args.batch_size]],
                                          regression)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                out = model(input_ids=ids, token_type_ids=types, attention_mask=mask, labels=y)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
        epoch_times.append(time.time() - t0)
        print(f"epoch {len(epoch_times)}: {epoch_times[-1]:.1f} s", flush=True)
    model.eval()
    preds = []
    with torch.no_grad():
        for b in range(0, len(dev), 64):
            ids, types, mask, _ = collate(dev[b:b + 64], regression)
            logits = model(input_ids=ids, token_type_ids=types, attention_mask=mask).logits
            preds.append(logits[:, 0].float().numpy() if regression
                         else logits.argmax(-1).numpy())
    preds = np.concatenate(preds)
    gold = np.array([r[2] for r in dev])
    scores = metrics.compute_metrics(proc.metric_names, gold, preds)
    result = {"peer": "hf-torch", "task": args.task, "seed": args.seed, "bf16": args.bf16,
              "epochs": args.epochs, "seconds_per_epoch": float(np.mean(epoch_times)),
              **{k: float(v) for k, v in scores.items()}}
    print(json.dumps(result))
    if args.output:
        with open(args.output, "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()

"""The SQuAD accuracy and speed peer: Hugging Face PyTorch BertForQuestionAnswering fine-tuned the
way transformers' examples/pytorch/question-answering/run_qa.py does it (written here from its
documented behaviour, not copied): a fast tokenizer cuts each question + context into windows
with `stride` tokens of overlap (HF's meaning of doc_stride), labels come from the offset
mapping (a window without the whole answer points at [CLS]), and post-processing takes the
n_best start and end logits per window, keeps spans inside the context, at most
max_answer_length tokens, and reads the answer text off the offsets; for 2.0 the smallest
[CLS] score over the windows is the null score (threshold 0).

  .venv/bin/python bench/hf_squad_reference.py \
      --train_file=../shared/data/squad/slices/train-v2.0-first10articles.json --answerable_only \
      --predict_file=../shared/data/squad/dev-v1.1.json --max_steps=273 --bf16

Prints one JSON line (scores by the official evaluate-v1.1.py / evaluate-v2.0.py beside the
data, seconds and examples per second of training); --output appends it to a file.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import transformers


def load(path, answerable_only):
    with open(path, encoding="utf-8") as f:
        data = json.load(f)["data"]
    rows = []
    for article in data:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                impossible = qa.get("is_impossible", False)
                if answerable_only and impossible:
                    continue
                rows.append({"id": qa["id"], "question": qa["question"].lstrip(),
                             "context": paragraph["context"], "answers": qa["answers"],
                             "impossible": impossible})
    return rows


def windows(tokenizer, rows, max_len, stride, padding):
    enc = tokenizer([r["question"] for r in rows], [r["context"] for r in rows],
                    truncation="only_second", max_length=max_len, stride=stride,
                    return_overflowing_tokens=True, return_offsets_mapping=True,
                    padding="max_length" if padding else False)
    return enc


def train_labels(enc, rows):
    starts, ends = [], []
    for i, offsets in enumerate(enc["offset_mapping"]):
        row = rows[enc["overflow_to_sample_mapping"][i]]
        cls = 0  # [CLS] opens every window
        seq = enc.sequence_ids(i)
        if row["impossible"] or not row["answers"]:
            starts.append(cls), ends.append(cls)
            continue
        a = row["answers"][0]
        s_char, e_char = a["answer_start"], a["answer_start"] + len(a["text"])
        first = seq.index(1)
        last = len(seq) - 1 - seq[::-1].index(1)
        if not (offsets[first][0] <= s_char and offsets[last][1] >= e_char):
            starts.append(cls), ends.append(cls)
            continue
        s = first
        while s <= last and offsets[s][0] <= s_char:
            s += 1
        e = last
        while e >= first and offsets[e][1] >= e_char:
            e -= 1
        starts.append(s - 1), ends.append(e + 1)
    return starts, ends


def collate(enc, idx, extra=None):
    width = max(len(enc["input_ids"][i]) for i in idx)
    out = {k: torch.zeros((len(idx), width), dtype=torch.long)
           for k in ("input_ids", "token_type_ids", "attention_mask")}
    for b, i in enumerate(idx):
        n = len(enc["input_ids"][i])
        for k in out:
            out[k][b, :n] = torch.tensor(enc[k][i])
    if extra:
        for k, v in extra.items():
            out[k] = torch.tensor([v[i] for i in idx])
    return out


def postprocess(enc, rows, starts, ends, n_best, max_answer, version_2):
    by_example = {}
    for i, e in enumerate(enc["overflow_to_sample_mapping"]):
        by_example.setdefault(e, []).append(i)
    preds, null_odds = {}, {}
    for e, row in enumerate(rows):
        best, null = None, None
        for i in by_example.get(e, []):
            seq = enc.sequence_ids(i)
            offsets = enc["offset_mapping"][i]
            s_log, e_log = starts[i], ends[i]
            score_null = s_log[0] + e_log[0]
            if null is None or score_null < null:
                null = score_null
            for s in np.argsort(s_log)[::-1][:n_best]:
                for t in np.argsort(e_log)[::-1][:n_best]:
                    if s >= len(seq) or t >= len(seq) or seq[s] != 1 or seq[t] != 1:
                        continue
                    if t < s or t - s + 1 > max_answer:
                        continue
                    score = s_log[s] + e_log[t]
                    if best is None or score > best[0]:
                        best = (score, row["context"][offsets[s][0]:offsets[t][1]])
        text = best[1] if best else ""
        if version_2:
            diff = float(null - (best[0] if best else -1e9))
            null_odds[row["id"]] = diff
            text = "" if diff > 0.0 else text
        preds[row["id"]] = text
    return preds, null_odds


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="../shared/data/models/all-MiniLM-L6-v2")
    p.add_argument("--train_file", required=True)
    p.add_argument("--predict_file", required=True)
    p.add_argument("--answerable_only", action="store_true", help="drop is_impossible questions "
                   "from training (a v1.1-style run on a 2.0 file)")
    p.add_argument("--version_2", action="store_true")
    p.add_argument("--max_steps", type=int, required=True, help="optimizer steps (bert_tf's "
                   "count for the same recipe, so both see as many examples)")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--learning_rate", type=float, default=5e-5)
    p.add_argument("--max_seq_length", type=int, default=384)
    p.add_argument("--doc_stride", type=int, default=128, help="HF's meaning: overlap")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--bf16", action="store_true", help="torch.autocast(cpu, bfloat16)")
    p.add_argument("--pad_to_max_length", action="store_true", help="run_qa's default; "
                   "without it batches are padded to their longest window")
    p.add_argument("--predict", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--output", default=None)
    args = p.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(os.cpu_count())
    tokenizer = transformers.AutoTokenizer.from_pretrained(args.model, use_fast=True)
    train_rows = load(args.train_file, args.answerable_only)
    t0 = time.time()
    train = windows(tokenizer, train_rows, args.max_seq_length, args.doc_stride,
                    args.pad_to_max_length)
    convert_seconds = time.time() - t0
    s_pos, e_pos = train_labels(train, train_rows)
    model = transformers.BertForQuestionAnswering.from_pretrained(args.model)
    no_decay = ("bias", "LayerNorm.weight")
    groups = [
        {"params": [q for n, q in model.named_parameters() if not any(k in n for k in no_decay)],
         "weight_decay": 0.01},
        {"params": [q for n, q in model.named_parameters() if any(k in n for k in no_decay)],
         "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=args.learning_rate)
    scheduler = transformers.get_linear_schedule_with_warmup(
        optimizer, int(0.1 * args.max_steps), args.max_steps)
    g = torch.Generator().manual_seed(args.seed)
    n = len(train["input_ids"])
    per_epoch = n // args.batch_size
    step, order, seen = 0, [], 0
    model.train()
    t0 = time.time()
    while step < args.max_steps:
        if step % per_epoch == 0:
            order = torch.randperm(n, generator=g).tolist()
        b = step % per_epoch
        idx = order[b * args.batch_size:(b + 1) * args.batch_size]
        batch = collate(train, idx, {"start_positions": s_pos, "end_positions": e_pos})
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        step += 1
        seen += len(idx)
        if step % 20 == 0:
            print(f"step {step}/{args.max_steps} loss {loss.item():.4f} "
                  f"{seen / (time.time() - t0):.1f} ex/s", flush=True)
    train_seconds = time.time() - t0
    result = {"peer": "hf-torch", "bf16": args.bf16, "pad_to_max_length": args.pad_to_max_length,
              "train_windows": n, "steps": step, "train_seconds": train_seconds,
              "train_examples_per_second": seen / train_seconds,
              "train_convert_seconds": convert_seconds, "learning_rate": args.learning_rate}
    if args.predict:
        rows = load(args.predict_file, False)
        dev = windows(tokenizer, rows, args.max_seq_length, args.doc_stride, False)
        model.eval()
        starts, ends = [], []
        t0 = time.time()
        with torch.no_grad():
            for b in range(0, len(dev["input_ids"]), 64):
                idx = list(range(b, min(b + 64, len(dev["input_ids"]))))
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                    out = model(**collate(dev, idx))
                for k, i in enumerate(idx):
                    width = len(dev["input_ids"][i])
                    starts.append(out.start_logits[k, :width].float().numpy())
                    ends.append(out.end_logits[k, :width].float().numpy())
        preds, null_odds = postprocess(dev, rows, starts, ends, 20, 30, args.version_2)
        result["predict_seconds"] = time.time() - t0
        result["predict_windows"] = len(dev["input_ids"])
        here = os.path.dirname(os.path.abspath(args.predict_file))
        scripts = [os.path.join(d, f"evaluate-v{'2.0' if args.version_2 else '1.1'}.py")
                   for d in (here, os.path.dirname(here))]
        script = next(s for s in scripts if os.path.exists(s))
        with tempfile.TemporaryDirectory() as tmp:
            pred_path = os.path.join(tmp, "predictions.json")
            with open(pred_path, "w") as f:
                json.dump(preds, f)
            cmd = [sys.executable, script, args.predict_file, pred_path]
            if args.version_2:
                odds_path = os.path.join(tmp, "null_odds.json")
                with open(odds_path, "w") as f:
                    json.dump(null_odds, f)
                cmd += ["-n", odds_path, "-t", "1e30"]  # threshold 0 is in the predictions
            result.update(json.loads(subprocess.run(cmd, capture_output=True, text=True,
                                                    check=True).stdout))
    print(json.dumps(result))
    if args.output:
        with open(args.output, "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()

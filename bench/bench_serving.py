"""Serving latency, side by side in one process: the bert_tf SavedModel (raw strings in, the
tokenizer in its graph), onnxruntime (ids in; this project's Python tokenizer on the client) and
Hugging Face PyTorch (BertTokenizerFast + BertForSequenceClassification) answering MRPC pairs
with probabilities, text to probabilities end to end.

  python bench/bench_serving.py --model_dir RUN [--rounds 5] [--output FILE]

RUN: a run_classifier.py output_dir (e.g. `make demo`'s output/mrpc-bf16). The three forms of
its model are written into RUN/bench_serving/ (export_model.py's SavedModel and ONNX, the
Hugging Face checkpoint of the same weights), once.

Cases: batch 1 and batch 32, at sequence 128 (pairs long enough that every input is cut to 128
pieces) and at the text's own length (MRPC dev pairs; each runner pads a batch to its longest).
Each round runs every runner on every case in turn (--calls timed calls per case after
--warmup), so the machine's drift hits them alike; p50 and p99 are over all rounds' calls,
throughput is texts per second at the p50. Threads: all the machine's cores for each runner
(TensorFlow's default, torch.set_num_threads, onnxruntime's intra_op_num_threads).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
SHARED = os.path.join(ROOT, "..", "shared", "data")
MRPC_DEV = os.path.join(SHARED, "glue", "MRPC", "dev.tsv")
SEQ = 128


def pairs():
    with open(MRPC_DEV, encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    return [(r[3], r[4]) for r in rows]


def long_pairs(short):
    """Pairs of three MRPC sentences each side: over 128 pieces, so every input is cut to 128."""
    out = []
    for i in range(0, len(short) - 6, 3):
        out.append((" ".join(a for a, _ in short[i:i + 3]), " ".join(b for _, b in short[i:i + 3])))
    return out


def prepare(model_dir, work):
    """The SavedModel, the ONNX folder and the Hugging Face checkpoint of the run's model."""
    os.makedirs(work, exist_ok=True)
    for fmt in ("saved_model", "onnx"):
        target = os.path.join(work, fmt)
        if not os.path.exists(target):
            subprocess.run([sys.executable, os.path.join(ROOT, "export_model.py"),
                            f"--model_dir={model_dir}", f"--export={fmt}",
                            f"--export_dir={target}", f"--max_seq_length={SEQ}"], check=True)
    hf = os.path.join(work, "huggingface")
    if not os.path.exists(hf):
        from bert_tf import checkpoints
        from bert_tf.export import ExportArgs, _run_source

        source = _run_source(ExportArgs(model_dir=model_dir))
        checkpoints.save_huggingface(source.model, hf)
        import shutil
        shutil.copy(source.vocab_file, os.path.join(hf, "vocab.txt"))
    return {fmt: os.path.join(work, fmt) for fmt in ("saved_model", "onnx", "huggingface")}


class SavedModelRunner:
    name = "bert_tf SavedModel (raw strings)"

    def __init__(self, path):
        import tensorflow as tf
        import tensorflow_text  # noqa: F401

        self.tf = tf
        self.fn = tf.saved_model.load(path).signatures["text_pair"]

    def __call__(self, batch):
        out = self.fn(text_a=self.tf.constant([a for a, _ in batch]),
                      text_b=self.tf.constant([b for _, b in batch]))
        return out["probabilities"].numpy()


class OnnxRunner:
    name = "onnxruntime (Python tokenizer)"

    def __init__(self, path, threads):
        import importlib.util

        import numpy as np
        import onnxruntime

        spec = importlib.util.spec_from_file_location("tokenization",
                                                      os.path.join(path, "tokenization.py"))
        tokenization = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(tokenization)
        info = json.load(open(os.path.join(path, "serving_info.json")))
        self.np = np
        self.tokenizer = tokenization.FullTokenizer(os.path.join(path, "vocab.txt"),
                                                    do_lower_case=info["do_lower_case"])
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(os.path.join(path, "model.onnx"), options,
                                                    providers=["CPUExecutionProvider"])

    def __call__(self, batch):
        np = self.np
        rows = []
        for a, b in batch:
            ta, tb = self.tokenizer.tokenize(a), self.tokenizer.tokenize(b)
            while len(ta) + len(tb) > SEQ - 3:
                (ta if len(ta) > len(tb) else tb).pop()
            ids = self.tokenizer.convert_tokens_to_ids(["[CLS]"] + ta + ["[SEP]"] + tb + ["[SEP]"])
            rows.append((ids, len(ta) + 2))
        width = max(len(ids) for ids, _ in rows)
        feed = {k: np.zeros((len(rows), width), np.int32)
                for k in ("input_ids", "input_mask", "segment_ids")}
        for i, (ids, first) in enumerate(rows):
            feed["input_ids"][i, :len(ids)] = ids
            feed["input_mask"][i, :len(ids)] = 1
            feed["segment_ids"][i, first:len(ids)] = 1
        logits = self.session.run(["logits"], feed)[0]
        e = np.exp(logits - logits.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)


class TorchRunner:
    name = "Hugging Face PyTorch (fast tokenizer)"

    def __init__(self, path, threads):
        import torch
        from transformers import BertForSequenceClassification, BertTokenizerFast

        torch.set_num_threads(threads)
        self.torch = torch
        self.tokenizer = BertTokenizerFast(os.path.join(path, "vocab.txt"), do_lower_case=True)
        self.model = BertForSequenceClassification.from_pretrained(path).eval()

    def __call__(self, batch):
        with self.torch.inference_mode():
            enc = self.tokenizer([a for a, _ in batch], [b for _, b in batch], padding=True,
                                 truncation="longest_first", max_length=SEQ,
                                 return_tensors="pt")
            return self.torch.softmax(self.model(**enc).logits, -1).numpy()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=10, help="timed calls per case per round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--output", default=None, help="JSON Lines file to append to")
    args = parser.parse_args()

    import numpy as np

    paths = prepare(args.model_dir, os.path.join(args.model_dir, "bench_serving"))
    threads = os.cpu_count()
    runners = [SavedModelRunner(paths["saved_model"]), OnnxRunner(paths["onnx"], threads),
               TorchRunner(paths["huggingface"], threads)]
    short = pairs()
    cases = {"batch 1, seq 128": long_pairs(short)[:1], "batch 32, seq 128": long_pairs(short)[:32],
             "batch 1, own length": short[:1], "batch 32, own length": short[:32]}
    # The three agree on what they answer (same weights, same ids) before they are timed. On
    # pairs cut to 128 pieces Hugging Face's longest_first cuts otherwise than Google's rule
    # (the ids differ): only the two bert_tf forms are compared there.
    for case, batch in cases.items():
        answers = [r(batch) for r in runners]
        for r, a in zip(runners[1:], answers[1:]):
            gap = float(np.abs(a - answers[0]).max())
            if isinstance(r, TorchRunner) and "128" in case:
                continue
            assert gap < 1e-3, f"{r.name} differs from the SavedModel by {gap} on {case}"
    times = {(r.name, c): [] for r in runners for c in cases}
    for round_ in range(args.rounds):
        for case, batch in cases.items():
            for r in runners:
                for _ in range(args.warmup):
                    r(batch)
                for _ in range(args.calls):
                    start = time.perf_counter()
                    r(batch)
                    times[(r.name, case)].append(time.perf_counter() - start)
        print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
    rows = []
    for case, batch in cases.items():
        print(f"\n{case}")
        for r in runners:
            t = np.array(times[(r.name, case)]) * 1000
            p50, p99 = float(np.percentile(t, 50)), float(np.percentile(t, 99))
            rows.append({"case": case, "runner": r.name, "p50_ms": round(p50, 2),
                         "p99_ms": round(p99, 2), "texts_per_s": round(len(batch) / p50 * 1000, 1),
                         "calls": len(t)})
            print(f"  {r.name:40s} p50 {p50:8.2f} ms  p99 {p99:8.2f} ms  "
                  f"{len(batch) / p50 * 1000:8.1f} texts/s")
    if args.output:
        with open(args.output, "a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps({**row, "date": time.strftime("%Y-%m-%d"),
                                    "threads": threads}) + "\n")


if __name__ == "__main__":
    main()

"""Serving latency, side by side in one run: the bert_tf SavedModel (raw strings in, the
tokenizer in its graph), onnxruntime (ids in; this project's Python tokenizer on the client) and
Hugging Face PyTorch (BertTokenizerFast + BertForSequenceClassification) answering MRPC pairs
with probabilities, text to probabilities end to end.

  python bench/bench_serving.py --model_dir RUN [--rounds 5] [--output FILE]

RUN: a run_classifier.py output_dir (e.g. `make demo`'s output/mrpc-bf16). The three forms of
its model are written into RUN/bench_serving/ (export_model.py's SavedModel and ONNX, the
Hugging Face checkpoint of the same weights), once.

Cases: batch 1 and batch 32, at sequence 128 (pairs long enough that every input is cut to 128
pieces) and at the text's own length (MRPC dev pairs; each runner pads a batch to its longest).
Each runner lives in a process of its own; each round runs every runner on every case in turn
(--calls timed calls per case after --warmup), so the machine's drift hits them alike; p50 and
p99 are over all rounds' calls, throughput is texts per second at the p50. Threads: all the
machine's cores for each runner: torch.set_num_threads, onnxruntime's intra_op_num_threads,
and for TensorFlow what the export's serving_info.json asks, set as azure/scoring/score.py
sets it (one inter-op thread per chain of the forward pass, the cores shared among them;
`--tf_threads=default` keeps TensorFlow's own).
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
        info = os.path.join(target, "serving_info.json")
        if fmt == "saved_model" and os.path.exists(info):
            with open(info, encoding="utf-8") as f:
                if "parallel_chains" not in json.load(f):  # an export from before the chains
                    import shutil
                    shutil.rmtree(target)
        if not os.path.exists(target):
            subprocess.run([sys.executable, os.path.join(ROOT, "export_model.py"),
                            f"--model_dir={model_dir}", f"--export={fmt}",
                            f"--export_dir={target}", f"--max_seq_length={SEQ}"], check=True)
    hf = os.path.join(work, "huggingface")
    if not os.path.exists(hf):  # in a process of its own: TensorFlow's threads are set here
        subprocess.run([sys.executable, os.path.abspath(__file__), "--write_huggingface",
                        model_dir, hf], check=True)
    return {fmt: os.path.join(work, fmt) for fmt in ("saved_model", "onnx", "huggingface")}


def write_huggingface(model_dir, hf):
    """The run's model as a Hugging Face checkpoint (config.json, weights, vocab.txt)."""
    import shutil

    from bert_tf import checkpoints
    from bert_tf.export import ExportArgs, _run_source

    source = _run_source(ExportArgs(model_dir=model_dir))
    checkpoints.save_huggingface(source.model, hf)
    shutil.copy(source.vocab_file, os.path.join(hf, "vocab.txt"))


def tensorflow_threads(saved_model, how):
    """TensorFlow's threads for the SavedModel runner, set before its first op: "export" as
    azure/scoring/score.py sets them from serving_info.json, "default" untouched. -> a label."""
    if how == "default":
        return "default"
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "score", os.path.join(ROOT, "azure", "scoring", "score.py"))
    score = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(score)
    with open(os.path.join(saved_model, "serving_info.json"), encoding="utf-8") as f:
        return score.configure_threads(json.load(f))


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


RUNNERS = {"saved_model": SavedModelRunner, "onnx": OnnxRunner, "huggingface": TorchRunner}


def serve(kind, path, threads, tf_threads, conn):
    """One runner in a process of its own (`answer` over `conn`); an exception is sent to the
    parent as its traceback, which the parent raises."""
    import traceback

    try:
        answer(kind, path, threads, tf_threads, conn)
    except Exception:
        conn.send(RuntimeError(f"the {kind} runner failed:\n{traceback.format_exc()}"))


def answer(kind, path, threads, tf_threads, conn):
    """Load the runner, then answer the parent's requests: (batch, warmup, calls) -> the calls'
    seconds, or with calls=0 the runner's answer to the batch; None ends."""
    label = None
    if kind == "saved_model":
        label = tensorflow_threads(path, tf_threads)
        runner = SavedModelRunner(path)
    else:
        runner = RUNNERS[kind](path, threads)
    conn.send((runner.name, label))
    while (request := conn.recv()) is not None:
        batch, warmup, calls = request
        if not calls:
            conn.send(runner(batch))
            continue
        for _ in range(warmup):
            runner(batch)
        seconds = []
        for _ in range(calls):
            start = time.perf_counter()
            runner(batch)
            seconds.append(time.perf_counter() - start)
        conn.send(seconds)


class Worker:
    """A runner in a process of its own: one process's threads, allocator and caches never
    slow another's calls (TensorFlow's threads idling in the process cost torch ~1 ms a call)."""

    def __init__(self, kind, path, threads, tf_threads):
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=serve, daemon=True,
                                       args=(kind, path, threads, tf_threads, child))
        self.process.start()
        child.close()  # the child's end lives in the child only: its death ends recv()
        self.kind = kind
        self.name, self.tf_threads = self._receive()

    def _receive(self):
        try:
            message = self.conn.recv()
        except EOFError:
            raise RuntimeError(f"the {self.kind} runner's process died (exit status "
                               f"{self.process.exitcode})") from None
        if isinstance(message, Exception):
            raise message
        return message

    def ask(self, batch, warmup=0, calls=0):
        self.conn.send((batch, warmup, calls))
        return self._receive()

    def close(self):
        self.conn.send(None)
        self.process.join(timeout=60)


def main():
    if sys.argv[1:2] == ["--write_huggingface"]:
        return write_huggingface(*sys.argv[2:4])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=10, help="timed calls per case per round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--output", default=None, help="JSON Lines file to append to")
    parser.add_argument("--tf_threads", choices=("export", "default"), default="export",
                        help="TensorFlow's threads: as the export asks (what score.py sets) "
                             "or TensorFlow's defaults")
    args = parser.parse_args()

    import numpy as np

    paths = prepare(args.model_dir, os.path.join(args.model_dir, "bench_serving"))
    threads = os.cpu_count()
    runners = [Worker(kind, paths[kind], threads, args.tf_threads) for kind in RUNNERS]
    tf_threads = runners[0].tf_threads
    print(f"TensorFlow threads: {tf_threads}", file=sys.stderr)
    short = pairs()
    cases = {"batch 1, seq 128": long_pairs(short)[:1], "batch 32, seq 128": long_pairs(short)[:32],
             "batch 1, own length": short[:1], "batch 32, own length": short[:32]}
    # The three agree on what they answer (same weights, same ids) before they are timed. On
    # pairs cut to 128 pieces Hugging Face's longest_first cuts otherwise than Google's rule
    # (the ids differ): only the two bert_tf forms are compared there.
    for case, batch in cases.items():
        answers = [r.ask(batch) for r in runners]
        for r, a in zip(runners[1:], answers[1:]):
            gap = float(np.abs(a - answers[0]).max())
            if r.kind == "huggingface" and "128" in case:
                continue
            assert gap < 1e-3, f"{r.name} differs from the SavedModel by {gap} on {case}"
    times = {(r.name, c): [] for r in runners for c in cases}
    for round_ in range(args.rounds):
        for case, batch in cases.items():
            for r in runners:
                time.sleep(0.2)  # the last runner's threads stop spinning
                times[(r.name, case)] += r.ask(batch, args.warmup, args.calls)
        print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
    for r in runners:
        r.close()
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
                                    "threads": threads, "tf_threads": tf_threads,
                                    "processes": "one per runner"}) + "\n")


if __name__ == "__main__":
    main()

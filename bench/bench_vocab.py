"""A vocabulary built from the corpus against Google's, by pre-training the same BERT-Mini with
each from scratch.

  python bench/bench_vocab.py --work_dir DIR [--steps 1000] [--output FILE]

1. build_vocab.py on python_docs_train.txt with Google's size (30,522 rows, 994 unused;
   --min_frequency=1, as the default 2 leaves only 21,220 rows on this 1 M-word text), so both
   models have the same number of parameters and the same softmax width.
2. create_pretraining_data.py for each vocabulary on the same text with the same flags and seed
   (seq 128, 20 predictions, dupe_factor 2; held-out: python_docs_heldout.txt, dupe_factor 1).
3. run_pretraining.py: BERT-Mini (configs/bert_mini_config.json) from random weights, the same
   steps, batch, LAMB schedule, seed and dtype for both; every held-out instance evaluated.

What is compared, and why it is fair: the same number of sequences and of masked predictions
(20 a sequence) seen in training, the same model size, the same held-out documents. The held-out
masked-LM accuracy is per word piece predicted; with fewer pieces per word each sequence of
the domain vocabulary holds more text (reported beside it, with pieces per word on the held-out
text), so equal per-piece accuracy already means more text predicted correctly. Each step is
skipped when its output exists (re-running resumes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.path.join(ROOT, "..", "shared", "data")
TRAIN = os.path.join(SHARED, "corpus", "python_docs_train.txt")
HELDOUT = os.path.join(SHARED, "corpus", "python_docs_heldout.txt")
GOOGLE_VOCAB = os.path.join(SHARED, "vocab", "uncased_vocab.txt")


def sh(args, done_when=None):
    if done_when and os.path.exists(done_when):
        return
    print("+", " ".join(args), flush=True)
    subprocess.run([sys.executable] + args, check=True, cwd=ROOT)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work_dir", required=True)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--output", default=None)
    a = p.parse_args()
    work = os.path.abspath(a.work_dir)
    vocab_dir = os.path.join(work, "docs_vocab")
    sh(["build_vocab.py", f"--input_file={TRAIN}", f"--output_dir={vocab_dir}",
        "--vocab_size=30522", "--min_frequency=1", f"--heldout_file={HELDOUT}",
        f"--compare_vocab_file={GOOGLE_VOCAB}",
        "--noprogress"], done_when=os.path.join(vocab_dir, "vocab_summary.json"))
    vocabs = {"google": GOOGLE_VOCAB, "docs": os.path.join(vocab_dir, "vocab.txt")}
    results = {}
    for name, vocab in vocabs.items():
        data = os.path.join(work, f"data_{name}")
        common = [f"--vocab_file={vocab}", "--max_seq_length=128", "--max_predictions_per_seq=20",
                  "--random_seed=12345", "--num_workers=2", "--noprogress"]
        sh(["create_pretraining_data.py", f"--input_file={TRAIN}",
            f"--output_file={data}/train.tfrecord", "--num_output_shards=2", "--dupe_factor=2"]
           + common, done_when=f"{data}/train.tfrecord.summary.json")
        sh(["create_pretraining_data.py", f"--input_file={HELDOUT}",
            f"--output_file={data}/heldout.tfrecord", "--dupe_factor=1"] + common,
           done_when=f"{data}/heldout.tfrecord.summary.json")
        out = os.path.join(work, f"mini_{name}")
        sh(["run_pretraining.py", f"--input_file={data}/train.tfrecord-*",
            f"--eval_input_file={data}/heldout.tfrecord",
            "--bert_config_file=configs/bert_mini_config.json", f"--vocab_file={vocab}",
            f"--output_dir={out}", "--do_train", "--do_eval", f"--num_train_steps={a.steps}",
            "--train_batch_size=32", "--learning_rate=2e-3", "--warmup_proportion=0.05",
            "--optimizer=lamb", "--dtype=bf16", "--log_steps=50",
            f"--eval_every_steps={max(a.steps // 4, 1)}", "--max_eval_steps=0",
            "--eval_batch_size=64", f"--save_checkpoints_steps={max(a.steps // 4, 1)}",
            "--seed=42", "--noprogress", "--tracking_uri=none"],
           done_when=os.path.join(out, "eval_results.json"))
        with open(os.path.join(out, "eval_results.json")) as f:
            final = json.load(f)
        with open(os.path.join(out, "metrics.jsonl")) as f:
            curve = [json.loads(l) for l in f if '"eval"' in l]
        with open(f"{data}/train.tfrecord.summary.json") as f:
            made = json.load(f)
        results[name] = {"vocab_file": vocab, "masked_lm_accuracy": final["masked_lm_accuracy"],
                         "masked_lm_loss": final.get("masked_lm_loss"),
                         "curve": [(r["step"], r.get("masked_lm_accuracy")) for r in curve],
                         "train_instances": made.get("instances")}
    with open(os.path.join(vocab_dir, "vocab_summary.json")) as f:
        heldout = json.load(f)["heldout"]
    results["docs"]["pieces_per_word"] = heldout["this"]["pieces_per_word"]
    results["google"]["pieces_per_word"] = heldout["compared"]["pieces_per_word"]
    line = {"bench": "vocab_from_scratch", "steps": a.steps, "model": "bert_mini",
            "results": results}
    print(json.dumps(line), flush=True)
    if a.output:
        with open(a.output, "a") as f:
            f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()

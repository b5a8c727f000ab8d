"""Continued pre-training of all-MiniLM-L6-v2 with its vocabulary extended for the Python docs:
does the model learn the new tokens?

  python bench/bench_extend.py --work_dir DIR [--new_tokens 200] [--steps 600] [--output FILE]

1. extend_vocab.py proposes --new_tokens words from python_docs_train.txt (count x pieces saved)
   and adds them (--mode=auto: the [unused] lines first).
2. create_pretraining_data.py with the extended vocabulary (train: dupe_factor 2; held-out:
   python_docs_heldout.txt, dupe_factor 1, every instance evaluated).
3. run_pretraining.py from the extended checkpoint (its MLM/NSP heads start fresh: the
   sentence-embedding checkpoint has none), checkpoints every --steps/4, --export=huggingface.
4. Each checkpoint (and the extended model before training) scored on the held-out records:
   masked-LM accuracy over all masked positions, and over those whose target is a new token.
5. The export loaded by transformers' BertForPreTraining: missing and unexpected keys listed.
Each step is skipped when its output exists (re-running resumes).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
SHARED = os.path.join(ROOT, "..", "shared", "data")
TRAIN = os.path.join(SHARED, "corpus", "python_docs_train.txt")
HELDOUT = os.path.join(SHARED, "corpus", "python_docs_heldout.txt")
MINILM = os.path.join(SHARED, "models", "all-MiniLM-L6-v2")
SEQ, PREDS = 128, 20


def sh(args, done_when=None):
    if done_when and os.path.exists(done_when):
        return
    print("+", " ".join(args), flush=True)
    subprocess.run([sys.executable] + args, check=True, cwd=ROOT)


def heldout_batches(path, batch_size=64):
    import tensorflow as tf

    schema = {name: tf.io.FixedLenFeature([n], tf.int64) for name, n in (
        ("input_ids", SEQ), ("input_mask", SEQ), ("segment_ids", SEQ),
        ("masked_lm_positions", PREDS), ("masked_lm_ids", PREDS))}
    schema["masked_lm_weights"] = tf.io.FixedLenFeature([PREDS], tf.float32)
    data = tf.data.TFRecordDataset([path]).map(lambda r: tf.io.parse_single_example(r, schema))
    for batch in data.batch(batch_size):
        yield {k: (v.numpy().astype("int32") if v.dtype == tf.int64 else v.numpy())
               for k, v in batch.items()}


def score(model, path, new_ids):
    import numpy as np

    hits = total = new_hits = new_total = 0
    for batch in heldout_batches(path):
        logits = np.asarray(model(batch, training=False)["mlm_logits"])
        guess = logits.argmax(-1)
        real = batch["masked_lm_weights"] > 0
        right = (guess == batch["masked_lm_ids"]) & real
        is_new = np.isin(batch["masked_lm_ids"], new_ids) & real
        hits += int(right.sum())
        total += int(real.sum())
        new_hits += int((right & is_new).sum())
        new_total += int(is_new.sum())
    return {"accuracy": hits / max(total, 1), "predictions": total,
            "new_token_accuracy": new_hits / max(new_total, 1), "new_token_predictions": new_total}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work_dir", required=True)
    p.add_argument("--new_tokens", type=int, default=200)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--output", default=None)
    a = p.parse_args()
    work = os.path.abspath(a.work_dir)
    extended = os.path.join(work, "minilm_docs")
    sh(["extend_vocab.py", f"--init_checkpoint={MINILM}", f"--corpus_file={TRAIN}",
        f"--num_new_tokens={a.new_tokens}", f"--output_dir={extended}"],
       done_when=os.path.join(extended, "extension.json"))
    vocab = os.path.join(extended, "vocab.txt")
    data = os.path.join(work, "data")
    common = [f"--vocab_file={vocab}", f"--max_seq_length={SEQ}",
              f"--max_predictions_per_seq={PREDS}", "--num_workers=2", "--noprogress"]
    sh(["create_pretraining_data.py", f"--input_file={TRAIN}",
        f"--output_file={data}/train.tfrecord", "--num_output_shards=2", "--dupe_factor=2"]
       + common, done_when=f"{data}/train.tfrecord.summary.json")
    sh(["create_pretraining_data.py", f"--input_file={HELDOUT}",
        f"--output_file={data}/heldout.tfrecord", "--dupe_factor=1"] + common,
       done_when=f"{data}/heldout.tfrecord.summary.json")
    out = os.path.join(work, "pretrain")
    every = max(a.steps // 4, 1)
    sh(["run_pretraining.py", f"--init_checkpoint={extended}",
        f"--input_file={data}/train.tfrecord-*", f"--eval_input_file={data}/heldout.tfrecord",
        f"--output_dir={out}", "--do_train", "--do_eval", f"--num_train_steps={a.steps}",
        "--train_batch_size=32", "--learning_rate=1e-4", "--warmup_proportion=0.1",
        "--dtype=bf16", "--log_steps=50", f"--save_checkpoints_steps={every}",
        "--keep_checkpoint_max=10", "--max_eval_steps=0", "--eval_batch_size=64",
        "--export=huggingface", "--seed=42", "--noprogress", "--tracking_uri=none"],
       done_when=os.path.join(out, "eval_results.json"))

    from bert_tf import checkpoints
    from bert_tf.config import BertConfig
    from bert_tf.modeling import BertPretrainer

    with open(os.path.join(extended, "extension.json")) as f:
        new_ids = [t["id"] for t in json.load(f)["tokens"]]
    config = BertConfig.from_json_file(os.path.join(extended, "config.json"))
    heldout = f"{data}/heldout.tfrecord"
    curve = []
    prefixes = sorted(glob.glob(os.path.join(out, "checkpoints", "ckpt-*.index")),
                      key=lambda n: int(re.search(r"ckpt-(\d+)", n).group(1)))
    for step, prefix in [(0, extended)] + [
            (int(re.search(r"ckpt-(\d+)", n).group(1)), n[:-len(".index")]) for n in prefixes]:
        model = BertPretrainer(config)
        report = checkpoints.load(model, prefix)  # step 0: no heads yet, they start fresh
        if step > 0 and report.missing:
            sys.exit(f"{prefix}: the heads did not load ({report.missing}): the score would "
                     "not be the model's")
        curve.append({"step": step, **score(model, heldout, new_ids)})
        print(json.dumps(curve[-1]), flush=True)
    import transformers

    _, info = transformers.BertForPreTraining.from_pretrained(
        os.path.join(out, "export", "huggingface"), output_loading_info=True)
    line = {"bench": "extended_vocab_continued_pretraining", "new_tokens": len(new_ids),
            "steps": a.steps, "curve": curve,
            "transformers_missing": info["missing_keys"],
            "transformers_unexpected": info["unexpected_keys"]}
    print(json.dumps(line), flush=True)
    if a.output:
        with open(a.output, "a") as f:
            f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()

"""Does MLflow tracking slow training down, when it works and when its store is unusable?

run_classifier.py fine-tunes a tiny random BERT (L2 H32, the real uncased vocabulary) on the
first 1,600 MRPC training pairs (seq 32, batch 16, 2 epochs = 200 steps), logging every step
(--log_steps=1: the most tracking calls a run can make), with four stores, run in turn for
several rounds:

  none      --tracking_uri=none: metrics.jsonl and TensorBoard only
  sqlite    the default SQLite store in the output folder
  dead      http://127.0.0.1:9: nobody listens (connection refused at once)
  readonly  sqlite:////proc/bert_tf/mlflow.db: a store that cannot be created

Per run: the training speed (median examples/s of the logged steps after the first 20, from
metrics.jsonl, so process start and imports are left out), the process wall time, and the
warnings printed. The figure is the median over rounds; the ratio is each store's over `none`.

    cd /work/main && .venv/bin/python bench/bench_tracking.py --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

STORES = {"none": "none", "sqlite": None, "dead": "http://127.0.0.1:9",
          "readonly": "sqlite:////proc/bert_tf/mlflow.db"}


def run(name: str, model: str, work: str) -> dict:
    out = os.path.join(work, name)
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, os.path.join(ROOT, "run_classifier.py"), "--task=MRPC",
           f"--data_dir={os.path.join(ROOT, '..', 'shared', 'data', 'glue', 'MRPC')}",
           f"--init_checkpoint={model}", f"--output_dir={out}", "--max_seq_length=32",
           "--do_train", "--max_train_examples=1600", "--train_batch_size=16",
           "--num_train_epochs=2", "--log_steps=1", "--save_checkpoints_steps=100000",
           "--progress=false"]
    if STORES[name] is not None:
        cmd.append(f"--tracking_uri={STORES[name]}")
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    wall = time.time() - t0
    if proc.returncode:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-2000:]}")
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    speeds = [r["examples_per_second"] for r in rows if r["split"] == "train" and r["step"] > 20]
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("W")]
    return {"examples_per_second": statistics.median(speeds), "wall_seconds": wall,
            "warnings": len(warnings), "steps": rows[-1]["step"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    from tests.test_run_classifier import tiny_dir

    work = tempfile.mkdtemp(prefix="bench_tracking_")
    model = tiny_dir(os.path.join(work, "tiny_bert"), dropout=0.1)
    results = {name: [] for name in STORES}
    for r in range(args.rounds):
        for name in STORES:
            results[name].append(run(name, model, work))
            print(f"round {r + 1} {name}: {results[name][-1]}", flush=True)
    base = statistics.median(x["examples_per_second"] for x in results["none"])
    base_wall = statistics.median(x["wall_seconds"] for x in results["none"])
    print("\n| store | examples/s (median) | vs none | process wall s | vs none | warnings |")
    print("|---|---|---|---|---|---|")
    table = []
    for name, runs in results.items():
        speed = statistics.median(x["examples_per_second"] for x in runs)
        wall = statistics.median(x["wall_seconds"] for x in runs)
        warnings = sorted({x["warnings"] for x in runs})
        table.append({"store": name, "examples_per_second": speed, "wall_seconds": wall,
                      "speed_ratio": speed / base, "wall_ratio": wall / base_wall,
                      "warnings": warnings, "runs": runs})
        print(f"| {name} | {speed:.0f} | {speed / base:.3f} | {wall:.1f} | "
              f"{wall / base_wall:.3f} | {warnings} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rounds": args.rounds, "table": table}, f, indent=1)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

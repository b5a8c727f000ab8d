"""bert_tf's pre-training step from two (or more) source trees, or with two environments, side by
side: one bench/peers/bert_tf_step.py worker per setting, started together, rounds alternating
(A, B, A, B, ...), the figure the median over rounds of each round's seq/s. For A/B tests of a
change to the step (the trees share this project's venv).

    git worktree add /tmp/base HEAD~1
    PYTHONPATH=. .venv/bin/python bench/profile_step.py trees --dtype fp32 --rounds 4 \\
        base=/tmp/base new=. ["flags=.::TF_XLA_FLAGS=--tf_xla_auto_jit=2;OTHER=1"]

A setting is NAME=TREE[::ENV], ENV a ';'-separated list of VAR=VALUE for that worker (AB_XLA=on
turns on --xla). Batch: bench_pretrain_step.py's (BERT-Small, batch 16, seq 128, 20 predictions,
WikiText-2), built once into --features.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # bench/
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)


def parse_setting(text: str) -> tuple[str, str, dict]:
    if "=" not in text:
        raise SystemExit(f"setting {text!r}: expected NAME=TREE[::VAR=VALUE;...]")
    name, rest = text.split("=", 1)
    tree, _, env_text = rest.partition("::")
    tree = os.path.abspath(tree)
    if not os.path.isfile(os.path.join(tree, "bench", "peers", "bert_tf_step.py")):
        raise SystemExit(f"setting {name}: {tree} is not a bert_tf source tree "
                         "(no bench/peers/bert_tf_step.py)")
    env = {}
    for item in filter(None, env_text.split(";")):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"setting {name}: {item!r} is not VAR=VALUE")
        env[key] = value
    return name, tree, env


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("settings", nargs="+", help="NAME=TREE[::VAR=VALUE;...]")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--features", default=os.path.join("/tmp", "bert_tf_pretrain_batch.npz"))
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    settings = [parse_setting(s) for s in a.settings]
    if not os.path.exists(a.features):
        from bench_pretrain_step import prepare_batch

        prepare_batch(a.features, 16, 128, 20)
    workers = []
    for name, tree, extra in settings:
        env = dict(os.environ, PYTHONPATH=tree, TF_CPP_MIN_LOG_LEVEL="2", **extra)
        xla = env.pop("AB_XLA", "off")
        cmd = [a.python, os.path.join(tree, "bench", "peers", "bert_tf_step.py"),
               "--task", "pretrain", "--features", a.features,
               "--bert_config_file", os.path.join(ROOT, "configs", "bert_small_config.json"),
               "--dtype", a.dtype, "--batch_size", "16", "--max_seq_length", "128",
               "--warmup", str(a.warmup), "--steps", str(a.steps), "--rounds", str(a.rounds),
               "--learning_rate", "1e-4", "--xla", xla]
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, bufsize=1)
        workers.append((name, proc))
    for name, proc in workers:
        if not any(line.startswith("READY") for line in proc.stdout):
            raise SystemExit(f"{name}: the worker exited before it was ready")
    seqs = {name: [] for name, _ in workers}
    for r in range(a.rounds):
        for name, proc in workers:
            proc.stdin.write("round\n")
            proc.stdin.flush()
            line = next((ln for ln in proc.stdout if ln.startswith("RESULT ")), None)
            if line is None:
                raise SystemExit(f"{name}: the worker died in round {r + 1}")
            seqs[name].append(json.loads(line[len("RESULT "):])["examples_per_second"])
        print(f"round {r + 1}: " + ", ".join(f"{n} {v[-1]:.2f}" for n, v in seqs.items()),
              flush=True)
    for _, proc in workers:
        proc.stdin.write("quit\n")
        proc.stdin.flush()
    first = statistics.median(seqs[workers[0][0]])
    report = {"args": vars(a), "settings": {}}
    for name, values in seqs.items():
        med = statistics.median(values)
        report["settings"][name] = {"seq_per_s": values, "median": med, "ratio": med / first}
        print(f"{name:12s} median {med:6.2f} seq/s   x{med / first:.3f} of {workers[0][0]}   "
              f"rounds {[round(v, 2) for v in values]}")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()

"""Fine-tuning throughput: bert_tf against Hugging Face PyTorch and TF Model Garden, side by side.

Same model dimensions (all-MiniLM-L6-v2: L6 H384 A12 I1536, vocab 30522), same data (GLUE MRPC
train, tokenized once here), same batch (32) and sequence length (128), one optimizer step =
forward + backward + global-norm clip + AdamW update. Each setting runs in its own subprocess:

  bert_tf       bench/peers/bert_tf_step.py       the project's train() loop, project venv
  hf_torch      bench/peers/hf_torch_step.py      BertForSequenceClassification, project venv
  model_garden  bench/peers/model_garden_step.py  tf-models-official BertClassifier, in the
                                                  separate venv of bench/setup_peers.sh
                                                  (TF_USE_LEGACY_KERAS=1)

Padding: "fixed" pads every batch to 128 (the like-for-like comparison); "dynamic" is each
framework's realistic default: bert_tf's length buckets of 32, HF's pad-to-longest-in-batch
(DataCollatorWithPadding). Model Garden's classifier pipeline reads fixed-length records, so it
only runs "fixed".

Settings are run in groups of comparable ones (fixed fp32 without XLA: bert_tf, HF, Model
Garden; fixed fp32 with XLA; the same in bf16; dynamic fp32; dynamic bf16). A group's workers
start together (each prints READY after its setup), then run their rounds alternately: A, B, C,
A, B, C, ... so a busy spell on the shared machine hits every framework of the group. A setting's
figure is the median over rounds of its steady-state examples/s (warm-up and first-of-a-shape
steps excluded; each worker documents its timing). Workers stay alive between rounds, so setup
(imports, model build) is paid once per setting; bert_tf's rounds each call train() anew and so
trace (and under XLA compile) again in their warm-up steps, as every run_classifier.py run does.

    cd /work/main && PYTHONPATH=. TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python bench/bench_finetune.py \
        --json bench/results/finetune_results.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DATA = os.path.normpath(os.path.join(ROOT, "..", "shared", "data"))
MRPC_TRAIN_EXAMPLES = 3668
NO_THUNK = "--xla_cpu_use_thunk_runtime=false"


def setting(framework, dtype, xla="off", padding="fixed", xla_flags=""):
    name = f"{dtype} xla-{xla}" + (" no-thunk" if xla_flags else "") + f" {padding}"
    return {"framework": framework, "dtype": dtype, "xla": xla, "padding": padding,
            "xla_flags": xla_flags, "name": name}


def setting_groups(model_garden: bool, full: bool) -> list[list[dict]]:
    """Groups of comparable settings, frameworks alternating inside each. The default matrix fits
    the ~20 minute budget: no XLA in fp32 and bf16, XLA (thunk runtime off) in bf16, and dynamic
    padding. --matrix=full adds XLA in fp32, XLA with the CPU's default (thunk) runtime, and
    bert_tf's XLA under bucketed padding (one compilation per bucket width)."""
    def mg(*args, **kwargs):
        return [setting("model_garden", *args, **kwargs)] if model_garden else []

    groups = []
    for dtype in ("fp32", "bf16"):
        groups.append([setting("bert_tf", dtype), setting("hf_torch", dtype), *mg(dtype)])
        if full or dtype == "bf16":
            groups.append([setting("bert_tf", dtype, "on", xla_flags=NO_THUNK),
                           *mg(dtype, "on", xla_flags=NO_THUNK)])
        if full:
            groups.append([setting("bert_tf", dtype, "on"), *mg(dtype, "on")])
    for dtype in ("fp32", "bf16"):
        dynamic = [setting("bert_tf", dtype, padding="dynamic"),
                   setting("hf_torch", dtype, padding="dynamic")]
        if full:
            dynamic.append(setting("bert_tf", dtype, "on", "dynamic", NO_THUNK))
        groups.append(dynamic)
    return groups


def epoch_widths(features: str, batch_size: int, max_seq_length: int, seed: int = 42) -> dict:
    """Mean padded width of a whole epoch's batches under each framework's dynamic padding, to
    set next to the mean width of the timed batches (the s/epoch estimate assumes they match)."""
    import numpy as np

    from bert_tf.data import records

    d = dict(np.load(features))
    lengths = d["lengths"]
    table = records.FeatureTable({k: d[k] for k in ("input_ids", "input_mask", "segment_ids",
                                                    "label_ids")}, lengths)
    ours = [records.bucket(lengths[rows].max(), 32, max_seq_length)
            for rows in records.epoch_global_batches(table, batch_size, seed, 0)]
    order = np.random.default_rng(seed).permutation(len(lengths))
    hf = [lengths[order[i:i + batch_size]].max()
          for i in range(0, len(lengths) - batch_size + 1, batch_size)]
    return {"bert_tf": float(np.mean(ours)), "hf_torch": float(np.mean(hf))}


def prepare_features(path: str, max_seq_length: int) -> dict:
    """Tokenize MRPC train once (bert_tf.data.glue + transformers' BertTokenizer on MiniLM's
    vocab) and save padded int32 arrays that every worker, in either venv, can read."""
    import numpy as np
    from transformers import BertTokenizer

    from bert_tf.data import glue

    tokenizer = BertTokenizer(os.path.join(DATA, "models", "all-MiniLM-L6-v2", "vocab.txt"),
                              do_lower_case=True)
    processor = glue.get_processor("MRPC")
    examples = processor.get_train_examples(os.path.join(DATA, "glue", "MRPC"))
    feats = glue.convert_examples_to_features(examples, processor.get_labels(), max_seq_length,
                                              tokenizer)
    n = len(feats)
    arrays = {k: np.zeros((n, max_seq_length), np.int32)
              for k in ("input_ids", "input_mask", "segment_ids")}
    lengths = np.array([f["length"] for f in feats], np.int32)
    for i, f in enumerate(feats):
        for k in arrays:
            arrays[k][i, :lengths[i]] = f[k]
    np.savez(path, label_ids=np.array([f["label_ids"] for f in feats], np.int32),
             lengths=lengths, **arrays)
    return {"examples": n, "mean_length": float(lengths.mean()),
            "max_length": int(lengths.max())}


def command(s: dict, a, features: str) -> tuple[list[str], dict]:
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("XLA_FLAGS", None)
    if s["xla_flags"]:
        env["XLA_FLAGS"] = s["xla_flags"]
    common = ["--features", features, "--dtype", s["dtype"], "--batch_size", str(a.batch_size),
              "--max_seq_length", str(a.max_seq_length), "--warmup", str(a.warmup),
              "--steps", str(a.steps), "--padding", s["padding"],
              "--model_dir", os.path.join(DATA, "models", "all-MiniLM-L6-v2")]
    script = os.path.join(HERE, "peers", f"{s['framework']}_step.py")
    if s["framework"] == "bert_tf":
        return [sys.executable, script, *common, "--xla", s["xla"]], env
    if s["framework"] == "hf_torch":
        return [sys.executable, script, *common, "--rounds", str(a.rounds)], env
    env["TF_USE_LEGACY_KERAS"] = "1"
    return [a.peers_python, script, *common, "--xla", s["xla"], "--rounds", str(a.rounds)], env


class Worker:
    """A setting's subprocess: started once, then one `round` command at a time."""

    def __init__(self, s: dict, a, features: str, log_dir: str, command_fn=None):
        # command_fn(setting, args, features) -> (argv, env); bench_pretrain_step.py passes its own
        self.setting = s
        cmd, env = (command_fn or command)(s, a, features)
        name = f"{s['framework']}-{s['name']}".replace(" ", "_")
        self.log_path = os.path.join(log_dir, name + ".stderr")
        self.log = open(self.log_path, "w", encoding="utf-8")
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, bufsize=1)
        self.alive = True

    def wait_ready(self) -> None:
        """Workers of a group set up at the same time (nothing is timed then); wait for each."""
        self.alive = self._expect("READY") is not None

    def _expect(self, prefix: str) -> str | None:
        for line in self.proc.stdout:
            if line.startswith(prefix):
                return line
        self._fail()
        return None

    def _fail(self) -> None:
        self.alive = False
        self.log.flush()
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            tail = f.read()[-3000:]
        sys.stderr.write(f"!! {self.setting['framework']} {self.setting['name']} failed "
                         f"(exit {self.proc.poll()}):\n{tail}\n")

    def round(self) -> dict | None:
        if not self.alive:
            return None
        load = os.getloadavg()[0]
        t0 = time.time()
        try:
            self.proc.stdin.write("round\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            self._fail()
            return None
        line = self._expect("RESULT ")
        if line is None:
            return None
        r = json.loads(line[len("RESULT "):])
        r.update(wall_seconds=time.time() - t0, load_before=load)
        return r

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def summarize(groups: list[list[dict]], results: dict, epoch_width: dict) -> list[dict]:
    rows = []
    for s in (s for g in groups for s in g):
        rs = results.get((s["framework"], s["name"]), [])
        if not rs:
            continue
        eps = [r["examples_per_second"] for r in rs]
        med = statistics.median(eps)
        widths = [w for r in rs for w in r["timed_widths"]]
        rows.append({"framework": s["framework"], "setting": s["name"], "dtype": s["dtype"],
                     "xla": s["xla"], "xla_flags": s["xla_flags"], "padding": s["padding"],
                     "examples_per_second": med, "rounds": eps,
                     "seconds_per_epoch": MRPC_TRAIN_EXAMPLES / med,
                     "mean_timed_width": sum(widths) / len(widths),
                     "epoch_mean_width": (epoch_width.get(s["framework"])
                                          if s["padding"] == "dynamic" else None),
                     "first_round_warmup_seconds": sum(rs[0]["first_steps_seconds"]),
                     "setup_seconds": rs[0]["setup_seconds"],
                     "max_rss_mb": max(r["max_rss_mb"] for r in rs)})
    return rows


def best(rows, framework, padding):
    cands = [r for r in rows if r["framework"] == framework and r["padding"] == padding]
    return max(cands, key=lambda r: r["examples_per_second"]) if cands else None


def report(rows: list[dict]) -> tuple[str, list[dict]]:
    lines = [f"{'framework':<13} {'setting':<26} {'ex/s':>6}  {'rounds':<17} {'s/epoch':>7} "
             f"{'width':>5} {'epoch w':>7} {'warm-up s':>9}"]
    for r in rows:
        rounds = ",".join(f"{x:.1f}" for x in r["rounds"])
        ew = f"{r['epoch_mean_width']:.1f}" if r["epoch_mean_width"] else "-"
        lines.append(f"{r['framework']:<13} {r['setting']:<26} {r['examples_per_second']:6.1f}  "
                     f"{rounds:<17} {r['seconds_per_epoch']:7.1f} {r['mean_timed_width']:5.1f} "
                     f"{ew:>7} {r['first_round_warmup_seconds']:9.1f}")
    ratios = []
    lines.append("")
    for padding in ("fixed", "dynamic"):
        ours = best(rows, "bert_tf", padding)
        for peer in ("hf_torch", "model_garden"):
            theirs = best(rows, peer, padding)
            if ours and theirs:
                ratio = ours["examples_per_second"] / theirs["examples_per_second"]
                ratios.append({"padding": padding, "bert_tf": ours["setting"], "peer": peer,
                               "peer_setting": theirs["setting"], "ratio": ratio})
                lines.append(f"{padding}: bert_tf best ({ours['setting']}, "
                             f"{ours['examples_per_second']:.1f} ex/s) / {peer} best "
                             f"({theirs['setting']}, {theirs['examples_per_second']:.1f} ex/s)"
                             f" = {ratio:.2f}x")
    return "\n".join(lines), ratios


def main(argv=None):
    p = argparse.ArgumentParser(description="bert_tf vs HF PyTorch vs Model Garden fine-tuning")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per round")
    p.add_argument("--steps", type=int, default=10, help="timed steps per round")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--max_seq_length", type=int, default=128)
    p.add_argument("--peers_python", default=os.path.join(ROOT, ".venv-peers", "bin", "python"),
                   help="python of the Model Garden venv (bench/setup_peers.sh)")
    p.add_argument("--matrix", choices=("default", "full"), default="default")
    p.add_argument("--only", default="",
                   help="comma-separated substrings: run only the settings whose "
                        "'framework setting' (e.g. 'bert_tf bf16 xla-off fixed') contains one")
    p.add_argument("--json", default=None, help="write the table and every round here")
    a = p.parse_args(argv)

    model_garden = os.path.exists(a.peers_python)
    if not model_garden:
        print(f"note: {a.peers_python} missing, Model Garden skipped (run bench/setup_peers.sh)")
    groups = setting_groups(model_garden, a.matrix == "full")
    if a.only:
        keys = [k.strip() for k in a.only.split(",") if k.strip()]
        groups = [[s for s in g if any(k in f"{s['framework']} {s['name']}" for k in keys)]
                  for g in groups]
        groups = [g for g in groups if g]
    t_start = time.time()
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench_finetune_") as tmp:
        features = os.path.join(tmp, "mrpc_train.npz")
        data_info = prepare_features(features, a.max_seq_length)
        epoch_width = epoch_widths(features, a.batch_size, a.max_seq_length)
        print(f"MRPC train: {data_info['examples']} examples, mean length "
              f"{data_info['mean_length']:.1f}, max {data_info['max_length']}; "
              f"{sum(map(len, groups))} settings in {len(groups)} groups x {a.rounds} rounds; "
              f"load average {os.getloadavg()[0]:.2f}", flush=True)
        for group in groups:
            workers = [Worker(s, a, features, tmp) for s in group]
            try:
                for w in workers:
                    w.wait_ready()
                for rnd in range(a.rounds):
                    for w in workers:
                        r = w.round()
                        if r is None:
                            continue
                        r["round"] = rnd
                        s = w.setting
                        results.setdefault((s["framework"], s["name"]), []).append(r)
                        print(f"round {rnd + 1}/{a.rounds}  {s['framework']:<13} {s['name']:<26} "
                              f"{r['examples_per_second']:6.1f} ex/s  (round {r['wall_seconds']:.0f}"
                              f" s, load {r['load_before']:.1f})", flush=True)
            finally:
                for w in workers:
                    w.close()
    rows = summarize(groups, results, epoch_width)
    rows.sort(key=lambda r: (r["padding"] != "fixed", r["framework"], -r["examples_per_second"]))
    table, ratios = report(rows)
    print(f"\nmedians of {a.rounds} alternating rounds (frameworks alternate within each group), "
          f"batch {a.batch_size}, seq {a.max_seq_length}, {a.warmup} warm-up + {a.steps} timed "
          f"steps a round; s/epoch = {MRPC_TRAIN_EXAMPLES} / (ex/s); width = mean padded width "
          f"of the timed batches, epoch w = of a whole epoch's; total "
          f"{time.time() - t_start:.0f} s\n")
    print(table)
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump({"args": vars(a), "data": data_info, "epoch_mean_width": epoch_width,
                       "table": rows, "ratios": ratios,
                       "rounds": [r for rs in results.values() for r in rs],
                       "cpu": _cpu_info(), "total_seconds": time.time() - t_start}, f, indent=1)
    return rows


def _cpu_info() -> dict:
    info = {"cores": os.cpu_count()}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            text = f.read()
        info["model"] = next((ln.split(":", 1)[1].strip() for ln in text.splitlines()
                              if ln.startswith("model name")), "")
        flags = next((ln for ln in text.splitlines() if ln.startswith("flags")), "").split()
        info["flags"] = sorted(f for f in flags if f.startswith(("amx", "avx512_bf16",
                                                                  "avx512f", "avx512_vnni")))
    except OSError:
        pass
    return info


if __name__ == "__main__":
    main()

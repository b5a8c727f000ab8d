"""Pre-training step throughput: bert_tf against TF Model Garden and Hugging Face PyTorch.

One optimizer step of BERT pre-training (forward, masked-LM + next-sentence loss, backward,
global-norm clip 1.0, AdamW-type update with weight decay 0.01 except LayerNorm and biases,
warm-up + linear decay), on BERT-Small (configs/bert_small_config.json: L4 H512 A8 I2048, vocab
30522), batch 16, seq 128, 20 masked-LM predictions a sequence, random initial weights. Every
framework trains on the same fixed batch in Google's pre-training schema (input_ids,
input_mask, segment_ids [16,128], masked_lm_positions, masked_lm_ids, masked_lm_weights [16,20],
next_sentence_labels [16]), built here once from WikiText-2 with the uncased vocabulary. The
workers are the fine-tuning bench's (bench/peers/*.py, --task=pretrain):

  bert_tf       bench/peers/bert_tf_step.py       BertPretrainer + tasks.pretraining_loss through
                                                  bert_tf.training.loop.train (AdamW), timed by
                                                  its metrics.jsonl; project venv. The loss
                                                  calls pretraining_logits, which runs the last
                                                  layer at [CLS] + the masked positions only
  model_garden  bench/peers/model_garden_step.py  BertPretrainerV2 (MaskedLM head on the masked
                                                  positions) + MaskedLMTask's loss, AdamWeightDecay;
                                                  .venv-peers, TF_USE_LEGACY_KERAS=1
  hf_torch      bench/peers/hf_torch_step.py      BertForPreTraining, torch.optim.AdamW, 2 threads;
                                                  head "all" = the stock model (scores all 128
                                                  positions), "masked" = gather the masked
                                                  positions, then model.cls.predictions

One group per dtype (fp32; bf16 = mixed precision, torch.autocast for HF), holding every
setting of that dtype: bert_tf and Model Garden with XLA off and on (XLA_FLAGS=
--xla_cpu_use_thunk_runtime=false, as in bench_finetune.py), HF with either head. A group's
workers start together, then run their rounds alternately (A, B, C, ..., A, B, C, ...); a
setting's figure is the median over rounds of its sequences/s over the timed steps (warm-up
steps, which trace and compile, excluded). The ratio is bert_tf's fastest setting over the
fastest peer setting of the same dtype.

    cd /work/main && PYTHONPATH=. TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python bench/bench_pretrain_step.py \\
        --json bench/results/pretrain_step_results.json
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
sys.path.insert(0, HERE)

from bench_finetune import NO_THUNK, Worker, _cpu_info  # noqa: E402

DATA = os.path.normpath(os.path.join(ROOT, "..", "shared", "data"))
PEERS = ("model_garden", "hf_torch")


def setting(framework: str, dtype: str, xla: str = "off", head: str = "") -> dict:
    name = f"{dtype} xla-{xla}" + (" no-thunk" if xla == "on" else "")
    if head:
        name = f"{dtype} {head}-positions head"
    return {"framework": framework, "dtype": dtype, "xla": xla,
            "xla_flags": NO_THUNK if xla == "on" else "", "head": head, "name": name}


def setting_groups(model_garden: bool) -> list[list[dict]]:
    """One group per dtype; every setting of a group alternates with the others."""
    groups = []
    for dtype in ("fp32", "bf16"):
        group = [setting("bert_tf", dtype), setting("bert_tf", dtype, "on")]
        if model_garden:
            group += [setting("model_garden", dtype), setting("model_garden", dtype, "on")]
        group += [setting("hf_torch", dtype, head="masked"), setting("hf_torch", dtype,
                                                                     head="all")]
        groups.append(group)
    return groups


def prepare_batch(path: str, batch_size: int, max_seq_length: int, max_predictions: int,
                  seed: int = 42) -> dict:
    """One batch in Google's pre-training schema from WikiText-2 (test split), uncased vocab.

    As create_pretraining_data.py builds an instance (simplified: the corpus is one token
    stream): [CLS] A [SEP] B [SEP] filling max_seq_length exactly, A a random length, B the text
    that follows A or (next_sentence_labels 1, half the rows) text from elsewhere; 15% of the
    tokens (round(0.15 x 128) = 19, at most max_predictions) masked at random non-special
    positions, 80% [MASK] / 10% random id / 10% kept; predictions padded to max_predictions
    with position 0, id 0, weight 0."""
    import numpy as np

    from bert_tf.tokenization import FullTokenizer

    vocab_file = os.path.join(DATA, "vocab", "uncased_vocab.txt")
    tokenizer = FullTokenizer(vocab_file, do_lower_case=True)
    with open(os.path.join(DATA, "corpus", "wikitext2_test.raw"), encoding="utf-8") as f:
        lines = [ln.strip() for ln in f if ln.strip() and not ln.strip().startswith("=")]
    stream = tokenizer.convert_tokens_to_ids(
        [t for ln in lines[:400] for t in tokenizer.tokenize(ln)])
    cls_id, sep_id, mask_id = tokenizer.convert_tokens_to_ids(["[CLS]", "[SEP]", "[MASK]"])
    vocab_size = len(tokenizer.vocab)
    rng = np.random.default_rng(seed)
    body = max_seq_length - 3
    num_to_predict = min(max_predictions, max(1, int(round(max_seq_length * 0.15))))
    arrays = {k: np.zeros((batch_size, max_seq_length), np.int32)
              for k in ("input_ids", "input_mask", "segment_ids")}
    for k in ("masked_lm_positions", "masked_lm_ids"):
        arrays[k] = np.zeros((batch_size, max_predictions), np.int32)
    arrays["masked_lm_weights"] = np.zeros((batch_size, max_predictions), np.float32)
    arrays["next_sentence_labels"] = np.zeros((batch_size,), np.int32)
    for row in range(batch_size):
        start = int(rng.integers(0, len(stream) - 2 * max_seq_length))
        len_a = int(rng.integers(16, body - 16))
        a = stream[start:start + len_a]
        is_random = row % 2 == 1
        if is_random:
            other = (start + len(stream) // 2) % (len(stream) - max_seq_length)
            b = stream[other:other + body - len_a]
        else:
            b = stream[start + len_a:start + body]
        ids = [cls_id] + a + [sep_id] + b + [sep_id]
        segments = [0] * (len_a + 2) + [1] * (len(b) + 1)
        candidates = [i for i, t in enumerate(ids) if t not in (cls_id, sep_id)]
        positions = sorted(rng.choice(candidates, num_to_predict, replace=False).tolist())
        originals = [ids[p] for p in positions]
        for p in positions:
            r = rng.random()
            if r < 0.8:
                ids[p] = mask_id
            elif r < 0.9:
                ids[p] = int(rng.integers(0, vocab_size))
        arrays["input_ids"][row] = ids
        arrays["input_mask"][row] = 1
        arrays["segment_ids"][row] = segments
        arrays["masked_lm_positions"][row, :num_to_predict] = positions
        arrays["masked_lm_ids"][row, :num_to_predict] = originals
        arrays["masked_lm_weights"][row, :num_to_predict] = 1.0
        arrays["next_sentence_labels"][row] = int(is_random)
    np.savez(path, **arrays)
    return {"source": "wikitext2_test.raw (first 400 non-heading lines), uncased vocab",
            "batch_size": batch_size, "max_seq_length": max_seq_length,
            "max_predictions_per_seq": max_predictions,
            "real_predictions_per_seq": num_to_predict,
            "next_sentence_random_rows": int(arrays["next_sentence_labels"].sum())}


def command(s: dict, a, features: str) -> tuple[list[str], dict]:
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("XLA_FLAGS", None)
    if s["xla_flags"]:
        env["XLA_FLAGS"] = s["xla_flags"]
    common = ["--task", "pretrain", "--features", features, "--dtype", s["dtype"],
              "--bert_config_file", a.bert_config_file, "--batch_size", str(a.batch_size),
              "--max_seq_length", str(a.max_seq_length), "--warmup", str(a.warmup),
              "--steps", str(a.steps), "--rounds", str(a.rounds),
              "--learning_rate", str(a.learning_rate)]
    script = os.path.join(HERE, "peers", f"{s['framework']}_step.py")
    if s["framework"] == "bert_tf":
        return [sys.executable, script, *common, "--xla", s["xla"]], env
    if s["framework"] == "hf_torch":
        return [sys.executable, script, *common, "--mlm_head", s["head"]], env
    env["TF_USE_LEGACY_KERAS"] = "1"
    return [a.peers_python, script, *common, "--xla", s["xla"]], env


def summarize(groups: list[list[dict]], results: dict) -> list[dict]:
    rows = []
    for s in (s for g in groups for s in g):
        rs = results.get((s["framework"], s["name"]), [])
        if not rs:
            continue
        sps = [r["examples_per_second"] for r in rs]
        steps = [t for r in rs for t in r["step_seconds"]]
        rows.append({"framework": s["framework"], "setting": s["name"], "dtype": s["dtype"],
                     "xla": s["xla"], "xla_flags": s["xla_flags"], "head": s["head"],
                     "sequences_per_second": statistics.median(sps), "rounds": sps,
                     "median_step_seconds": statistics.median(steps),
                     "first_round_warmup_seconds": sum(rs[0]["first_steps_seconds"]),
                     "setup_seconds": rs[0]["setup_seconds"],
                     "final_loss": rs[-1]["final_loss"],
                     "load_before_rounds": [r["load_before"] for r in rs],
                     "max_rss_mb": max(r["max_rss_mb"] for r in rs)})
    return rows


def ratios(rows: list[dict], rounds: list[dict]) -> list[dict]:
    """Per dtype: bert_tf's fastest setting (by median) over each peer's fastest and over the
    fastest peer; also the same two settings compared round by round (round r of one against
    round r of the other, run minutes apart), whose median is steadier on a busy machine."""
    def by_round(framework, setting_name):
        return {r["round"]: r["examples_per_second"] for r in rounds
                if r["framework"] == framework and r["setting"] == setting_name}

    out = []
    for dtype in ("fp32", "bf16"):
        ours = [r for r in rows if r["framework"] == "bert_tf" and r["dtype"] == dtype]
        theirs = [r for r in rows if r["framework"] in PEERS and r["dtype"] == dtype]
        if not ours or not theirs:
            continue
        best = max(ours, key=lambda r: r["sequences_per_second"])
        ours_by_round = by_round("bert_tf", best["setting"])
        entry = {"dtype": dtype, "bert_tf": best["setting"],
                 "bert_tf_sequences_per_second": best["sequences_per_second"]}
        for peer in PEERS + ("fastest_peer",):
            cands = theirs if peer == "fastest_peer" else [r for r in theirs
                                                           if r["framework"] == peer]
            if not cands:
                continue
            top = max(cands, key=lambda r: r["sequences_per_second"])
            theirs_by_round = by_round(top["framework"], top["setting"])
            paired = [ours_by_round[k] / theirs_by_round[k] for k in sorted(ours_by_round)
                      if k in theirs_by_round]
            entry[peer] = {"framework": top["framework"], "setting": top["setting"],
                           "sequences_per_second": top["sequences_per_second"],
                           "ratio": best["sequences_per_second"] / top["sequences_per_second"],
                           "round_ratios": paired,
                           "median_round_ratio": statistics.median(paired) if paired else None}
        out.append(entry)
    return out


def report(rows: list[dict], ratio_rows: list[dict], target: float) -> str:
    lines = [f"{'framework':<13} {'setting':<28} {'seq/s':>6}  {'rounds':<17} {'ms/step':>7} "
             f"{'warm-up s':>9} {'loads':<14}"]
    for r in rows:
        rounds = ",".join(f"{x:.1f}" for x in r["rounds"])
        loads = ",".join(f"{x:.1f}" for x in r["load_before_rounds"])
        lines.append(f"{r['framework']:<13} {r['setting']:<28} {r['sequences_per_second']:6.1f}  "
                     f"{rounds:<17} {1000 * r['median_step_seconds']:7.0f} "
                     f"{r['first_round_warmup_seconds']:9.1f} {loads:<14}")
    lines.append("")
    for e in ratio_rows:
        fastest = e.get("fastest_peer")
        per_peer = "; ".join(f"{p} best {e[p]['setting']} {e[p]['sequences_per_second']:.1f}"
                             f" -> {e[p]['ratio']:.2f}x" for p in PEERS if p in e)
        verdict = "meets" if fastest and fastest["ratio"] >= target else "below"
        paired = ", ".join(f"{x:.2f}" for x in fastest["round_ratios"])
        lines.append(f"{e['dtype']}: bert_tf best ({e['bert_tf']}, "
                     f"{e['bert_tf_sequences_per_second']:.1f} seq/s) / fastest peer "
                     f"({fastest['framework']} {fastest['setting']}, "
                     f"{fastest['sequences_per_second']:.1f}) = {fastest['ratio']:.2f}x "
                     f"({verdict} the {target:.2f}x target; round by round {paired}, median "
                     f"{fastest['median_round_ratio']:.2f}x); {per_peer}")
    return "\n".join(lines)


def _git_state() -> dict:
    def run(*args):
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                                  check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""
    return {"commit": run("rev-parse", "HEAD"),
            "uncommitted": run("status", "--short", "--", "bert_tf").splitlines()}


def main(argv=None):
    p = argparse.ArgumentParser(description="bert_tf vs Model Garden vs HF PyTorch: one "
                                            "pre-training step")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per round")
    p.add_argument("--steps", type=int, default=10, help="timed steps per round")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--max_seq_length", type=int, default=128)
    p.add_argument("--max_predictions_per_seq", type=int, default=20)
    p.add_argument("--learning_rate", type=float, default=1e-4)
    p.add_argument("--bert_config_file",
                   default=os.path.join(ROOT, "configs", "bert_small_config.json"))
    p.add_argument("--peers_python", default=os.path.join(ROOT, ".venv-peers", "bin", "python"),
                   help="python of the Model Garden venv (bench/setup_peers.sh)")
    p.add_argument("--only", default="",
                   help="comma-separated substrings: run only the settings whose "
                        "'framework setting' (e.g. 'bert_tf bf16 xla-on') contains one")
    p.add_argument("--target", type=float, default=1.25,
                   help="the ratio bert_tf / fastest peer the issue asks for")
    p.add_argument("--json", default=None, help="write the table and every round here")
    a = p.parse_args(argv)

    model_garden = os.path.exists(a.peers_python)
    if not model_garden:
        print(f"note: {a.peers_python} missing, Model Garden skipped (run bench/setup_peers.sh)")
    groups = setting_groups(model_garden)
    if a.only:
        keys = [k.strip() for k in a.only.split(",") if k.strip()]
        groups = [[s for s in g if any(k in f"{s['framework']} {s['name']}" for k in keys)]
                  for g in groups]
        groups = [g for g in groups if g]
    t_start = time.time()
    load_start = os.getloadavg()
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench_pretrain_") as tmp:
        features = os.path.join(tmp, "pretraining_batch.npz")
        data_info = prepare_batch(features, a.batch_size, a.max_seq_length,
                                  a.max_predictions_per_seq)
        print(f"batch: {data_info}; {sum(map(len, groups))} settings in {len(groups)} groups x "
              f"{a.rounds} rounds; load average {load_start[0]:.2f}", flush=True)
        for group in groups:
            workers = [Worker(s, a, features, tmp, command_fn=command) for s in group]
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
                        r["setting"] = s["name"]
                        results.setdefault((s["framework"], s["name"]), []).append(r)
                        print(f"round {rnd + 1}/{a.rounds}  {s['framework']:<13} {s['name']:<28} "
                              f"{r['examples_per_second']:6.1f} seq/s  (round "
                              f"{r['wall_seconds']:.0f} s, load {r['load_before']:.1f})",
                              flush=True)
            finally:
                for w in workers:
                    w.close()
    rows = summarize(groups, results)
    rows.sort(key=lambda r: (r["dtype"] != "fp32", r["framework"], -r["sequences_per_second"]))
    all_rounds = [r for rs in results.values() for r in rs]
    ratio_rows = ratios(rows, all_rounds)
    table = report(rows, ratio_rows, a.target)
    load_end = os.getloadavg()
    print(f"\nmedians of {a.rounds} alternating rounds, BERT-Small "
          f"({os.path.basename(a.bert_config_file)}), batch {a.batch_size}, seq "
          f"{a.max_seq_length}, {a.max_predictions_per_seq} predictions, {a.warmup} warm-up + "
          f"{a.steps} timed steps a round; load average {load_start[0]:.2f} at the start, "
          f"{load_end[0]:.2f} at the end; total {time.time() - t_start:.0f} s\n")
    print(table)
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump({"args": vars(a), "data": data_info, "table": rows, "ratios": ratio_rows,
                       "rounds": all_rounds,
                       "cpu": _cpu_info(), "git": _git_state(),
                       "load_average_start": load_start, "load_average_end": load_end,
                       "total_seconds": time.time() - t_start}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()

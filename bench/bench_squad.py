"""SQuAD side by side: bert_tf's run_squad.py against Hugging Face PyTorch (bench/hf_squad_reference.py,
run_qa's recipe) on the same checkpoint, slice and recipe, and feature conversion against
Google's original run_squad.py.

  .venv/bin/python bench/bench_squad.py accuracy --output bench/squad_results.json
  .venv/bin/python bench/bench_squad.py convert
  .venv/bin/python bench/bench_squad.py speed --rounds 2
  .venv/bin/python bench/bench_squad.py scale
  .venv/bin/python bench/bench_squad.py latency --checkpoint_dir OUTPUT_DIR_OF_A_RUN

accuracy: fine-tunes all-MiniLM-L6-v2 on the answerable questions of the train-v2.0 slice
(4,371) and scores the full dev-v1.1 with the official evaluate-v1.1.py (bert_tf in bf16 and
fp32, HF in its fastest setting on this CPU: bf16 autocast, batches padded to their longest
window); then trains on the whole slice with --version_2_with_negative and scores the dev-v2.0
slice with evaluate-v2.0.py and null_odds.json. Both sides take the same optimizer steps (bert_tf
counts them from questions, as Google's script: questions / batch x epochs), lr, batch, warm-up
and sequence settings, and the same Adam: bert_tf runs with --adam_bias_correction, as torch's
AdamW (Google's Adam has none, which makes its first hundred updates 3-6x larger: over the 136
steps here it scored F1 51.5 against HF's 38.5). One JSON line per run.

convert: the time to turn dev-v1.1 into features, bert_tf (1 and 2 processes) against Google's
read_squad_examples + convert_examples_to_features (the bert-tensorflow wheel, run by
bench/peers/google_squad.py without TensorFlow 1), medians of --rounds, alternating.

speed: training examples/s side by side, alternating bert_tf (bf16, fp32) and HF (bf16, fp32),
short runs of --steps steps, --rounds rounds, medians.

scale: peak memory converting a train-v2.0-sized file (the slice x28) against the slice.

latency: one question at a time through a fine-tuned model already in memory (the SQuAD file
read and checked, features, the forward pass, the n-best and the answer text): medians over
--questions single-question files from dev-v1.1, after one warm-up.
"""

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
SQUAD = os.path.join(ROOT, "..", "shared", "data", "squad")
MODEL = os.path.join(ROOT, "..", "shared", "data", "models", "all-MiniLM-L6-v2")
TRAIN = os.path.join(SQUAD, "slices", "train-v2.0-first10articles.json")
DEV1 = os.path.join(SQUAD, "dev-v1.1.json")
DEV2 = os.path.join(SQUAD, "slices", "dev-v2.0-first5articles.json")


def answerable_copy(path, out):
    """The slice's answerable questions as a v1.1 file (is_impossible dropped)."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    count = 0
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            paragraph["qas"] = [{k: v for k, v in q.items()
                                 if k not in ("is_impossible", "plausible_answers")}
                                for q in paragraph["qas"] if not q.get("is_impossible")]
            count += len(paragraph["qas"])
    data["version"] = "1.1"
    with open(out, "w", encoding="utf-8") as f:
        json.dump(data, f)
    return count


def official(version_2, data, output_dir):
    script = os.path.join(SQUAD, f"evaluate-v{'2.0' if version_2 else '1.1'}.py")
    cmd = [sys.executable, script, data, os.path.join(output_dir, "predictions.json")]
    if version_2:
        # -t: the headline at the run's own threshold (already in predictions.json), not the
        # script's default na_prob_thresh of 1.0 applied on top
        cmd += ["-n", os.path.join(output_dir, "null_odds.json"), "-t", "1e30"]
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def run_bert_tf(train, dev, version_2, dtype, a, work):
    out = os.path.join(work, f"bert_tf-{'v2' if version_2 else 'v1'}-{dtype}")
    cmd = [sys.executable, os.path.join(ROOT, "run_squad.py"), f"--init_checkpoint={MODEL}",
           "--do_train", f"--train_file={train}", "--do_predict", f"--predict_file={dev}",
           f"--output_dir={out}", f"--dtype={dtype}", f"--learning_rate={a.learning_rate}",
           f"--train_batch_size={a.batch_size}", f"--num_train_epochs={a.epochs}",
           f"--predict_batch_size=64", f"--seed={a.seed}", "--noprogress",
           f"--feature_cache_dir={os.path.join(work, 'cache')}", "--tracking_uri=none",
           "--log_steps=20", "--adam_bias_correction"] + \
        (["--version_2_with_negative"] if version_2 else [])
    t0 = time.time()
    subprocess.run(cmd, check=True)
    seconds = time.time() - t0
    with open(os.path.join(out, "metrics.jsonl")) as f:
        train_rows = [json.loads(l) for l in f if '"train"' in l]
    speeds = [r["examples_per_second"] for r in train_rows[1:] if "examples_per_second" in r]
    result = {"peer": "bert_tf", "dtype": dtype, "version_2": version_2,
              "steps": train_rows[-1]["step"], "wall_seconds": seconds,
              "train_examples_per_second": statistics.median(speeds) if speeds else None,
              **official(version_2, dev, out)}
    with open(os.path.join(out, "eval_results.json")) as f:
        mine = json.load(f)
    result["bert_tf_f1"] = mine["f1"]  # its own scorer, next to the official script's
    return result


def run_hf(train, dev, version_2, steps, a, answerable_only):
    cmd = [sys.executable, os.path.join(HERE, "hf_squad_reference.py"), f"--model={MODEL}",
           f"--train_file={train}", f"--predict_file={dev}", f"--max_steps={steps}",
           f"--learning_rate={a.learning_rate}", f"--batch_size={a.batch_size}",
           f"--seed={a.seed}", "--bf16"] + (["--version_2"] if version_2 else []) + \
        (["--answerable_only"] if answerable_only else [])
    t0 = time.time()
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result.update(version_2=version_2, wall_seconds=time.time() - t0)
    return result


def accuracy(a):
    work = a.work_dir or tempfile.mkdtemp(prefix="bench_squad_")
    os.makedirs(work, exist_ok=True)
    train1 = os.path.join(work, "train-answerable.json")
    answerable_copy(TRAIN, train1)

    def emit(result):
        result.update(learning_rate=a.learning_rate, batch_size=a.batch_size, epochs=a.epochs,
                      seed=a.seed)
        print(json.dumps(result), flush=True)
        if a.output:
            with open(a.output, "a") as f:
                f.write(json.dumps(result) + "\n")

    runs = a.runs.split(",")
    steps = None
    for dtype in ("bf16", "fp32"):
        if f"v1-{dtype}" in runs:
            r = run_bert_tf(train1, DEV1, False, dtype, a, work)
            steps = r["steps"]
            emit(r)
    if "v1-hf" in runs:
        with open(train1) as f:
            questions = sum(len(p["qas"]) for d in json.load(f)["data"] for p in d["paragraphs"])
        emit(run_hf(TRAIN, DEV1, False, steps or int(questions / a.batch_size * a.epochs), a,
                    True))
    if "v2-bf16" in runs:
        r = run_bert_tf(TRAIN, DEV2, True, "bf16", a, work)
        emit(r)
        steps = r["steps"]
    if "v2-hf" in runs:
        emit(run_hf(TRAIN, DEV2, True, steps or int(4719 / a.batch_size * a.epochs), a, False))


BERT_TF_CONVERT = r"""
import sys, time, json, tempfile
sys.path.insert(0, sys.argv[1])
from bert_tf.data import squad
t0 = time.time()
data = squad.read_squad(sys.argv[2], False)
with tempfile.TemporaryDirectory() as cache:
    f = squad.convert_to_store(data, sys.argv[3], True, squad.FeatureSettings(), cache,
                               num_workers=int(sys.argv[4]))
    print(json.dumps({"seconds": time.time() - t0, "features": len(f)}))
"""


def convert(a):
    vocab = os.path.join(ROOT, "..", "shared", "data", "vocab", "uncased_vocab.txt")
    sides = {"google": [sys.executable, os.path.join(HERE, "peers", "google_squad.py"), "time",
                        DEV1, vocab],
             "bert_tf_1proc": [sys.executable, "-c", BERT_TF_CONVERT, ROOT, DEV1, vocab, "1"],
             "bert_tf_2proc": [sys.executable, "-c", BERT_TF_CONVERT, ROOT, DEV1, vocab, "2"]}
    times = {k: [] for k in sides}
    for _ in range(a.rounds):  # alternating, so drift hits every side alike
        for name, cmd in sides.items():
            out = json.loads(subprocess.run(cmd, capture_output=True, text=True,
                                            check=True).stdout.strip().splitlines()[-1])
            times[name].append(out["seconds"])
            assert out["features"] == 10833, out
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {"bench": "squad_convert", "file": "dev-v1.1.json", "rounds": a.rounds,
              "median_seconds": med,
              "speedup_vs_google": {k: med["google"] / v for k, v in med.items()
                                    if k != "google"}}
    print(json.dumps(result))
    if a.output:
        with open(a.output, "a") as f:
            f.write(json.dumps(result) + "\n")


def speed(a):
    """Training examples/s at 384/128 on the same answerable train slice, alternating bert_tf
    (bf16, fp32) and HF (bf16 autocast and fp32, batches padded to their longest window, its
    fastest settings here) for --steps steps each, --rounds rounds; bert_tf's rate is the median
    of its logged intervals after the first (tracing), HF's over its timed steps."""
    work = a.work_dir or tempfile.mkdtemp(prefix="bench_squad_speed_")
    os.makedirs(work, exist_ok=True)
    train = os.path.join(work, "train-answerable.json")
    questions = answerable_copy(TRAIN, train)
    rates = {"bert_tf_bf16": [], "bert_tf_fp32": [], "hf_bf16": [], "hf_fp32": []}
    for r in range(a.rounds):
        for name in rates:
            if name.startswith("bert_tf"):
                out = os.path.join(work, f"{name}-{r}")
                epochs = a.steps * a.batch_size / questions
                subprocess.run([sys.executable, os.path.join(ROOT, "run_squad.py"),
                                f"--init_checkpoint={MODEL}", "--do_train",
                                f"--train_file={train}", f"--output_dir={out}",
                                f"--dtype={name.rsplit('_', 1)[1]}", "--noprogress",
                                f"--train_batch_size={a.batch_size}", "--log_steps=4",
                                f"--num_train_epochs={epochs}", "--tracking_uri=none",
                                f"--feature_cache_dir={os.path.join(work, 'cache')}"],
                               check=True, capture_output=True)
                with open(os.path.join(out, "metrics.jsonl")) as f:
                    rows = [json.loads(l) for l in f]
                logged = [x["examples_per_second"] for x in rows
                          if x.get("split") == "train" and "examples_per_second" in x]
                rates[name].append(statistics.median(logged[1:]))
            else:
                proc = subprocess.run(
                    [sys.executable, os.path.join(HERE, "hf_squad_reference.py"),
                     f"--model={MODEL}", f"--train_file={TRAIN}", "--answerable_only",
                     f"--predict_file={DEV1}", f"--max_steps={a.steps}", "--no-predict",
                     f"--batch_size={a.batch_size}"] + (["--bf16"] if "bf16" in name else []),
                    check=True, capture_output=True, text=True)
                rates[name].append(json.loads(proc.stdout.strip().splitlines()[-1])
                                   ["train_examples_per_second"])
            print(name, rates[name][-1], flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    fastest_hf = max(med["hf_bf16"], med["hf_fp32"])
    result = {"bench": "squad_train_speed", "steps": a.steps, "rounds": a.rounds,
              "batch_size": a.batch_size, "examples_per_second": med,
              "bert_tf_bf16_vs_fastest_hf": med["bert_tf_bf16"] / fastest_hf,
              "bert_tf_fp32_vs_fastest_hf": med["bert_tf_fp32"] / fastest_hf}
    print(json.dumps(result))
    if a.output:
        with open(a.output, "a") as f:
            f.write(json.dumps(result) + "\n")


def scale(a):
    """Peak memory of converting a train-v2.0-sized file: the train slice repeated --copies
    times (ids made unique; 4,719 questions a copy, 28 copies ~ the 130k of train-v2.0) against
    one copy, each converted from scratch by bert_tf with 2 processes under bench/peak_rss.py."""
    work = a.work_dir or tempfile.mkdtemp(prefix="bench_squad_scale_")
    os.makedirs(work, exist_ok=True)
    with open(TRAIN, encoding="utf-8") as f:
        raw = json.load(f)
    vocab = os.path.join(ROOT, "..", "shared", "data", "vocab", "uncased_vocab.txt")
    results = []
    for copies in (1, a.copies):
        data = {"version": raw["version"], "data": []}
        for c in range(copies):
            for article in raw["data"]:
                data["data"].append({"title": article["title"], "paragraphs": [
                    {"context": p["context"],
                     "qas": [dict(q, id=f"{q['id']}-{c}") for q in p["qas"]]}
                    for p in article["paragraphs"]]})
        path = os.path.join(work, f"train-x{copies}.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f)
        code = ("import sys, json, tempfile; sys.path.insert(0, sys.argv[1]); "
                "from bert_tf.data import squad; "
                "d = squad.read_squad(sys.argv[2], True, for_training=True); "
                "f = squad.convert_to_store(d, sys.argv[3], True, "
                "squad.FeatureSettings(for_training=True), tempfile.mkdtemp(), num_workers=2); "
                "print(json.dumps({'questions': len(d.examples), 'features': len(f)}))")
        proc = subprocess.run([sys.executable, os.path.join(HERE, "peak_rss.py"), "--",
                               sys.executable, "-c", code, ROOT, path, vocab],
                              capture_output=True, text=True, check=True)
        counts = json.loads(next(l for l in proc.stdout.splitlines() if l.startswith("{")))
        results.append({"copies": copies, "json_mb": os.path.getsize(path) / 1e6, **counts,
                        "peak_rss": proc.stderr.strip().splitlines()[-1]})
        print(json.dumps(results[-1]), flush=True)
    result = {"bench": "squad_convert_scale", "runs": results}
    if a.output:
        with open(a.output, "a") as f:
            f.write(json.dumps(result) + "\n")


def latency(a):
    sys.path.insert(0, ROOT)
    import numpy as np

    from bert_tf import BertConfig
    from bert_tf.data import squad, squad_answers
    from bert_tf.modeling import BertSpanExtractor
    from bert_tf.tokenization import make_tokenizer
    from bert_tf.training import loop
    from bert_tf.training.run import restore_trained

    model = BertSpanExtractor(BertConfig.from_json_file(
        os.path.join(a.checkpoint_dir, "bert_config.json")))
    assert restore_trained(model, a.checkpoint_dir), a.checkpoint_dir
    vocab = os.path.join(MODEL, "vocab.txt")
    tokenizer = make_tokenizer(vocab, True)
    with open(DEV1, encoding="utf-8") as f:
        raw = json.load(f)
    paragraphs = [p for article in raw["data"] for p in article["paragraphs"]]
    rng = np.random.default_rng(0)
    times, windows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k, i in enumerate(rng.choice(len(paragraphs), a.questions + 1, replace=False)):
            paragraph = dict(paragraphs[i], qas=paragraphs[i]["qas"][:1])
            path = os.path.join(tmp, f"q{k}.json")
            with open(path, "w", encoding="utf-8") as f:
                json.dump({"data": [{"title": "t", "paragraphs": [paragraph]}]}, f)
            t0 = time.perf_counter()
            data = squad.read_squad(path, False)
            features = squad.convert_to_store(data, vocab, True, squad.FeatureSettings(),
                                              os.path.join(tmp, "cache"))
            logits = loop.predict(model, features, 8, output_key=("start_logits", "end_logits"),
                                  max_seq_length=384, pad_sequence=True)
            predictions, _, _ = squad_answers.predict_answers(
                data, features, logits["start_logits"], logits["end_logits"], tokenizer,
                squad_answers.AnswerSettings())
            if k:  # the first call traces the forward pass
                times.append(time.perf_counter() - t0)
                windows.append(len(features))
    result = {"bench": "squad_latency", "questions": a.questions,
              "median_seconds": statistics.median(times), "max_seconds": max(times),
              "windows_per_question": statistics.mean(windows)}
    print(json.dumps(result))
    if a.output:
        with open(a.output, "a") as f:
            f.write(json.dumps(result) + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["accuracy", "convert", "latency", "speed", "scale"])
    p.add_argument("--copies", type=int, default=28, help="scale: copies of the train slice")
    p.add_argument("--steps", type=int, default=24, help="speed: optimizer steps per run")
    p.add_argument("--checkpoint_dir", help="latency: the --output_dir of a run_squad.py run")
    p.add_argument("--questions", type=int, default=20)
    p.add_argument("--runs", default="v1-bf16,v1-fp32,v1-hf,v2-bf16,v2-hf",
                   help="which of v1-bf16, v1-fp32, v1-hf, v2-bf16, v2-hf to run")
    p.add_argument("--learning_rate", type=float, default=1e-4)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--work_dir", default=None)
    p.add_argument("--output", default=None, help="append the JSON lines here")
    a = p.parse_args()
    {"accuracy": accuracy, "convert": convert, "latency": latency, "speed": speed,
     "scale": scale}[a.what](a)


if __name__ == "__main__":
    main()

"""Pre-training data creation: Google's create_pretraining_data.py vs bert_tf's, side by side.

Runs, as whole processes from interpreter start to exit:
  google    Google's original script (a checkout passed as --google_bert_dir, run unmodified
            under TF 2 by bench/peers/google_create_pretraining_data.py) on the corpus;
  bert_tf   this repository's create_pretraining_data.py (--num_workers, --num_output_shards)
            on the corpus and on the corpus repeated --scales times (scratch files in
            --work_dir, the copies separated by a blank line, so they stay separate documents),
with the same flags (uncased vocab, max_seq_length 128, max_predictions_per_seq 20,
dupe_factor 5, whole-word masking, masked_lm_prob 0.15, random_seed 12345), in rounds that
alternate between the commands. For each run: wall time, CPU time of the process and its
children, instances written and the peak memory of the whole process tree (the process and
all of its descendants: their RSS summed, sampled every --sample_interval seconds with psutil;
the same, every 4th sample, for PSS, which splits shared pages between the processes sharing
them, other jobs' included).
Google's instances are the records of its output parsed with its own schema (run_pretraining.py's
name_to_features) by tf.data; bert_tf's are those of its JSON summary, checked the same way
in the first round.

Then (--stats, default on) the outputs are compared statistic by statistic (instances per
document, lengths, next-sentence labels, masking, whole-word groups, truncation, where the
random next segments come from, the order of the records in the files), over --stats_seeds
for each implementation, from the records alone (masked tokens are restored from
masked_lm_ids and each segment is located in the tokenized corpus by its first and last 8
WordPieces).

Google's code is not part of this repository; get a checkout with
    git clone https://github.com/google-research/bert /tmp/google-bert
Then:
    cd /work/main && .venv/bin/python bench/bench_pretraining_data.py \\
        --google_bert_dir=/tmp/google-bert --rounds 3 --json /tmp/bench_pretraining_data.json
    .venv/bin/python bench/bench_pretraining_data.py --skip_google --scales 100 --rounds 1 \\
        --no-stats        # bert_tf alone on the corpus repeated 100 times
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before the counting imports TensorFlow
REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BERT_TF_SHARED_DATA") or REPO.parent / "shared" / "data")
GOOGLE_RUNNER = REPO / "bench" / "peers" / "google_create_pretraining_data.py"
CLONE_HINT = ("a checkout of Google's original BERT code: "
              "git clone https://github.com/google-research/bert /tmp/google-bert")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Get Google's code with: git clone "
                                       "https://github.com/google-research/bert /tmp/google-bert")
    p.add_argument("--google_bert_dir", help=CLONE_HINT + " (required unless --skip_google)")
    p.add_argument("--skip_google", action="store_true", help="run bert_tf only")
    p.add_argument("--corpus", default=str(SHARED_DATA / "corpus" / "python_docs_train.txt"))
    p.add_argument("--vocab_file", default=str(SHARED_DATA / "vocab" / "uncased_vocab.txt"))
    p.add_argument("--scales", default="1,10",
                   help="bert_tf runs on the corpus repeated this many times (comma-separated)")
    p.add_argument("--rounds", type=int, default=3, help="rounds, alternating the commands")
    p.add_argument("--num_workers", type=int, default=2, help="bert_tf's --num_workers")
    p.add_argument("--num_output_shards", type=int, default=2,
                   help="bert_tf's --num_output_shards")
    p.add_argument("--bert_tf_flags", default="",
                   help="more flags for bert_tf's script, e.g. '--document_window=2048' "
                        "(space-separated)")
    p.add_argument("--dupe_factor", type=int, default=5)
    p.add_argument("--random_seed", type=int, default=12345)
    p.add_argument("--python", default=sys.executable, help="interpreter for both scripts")
    p.add_argument("--work_dir", default="/tmp/bench_pretraining_data",
                   help="scratch: repeated corpora, outputs, logs (outputs are deleted after "
                        "counting, except those the statistics need)")
    p.add_argument("--sample_interval", type=float, default=0.05, help="memory sampling, s")
    p.add_argument("--stats", default=True, action=argparse.BooleanOptionalAction,
                   help="compare the statistics of the two implementations' outputs")
    p.add_argument("--stats_seeds", default="12345,12346,12347",
                   help="seeds of the outputs the statistics compare (per implementation)")
    p.add_argument("--reuse_stats_outputs", action="store_true",
                   help="use the statistics outputs of an earlier run in --work_dir where present")
    p.add_argument("--json", help="write every run and statistic to this file")
    return p.parse_args()


# ---- Commands ----------------------------------------------------------------------------------

def common_flags(args, corpus: str, seed: int) -> list[str]:
    return [f"--input_file={corpus}", f"--vocab_file={args.vocab_file}", "--do_lower_case",
            "--max_seq_length=128", "--max_predictions_per_seq=20",
            f"--dupe_factor={args.dupe_factor}", "--do_whole_word_mask",
            "--masked_lm_prob=0.15", f"--random_seed={seed}"]


def google_command(args, corpus: str, output: str, seed: int) -> list[str]:
    return [args.python, str(GOOGLE_RUNNER), f"--google_bert_dir={args.google_bert_dir}",
            f"--output_file={output}"] + common_flags(args, corpus, seed)


def bert_tf_command(args, corpus: str, output: str, seed: int) -> list[str]:
    return [args.python, str(REPO / "create_pretraining_data.py"), f"--output_file={output}",
            f"--num_workers={args.num_workers}",
            f"--num_output_shards={args.num_output_shards}", "--overwrite_output",
            "--noprogress"] + common_flags(args, corpus, seed) + args.bert_tf_flags.split()


def repeated_corpus(corpus: str, times: int, work_dir: Path) -> str:
    """The corpus written `times` times into one file, a blank line between the copies."""
    if times == 1:
        return corpus
    path = work_dir / f"{Path(corpus).stem}_x{times}.txt"
    text = Path(corpus).read_bytes()
    if not text.endswith(b"\n"):
        text += b"\n"
    if not text.endswith(b"\n\n"):
        text += b"\n"  # the next copy's first document must not continue this one's last
    if not path.exists() or path.stat().st_size != len(text) * times:
        with open(path, "wb") as f:
            for _ in range(times):
                f.write(text)
    return str(path)


# ---- Measuring one process tree ----------------------------------------------------------------

class TreeMemorySampler(threading.Thread):
    """Peak of the summed RSS (and PSS) of a process and all its descendants, sampled."""

    def __init__(self, pid: int, interval: float, pss_every: int = 4):
        super().__init__(daemon=True)
        import psutil

        self.psutil = psutil
        self.root = psutil.Process(pid)
        self.interval, self.pss_every = interval, pss_every
        self.stop = threading.Event()
        self.peak_rss = self.peak_pss = self.peak_single_rss = 0
        self.max_processes = self.samples = 0

    def run(self):
        psutil = self.psutil
        tick = 0
        while not self.stop.is_set():
            try:
                procs = [self.root] + self.root.children(recursive=True)
            except psutil.Error:  # the root has exited
                break
            rss = pss = 0
            with_pss = tick % self.pss_every == 0
            for proc in procs:
                try:
                    if with_pss:
                        info = proc.memory_full_info()
                        pss += info.pss
                    else:
                        info = proc.memory_info()
                    rss += info.rss
                    self.peak_single_rss = max(self.peak_single_rss, info.rss)
                except psutil.Error:  # exited between the listing and the read
                    pass
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_pss = max(self.peak_pss, pss)
            self.max_processes = max(self.max_processes, len(procs))
            self.samples += 1
            tick += 1
            self.stop.wait(self.interval)


def run_measured(command: list[str], log_path: Path, interval: float) -> dict:
    """Runs `command` (cwd: the repository) and measures it as a whole process tree."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_before = os.getloadavg()[0]
    with open(log_path, "wb") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        sampler = TreeMemorySampler(proc.pid, interval)
        sampler.start()
        returncode = proc.wait()
        wall = time.perf_counter() - start
    sampler.stop.set()
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if returncode != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(command)} exited with {returncode}; log {log_path}:\n{tail}")
    return {"wall_seconds": wall,
            "cpu_seconds": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "peak_tree_rss_mb": sampler.peak_rss / 2**20,
            "peak_tree_pss_mb": sampler.peak_pss / 2**20,
            "peak_single_process_rss_mb": sampler.peak_single_rss / 2**20,
            "max_processes": sampler.max_processes, "memory_samples": sampler.samples,
            "load_average_1min_before": load_before,
            "load_average_1min_after": os.getloadavg()[0]}


# ---- Reading records with Google's schema --------------------------------------------------------

def google_schema(tf, max_seq_length=128, max_predictions_per_seq=20):
    """run_pretraining.py's name_to_features (Google's reader of these files)."""
    S, P = max_seq_length, max_predictions_per_seq
    return {"input_ids": tf.io.FixedLenFeature([S], tf.int64),
            "input_mask": tf.io.FixedLenFeature([S], tf.int64),
            "segment_ids": tf.io.FixedLenFeature([S], tf.int64),
            "masked_lm_positions": tf.io.FixedLenFeature([P], tf.int64),
            "masked_lm_ids": tf.io.FixedLenFeature([P], tf.int64),
            "masked_lm_weights": tf.io.FixedLenFeature([P], tf.float32),
            "next_sentence_labels": tf.io.FixedLenFeature([1], tf.int64)}


def read_records(files: list[str], arrays: bool = True):
    """Parses every record with Google's schema -> (count, dict of numpy arrays or None).

    The arrays are those of the files in order, plus `file_index` (which file a record is in).
    """
    import tensorflow as tf

    schema = google_schema(tf)
    count, parts = 0, {name: [] for name in list(schema) + ["file_index"]}
    for i, path in enumerate(files):
        dataset = (tf.data.TFRecordDataset([path]).batch(4096)
                   .map(lambda s: tf.io.parse_example(s, schema), num_parallel_calls=2))
        for batch in dataset.as_numpy_iterator():
            count += len(batch["input_ids"])
            if arrays:
                for name, value in batch.items():
                    parts[name].append(value)
                parts["file_index"].append(np.full(len(value), i))
    if not arrays:
        return count, None
    return count, {name: np.concatenate(value) for name, value in parts.items()}


def bert_tf_files(output: str) -> list[str]:
    with open(output + ".summary.json", encoding="utf-8") as f:
        summary = json.load(f)
    return [s["file"] for s in summary["shards"]], summary["instances"]


def remove_outputs(output: str) -> None:
    for path in glob.glob(output + "*"):
        os.remove(path)


# ---- The benchmark ---------------------------------------------------------------------------

def benchmark(args, work_dir: Path) -> tuple[list[dict], dict]:
    scales = [int(s) for s in args.scales.split(",") if s.strip()]
    configs = []  # (name, implementation, scale)
    if not args.skip_google:
        configs.append(("google 1x", "google", 1))
    configs += [(f"bert_tf {s}x", "bert_tf", s) for s in scales]
    corpora = {scale: repeated_corpus(args.corpus, scale, work_dir)
               for scale in {c[2] for c in configs}}
    kept = {}  # implementation -> output files of the corpus at 1x, seed args.random_seed
    runs = []
    import tensorflow  # noqa: F401  (for counting; imported now, so its log lines come first)
    for r in range(args.rounds):
        order = configs if r % 2 == 0 else configs[::-1]
        for name, impl, scale in order:
            tag = f"{impl}_{scale}x_r{r}"
            output = str(work_dir / "out" / f"{tag}.tfrecord")
            remove_outputs(output)
            make = google_command if impl == "google" else bert_tf_command
            command = make(args, corpora[scale], output, args.random_seed)
            print(f"round {r + 1}/{args.rounds}: {name} ...", end=" ", flush=True)
            result = run_measured(command, work_dir / "logs" / f"{tag}.log",
                                  args.sample_interval)
            if impl == "google":
                files = [output]
                instances, _ = read_records(files, arrays=False)
                result["counted_by"] = "tf.data, Google's schema"
            else:
                files, instances = bert_tf_files(output)
                result["counted_by"] = "bert_tf summary JSON"
                if r == 0:
                    parsed, _ = read_records(files, arrays=False)
                    if parsed != instances:
                        raise RuntimeError(f"{name}: summary says {instances} instances, "
                                           f"the files hold {parsed}")
                    result["counted_by"] += " (= tf.data count, Google's schema)"
            result.update(name=name, implementation=impl, scale=scale, round=r,
                          instances=instances, instances_per_second=instances / result[
                              "wall_seconds"], output_bytes=sum(map(os.path.getsize, files)),
                          command=" ".join(command))
            runs.append(result)
            print(f"{result['wall_seconds']:.1f} s, {instances:,} instances, "
                  f"{result['instances_per_second']:,.0f}/s, peak tree RSS "
                  f"{result['peak_tree_rss_mb']:,.0f} MiB (PSS {result['peak_tree_pss_mb']:,.0f})"
                  f", load {result['load_average_1min_before']:.2f}", flush=True)
            if scale == 1 and impl not in kept:
                kept[impl] = files  # the statistics read them
            else:
                remove_outputs(output)
    return runs, kept


def summarize(runs: list[dict]) -> list[dict]:
    rows = []
    for name in dict.fromkeys(r["name"] for r in runs):
        rs = [r for r in runs if r["name"] == name]
        wall = statistics.median(r["wall_seconds"] for r in rs)
        instances = rs[0]["instances"]
        if any(r["instances"] != instances for r in rs):
            raise RuntimeError(f"{name}: instance counts differ between rounds (same seed)")
        rows.append({"name": name, "scale": rs[0]["scale"], "instances": instances,
                     "wall_seconds_median": wall,
                     "wall_seconds": [round(r["wall_seconds"], 2) for r in rs],
                     "instances_per_second": instances / wall,
                     "cpu_seconds_median": statistics.median(r["cpu_seconds"] for r in rs),
                     "instances_per_cpu_second": instances / statistics.median(
                         r["cpu_seconds"] for r in rs),
                     "peak_tree_rss_mb_max": max(r["peak_tree_rss_mb"] for r in rs),
                     "peak_tree_rss_mb": [round(r["peak_tree_rss_mb"]) for r in rs],
                     "peak_tree_pss_mb_max": max(r["peak_tree_pss_mb"] for r in rs),
                     "max_processes": max(r["max_processes"] for r in rs),
                     "output_mb": rs[0]["output_bytes"] / 2**20,
                     "load_average": [round(r["load_average_1min_before"], 2) for r in rs]})
    return rows


def print_table(rows: list[dict]) -> dict:
    print("\n| run | instances | wall s (median; rounds) | instances/s | CPU s | instances/CPU s | "
          "peak RSS, all processes, MiB (max; rounds) | peak PSS MiB | processes |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['name']} | {row['instances']:,} | {row['wall_seconds_median']:.1f} "
              f"({', '.join(f'{w:.1f}' for w in row['wall_seconds'])}) | "
              f"{row['instances_per_second']:,.0f} | {row['cpu_seconds_median']:.1f} | "
              f"{row['instances_per_cpu_second']:,.0f} | "
              f"{row['peak_tree_rss_mb_max']:,.0f} "
              f"({', '.join(str(m) for m in row['peak_tree_rss_mb'])}) | "
              f"{row['peak_tree_pss_mb_max']:,.0f} | {row['max_processes']} |")
    by_name = {row["name"]: row for row in rows}
    ratios = {}
    google, b1, b10 = by_name.get("google 1x"), by_name.get("bert_tf 1x"), by_name.get(
        "bert_tf 10x")
    print()
    if google and b10:
        ratios["bert_tf_10x_over_google_1x_instances_per_second"] = (
            b10["instances_per_second"] / google["instances_per_second"])
        ratios["bert_tf_10x_over_google_1x_instances_per_cpu_second"] = (
            b10["instances_per_cpu_second"] / google["instances_per_cpu_second"])
        ratios["bert_tf_10x_peak_over_google_peak"] = (
            b10["peak_tree_rss_mb_max"] / google["peak_tree_rss_mb_max"])
    if google and b1:
        ratios["bert_tf_1x_over_google_1x_instances_per_second"] = (
            b1["instances_per_second"] / google["instances_per_second"])
        ratios["bert_tf_1x_over_google_1x_wall"] = (
            b1["wall_seconds_median"] / google["wall_seconds_median"])
    if b1 and b10:
        ratios["bert_tf_10x_peak_over_bert_tf_1x_peak"] = (
            b10["peak_tree_rss_mb_max"] / b1["peak_tree_rss_mb_max"])
        ratios["bert_tf_10x_wall_over_bert_tf_1x_wall"] = (
            b10["wall_seconds_median"] / b1["wall_seconds_median"])
    targets = {"bert_tf_10x_over_google_1x_instances_per_second": ">= 10",
               "bert_tf_10x_peak_over_bert_tf_1x_peak": "<= 1.2",
               "bert_tf_10x_peak_over_google_peak": "< 1"}
    for name, value in ratios.items():
        target = f" (target {targets[name]})" if name in targets else ""
        print(f"{name}: {value:.2f}{target}")
    return ratios


# ---- Statistics of the outputs, from the records alone -----------------------------------------

_K = 8  # WordPieces that locate a segment in the corpus
_HASH_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)


def load_google_tokenization(google_bert_dir: str | None):
    """Google's tokenization.py from the checkout (or bert_tf's FullTokenizer, the same rules,
    without a checkout): -> a module-like object with FullTokenizer."""
    if not google_bert_dir:
        from bert_tf import tokenization
        return tokenization
    import tensorflow as tf

    saved = sys.modules.get("tensorflow")
    sys.modules["tensorflow"] = tf.compat.v1  # its `tf.gfile.GFile` reads the vocab
    try:
        spec = importlib.util.spec_from_file_location(
            "google_tokenization", os.path.join(google_bert_dir, "tokenization.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.modules["tensorflow"] = saved
    return module


class Corpus:
    """The corpus tokenized as Google does (documents of sentences of ids), flattened into one
    token stream with per-position document number and sentence boundaries, and a table from
    the hash of every K WordPieces occurring exactly once (within one document) to its
    position."""

    def __init__(self, path: str, tokenizer):
        documents, document = [], []
        with open(path, "rb") as f:
            for raw in f:
                line = raw.decode("utf-8").strip()
                if not line:
                    if document:
                        documents.append(document)
                    document = []
                    continue
                ids = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(line))
                if ids:
                    document.append(ids)
        if document:
            documents.append(document)
        self.num_documents = len(documents)
        self.num_sentences = sum(map(len, documents))
        flat, doc_of, sent_start, sent_end = [], [], [], []
        for d, document in enumerate(documents):
            for sentence in document:
                flat += sentence
                doc_of += [d] * len(sentence)
                sent_start += [True] + [False] * (len(sentence) - 1)
                sent_end += [False] * (len(sentence) - 1) + [True]
        self.tokens = np.array(flat, np.uint64)
        self.doc_of = np.array(doc_of, np.int64)
        self.sent_start = np.array(sent_start, bool)
        self.sent_end = np.array(sent_end, bool)
        n = len(flat) - _K + 1
        hashes = window_hash(self.tokens[None, :], np.arange(n)[None, :])[0]
        same_doc = self.doc_of[:n] == self.doc_of[_K - 1:]
        positions = np.arange(n)[same_doc]
        hashes = hashes[same_doc]
        unique, first, counts = np.unique(hashes, return_index=True, return_counts=True)
        self.hash_table = unique[counts == 1]
        self.hash_positions = positions[first[counts == 1]]

    def locate(self, hashes: np.ndarray) -> np.ndarray:
        """Positions of K-grams (by hash) that occur exactly once in the corpus, else -1."""
        i = np.searchsorted(self.hash_table, hashes)
        i = np.minimum(i, len(self.hash_table) - 1)
        return np.where(self.hash_table[i] == hashes, self.hash_positions[i], -1)


def window_hash(tokens: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Polynomial hash (mod 2^64) of tokens[row, start:start + K] for each start, [R, N]."""
    h = np.zeros(starts.shape, np.uint64)
    rows = np.arange(tokens.shape[0])[:, None]
    with np.errstate(over="ignore"):
        for k in range(_K):
            h = h * _HASH_MULTIPLIER + tokens[rows, starts + k].astype(np.uint64) + np.uint64(1)
    return h


def record_stats(data: dict, corpus: Corpus, is_suffix: np.ndarray, mask_id: int,
                 dupe_factor: int, max_predictions: int = 20, masked_lm_prob: float = 0.15
                 ) -> dict:
    """Statistics of one output (all records parsed with Google's schema)."""
    ids, mask = data["input_ids"], data["input_mask"].astype(bool)
    seg, labels = data["segment_ids"], data["next_sentence_labels"][:, 0]
    pos, mids, w = data["masked_lm_positions"], data["masked_lm_ids"], data["masked_lm_weights"]
    n, S = ids.shape
    rows = np.arange(n)
    length = mask.sum(1)
    len_a = (seg == 0).sum(1) - (S - length) - 2  # padding has segment 0; [CLS] and [SEP]
    len_b = length - len_a - 3
    real = w > 0
    num_masked = real.sum(1)
    # Original tokens: the masked positions get their masked_lm_ids back.
    original = ids.copy()
    mr, mc = np.nonzero(real)
    original[mr, pos[mr, mc]] = mids[mr, mc]
    at = ids[mr, pos[mr, mc]]
    is_mask = at == mask_id
    is_kept = ~is_mask & (at == mids[mr, mc])
    masked_pos = np.zeros((n, S), bool)
    masked_pos[mr, pos[mr, mc]] = True
    # Masked positions may not be [CLS] or either [SEP]; they are sorted (Google sorts them).
    special = np.zeros((n, S), bool)
    special[:, 0] = True
    special[rows, len_a + 1] = True
    special[rows, length - 1] = True
    bad_positions = int((masked_pos & (special | ~mask)).sum())
    unsorted = int((np.diff(np.where(real, pos, S), axis=1) < 0).sum())
    num_to_predict = np.minimum(max_predictions, np.maximum(
        1, np.round(length * masked_lm_prob).astype(np.int64)))
    # Whole words, by Google's rule: a "##" piece joins the previous candidate's group.
    candidate = mask & ~special
    earlier = np.cumsum(candidate, axis=1) - candidate
    joins = candidate & is_suffix[original] & (earlier > 0)
    group = np.cumsum(candidate & ~joins, axis=1) - 1
    key = (rows[:, None] * S + np.maximum(group, 0))[candidate]
    size = np.bincount(key, minlength=n * S)
    hit = np.bincount(key, weights=masked_pos[candidate], minlength=n * S)
    partial_groups = int(((hit > 0) & (hit < size)).sum())
    masked_groups = int((hit > 0).sum())
    groups = int((size > 0).sum())

    # Where the segments come from: each located by its first and last K WordPieces.
    def locate(first, count):
        ok = count >= _K
        f = np.where(ok, first, 1)
        c = np.where(ok, count, _K)
        start = corpus.locate(window_hash(original, f[:, None])[:, 0])
        end = corpus.locate(window_hash(original, (f + c - _K)[:, None])[:, 0])
        found = ok & (start >= 0) & (end == start + c - _K)
        return found, np.where(found, start, 0)

    a_found, a_start = locate(np.ones(n, np.int64), len_a)
    b_found, b_start = locate(len_a + 2, len_b)
    both = a_found & b_found
    a_end = a_start + len_a - 1
    b_end = b_start + len_b - 1
    a_starts_sentence = corpus.sent_start[a_start]
    a_ends_sentence = corpus.sent_end[a_end]
    b_starts_sentence = corpus.sent_start[b_start]
    b_ends_sentence = corpus.sent_end[b_end]
    doc_a, doc_b = corpus.doc_of[a_start], corpus.doc_of[b_start]
    is_next, random_next = both & (labels == 0), both & (labels == 1)
    gap = b_start - (a_end + 1)
    broken = both & ~(a_starts_sentence & a_ends_sentence & b_starts_sentence & b_ends_sentence
                      & ((labels == 1) | (gap == 0)))
    per_doc = np.bincount(doc_a[a_found], minlength=corpus.num_documents)
    # Order of the records in the files: Google shuffles all instances before writing; a file
    # that follows the corpus order shows a correlation of position and document number, and
    # more neighbours from the same document than a shuffled file (sum of p_d^2).
    file_index = data["file_index"]
    correlations, weights = [], []
    for f in np.unique(file_index):
        rows_f = np.nonzero((file_index == f) & a_found)[0]
        if rows_f.size > 2:
            correlations.append(np.corrcoef(rows_f, doc_a[rows_f])[0, 1])
            weights.append(rows_f.size)
    neighbours = a_found[:-1] & a_found[1:] & (file_index[:-1] == file_index[1:])
    same_as_next = (doc_a[:-1] == doc_a[1:])[neighbours]
    p_doc = per_doc / per_doc.sum()

    def frac(x, where=None):
        x = x if where is None else x[where]
        return float(x.mean()) if x.size else float("nan")

    return {
        "instances": n,
        "instances_per_document_per_dupe": n / (corpus.num_documents * dupe_factor),
        "mean_tokens_per_instance": float(length.mean()),
        "std_tokens_per_instance": float(length.std()),
        "fraction_full_length_128": frac(length == S),
        "fraction_shorter_than_64": frac(length < 64),
        "fraction_shorter_than_32": frac(length < 32),
        "mean_tokens_a": float(len_a.mean()),
        "mean_tokens_b": float(len_b.mean()),
        "fraction_b_longer_than_a": frac(len_b > len_a),
        "nsp_random_fraction": frac(labels == 1),
        "masked_per_instance": float(num_masked.mean()),
        "masked_fraction_of_non_special": float(num_masked.sum() / (length - 3).sum()),
        "fraction_masked_below_num_to_predict": frac(num_masked < num_to_predict),
        "fraction_masked_above_num_to_predict": frac(num_masked > num_to_predict),
        "fraction_mask_token": frac(is_mask),
        "fraction_kept": frac(is_kept),
        "fraction_random_token": frac(~is_mask & ~is_kept),
        "fraction_masked_that_are_##_pieces": frac(is_suffix[mids[mr, mc]]),
        "mean_whole_word_groups_masked_per_instance": masked_groups / n,
        "fraction_of_groups_masked": masked_groups / groups,
        "partially_masked_word_groups": partial_groups,
        "masked_at_special_or_padding": bad_positions,
        "unsorted_masked_positions": unsorted,
        "fraction_a_located": frac(a_found),
        "fraction_both_located": frac(both),
        "a_starts_at_sentence_start": frac(a_starts_sentence, both),
        "a_ends_at_sentence_end": frac(a_ends_sentence, both),
        "b_starts_at_sentence_start": frac(b_starts_sentence, both),
        "b_ends_at_sentence_end": frac(b_ends_sentence, both),
        "is_next_b_follows_a_directly": frac(gap == 0, is_next),
        "is_next_b_in_same_document": frac(doc_a == doc_b, is_next),
        "is_next_b_before_a": frac(gap < 0, is_next),
        "random_next_b_in_other_document": frac(doc_a != doc_b, random_next),
        "random_next_b_starts_document": frac(
            b_starts_sentence & ((b_start == 0) | (corpus.doc_of[np.maximum(b_start - 1, 0)]
                                                   != doc_b)), random_next),
        "random_next_mean_document_distance": frac(np.abs(doc_a - doc_b), random_next),
        "random_next_document_within_64": frac(np.abs(doc_a - doc_b) <= 64, random_next),
        "fraction_truncated_estimate": frac(broken, both),
        "truncated_full_length_fraction": frac(length[broken] == S),
        "instances_per_document_cv": float(per_doc.std() / per_doc.mean()),
        "file_order_correlation_with_document_number": float(np.average(correlations,
                                                                        weights=weights)),
        "next_record_from_same_document": frac(same_as_next),
        "next_record_from_same_document_if_shuffled": float((p_doc ** 2).sum()),
        "_length_histogram": np.bincount(length, minlength=S + 1),
        "_per_document": per_doc,
    }


def compare_stats(args, kept: dict, work_dir: Path) -> dict:
    """Runs the extra seeds (untimed), computes the statistics and prints the comparison."""
    seeds = [int(s) for s in args.stats_seeds.split(",")]
    impls = ["bert_tf"] if args.skip_google else ["google", "bert_tf"]
    outputs = {}
    for impl in impls:
        for seed in seeds:
            if seed == args.random_seed and impl in kept:
                outputs[impl, seed] = kept[impl]
                continue
            tag = impl if impl == "google" or not args.bert_tf_flags else "bert_tf_" + "".join(
                c if c.isalnum() else "_" for c in args.bert_tf_flags.strip("-"))
            output = str(work_dir / "out" / f"stats_{tag}_s{seed}.tfrecord")
            done = output if impl == "google" else output + ".summary.json"
            if args.reuse_stats_outputs and os.path.exists(done):
                outputs[impl, seed] = [output] if impl == "google" else bert_tf_files(output)[0]
                continue
            remove_outputs(output)
            make = google_command if impl == "google" else bert_tf_command
            print(f"statistics: {impl} seed {seed} ...", flush=True)
            run_measured(make(args, args.corpus, output, seed),
                         work_dir / "logs" / f"stats_{impl}_s{seed}.log", 1.0)
            outputs[impl, seed] = [output] if impl == "google" else bert_tf_files(output)[0]

    tokenization = load_google_tokenization(None if args.skip_google else args.google_bert_dir)
    tokenizer = tokenization.FullTokenizer(vocab_file=args.vocab_file, do_lower_case=True)
    vocab_words = [None] * (max(tokenizer.vocab.values()) + 1)
    for token, index in tokenizer.vocab.items():
        vocab_words[index] = token
    is_suffix = np.array([bool(t) and t.startswith("##") for t in vocab_words])
    t0 = time.time()
    corpus = Corpus(args.corpus, tokenizer)
    print(f"corpus: {corpus.num_documents} documents, {corpus.num_sentences} sentences, "
          f"{len(corpus.tokens):,} WordPieces, {len(corpus.hash_table):,} unique {_K}-grams "
          f"({time.time() - t0:.0f} s)", flush=True)
    stats = {}
    for key, files in outputs.items():
        _, data = read_records(files)
        stats[key] = record_stats(data, corpus, is_suffix, tokenizer.vocab["[MASK]"],
                                  args.dupe_factor)

    names = [k for k in stats[next(iter(stats))] if not k.startswith("_")]
    table = {}
    print(f"\nStatistics of the outputs on {Path(args.corpus).name}, seeds {seeds}: "
          "mean (min-max) per implementation; t = Welch's t of the difference of the means")
    print(f"\n| statistic | {' | '.join(impls)} | t |")
    print("|---|" + "---:|" * (len(impls) + 1))
    for name in names:
        values = {impl: [stats[impl, s][name] for s in seeds] for impl in impls}
        cells = []
        for impl in impls:
            v = values[impl]
            cells.append(f"{fmt(statistics.mean(v))} ({fmt(min(v))}-{fmt(max(v))})")
        t = welch_t(values["bert_tf"], values["google"]) if len(impls) == 2 else None
        table[name] = {impl: values[impl] for impl in impls} | {"t": t}
        print(f"| {name} | {' | '.join(cells)} | {'' if t is None else f'{t:.1f}'} |")
    if len(impls) == 2:
        print()
        extra = {}
        # Length distributions: Kolmogorov-Smirnov distance between the pooled histograms,
        # and the same between the seeds of each implementation (the noise).
        def cdf(h):
            return np.cumsum(h) / h.sum()
        pooled = {impl: sum(stats[impl, s]["_length_histogram"] for s in seeds) for impl in impls}
        extra["length_ks_google_vs_bert_tf"] = float(np.abs(
            cdf(pooled["google"]) - cdf(pooled["bert_tf"])).max())
        for impl in impls:
            extra[f"length_ks_between_{impl}_seeds"] = max(
                float(np.abs(cdf(stats[impl, a]["_length_histogram"])
                             - cdf(stats[impl, b]["_length_histogram"])).max())
                for i, a in enumerate(seeds) for b in seeds[i + 1:])
        # Instances per document: the two implementations' per-document counts (A's document),
        # summed over the seeds, against the same between Google's seeds.
        # Instances per document (A's document): correlation of the per-document counts of
        # single outputs, Google against bert_tf and each against itself under another seed.
        def doc_corr(pairs):
            return float(np.mean([np.corrcoef(stats[a]["_per_document"],
                                              stats[b]["_per_document"])[0, 1]
                                  for a, b in pairs]))
        extra["per_document_correlation_google_vs_bert_tf"] = doc_corr(
            [(("google", a), ("bert_tf", b)) for a in seeds for b in seeds])
        for impl in impls:
            if len(seeds) >= 2:
                extra[f"per_document_correlation_between_{impl}_seeds"] = doc_corr(
                    [((impl, a), (impl, b)) for i, a in enumerate(seeds) for b in seeds[i + 1:]])
        per_doc = {impl: sum(stats[impl, s]["_per_document"] for s in seeds) for impl in impls}
        big = per_doc["google"] >= 100
        if big.any():
            extra["per_document_ratio_bert_tf_over_google_median_docs_100plus"] = float(
                np.median(per_doc["bert_tf"][big] / per_doc["google"][big]))
        for name, value in extra.items():
            print(f"{name}: {value:.4f}")
        table["_extra"] = extra
    return table


def fmt(x: float) -> str:
    if isinstance(x, (int, np.integer)) or float(x).is_integer() and abs(x) >= 10:
        return f"{x:,.0f}"
    return f"{x:.4f}" if abs(x) < 10 else f"{x:.2f}"


def welch_t(a: list[float], b: list[float]) -> float | None:
    if len(a) < 2 or len(b) < 2:
        return None
    se = (statistics.variance(a) / len(a) + statistics.variance(b) / len(b)) ** 0.5
    diff = statistics.mean(a) - statistics.mean(b)
    if se == 0:
        return 0.0 if diff == 0 else float("inf")
    return diff / se


def main():
    args = parse_args()
    for path in (args.corpus, args.vocab_file):
        if not Path(path).is_file():
            sys.exit(f"{path} not found: pass --corpus/--vocab_file or set BERT_TF_SHARED_DATA")
    if not args.skip_google:
        if not args.google_bert_dir:
            sys.exit(f"--google_bert_dir is required (or --skip_google): {CLONE_HINT}")
        args.google_bert_dir = os.path.abspath(args.google_bert_dir)
        if not os.path.isfile(os.path.join(args.google_bert_dir, "create_pretraining_data.py")):
            sys.exit(f"--google_bert_dir={args.google_bert_dir} has no "
                     f"create_pretraining_data.py: pass {CLONE_HINT}")
    try:
        import psutil  # noqa: F401
    except ImportError:
        sys.exit("psutil is needed to sample the memory of the process tree: pip install psutil")
    work_dir = Path(args.work_dir)
    for sub in ("out", "logs"):
        (work_dir / sub).mkdir(parents=True, exist_ok=True)

    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()}, python {args.python}")
    started = time.time()
    runs, kept = benchmark(args, work_dir) if args.rounds > 0 else ([], {})
    rows = summarize(runs)
    ratios = print_table(rows) if rows else {}
    stats = compare_stats(args, kept, work_dir) if args.stats else None
    print(f"\nload average at the end {os.getloadavg()}; {time.time() - started:.0f} s in all")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"runs": runs, "rows": rows, "ratios": ratios, "statistics": stats,
                       "args": vars(args)}, f, indent=1, default=lambda o: o.tolist()
                      if hasattr(o, "tolist") else str(o))


if __name__ == "__main__":
    main()

"""Pre-training input at scale: index build, start-up, resume, per-worker bytes, reader speed.

Makes real records from text with create_pretraining_data.py (python_docs_train.txt, dupe
factor 5, 4 shards, at sequence 128 and 512), then a LARGE record set (default >= 20 GB) and a
SMALL one (~1 GB) in a work folder by concatenating byte copies of those real shards into shards
of ~256 MB (concatenated TFRecord files are TFRecord files), and measures:

  a. `index_records.py build --rebuild` on the large set: wall time, MB/s (page cache warm, the
     files having just been written; and cold, after dropping the page cache, when allowed);
  b. launch of run_pretraining.py (tiny model, 1 step) on the large set against the small one:
     whole process, launch to records opened, launch to the first step; rounds alternate;
  c. the first batch of a fresh reader at 0%, 50% and 95% of an epoch of the large set;
  d. bytes read per simulated worker (1, 2, 4, 8 workers) over 200 steps of a global batch of
     256 on the large set, and over one whole epoch of the small set with 8 workers;
  e. the reader's records/s on one core (taskset) at sequence 128 and 512, threads=1;
  f. the peer: Model Garden's file-sharded tf.data pipeline on the same files, its records/s on
     one core, and the time to its first batch at 50% of an epoch of the small set with .skip().

Every number goes to --json. The work folder is deleted at the end unless --keep.

  cd /work/main && PYTHONPATH=. .venv/bin/python bench/bench_records_scale.py \
      --large_gb 2 --small_gb 0.5 --json /tmp/records_scale_quick.json       # quick check
  cd /work/main && PYTHONPATH=. .venv/bin/python bench/bench_records_scale.py \
      --json bench/records_scale_results.json                                # the full run
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = "/work/shared/data"
GB = 1e9
MB = 1e6

# NVIDIA DeepLearningExamples, TensorFlow2/LanguageModeling/BERT/README.md, "Pre-training
# training performance: Single-node on NVIDIA DGX A100 (8x A100 80GB)", mixed precision,
# sequences/s (TF 21.02 container, LAMB).
NVIDIA_A100 = {128: {"gpus_8": 3799.24, "gpus_1": 485.59},
               512: {"gpus_8": 649.69, "gpus_1": 96.52}}
PREDICTIONS = {128: 20, 512: 80}


# -- small helpers ---------------------------------------------------------------------------------

def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


def meminfo() -> dict:
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, v = line.split(":", 1)
            if k in ("MemTotal", "MemAvailable", "Cached", "Dirty"):
                out[k] = int(v.split()[0]) * 1024
    return out


def resident_bytes(files) -> int | None:
    """Bytes of `files` in the page cache (util-linux fincore), None if it cannot tell."""
    if not files or shutil.which("fincore") is None:
        return None
    total = 0
    for i in range(0, len(files), 64):
        r = subprocess.run(["fincore", "-b", "-n", "-o", "RES"] + list(files[i:i + 64]),
                           capture_output=True, text=True, check=False)
        if r.returncode != 0:
            return None
        total += sum(int(x) for x in r.stdout.split())
    return total


def can_drop_caches() -> bool:
    return os.geteuid() == 0 and os.access("/proc/sys/vm/drop_caches", os.W_OK)


def drop_caches() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def run_timed(cmd, log_path: str, env=None, cwd=REPO) -> dict:
    """Runs cmd (no shell), stdout+stderr to log_path; wall seconds (monotonic), the child's
    user+sys CPU seconds and peak RSS (the OS's own accounting, os.wait4), exit code."""
    with open(log_path, "wb") as out:
        t_launch = time.time()
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env=env, cwd=cwd)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    return {"wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "peak_rss_mb": ru.ru_maxrss / 1024,
            "exit": p.returncode, "launched_at": t_launch, "log": log_path}


def child_env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update(extra)
    return env


def run_worker(mode: str, args: dict, pin: str | None = None, log_dir: str = "/tmp") -> dict:
    """This script in --worker mode in a fresh process (optionally pinned with taskset); returns
    the JSON it prints on its RESULT line."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", mode,
           "--worker_args", json.dumps(args)]
    if pin is not None:
        cmd = ["taskset", "-c", pin] + cmd
    log_path = os.path.join(log_dir, f"worker_{mode}_{int(time.time() * 1000)}.log")
    r = run_timed(cmd, log_path, env=child_env())
    with open(log_path, errors="replace") as f:
        text = f.read()
    for line in text.splitlines()[::-1]:
        if line.startswith("RESULT "):
            result = json.loads(line[7:])
            result["_process"] = {k: r[k] for k in ("wall_s", "cpu_s", "peak_rss_mb")}
            return result
    raise RuntimeError(f"worker {mode} failed (exit {r['exit']}); its output:\n{text[-4000:]}")


# -- data ------------------------------------------------------------------------------------------

def create_base(work: str, seq: int, args) -> dict:
    out_dir = os.path.join(work, f"base{seq}")
    os.makedirs(out_dir, exist_ok=True)
    cmd = [sys.executable, "create_pretraining_data.py", f"--input_file={args.corpus}",
           f"--output_file={out_dir}/train.tfrecord", f"--vocab_file={args.vocab_file}",
           "--dupe_factor=5", "--num_output_shards=4", f"--max_seq_length={seq}",
           f"--max_predictions_per_seq={PREDICTIONS[seq]}", "--overwrite_output", "--noprogress"]
    r = run_timed(cmd, os.path.join(work, f"create_{seq}.log"), env=child_env())
    if r["exit"] != 0:
        raise RuntimeError(f"create_pretraining_data.py failed, see {r['log']}")
    files = sorted(f for f in glob.glob(f"{out_dir}/train.tfrecord-*")
                   if not f.endswith((".idx", ".json")))
    with open(f"{out_dir}/train.tfrecord.summary.json") as f:
        summary = json.load(f)
    size = sum(os.path.getsize(f) for f in files)
    log(f"  seq {seq}: {summary['instances']:,} instances, {len(files)} shards, "
        f"{size / MB:.1f} MB, {r['wall_s']:.1f} s")
    return {"files": files, "bytes": size, "instances": summary["instances"],
            "wall_s": r["wall_s"], "command": " ".join(cmd)}


def make_set(directory: str, target_bytes: float, base_files, shard_bytes: float) -> dict:
    """Shards of ~shard_bytes, each k byte copies of one real shard, until >= target_bytes."""
    os.makedirs(directory, exist_ok=True)
    data = {}
    total, i = 0, 0
    t0 = time.monotonic()
    while total < target_bytes:
        base = base_files[i % len(base_files)]
        if base not in data:
            with open(base, "rb") as f:
                data[base] = f.read()
        blob = data[base]
        copies = max(1, round(shard_bytes / len(blob)))
        path = os.path.join(directory, f"part-{i:05d}.tfrecord")
        with open(path, "wb") as f:
            f.writelines([blob] * copies)
        total += copies * len(blob)
        i += 1
        if i % 10 == 0:
            log(f"    {directory}: {i} shards, {total / GB:.2f} GB")
    write_s = time.monotonic() - t0
    t1 = time.monotonic()
    os.sync()
    sync_s = time.monotonic() - t1
    return {"dir": directory, "pattern": os.path.join(directory, "*.tfrecord"), "shards": i,
            "bytes": total, "write_s": write_s, "sync_s": sync_s,
            "write_mb_s": total / MB / (write_s + sync_s)}


def set_files(s: dict):
    return sorted(glob.glob(s["pattern"]))


def index_build(s: dict, work: str, label: str, rebuild=True) -> dict:
    cmd = [sys.executable, "index_records.py", "build", f"--input_file={s['pattern']}"]
    if rebuild:
        cmd.insert(3, "--rebuild")
    files = set_files(s)
    resident = resident_bytes(files)
    r = run_timed(cmd, os.path.join(work, f"index_{label}.log"), env=child_env())
    if r["exit"] != 0:
        raise RuntimeError(f"index_records.py failed, see {r['log']}")
    with open(r["log"], errors="replace") as f:
        tail = [line for line in f.read().splitlines() if "indexed" in line][-1:]
    out = {"command": " ".join(cmd), "bytes": s["bytes"], "wall_s": r["wall_s"],
           "cpu_s": r["cpu_s"], "peak_rss_mb": r["peak_rss_mb"],
           "mb_s": s["bytes"] / MB / r["wall_s"], "own_line": tail[0] if tail else None,
           "resident_before_bytes": resident, "load": loadavg()}
    log(f"  index {label}: {s['bytes'] / GB:.2f} GB in {r['wall_s']:.1f} s = "
        f"{out['mb_s']:.0f} MB/s (CPU {r['cpu_s']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB, "
        f"{(resident or 0) / GB:.2f} GB in page cache before)")
    return out


# -- b. launch to first step -----------------------------------------------------------------------

_ABSL_TIME = re.compile(r"^[IWEF]\d{4} (\d\d):(\d\d):(\d\d\.\d+) ")


def _log_time(line: str, day: datetime.datetime) -> float | None:
    m = _ABSL_TIME.match(line)
    if not m:
        return None
    h, mi, s = int(m.group(1)), int(m.group(2)), float(m.group(3))
    t = day.replace(hour=h, minute=mi, second=int(s), microsecond=int((s % 1) * 1e6))
    return t.timestamp()


def launch_run(s: dict, work: str, config: str, tag: str) -> dict:
    out_dir = os.path.join(work, "runs", tag)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(os.path.dirname(out_dir), exist_ok=True)
    cmd = [sys.executable, "run_pretraining.py", f"--input_file={s['pattern']}",
           f"--bert_config_file={config}", f"--output_dir={out_dir}", "--do_train",
           "--num_train_steps=1", "--train_batch_size=8", "--max_seq_length=128",
           "--max_predictions_per_seq=20", "--progress=false"]
    r = run_timed(cmd, os.path.join(work, "runs", tag + ".log"), env=dict(os.environ))
    if r["exit"] != 0:
        raise RuntimeError(f"run_pretraining.py failed, see {r['log']}")
    launched = r["launched_at"]
    day = datetime.datetime.fromtimestamp(launched)
    opened = None
    with open(r["log"], errors="replace") as f:
        for line in f:
            if "pre-training: " in line and " records in " in line:
                opened = _log_time(line, day)
    metrics = os.path.join(out_dir, "metrics.jsonl")
    first_step = os.stat(metrics).st_mtime if os.path.exists(metrics) else None
    out = {"wall_s": r["wall_s"], "cpu_s": r["cpu_s"], "peak_rss_mb": r["peak_rss_mb"],
           "records_opened_s": None if opened is None else opened - launched,
           "first_step_s": None if first_step is None else first_step - launched,
           "load": loadavg(), "command": " ".join(cmd)}
    shutil.rmtree(out_dir, ignore_errors=True)
    return out


# -- workers (run in their own process) ------------------------------------------------------------

def _open(files, seq):
    from bert_tf.data.pretraining_reader import open_pretraining_records
    return open_pretraining_records(files, seq, PREDICTIONS[seq], progress=False)


def worker_resume(a: dict) -> dict:
    """First batch of a fresh reader (open + pretraining_batches + next) at fractions of an
    epoch; then fresh iterators on one warm reader. Cold: page cache dropped before each."""
    from bert_tf.data.pretraining_reader import pretraining_batches

    files = sorted(glob.glob(a["pattern"]))
    seq, batch, cold = a["seq"], a["batch"], a["cold"]
    # Warm-up: the process's first tf.function trace and imports, at another position.
    records = _open(files, seq)
    batches = pretraining_batches(records, batch, seed=a["seed"])
    spe = batches.steps_per_epoch
    it = batches(int(0.25 * spe))
    next(it)
    it.close()
    records.close()
    time.sleep(0.5)
    fractions = a["fractions"]
    fresh = {str(f): [] for f in fractions}
    for rnd in range(a["rounds"]):
        order = fractions[rnd % len(fractions):] + fractions[:rnd % len(fractions)]
        for frac in order:
            step = int(frac * spe)
            if cold:
                drop_caches()
            t0 = time.perf_counter()
            records = _open(files, seq)
            t1 = time.perf_counter()
            batches = pretraining_batches(records, batch, seed=a["seed"])
            t2 = time.perf_counter()
            it = batches(step)
            micro, first = next(it)
            t3 = time.perf_counter()
            assert micro == step and tuple(first["input_ids"].shape) == (batch, seq)
            it.close()
            fresh[str(frac)].append({"step": step, "open_s": t1 - t0, "batches_s": t2 - t1,
                                     "first_batch_s": t3 - t2, "total_s": t3 - t0})
            records.close()
            time.sleep(0.3)  # let the read-ahead threads of the closed iterator finish
    # One reader, traced once, a fresh iterator per position.
    records = _open(files, seq)
    batches = pretraining_batches(records, batch, seed=a["seed"])
    it = batches(int(0.75 * spe))
    next(it)
    it.close()
    time.sleep(0.3)
    same = {str(f): [] for f in fractions}
    for rnd in range(a["rounds"]):
        for frac in fractions:
            step = int(frac * spe)
            if cold:
                drop_caches()
            t0 = time.perf_counter()
            it = batches(step)
            next(it)
            same[str(frac)].append(time.perf_counter() - t0)
            it.close()
            time.sleep(0.3)
    return {"records": records.records, "files": len(files), "steps_per_epoch": spe,
            "fresh_reader": fresh, "same_reader": same, "cold": cold}


def _record_sizes(records, ids):
    import numpy as np

    ids = np.asarray(ids, np.int64)
    f = np.searchsorted(records.starts, ids, side="right") - 1
    local = ids - records.starts[f]
    sizes = np.empty(len(ids), np.int64)
    for fi in np.unique(f):
        sel = f == fi
        offs = records.indexes[int(fi)].offsets
        lo = local[sel]
        sizes[sel] = (offs[lo + 1].astype(np.int64) - offs[lo].astype(np.int64))
    return sizes


def worker_bytes(a: dict) -> dict:
    """Bytes each simulated worker reads (PretrainingRecords.bytes_read) against the bytes of
    the same steps' records over all workers / W (from the index)."""
    from bert_tf.data.pretraining_reader import pretraining_batches
    from bert_tf.data.record_order import EpochOrder

    files = sorted(glob.glob(a["pattern"]))
    seq, G, seed = a["seq"], a["global_batch"], a["seed"]
    out = {"global_batch": G, "by_workers": {}}
    probe = _open(files, seq)
    N = probe.records
    spe = N // G
    steps = spe if a["steps"] == "epoch" else int(a["steps"])
    order = EpochOrder(N, 64, seed)
    positions = order.records(0, 0, steps * G)
    sizes = _record_sizes(probe, positions)
    total = int(sizes.sum())
    out.update(records=N, steps=steps, steps_per_epoch=spe, total_bytes_of_steps=total,
               file_bytes=int(sum(os.path.getsize(f) for f in files)))
    probe.close()
    for W in a["workers"]:
        b = G // W
        rows = []
        t0 = time.perf_counter()
        for r in range(W):
            records = _open(files, seq)
            batches = pretraining_batches(records, b, seed=seed, rank=r, num_workers=W)
            it = batches(0)
            for _ in range(steps):
                next(it)
            at_last = records.bytes_read  # includes the read-ahead submitted so far
            it.close()
            time.sleep(0.2)
            own = int(sum(sizes[k * G + r * b:k * G + (r + 1) * b].sum() for k in range(steps)))
            rows.append({"rank": r, "bytes_read": at_last, "own_slices_bytes": own,
                         "ratio": at_last / (total / W), "own_ratio": own / (total / W)})
            records.close()
        secs = time.perf_counter() - t0
        out["by_workers"][str(W)] = {
            "batch_per_worker": b, "seconds": secs, "workers": rows,
            "max_ratio": max(x["ratio"] for x in rows),
            "max_own_ratio": max(x["own_ratio"] for x in rows),
            "sum_bytes_read": sum(x["bytes_read"] for x in rows)}
        print(f"  W={W}: max bytes/worker over total/W = "
              f"{out['by_workers'][str(W)]['max_ratio']:.4f} ({secs:.1f} s)", flush=True)
    return out


def worker_rate(a: dict) -> dict:
    """bert_tf's reader: records/s of pretraining_batches(threads=1) in this (pinned) process."""
    from bert_tf.data.pretraining_reader import pretraining_batches

    files = sorted(glob.glob(a["pattern"]))
    seq, batch = a["seq"], a["batch"]
    records = _open(files, seq)
    batches = pretraining_batches(records, batch, seed=1, threads=a["threads"])
    it = batches(0)
    result = _timed_rounds(lambda: next(it)[1], a)
    it.close()
    return dict(result, records=records.records,
                shape=list(result.pop("last")["input_ids"].shape))


def _timed_rounds(next_batch, a: dict) -> dict:
    """a["warmup"] batches, then a["rounds"] rounds of a["batches"] batches of a["batch"]:
    records/s and CPU/wall of each round and their medians; "last" is the last batch."""
    n, batch = a["batches"], a["batch"]
    for _ in range(a["warmup"]):
        next_batch()
    rounds = []
    for _ in range(a["rounds"]):
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(n):
            x = next_batch()
        dt = time.perf_counter() - t0
        rounds.append({"records_s": n * batch / dt,
                       "cpu_per_wall": (time.process_time() - c0) / dt})
    return {"rounds": rounds, "records_s": median([r["records_s"] for r in rounds]),
            "cpu_per_wall": median([r["cpu_per_wall"] for r in rounds]),
            "affinity": sorted(os.sched_getaffinity(0)), "last": x}


def peer_dataset(files, seq: int, batch: int, variant: str, seed: int = 1, workers: int = 1,
                 rank: int = 0, skip_records: int = 0, skip_batches: int = 0):
    """Model Garden's pre-training input pipeline, written with plain tf.data in the order of
    official/core/input_reader.py (_shard_files_then_read, _decode_and_parse_dataset, read) as
    BertPretrainDataLoader (official/nlp/data/pretrain_dataloader.py) uses it, DataConfig
    defaults (shuffle buffer 100, cycle_length None, block_length 1):
    files -> shuffle files -> shard(workers, rank) -> repeat -> interleave(TFRecordDataset)
    -> shuffle(100) -> decode -> batch -> prefetch.
    variant "model_garden": decode = parse_single_example per record (+ int64 -> int32, the
    renames of its _parse), then batch. variant "batch_then_parse": batch, then one
    tf.io.parse_example per batch (vectorised; not what Model Garden does, faster)."""
    import tensorflow as tf

    P = PREDICTIONS[seq]
    spec = {"input_ids": tf.io.FixedLenFeature([seq], tf.int64),
            "input_mask": tf.io.FixedLenFeature([seq], tf.int64),
            "segment_ids": tf.io.FixedLenFeature([seq], tf.int64),
            "masked_lm_positions": tf.io.FixedLenFeature([P], tf.int64),
            "masked_lm_ids": tf.io.FixedLenFeature([P], tf.int64),
            "masked_lm_weights": tf.io.FixedLenFeature([P], tf.float32),
            "next_sentence_labels": tf.io.FixedLenFeature([1], tf.int64)}

    def cast(example):
        return {k: tf.cast(v, tf.int32) if v.dtype == tf.int64 else v for k, v in example.items()}

    def rename(x):
        x = dict(x)
        x["input_word_ids"] = x.pop("input_ids")
        x["input_type_ids"] = x.pop("segment_ids")
        return x

    auto = tf.data.AUTOTUNE
    ds = tf.data.Dataset.from_tensor_slices(list(files))
    ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    if workers > 1:
        ds = ds.shard(workers, rank)
    ds = ds.repeat()
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=None, block_length=1,
                       num_parallel_calls=auto)
    if skip_records:
        ds = ds.skip(skip_records)
    ds = ds.shuffle(100, seed=seed)
    if variant == "model_garden":
        ds = ds.map(lambda r: cast(tf.io.parse_single_example(r, spec)), num_parallel_calls=auto)
        ds = ds.map(rename, num_parallel_calls=auto)
        ds = ds.batch(batch, drop_remainder=True)
    elif variant == "batch_then_parse":
        ds = ds.batch(batch, drop_remainder=True)
        ds = ds.map(lambda s: rename(cast(tf.io.parse_example(s, spec))), num_parallel_calls=auto)
    else:
        raise ValueError(variant)
    if skip_batches:
        ds = ds.skip(skip_batches)
    return ds.prefetch(auto)


def worker_peer_rate(a: dict) -> dict:
    files = sorted(glob.glob(a["pattern"]))
    seq, batch = a["seq"], a["batch"]
    t0 = time.perf_counter()
    it = iter(peer_dataset(files, seq, batch, a["variant"]))
    next(it)
    first = time.perf_counter() - t0
    result = _timed_rounds(lambda: next(it), a)
    return dict(result, first_batch_s=first,
                shape=list(result.pop("last")["input_word_ids"].shape))


def worker_peer_resume(a: dict) -> dict:
    """Time to the first batch at step k of the peer pipeline, by .skip(): k batches skipped
    after decoding (the natural way), or k x batch records skipped before shuffle and decode
    (the cheapest re-read). Also its first batch at step 0."""
    files = sorted(glob.glob(a["pattern"]))
    seq, batch, k = a["seq"], a["batch"], a["skip_batches"]
    # Warm-up: imports and the first trace of tf.data functions.
    next(iter(peer_dataset(files, seq, batch, "model_garden")))
    out = {"skip_batches": k, "records_skipped": k * batch, "rounds": []}
    for rnd in range(a["rounds"]):
        row = {}
        for name, kwargs in (("step0", {}), ("skip_batches", {"skip_batches": k}),
                             ("skip_records", {"skip_records": k * batch})):
            if a["cold"]:
                drop_caches()
            t0 = time.perf_counter()
            x = next(iter(peer_dataset(files, seq, batch, "model_garden", **kwargs)))
            row[name] = time.perf_counter() - t0
            assert tuple(x["input_word_ids"].shape) == (batch, seq)
        out["rounds"].append(row)
        print(f"  peer resume round {rnd}: {row}", flush=True)
    for name in ("step0", "skip_batches", "skip_records"):
        out[name + "_s"] = median([r[name] for r in out["rounds"]])
    return out


WORKERS = {"resume": worker_resume, "bytes": worker_bytes, "rate": worker_rate,
           "peer_rate": worker_peer_rate, "peer_resume": worker_peer_resume}


# -- the benchmark ---------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work_dir", default="/work/bench_scale", help="scratch folder for the "
                    "record sets (deleted at the end unless --keep)")
    ap.add_argument("--large_gb", type=float, default=20.0, help="large set, GB (1e9 bytes)")
    ap.add_argument("--small_gb", type=float, default=1.0, help="small set, GB")
    ap.add_argument("--shard_mb", type=float, default=256.0, help="shard size, MB")
    ap.add_argument("--corpus", default=f"{SHARED}/corpus/python_docs_train.txt")
    ap.add_argument("--vocab_file", default=f"{SHARED}/vocab/uncased_vocab.txt")
    ap.add_argument("--launch_rounds", type=int, default=5, help="b: rounds of small/large")
    ap.add_argument("--resume_rounds", type=int, default=3, help="c: rounds per position")
    ap.add_argument("--steps", type=int, default=200, help="d: steps per simulated worker")
    ap.add_argument("--global_batch", type=int, default=256, help="d: global batch")
    ap.add_argument("--rate_batches", type=int, default=1000, help="e/f: timed batches of 32")
    ap.add_argument("--rate_rounds", type=int, default=3, help="e/f: timed rounds")
    ap.add_argument("--cold", choices=("auto", "no"), default="auto", help="also measure with "
                    "the page cache dropped (needs root: /proc/sys/vm/drop_caches)")
    ap.add_argument("--skip", default="", help="comma list of parts to leave out: "
                    "index,launch,resume,bytes,epoch,rate,peer")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--reuse", action="store_true", help="reuse the record sets of a kept work "
                    "folder (made with the same sizes)")
    ap.add_argument("--json", help="write every number here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--worker_args", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        result = WORKERS[args.worker](json.loads(args.worker_args))
        print("RESULT " + json.dumps(result), flush=True)
        return

    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    cold = args.cold == "auto" and can_drop_caches()
    work = os.path.abspath(args.work_dir)
    started = time.time()
    R = {"started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
         "machine": {"cpu": cpu_model(), "cpus": os.cpu_count(),
                     "mem_total_gib": meminfo()["MemTotal"] / 2 ** 30,
                     "python": sys.version.split()[0]},
         "args": vars(args), "cold_allowed": cold}
    try:
        R["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                  capture_output=True, text=True, check=False).stdout.strip()
        R["git_dirty"] = bool(subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
            capture_output=True, text=True, check=False).stdout.strip())
    except OSError:
        pass

    # Room on disk: both sets, the base records, run folders, a margin.
    need = (args.large_gb + args.small_gb) * GB + 0.5 * GB + 2 * GB
    parent = work
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    have = shutil.disk_usage(parent).free
    if os.path.isdir(work) and args.reuse:
        need = 2 * GB
    if have < need:
        sys.exit(f"not enough free disk for --large_gb={args.large_gb} --small_gb="
                 f"{args.small_gb}: {parent} has {have / GB:.1f} GB free, this run needs about "
                 f"{need / GB:.1f} GB. Pass a smaller --large_gb or another --work_dir.")
    if os.path.isdir(work) and not args.reuse and os.listdir(work):
        sys.exit(f"{work} exists and is not empty: remove it, or pass --reuse to use its record "
                 "sets, or another --work_dir")
    log(f"work folder {work}: {have / GB:.1f} GB free, about {need / GB:.1f} GB needed; "
        f"page cache can be dropped: {cold}")
    os.makedirs(work, exist_ok=True)

    try:
        _run(args, R, work, skip, cold)
    finally:
        R["seconds"] = time.time() - started
        if args.json:
            os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
            with open(args.json, "w") as f:
                json.dump(R, f, indent=1, default=str)
            log(f"numbers written to {args.json}")
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
            log(f"deleted {work}")
    log(f"done in {R['seconds'] / 60:.1f} min")


def _run(args, R, work, skip, cold):
    # 1. Data.
    log("1. records from text (create_pretraining_data.py), seq 128 and 512")
    if args.reuse and os.path.isdir(os.path.join(work, "large")):
        base = {seq: {"files": sorted(f for f in glob.glob(f"{work}/base{seq}/train.tfrecord-*")
                                      if not f.endswith((".idx", ".json")))} for seq in (128, 512)}
        for b in base.values():
            b["bytes"] = sum(os.path.getsize(f) for f in b["files"])
        sets = {}
        for name in ("large", "small"):
            d = os.path.join(work, name)
            files = sorted(glob.glob(f"{d}/*.tfrecord"))
            sets[name] = {"dir": d, "pattern": f"{d}/*.tfrecord", "shards": len(files),
                          "bytes": sum(os.path.getsize(f) for f in files)}
    else:
        base = {seq: create_base(work, seq, args) for seq in (128, 512)}
        sets = {}
        for name, gb in (("small", args.small_gb), ("large", args.large_gb)):
            log(f"   making the {name} set ({gb} GB target, shards of ~{args.shard_mb:.0f} MB)")
            sets[name] = make_set(os.path.join(work, name), gb * GB, base[128]["files"],
                                  args.shard_mb * MB)
            log(f"   {name}: {sets[name]['shards']} shards, {sets[name]['bytes'] / GB:.2f} GB "
                f"({sets[name]['bytes'] / 2 ** 30:.2f} GiB), written at "
                f"{sets[name]['write_mb_s']:.0f} MB/s")
    R["base"] = {str(k): {kk: vv for kk, vv in v.items() if kk != "files"} | {
        "shards": len(v["files"])} for k, v in base.items()}
    R["sets"] = sets
    base512 = {"pattern": os.path.join(work, "base512", "train.tfrecord-*-of-00004"),
               "bytes": base[512]["bytes"]}
    small, large = sets["small"], sets["large"]

    # a. Index build.
    R["index"] = {}
    log("a. index build (index_records.py build --rebuild)")
    if args.reuse and os.path.exists(set_files(small)[0] + ".idx"):
        log("   (reuse: the indexes are there; rebuilding the large set's only)")
    else:
        R["index"]["small_warm"] = index_build(small, work, "small_warm", rebuild=False)
    if "index" not in skip:
        R["index"]["large_warm"] = index_build(large, work, "large_warm")
        if cold:
            drop_caches()
            R["index"]["large_cold"] = index_build(large, work, "large_cold")
    elif not os.path.exists(set_files(large)[0] + ".idx"):
        index_build(large, work, "large_needed", rebuild=False)
    R["mem_after_index"] = meminfo()

    # b. Launch to first step.
    if "launch" not in skip:
        log("b. run_pretraining.py, 1 step, tiny model: small set against large set")
        config = os.path.join(work, "bert_config.json")
        with open(config, "w") as f:
            json.dump({"vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "intermediate_size": 64,
                       "max_position_embeddings": 512, "type_vocab_size": 2,
                       "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
                       "attention_probs_dropout_prob": 0.1, "initializer_range": 0.02}, f)
        launch_run(small, work, config, "warmup")  # not counted: first import, bytecode
        runs = {"small": [], "large": []}
        for rnd in range(args.launch_rounds):
            for name in (("small", "large") if rnd % 2 == 0 else ("large", "small")):
                r = launch_run(sets[name], work, config, f"{name}_{rnd}")
                runs[name].append(r)
                log(f"   round {rnd} {name}: whole {r['wall_s']:.2f} s, records opened at "
                    f"{r['records_opened_s']:.2f} s, first step at {r['first_step_s']:.2f} s, "
                    f"peak RSS {r['peak_rss_mb']:.0f} MB")
        R["launch"] = {"warm": runs}
        if cold:
            runs_cold = {"small": [], "large": []}
            for name in ("small", "large"):
                drop_caches()
                r = launch_run(sets[name], work, config, f"{name}_cold")
                runs_cold[name].append(r)
                log(f"   cold {name}: whole {r['wall_s']:.2f} s, records opened at "
                    f"{r['records_opened_s']:.2f} s, first step at {r['first_step_s']:.2f} s")
            R["launch"]["cold"] = runs_cold
        med = {n: {k: median([r[k] for r in runs[n]]) for k in
                   ("wall_s", "records_opened_s", "first_step_s", "peak_rss_mb")} for n in runs}
        R["launch"]["median"] = med
        ratios = {}
        for k in ("wall_s", "first_step_s", "records_opened_s"):
            pairs = [lr[k] / sr[k] for lr, sr in zip(runs["large"], runs["small"])]
            ratios[k] = {"median_ratio": median(pairs), "pairs": pairs,
                         "target_met": med["large"][k] <= 1.2 * med["small"][k] + 2.0}
        R["launch"]["ratios"] = ratios

    # c. First batch at 0%, 50%, 95%.
    if "resume" not in skip:
        log("c. first batch of a fresh reader at 0%, 50%, 95% of an epoch (large set, batch 32)")
        R["resume"] = {}
        for label in (["warm", "cold"] if cold else ["warm"]):
            res = run_worker("resume", {"pattern": large["pattern"], "seq": 128, "batch": 32,
                                        "seed": 1, "fractions": [0.0, 0.5, 0.95],
                                        "rounds": args.resume_rounds, "cold": label == "cold"},
                             log_dir=work)
            med = {}
            for frac, rows in res["fresh_reader"].items():
                med[frac] = {k: median([r[k] for r in rows]) for k in
                                 ("open_s", "batches_s", "first_batch_s", "total_s")}
                med[frac]["same_reader_s"] = median(res["same_reader"][frac])
                log(f"   {label} {float(frac):.0%} (step {rows[0]['step']:,}): open "
                    f"{med[frac]['open_s']:.3f} s + batches() {med[frac]['batches_s']:.3f}"
                    f" s + first batch {med[frac]['first_batch_s']:.3f} s = "
                    f"{med[frac]['total_s']:.3f} s; warm reader, fresh iterator "
                    f"{med[frac]['same_reader_s']:.3f} s")
            res["median"] = med
            res["target_met"] = (med["0.95"]["total_s"] <= med["0.0"]["total_s"] + 2.0)
            R["resume"][label] = res

    # d. Bytes per worker.
    if "bytes" not in skip:
        log(f"d. bytes read per simulated worker, {args.steps} steps of a global batch of "
            f"{args.global_batch}, large set")
        R["bytes"] = run_worker("bytes", {"pattern": large["pattern"], "seq": 128, "seed": 1,
                                          "global_batch": args.global_batch,
                                          "steps": args.steps, "workers": [1, 2, 4, 8]},
                                log_dir=work)
        for W, v in R["bytes"]["by_workers"].items():
            log(f"   W={W}: max bytes_read / (total/W) = {v['max_ratio']:.4f}, own slices "
                f"{v['max_own_ratio']:.4f}")
    if "epoch" not in skip:
        log("d'. one whole epoch of the small set, 8 workers of 32")
        R["epoch8"] = run_worker("bytes", {"pattern": small["pattern"], "seq": 128, "seed": 1,
                                           "global_batch": 256, "steps": "epoch",
                                           "workers": [8]}, log_dir=work)
        v = R["epoch8"]["by_workers"]["8"]
        log(f"   {R['epoch8']['steps']} steps: per worker "
            f"{[round(x['ratio'], 4) for x in v['workers']]} of total/8")

    # e. Reader records/s on one core.
    rate_files = {128: small, 512: base512}
    if "rate" not in skip:
        log("e. reader records/s on one core (taskset -c 0), threads=1, batches of 32")
        R["rate"] = {}
        for seq in (128, 512):
            subprocess.run(["cat"] + set_files(rate_files[seq]), stdout=subprocess.DEVNULL,
                           check=False)  # into the page cache
            res = run_worker("rate", {"pattern": rate_files[seq]["pattern"], "seq": seq,
                                      "batch": 32, "batches": args.rate_batches, "warmup": 50,
                                      "rounds": args.rate_rounds, "threads": 1},
                             pin="0", log_dir=work)
            per_gpu = NVIDIA_A100[seq]["gpus_8"] / 8
            res["a100_per_gpu_8gpu"] = per_gpu
            res["a100_1gpu"] = NVIDIA_A100[seq]["gpus_1"]
            res["headroom_vs_a100"] = res["records_s"] / per_gpu
            R["rate"][str(seq)] = res
            log(f"   seq {seq}: {res['records_s']:,.0f} records/s on core "
                f"{res['affinity']} (CPU/wall {res['cpu_per_wall']:.2f}); one A100 in NVIDIA's "
                f"TF2 recipe {per_gpu:.0f}/s: {res['headroom_vs_a100']:.0f}x")

    # f. The peer.
    if "peer" not in skip:
        log("f. peer: Model Garden's file-sharded tf.data pipeline on the same files")
        R["peer"] = {"rate": {}}
        for seq in (128, 512):
            R["peer"]["rate"][str(seq)] = {}
            for variant in ("model_garden", "batch_then_parse"):
                res = run_worker("peer_rate", {"pattern": rate_files[seq]["pattern"], "seq": seq,
                                               "batch": 32, "batches": args.rate_batches,
                                               "warmup": 50, "rounds": args.rate_rounds,
                                               "variant": variant}, pin="0", log_dir=work)
                R["peer"]["rate"][str(seq)][variant] = res
                log(f"   seq {seq} {variant}: {res['records_s']:,.0f} records/s on core "
                    f"{res['affinity']} (CPU/wall {res['cpu_per_wall']:.2f})")
        # Resume at 50% of an epoch of the small set: peer by .skip(), bert_tf by seeking.
        from_index = R.get("epoch8", {}).get("records")
        if from_index is None:
            from_index = sum(_index_records(f) for f in set_files(small))
        k = (from_index // 32) // 2
        R["peer"]["resume_small"] = {}
        R["resume_small"] = {}
        for label in (["warm", "cold"] if cold else ["warm"]):
            res = run_worker("peer_resume", {"pattern": small["pattern"], "seq": 128,
                                             "batch": 32, "skip_batches": k, "rounds": 2,
                                             "cold": label == "cold"}, log_dir=work)
            R["peer"]["resume_small"][label] = res
            log(f"   peer {label}: step 0 {res['step0_s']:.2f} s; step {k:,} by skip(batches) "
                f"{res['skip_batches_s']:.1f} s, by skip(records) before decode "
                f"{res['skip_records_s']:.1f} s")
            mine = run_worker("resume", {"pattern": small["pattern"], "seq": 128, "batch": 32,
                                         "seed": 1, "fractions": [0.0, 0.5], "rounds": 2,
                                         "cold": label == "cold"}, log_dir=work)
            mine["median"] = {f: {kk: median([r[kk] for r in rows]) for kk in
                                  ("open_s", "batches_s", "first_batch_s", "total_s")}
                              for f, rows in mine["fresh_reader"].items()}
            R["resume_small"][label] = mine
            log(f"   bert_tf {label}: step 0 {mine['median']['0.0']['total_s']:.2f} s, 50% "
                f"{mine['median']['0.5']['total_s']:.2f} s (open + batches() + first batch)")

    summary(R)


def _index_records(path: str) -> int:
    sys.path.insert(0, REPO)
    from bert_tf.data.record_index import load_index
    return load_index(path).records


def summary(R: dict) -> None:
    print("\n==== summary ====")
    s = R["sets"]
    print(f"large set: {s['large']['shards']} shards, {s['large']['bytes'] / GB:.2f} GB; "
          f"small set: {s['small']['shards']} shards, {s['small']['bytes'] / GB:.2f} GB")
    for k, v in R.get("index", {}).items():
        print(f"index build {k:12s} {v['bytes'] / GB:7.2f} GB {v['wall_s']:7.1f} s "
              f"{v['mb_s']:7.0f} MB/s  CPU {v['cpu_s']:.1f} s")
    if "launch" in R:
        m, rt = R["launch"]["median"], R["launch"]["ratios"]
        for k in ("records_opened_s", "first_step_s", "wall_s"):
            print(f"launch {k:17s} small {m['small'][k]:6.2f} s  large {m['large'][k]:6.2f} s  "
                  f"ratio {rt[k]['median_ratio']:.3f}  target (<=1.2x+2s) "
                  f"{'met' if rt[k]['target_met'] else 'MISSED'}")
        print(f"launch peak RSS small {m['small']['peak_rss_mb']:.0f} MB, large "
              f"{m['large']['peak_rss_mb']:.0f} MB")
    for label, res in R.get("resume", {}).items():
        cells = ", ".join(f"{float(f):.0%} {v['total_s']:.3f} s (first batch "
                          f"{v['first_batch_s']:.3f})" for f, v in res["median"].items())
        print(f"resume {label}: {cells}; target (95% <= 0% + 2 s) "
              f"{'met' if res['target_met'] else 'MISSED'}")
    if "bytes" in R:
        cells = ", ".join(f"W={W} {v['max_ratio']:.3f} (own {v['max_own_ratio']:.3f})"
                          for W, v in R["bytes"]["by_workers"].items())
        print(f"bytes per worker / (total/W), max over workers: {cells}; target <= 1.25")
    if "epoch8" in R:
        v = R["epoch8"]["by_workers"]["8"]
        print("one epoch, small set, 8 workers: " +
              ", ".join(f"{x['ratio']:.3f}" for x in v["workers"]))
    for seq, res in R.get("rate", {}).items():
        peer = R.get("peer", {}).get("rate", {}).get(seq, {})
        extra = "".join(f"; peer {k} {v['records_s']:,.0f}/s" for k, v in peer.items())
        print(f"reader seq {seq}: {res['records_s']:,.0f} records/s/core "
              f"({res['headroom_vs_a100']:.0f}x one A100's {res['a100_per_gpu_8gpu']:.0f}){extra}")
    for label, res in R.get("peer", {}).get("resume_small", {}).items():
        mine = R["resume_small"][label]["median"]
        print(f"resume at 50%, small set, {label}: peer skip(batches) "
              f"{res['skip_batches_s']:.1f} s, skip(records) {res['skip_records_s']:.1f} s, "
              f"step 0 {res['step0_s']:.2f} s; "
              f"bert_tf {mine['0.5']['total_s']:.2f} s (step 0 {mine['0.0']['total_s']:.2f} s)")


if __name__ == "__main__":
    main()

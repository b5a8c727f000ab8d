"""`index_records.py verify`: every record of a set of pre-training shards read and checked
(CRCs and frames, schema and lengths, id ranges, masks) before a week-long run, with the
file and byte offset of each problem."""

from __future__ import annotations

import concurrent.futures
import os

import numpy as np

from bert_tf.data import record_index
from bert_tf.data.pretraining import feature_lengths
from bert_tf.data.pretraining_reader import (_check_offsets, _split_records, ensure_indexes,
                                             open_pretraining_records)


def verify_records(files, vocab_size: int | None = None, chunk_records: int = 4096,
                   progress: bool = True, max_reported: int = 20,
                   index_dir: str | None = None, processes: int = 1) -> dict:
    """Reads every record of `files` and checks it: CRCs and frames, Google's schema and
    lengths (those of the first file), input_ids and masked_lm_ids below `vocab_size` (default:
    the size of the vocabulary the index names), input_mask a run of ones then zeros, ids and
    segment ids zero on padding, segment_ids in {0, 1}, masked positions inside the sequence
    and their weights in {0, 1}, next_sentence_labels in {0, 1}.

    processes > 1 checks files in that many spawned processes (each imports TensorFlow, ~3 s;
    the check is CPU-bound, ~150 MB/s a core here). Returns {"files", "records", "bytes",
    "problems": [{"file", "offset", "what"}, ...] (the first max_reported, in file order),
    "problem_count"}. Builds missing indexes first."""
    files = list(files)
    ensure_indexes(files, progress=progress, index_dir=index_dir)
    first = record_index.load_index(files[0], index_dir=index_dir)
    seq, preds = first.header["max_seq_length"], first.header["max_predictions_per_seq"]
    if vocab_size is None and first.header.get("vocab"):
        vocab_size = first.header["vocab"]["size"]
    records = open_pretraining_records(files, seq, preds, build_missing=False,
                                       index_dir=index_dir,
                                       reference=files[0])  # the schema of every file
    records.close()
    jobs = [(path, seq, preds, vocab_size, chunk_records, max_reported, index_dir)
            for path in files]
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=sum(os.path.getsize(f) for f in files), unit="B", unit_scale=True,
                   desc="verify", dynamic_ncols=True)
    problems, count = [], 0
    pool = None
    try:
        if processes > 1 and len(files) > 1:
            import multiprocessing
            pool = concurrent.futures.ProcessPoolExecutor(
                min(processes, len(files)), mp_context=multiprocessing.get_context("spawn"))
            results = pool.map(_verify_file, jobs)
        else:
            results = map(_verify_file, jobs)
        for path, (found, n) in zip(files, results):
            problems += found[:max(0, max_reported - len(problems))]
            count += n
            if bar is not None:
                bar.update(os.path.getsize(path))
    finally:
        if bar is not None:
            bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return {"files": len(files), "records": records.records,
            "bytes": int(sum(os.path.getsize(f) for f in files)), "problems": problems,
            "problem_count": count}


def _verify_file(job) -> tuple[list, int]:
    """verify_records' check of one file -> (first problems, problem count)."""
    import tensorflow as tf

    path, seq, preds, vocab_size, chunk_records, max_reported, index_dir = job
    ix = record_index.load_index(path, index_dir=index_dir)
    problems, count = [], 0

    def problem(offset, what):
        nonlocal count
        count += 1
        if len(problems) < max_reported:
            problems.append({"file": path, "offset": int(offset), "what": what})

    spec = {name: tf.io.FixedLenFeature([length], tf.as_dtype(dtype)) for name, (length, dtype)
            in feature_lengths(seq, preds or 0, dynamic_masking=preds is None).items()}
    offsets = ix.offsets
    _check_offsets(ix, np.asarray(offsets, np.int64), 0)  # a damaged index: one clear line
    fd = os.open(path, os.O_RDONLY)
    try:
        for a in range(0, ix.records, chunk_records):
            b = min(ix.records, a + chunk_records)
            base = int(offsets[a])
            data = os.pread(fd, int(offsets[b]) - base, base)
            rel = offsets[a:b + 1].astype(np.int64) - base
            good, bad = _split_records(data, rel)
            for i, why in bad:
                problem(base + rel[i], why)
            keep = np.setdiff1d(np.arange(b - a), [i for i, _ in bad])
            try:
                parsed = tf.io.parse_example(tf.constant(good, tf.string), spec)
            except tf.errors.InvalidArgumentError:  # find the records that do not parse
                fine = []
                for i, payload in zip(keep, good):
                    try:
                        tf.io.parse_example(tf.constant([payload], tf.string), spec)
                        fine.append(i)
                    except tf.errors.InvalidArgumentError:
                        problem(base + rel[i], "does not parse with the schema")
                keep = np.asarray(fine, np.int64)
                good = [data[rel[i] + 12:rel[i + 1] - 4] for i in keep]
                parsed = tf.io.parse_example(tf.constant(good, tf.string), spec)
            parsed = {k: v.numpy() for k, v in parsed.items()}
            for what, rows in _value_problems(parsed, vocab_size):
                for i in rows[:max_reported]:
                    problem(base + rel[keep[i]], what)
                count += max(0, len(rows) - max_reported)
    finally:
        os.close(fd)
    return problems, count


def _value_problems(parsed: dict, vocab_size: int | None):
    """[(what, row numbers)] of the records in a parsed chunk whose values break the rules."""
    ids, mask, segments = parsed["input_ids"], parsed["input_mask"], parsed["segment_ids"]
    out = []

    def rows(condition):
        return np.flatnonzero(condition)

    if vocab_size is not None:
        out.append((f"input_ids outside the vocabulary (>= {vocab_size} or < 0)",
                    rows(((ids >= vocab_size) | (ids < 0)).any(1))))
    length = mask.sum(1)
    prefix = np.arange(mask.shape[1])[None, :] < length[:, None]
    out.append(("input_mask is not ones then zeros", rows((mask != prefix).any(1))))
    out.append(("input_ids not 0 on padding", rows(((ids != 0) & ~prefix).any(1))))
    out.append(("segment_ids not 0/1, or not 0 on padding",
                rows(((segments < 0) | (segments > 1) | ((segments != 0) & ~prefix)).any(1))))
    out.append(("next_sentence_labels not 0/1",
                rows((parsed["next_sentence_labels"] < 0).any(1) |
                     (parsed["next_sentence_labels"] > 1).any(1))))
    if "masked_lm_positions" in parsed:
        pos, lm_ids = parsed["masked_lm_positions"], parsed["masked_lm_ids"]
        weights = parsed["masked_lm_weights"]
        used = weights > 0
        out.append(("masked_lm_weights not 0/1", rows(((weights != 0) & (weights != 1)).any(1))))
        out.append(("masked_lm_positions outside the sequence",
                    rows((used & ((pos < 1) | (pos >= length[:, None]))).any(1))))
        if vocab_size is not None:
            out.append((f"masked_lm_ids outside the vocabulary (>= {vocab_size})",
                        rows((used & ((lm_ids >= vocab_size) | (lm_ids < 0))).any(1))))
    return [(what, r) for what, r in out if len(r)]

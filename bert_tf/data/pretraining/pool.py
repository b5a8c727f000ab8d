"""The worker pool and the run: the main process reads documents and sends them in batches to
spawned worker processes (one `ShardWriter` per shard they own), then commits the shards, their
indexes and the summary, or removes everything on an error, Ctrl-C or SIGTERM."""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import multiprocessing
import os
import queue
import re
import shutil
import signal
import sys
import threading
import time
import traceback

from bert_tf.errors import UsageError
from bert_tf.data.pretraining.documents import expand_input_files, read_documents, split_sentences
from bert_tf.data.pretraining.options import PretrainingOptions, vocab_ids
from bert_tf.data.pretraining.shards import ShardWriter
from bert_tf.data.record_index import index_path
from bert_tf.data.text_files import DataError

logger = logging.getLogger("bert_tf")


_DISPATCH_BYTES = 256 * 1024  # text per batch sent to a worker


_QUEUE_BATCHES = 4  # batches in flight per worker: bounds the main process's lead


def _worker_main(worker: int, num_workers: int, shard_paths: list[str], vocab_file: str,
                 do_lower_case: bool, options: PretrainingOptions, inbox, outbox,
                 parent_pid: int | None = None) -> None:
    """A worker process: tokenizes its documents and runs the ShardWriters of its shards.

    Messages in: lists of (document index, lines), then None. Out: ("done", worker, counts
    per shard) or ("error", worker, traceback text). Never imports TensorFlow. Ctrl-C is the
    main process's to handle (it stops the workers); a worker whose parent died (kill -9)
    exits instead of waiting for documents forever.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked by the parent
    if parent_pid is not None:
        threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True,
                         name="exit-with-parent").start()
    try:
        from bert_tf.tokenization.cached import CachedTokenizer

        tokenizer = CachedTokenizer(vocab_file, do_lower_case)
        ids = vocab_ids(tokenizer.vocab, vocab_file)
        num_shards = len(shard_paths)
        shards = {s: ShardWriter(s, path, options, ids) for s, path in enumerate(shard_paths)
                  if s % num_workers == worker}
        split = options.input_format != "sentences"
        tokenize = tokenizer.ids
        while True:
            batch = inbox.get()
            if batch is None:
                break
            for index, lines in batch:
                if split:
                    lines = [s for paragraph in lines for s in split_sentences(paragraph)]
                # Google drops sentences without tokens (e.g. only control characters).
                document = [t for t in map(tokenize, lines) if t]
                shards[index % num_shards].add_document(document)
        for shard in shards.values():
            shard.close()
        outbox.put(("done", worker, {s: shard.counts for s, shard in shards.items()}))
    except BaseException:  # reported to the main process, which cleans up and raises
        outbox.put(("error", worker, traceback.format_exc()))


def _exit_with_parent(parent_pid: int) -> None:
    """A worker's watchdog: once the main process is gone (kill -9), nobody will read the
    shards, so exit at once, wherever the worker is blocked (a half-sent batch leaves its
    inbox pipe waiting forever). The next run removes the partial files."""
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(1)


def output_paths(output_file: str, num_output_shards: int | None) -> list[str]:
    """Google's --output_file (comma-separated files) and --num_output_shards -> shard paths.

    One file and n > 1 shards: `{file}-00000-of-0000n`, ... . A list: one shard per file
    (num_output_shards, if given, must equal its length).
    """
    files = [f.strip() for f in output_file.split(",") if f.strip()]
    if not files:
        raise UsageError("--output_file is required")
    if num_output_shards is None:
        return files
    if num_output_shards < 1:
        raise UsageError(f"--num_output_shards={num_output_shards}: must be at least 1")
    if len(files) > 1:
        if num_output_shards != len(files):
            raise UsageError(
                f"--num_output_shards={num_output_shards} but --output_file lists {len(files)} "
                "files: give one file (shards are named FILE-00000-of-0000N) or drop "
                "--num_output_shards")
        return files
    if num_output_shards == 1:
        return files
    return [f"{files[0]}-{s:05d}-of-{num_output_shards:05d}" for s in range(num_output_shards)]


def summary_path(output_file: str) -> str:
    """Where the JSON summary goes: next to the (first) --output_file, `{file}.summary.json`."""
    first = output_file.split(",")[0].strip()
    return f"{first}.summary.json"


def create_pretraining_data(input_file: str, output_file: str, vocab_file: str,
                            do_lower_case: bool = True,
                            options: PretrainingOptions = PretrainingOptions(),
                            num_workers: int = 2, num_output_shards: int | None = None,
                            overwrite_output: bool = False, show_progress: bool = True,
                            flags_used: dict | None = None) -> dict:
    """Reads text, writes pre-training TFRecords and a JSON summary; returns the summary.

    input_file: comma-separated globs (Google's --input_file); output_file: comma-separated
    files, or one file split into `num_output_shards` shards (see `output_paths`). The shards
    are byte-identical for any `num_workers` (see the package docstring). The summary
    (`{output_file}.summary.json`) holds counts, masking and NSP statistics, per-shard
    instance counts and `flags_used`.
    Raises UsageError (flags), DataError (input files; nothing is left on disk) or
    RuntimeError (a worker failed; its traceback is in the message).
    """
    started = time.time()
    run = _plan(input_file, output_file, vocab_file, do_lower_case, options, num_workers,
                num_output_shards, overwrite_output)
    main_thread = threading.current_thread() is threading.main_thread()
    # The first Ctrl-C or SIGTERM (kill, a scheduler's stop) interrupts; later ones are ignored
    # until the workers are stopped and the partial files removed. Handlers a caller installed
    # are left alone.
    installed = {}
    if main_thread:
        for signum, default in ((signal.SIGINT, signal.default_int_handler),
                                (signal.SIGTERM, signal.SIG_DFL)):
            if signal.getsignal(signum) == default:
                signal.signal(signum, _interrupt_once)
                installed[signum] = default
    pool = _Pool(run.num_workers, run.partials, vocab_file, do_lower_case, options)
    try:
        counts = pool.run(run.input_files, options.input_format, len(run.shard_paths),
                          main_thread, show_progress)
        summary = _summary(counts, run.input_files, run.shard_paths, options, flags_used,
                           time.time() - started)
        _check_counts(summary, run.input_files)
        _commit(run, summary, main_thread)
        return summary
    except BaseException:
        # A second Ctrl-C must not cut the cleanup short: it waits until the end.
        with _signals_blocked(main_thread, signal.SIGINT, signal.SIGTERM):
            pool.stop()
            _remove_leftovers(run.partials + [run.summary_file + ".partial"])
        raise
    finally:
        for signum, default in installed.items():
            signal.signal(signum, default)


@dataclasses.dataclass
class _Run:
    """What a checked run writes and replaces (made by `_plan`)."""
    input_files: list
    shard_paths: list
    partials: list          # the shards as they are written: PATH.partial
    summary_file: str
    earlier: list           # an earlier run's shards that go once these are in place
    num_workers: int


def _plan(input_file: str, output_file: str, vocab_file: str, do_lower_case: bool,
          options: PretrainingOptions, num_workers: int, num_output_shards: int | None,
          overwrite_output: bool) -> _Run:
    """Every check a run makes before it starts a worker (flags, vocabulary, input files,
    the output's folder); removes an interrupted run's leftovers. Raises UsageError or
    DataError."""
    options.check()
    if num_workers < 1:
        raise UsageError(f"--num_workers={num_workers}: must be at least 1")
    from bert_tf.tokenization.wordpiece import check_vocab_has_unk, load_vocab

    if not os.path.isfile(vocab_file):
        raise UsageError(f"--vocab_file={vocab_file}: file not found")
    try:
        vocab = load_vocab(vocab_file)
        check_vocab_has_unk(vocab, vocab_file)
    except ValueError as e:  # not UTF-8, empty, no [UNK]
        raise UsageError(f"--vocab_file: {e}") from None
    vocab_ids(vocab, vocab_file)  # fails early on a missing [CLS]/[SEP]/[MASK]
    _warn_if_case_mismatch(vocab, vocab_file, do_lower_case)
    input_files = expand_input_files(input_file)
    shard_paths = output_paths(output_file, num_output_shards)
    summary_file = summary_path(output_file)
    overlap = {os.path.abspath(p) for p in shard_paths} & {os.path.abspath(p) for p in input_files}
    if overlap:
        raise UsageError(f"--output_file would overwrite the input file {sorted(overlap)[0]}")
    earlier, unknown, other_partials = _earlier_files(output_file, shard_paths)
    if unknown:
        raise UsageError(f"{unknown[0]} exists and no {summary_path(output_file)} lists it "
                         f"({len(unknown)} such file(s)): a glob over this output would mix it "
                         "in; move it away or choose another --output_file")
    if not overwrite_output:
        existing = [p for p in shard_paths + [summary_file] if os.path.exists(p)]
        if existing:
            raise UsageError(f"{existing[0]} exists; pass --overwrite_output to replace it "
                             "(or choose another --output_file)")
    for path in shard_paths:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if num_workers > len(shard_paths):
        logger.info("%d workers for %d output shards: only %d will work; raise "
                    "--num_output_shards to use more", num_workers, len(shard_paths),
                    len(shard_paths))
        num_workers = len(shard_paths)
    partials = [p + ".partial" for p in shard_paths]
    stale = _remove_leftovers(partials + [summary_file + ".partial"] + other_partials)
    if stale:
        logger.info("removed the .partial files of an interrupted run (%s ...)", stale[0])
    return _Run(input_files, shard_paths, partials, summary_file, earlier, num_workers)


class _Pool:
    """The spawned worker processes of one run and their queues."""

    def __init__(self, num_workers: int, partials: list, vocab_file: str, do_lower_case: bool,
                 options: PretrainingOptions):
        # Spawned workers start a fresh interpreter: nothing (TensorFlow above all) is
        # inherited.
        context = multiprocessing.get_context("spawn")
        self.outbox = context.Queue()
        self.inboxes = [context.Queue(_QUEUE_BATCHES) for _ in range(num_workers)]
        # Exit never waits for the queues' feeder threads (a stopped worker leaves its inbox
        # pipe full: the wait would be for ever). On success every inbox has been read to the
        # end.
        for q in self.inboxes + [self.outbox]:
            q.cancel_join_thread()
        self.workers = [context.Process(
            target=_worker_main, name=f"pretraining-worker-{w}",
            args=(w, num_workers, partials, vocab_file, do_lower_case, options,
                  self.inboxes[w], self.outbox, os.getpid()), daemon=True)
            for w in range(num_workers)]
        self.results: dict[int, dict] = {}

    def run(self, input_files: list, input_format: str, num_shards: int, main_thread: bool,
            show_progress: bool) -> dict[int, dict]:
        """Starts the workers, sends them every document, waits for them: -> counts by shard."""
        workers, outbox, results = self.workers, self.outbox, self.results
        # Workers start with SIGINT blocked (the mask survives fork and exec): a Ctrl-C while
        # a worker imports is the main process's alone. The worker ignores it, then unblocks.
        with _signals_blocked(main_thread, signal.SIGINT):
            for worker in workers:
                worker.start()
        progress_bar = None
        try:
            if show_progress:
                from tqdm import tqdm

                total = sum(os.path.getsize(p) for p in input_files)
                progress_bar = tqdm(total=total, unit="B", unit_scale=True, file=sys.stderr,
                                    desc="create_pretraining_data", mininterval=1.0)
            _dispatch(input_files, input_format, num_shards, self.inboxes, workers, outbox,
                      results, progress_bar.update if progress_bar else None)
            for inbox in self.inboxes:
                _put(inbox, None, workers, outbox, results)
            while len(results) < len(workers):
                _receive(outbox, workers, results, timeout=1.0)
            for worker in workers:
                worker.join()
        finally:
            if progress_bar is not None:
                progress_bar.close()
        return {s: c for per_worker in results.values() for s, c in per_worker.items()}

    def stop(self) -> None:
        _stop(self.workers, self.inboxes + [self.outbox])


def _commit(run: _Run, summary: dict, main_thread: bool) -> None:
    """Renames the shards and their indexes into place, writes the summary, removes an earlier
    run's other shards. No Ctrl-C or SIGTERM halfway (they take effect after it)."""
    with _signals_blocked(main_thread, signal.SIGINT, signal.SIGTERM):
        for partial, path in zip(run.partials, run.shard_paths):
            os.replace(partial, path)
            os.replace(index_path(partial), index_path(path))
        tmp = run.summary_file + ".partial"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")
        os.replace(tmp, run.summary_file)
        for path in run.earlier:  # --overwrite_output: the earlier run's other shards go
            for name in (path, index_path(path)):
                try:
                    os.remove(name)
                except FileNotFoundError:
                    pass
    if run.earlier:
        logger.info("removed %d file(s) of an earlier run with another shard count (%s ...)",
                    len(run.earlier), run.earlier[0])


def _stop(workers, queues) -> None:
    """Stops the workers (our own children; they hold nothing worth keeping) and closes the
    queues."""
    for worker in workers:
        if worker.is_alive():
            worker.terminate()
    for worker in workers:
        if worker.pid is not None:
            worker.join()
    for q in queues:
        q.close()


class _signals_blocked:
    """Blocks the signals in this thread for the block (only in the main thread, where Python
    runs handlers); one that arrives meanwhile is delivered when the block ends."""

    def __init__(self, active: bool, *signals):
        self.active = active and hasattr(signal, "pthread_sigmask")
        self.signals = set(signals)

    def __enter__(self):
        if self.active:
            self.old = signal.pthread_sigmask(signal.SIG_BLOCK, self.signals)

    def __exit__(self, *exc):
        if self.active:
            signal.pthread_sigmask(signal.SIG_SETMASK, self.old)
        return False


def _warn_if_case_mismatch(vocab, vocab_file: str, do_lower_case: bool) -> None:
    """Google's script takes any pairing silently; a wrong one wastes a pre-training run.
    Cased vocabularies hold thousands of tokens with capitals (cased_vocab.txt: 8,368 of
    28,996), uncased ones next to none (uncased_vocab.txt: 2 of 30,522)."""
    capitals = sum(1 for token in vocab if any(c.isupper() for c in token)
                   and not (token.startswith("[") and token.endswith("]")))
    if do_lower_case and capitals >= 1000:
        logger.warning("--vocab_file=%s looks cased (%d tokens with capitals) but "
                       "--do_lower_case is true: lower-cased text never uses them; pass "
                       "--do_lower_case=false for a cased model", vocab_file, capitals)
    elif not do_lower_case and capitals < 10:
        logger.warning("--vocab_file=%s looks uncased (%d tokens with capitals) but "
                       "--do_lower_case is false: capitalised words will be split into pieces "
                       "or [UNK]; pass --do_lower_case=true for an uncased model", vocab_file,
                       capitals)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped create_pretraining_data; `signum` is the signal's number (a
    shell reports the exit as 128 + signum)."""

    def __init__(self, signum: int):
        name = signal.Signals(signum).name
        super().__init__("" if signum == signal.SIGINT else f"signal {name}")
        self.signum = signum


def _interrupt_once(signum, frame):
    """Ctrl-C / SIGTERM handler: interrupts once, then ignores both until restored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Interrupted(signum)


def _remove_leftovers(partials: list[str]) -> list[str]:
    """Removes `X.partial` files and `X.partial.shuffle/` folders (this run's, or those a
    killed run left behind: never appended to)."""
    found = [p for p in partials if os.path.exists(p) or os.path.isdir(p + ".shuffle")
             or os.path.exists(index_path(p))]
    for partial in found:
        for path in (partial, index_path(partial), index_path(partial) + ".tmp"):
            if os.path.exists(path):
                os.remove(path)
        shutil.rmtree(partial + ".shuffle", ignore_errors=True)
    return found


def _earlier_files(output_file: str, shard_paths: list[str]):
    """Files of earlier runs under the same --output_file that this run will not write (another
    shard count), which a glob such as `FILE-*` would mix with the new shards.

    Returns (earlier, unknown, partials):
      earlier   the shards `FILE.summary.json` lists (that run's own record: safe to replace);
      unknown   other `FILE-nnnnn-of-mmmmm` files (no summary lists them: refused, never
                deleted);
      partials  `FILE-nnnnn-of-mmmmm.partial` files a killed run left (removed).
    """
    files = [f.strip() for f in output_file.split(",") if f.strip()]
    if len(files) != 1:
        return [], [], []
    base = os.path.basename(files[0])
    folder = os.path.dirname(os.path.abspath(files[0]))
    mine = {os.path.abspath(p) for p in shard_paths}
    listed = set()
    try:
        with open(summary_path(output_file), encoding="utf-8") as f:
            listed = {os.path.basename(str(shard.get("file", "")))
                      for shard in json.load(f).get("shards", [])}
    except (OSError, ValueError, AttributeError):
        pass
    shard = re.compile(re.escape(base) + r"-\d{5}-of-\d{5}(\.partial)?")
    earlier, unknown, partials = [], [], []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        path = os.path.join(folder, name)
        match = shard.fullmatch(name)
        if path.removesuffix(".partial") in mine or not os.path.isfile(path):
            continue
        if match and match.group(1):
            partials.append(path)
        elif name in listed and (match or name == base):
            earlier.append(path)
        elif match:
            unknown.append(path)
    return earlier, unknown, partials


def _dispatch(input_files, input_format, num_shards, inboxes, workers, outbox, results,
              progress) -> None:
    """Sends document k to the worker of shard k % num_shards, in batches of ~256 KB."""
    num_workers = len(inboxes)
    batches: list[list] = [[] for _ in range(num_workers)]
    sizes = [0] * num_workers
    for index, lines in enumerate(read_documents(input_files, input_format, progress)):
        w = (index % num_shards) % num_workers
        batches[w].append((index, lines))
        sizes[w] += sum(map(len, lines))
        if sizes[w] >= _DISPATCH_BYTES:
            _put(inboxes[w], batches[w], workers, outbox, results)
            batches[w], sizes[w] = [], 0
    for w in range(num_workers):
        if batches[w]:
            _put(inboxes[w], batches[w], workers, outbox, results)


def _put(inbox, message, workers, outbox, results) -> None:
    """Blocking put that notices a failed worker instead of waiting for it forever."""
    while True:
        try:
            inbox.put(message, timeout=0.5)
            return
        except queue.Full:
            _receive(outbox, workers, results, timeout=0)


def _receive(outbox, workers, results, timeout: float) -> None:
    """Takes one worker message; raises on a worker error or a worker that died silently."""
    try:
        kind, worker, payload = outbox.get(timeout=timeout) if timeout else outbox.get_nowait()
    except queue.Empty:
        dead = [w for w in workers if w.exitcode not in (None, 0)]
        if dead:
            raise RuntimeError(f"{dead[0].name} exited with status {dead[0].exitcode} "
                               "(out of memory?)") from None
        return
    if kind == "error":
        raise RuntimeError(f"pretraining worker {worker} failed:\n{payload}")
    results[worker] = payload


def _summary(counts: dict[int, dict], input_files: list[str], shard_paths: list[str],
             options: PretrainingOptions, flags_used: dict | None, seconds: float) -> dict:
    total = collections.Counter()
    for c in counts.values():
        total.update(c)

    def ratio(a, b):
        return a / b if b else None

    summary = {
        "input_files": input_files,
        "documents": total["documents"],
        "multi_sentence_documents": total["multi_sentence_documents"],
        "sentences": total["sentences"],
        "tokens": total["tokens"],
        "instances": total["instances"],
        "instance_tokens": total["instance_tokens"],
        "next_sentence": {"random_next": total["random_next"],
                          "fraction_random_next": ratio(total["random_next"],
                                                        total["instances"])},
        "truncation": {"truncated_instances": total["truncated_instances"],
                       "truncated_tokens": total["truncated_tokens"]},
        "shards": [{"file": path, "instances": counts[s]["instances"]}
                   for s, path in enumerate(shard_paths)],
        "options": dataclasses.asdict(options),
        "flags": flags_used or {},
        "seconds": round(seconds, 3),
        "instances_per_second": round(total["instances"] / seconds, 1) if seconds else None,
    }
    if not options.dynamic_masking:
        masked = total["masked_tokens"]
        uncapped_tokens = total["non_special_tokens"] - total["capped_non_special_tokens"]
        summary["masked_lm"] = {
            "masked_tokens": masked,
            "non_special_tokens": total["non_special_tokens"],
            "masked_fraction": ratio(masked, total["non_special_tokens"]),
            # Where max_predictions_per_seq did not cap the count: ~masked_lm_prob.
            "masked_fraction_uncapped": ratio(masked - total["capped_masked_tokens"],
                                              uncapped_tokens),
            "capped_instances": total["capped_instances"],
            "fraction_replaced_by_mask": ratio(total["replaced_by_mask"], masked),
            "fraction_kept": ratio(total["kept"], masked),
            "fraction_replaced_random": ratio(total["replaced_random"], masked),
        }
    return summary


def _check_counts(summary: dict, input_files: list[str]) -> None:
    """Refuses output that would train nothing useful (raised before any shard is renamed)."""
    names = ", ".join(input_files[:3]) + (" ..." if len(input_files) > 3 else "")
    if summary["instances"] == 0:
        raise DataError(f"{names}: no instances (no document has any WordPiece token)")
    if summary["multi_sentence_documents"] == 0:
        raise DataError(
            f"{names}: every document has a single sentence, so every next-sentence label "
            "would be 'random next'. Put one sentence a line with blank lines only between "
            "documents, or pass --input_format=paragraphs for one paragraph a line")

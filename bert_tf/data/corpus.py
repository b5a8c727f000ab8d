"""Raw corpora -> the text `create_pretraining_data.py` reads: one sentence a line, a blank line
between documents, in N shards (`prepare_corpus.py`).

Pipeline: the readers of `bert_tf.data.corpus_sources` stream raw documents in the order of
the input files; batches of them go to `num_workers` processes (spawned; they never import
TensorFlow) that clean them (`clean_document`: markup, sentence splitting with blingfire,
filters) in order; the main process drops duplicates and writes kept document k to shard
k % N. So the output is a function of the inputs and the settings alone, never of the worker
count. Memory: the batches in flight, one writer per shard, and for de-duplication 16 bytes a
kept document (exact) or ~`num_perm` x 8 bytes plus the LSH index (near duplicates, optional):
about 100 MB for English Wikipedia's 6 M articles with exact de-duplication alone.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import re
import signal
import sys
import time

import numpy as np

from bert_tf.errors import UsageError
from bert_tf.data import corpus_sources
from bert_tf.data.glue import DataError
from bert_tf.data.mediawiki import FORMULA_MARK, article_paragraphs
from bert_tf.data.pretraining import expand_input_files, output_paths, split_sentences, \
    summary_path

log = logging.getLogger(__name__)

_LETTER = re.compile(r"[^\W\d_]")  # any alphabetic character, in any script
_WORD_SHINGLE = 5  # MinHash shingles: runs of 5 lower-cased words (as in GPT-3's / Gopher's)
NUM_PERM = 64  # MinHash permutations: 512 bytes a document
MINHASH_SCHEME = "affine32"  # datasketch >= 2.0's default, named: values cross processes


@dataclasses.dataclass
class CorpusOptions:
    """What `prepare_corpus` keeps.

    min_sentences        a document with fewer sentences is dropped ("too_short"); 2 gives
                         next-sentence prediction a pair.
    min_document_words   ... or with fewer whitespace-separated words.
    min_sentence_words   a shorter sentence is dropped ("short_sentence"); 1 keeps every
                         sentence with a letter.
    dedup                drop exact duplicate documents (same text after cleaning).
    near_duplicate_threshold  when > 0, also drop a document whose estimated Jaccard
                         similarity of word 5-gram sets with a kept one reaches it (MinHash
                         LSH, datasketch; 0.8 is common).
    text_field           the field (JSONL) or column (Parquet) holding the text.
    input_format         auto (by name and first bytes), mediawiki, jsonl, parquet, text (one
                         paragraph a line, blank lines between documents; a document is cut
                         at 1 M characters) or lines (one document a line).
    """
    min_sentences: int = 2
    min_document_words: int = 20
    min_sentence_words: int = 1
    dedup: bool = True
    near_duplicate_threshold: float = 0.0
    text_field: str = "text"
    input_format: str = "auto"

    def check(self) -> None:
        if self.input_format not in corpus_sources.FORMATS:
            raise UsageError(f"--input_format={self.input_format}: one of "
                             f"{', '.join(corpus_sources.FORMATS)}")
        for name in ("min_sentences", "min_document_words", "min_sentence_words"):
            if getattr(self, name) < 0:
                raise UsageError(f"--{name}={getattr(self, name)}: must be 0 or more")
        if not 0 <= self.near_duplicate_threshold < 1:
            raise UsageError(f"--near_duplicate_threshold={self.near_duplicate_threshold}: a "
                             "Jaccard similarity in (0, 1), or 0 for exact duplicates only")


# ---- Cleaning (in the workers) ---------------------------------------------------------------

def clean_document(kind: str, text: str, options: CorpusOptions):
    """One raw document -> (sentences, drop reason or None, counts, digest, minhash).

    kind "wiki": wikitext, reduced to prose by `mediawiki.article_paragraphs`; "plain": one
    paragraph a line. Each paragraph is split into sentences by blingfire; a sentence that held
    a formula or code, or has no letter, or fewer than `min_sentence_words` words, is dropped
    and counted. `digest` is an 8-byte hash of the kept text (exact de-duplication); `minhash`
    the document's MinHash values (uint64[NUM_PERM]) when near duplicates are looked for.
    """
    counts: dict[str, int] = collections.Counter()
    if kind == "wiki":
        paragraphs = article_paragraphs(text, counts)
    else:
        paragraphs = [" ".join(line.split()) for line in text.split("\n") if line.strip()]
    sentences = []
    for paragraph in paragraphs:
        for sentence in _join_initials(split_sentences(paragraph)):
            if FORMULA_MARK in sentence:
                counts["sentences_dropped_formula_or_code"] += 1
            elif not _LETTER.search(sentence):
                counts["sentences_dropped_no_letter"] += 1
            elif len(sentence.split()) < options.min_sentence_words:
                counts["sentences_dropped_short"] += 1
            else:
                sentences.append(sentence)
    words = sum(len(s.split()) for s in sentences)
    if not sentences:
        return [], "empty", counts, 0, None
    if len(sentences) < options.min_sentences or words < options.min_document_words:
        return [], "too_short", counts, 0, None
    joined = "\n".join(sentences)
    digest = int.from_bytes(hashlib.blake2b(joined.encode("utf-8"), digest_size=8).digest(),
                            "little")
    minhash = _minhash(sentences) if options.near_duplicate_threshold > 0 else None
    return sentences, None, counts, digest, minhash


def _join_initials(sentences: list[str]) -> list[str]:
    """blingfire ends a sentence after a short abbreviation or an initial at the start of one
    ("Dr." / "Samuel Jutzi, director ...", "S." / "C." / "Kleene"): a one-word "sentence" of
    at most 4 characters ending in "." is joined to the next."""
    out, carry = [], ""
    for sentence in sentences:
        sentence = sentence.strip()
        if len(sentence) <= 4 and sentence.endswith(".") and " " not in sentence:
            carry += sentence + " "
            continue
        out.append(carry + sentence)
        carry = ""
    if carry:
        out.append(carry.strip())
    return out


def _minhash(sentences: list[str]) -> np.ndarray:
    from datasketch import MinHash

    words = " ".join(sentences).lower().split()
    shingles = {" ".join(words[i:i + _WORD_SHINGLE]).encode("utf-8")
                for i in range(max(len(words) - _WORD_SHINGLE + 1, 1))}
    m = MinHash(num_perm=NUM_PERM, seed=1, scheme=MINHASH_SCHEME)
    m.update_batch(list(shingles))
    return m.hashvalues


def _clean_batch(batch, options):
    return [clean_document(kind, text, options) for kind, text in batch]


def _ignore_sigint():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us


# ---- De-duplication (in the main process) ----------------------------------------------------

class HashSet64:
    """A set of 64-bit hashes in a numpy open-addressing table: 8 bytes a slot, at most half
    full (16 bytes a member), against ~70 for a Python set of ints."""

    def __init__(self, capacity: int = 1 << 16):
        self._slots = np.zeros(capacity, dtype=np.uint64)
        self._size = 0
        self._has_zero = False

    def add(self, value: int) -> bool:
        """Adds `value`; True if it was new."""
        if value == 0:
            new, self._has_zero = not self._has_zero, True
            return new
        if 2 * (self._size + 1) > len(self._slots):
            self._grow()
        if self._insert(self._slots, value):
            self._size += 1
            return True
        return False

    @staticmethod
    def _insert(slots: np.ndarray, value: int) -> bool:
        mask = len(slots) - 1
        i = value & mask
        target = np.uint64(value)
        while True:
            slot = slots[i]
            if slot == 0:
                slots[i] = target
                return True
            if slot == target:
                return False
            i = (i + 1) & mask

    def _grow(self) -> None:
        old = self._slots[self._slots != 0]
        self._slots = np.zeros(2 * len(self._slots), dtype=np.uint64)
        for value in old.tolist():
            self._insert(self._slots, value)

    def __len__(self) -> int:
        return self._size + self._has_zero


class Deduplicator:
    """Exact (digest) and, optionally, near (MinHash LSH) duplicate detection, first seen
    kept."""

    def __init__(self, options: CorpusOptions):
        self.exact = HashSet64() if options.dedup else None
        self.lsh = None
        if options.near_duplicate_threshold > 0:
            from datasketch import MinHashLSH

            self.lsh = MinHashLSH(threshold=options.near_duplicate_threshold, num_perm=NUM_PERM)
        self._keys = 0

    def reason(self, digest: int, minhash) -> str | None:
        """None for a document to keep (and remembers it), else the reason to drop it."""
        if self.exact is not None and not self.exact.add(digest):
            return "duplicate"
        if self.lsh is not None:
            from datasketch import LeanMinHash

            lean = LeanMinHash(seed=1, hashvalues=minhash, scheme=MINHASH_SCHEME)
            if self.lsh.query(lean):
                return "near_duplicate"
            self.lsh.insert(self._keys, lean, check_duplication=False)
            self._keys += 1
        return None


# ---- The pipeline ----------------------------------------------------------------------------

_BATCH_DOCUMENTS = 64
_BATCH_CHARS = 2 << 20


def _batches(files: list[tuple[str, str]], options: CorpusOptions, stats: dict, progress):
    """Raw documents of every input file, in order, in batches of at most 64 documents or
    2 M characters."""
    batch, chars = [], 0
    for path, input_format in files:
        for kind, text in corpus_sources.read_source(path, input_format, stats,
                                                     options.text_field, progress):
            batch.append((kind, text))
            chars += len(text)
            if len(batch) >= _BATCH_DOCUMENTS or chars >= _BATCH_CHARS:
                yield batch
                batch, chars = [], 0
    if batch:
        yield batch


def _cleaned(batches, options: CorpusOptions, num_workers: int):
    """The cleaned documents of `batches`, in order: inline with one worker, else over a pool
    of spawned processes with at most 2 batches a worker in flight (bounded memory)."""
    if num_workers <= 1:
        for batch in batches:
            yield from _clean_batch(batch, options)
        return
    context = multiprocessing.get_context("spawn")
    pool = context.Pool(num_workers, initializer=_ignore_sigint)
    try:
        pending = collections.deque()
        for batch in batches:
            pending.append(pool.apply_async(_clean_batch, (batch, options)))
            if len(pending) >= 2 * num_workers:
                yield from pending.popleft().get()
        while pending:
            yield from pending.popleft().get()
        pool.close()
    finally:
        pool.terminate()
        pool.join()


class _Shards:
    """The output shards, written as `X.partial` and renamed only when the whole corpus is
    done: an interrupted or failed run leaves no output that looks finished."""

    def __init__(self, paths: list[str]):
        self.paths = paths
        self.counts = [collections.Counter(documents=0, sentences=0, characters=0)
                       for _ in paths]
        self.files = []
        self.made_dirs = []  # folders this run created: removed again if it fails
        for path in paths:
            folder = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(folder):
                os.makedirs(folder)
                self.made_dirs.append(folder)
            self.files.append(open(path + ".partial", "w", encoding="utf-8", newline="\n"))
        self.documents = 0

    def write(self, sentences: list[str]) -> None:
        shard = self.documents % len(self.files)
        f = self.files[shard]
        if self.counts[shard]["documents"]:
            f.write("\n")  # the blank line between documents
        text = "\n".join(sentences) + "\n"
        f.write(text)
        count = self.counts[shard]
        count["documents"] += 1
        count["sentences"] += len(sentences)
        count["characters"] += len(text)
        self.documents += 1

    def finish(self) -> list[dict]:
        for f in self.files:
            f.close()
        for path in self.paths:
            os.replace(path + ".partial", path)
        return [{"file": path, **count, "bytes": os.path.getsize(path)}
                for path, count in zip(self.paths, self.counts)]

    def discard(self) -> None:
        for f, path in zip(self.files, self.paths):
            f.close()
            if os.path.exists(path + ".partial"):
                os.remove(path + ".partial")
        for folder in reversed(self.made_dirs):
            try:
                os.rmdir(folder)  # only if empty
            except OSError:
                pass


def prepare_corpus(input_file: str, output_file: str, options: CorpusOptions | None = None,
                   num_output_shards: int | None = None, num_workers: int = 1,
                   overwrite_output: bool = False, show_progress: bool = True,
                   flags_used: dict | None = None) -> dict:
    """Reads raw corpora and writes one sentence a line, blank lines between documents.

    input_file   comma-separated files or globs (`.xml`/`.xml.bz2` MediaWiki dumps, `.jsonl`
                 (`.gz`/`.bz2`), `.parquet`, text; see `corpus_sources.detect_format`).
    output_file  one file, or with num_output_shards=N > 1 `FILE-00000-of-0000N`, ...
                 (Google's naming, as create_pretraining_data.py); kept document k goes to
                 shard k % N.
    Returns the summary, also written to `{output_file}.summary.json`: documents read, kept
    and dropped by reason, sentences and characters written, markup removed, invalid UTF-8
    bytes (and where the first was), per-shard counts, seconds and MB/s of input.
    Raises UsageError for bad settings or outputs that exist (without overwrite_output),
    DataError for unreadable input or a corpus with no document left; nothing is written then.
    """
    options = options or CorpusOptions()
    options.check()
    inputs = expand_input_files(input_file)
    files = [(path, corpus_sources.detect_format(path, options.input_format)) for path in inputs]
    paths = output_paths(output_file, num_output_shards)
    _check_outputs(paths + [summary_path(output_file)], inputs, overwrite_output)
    started = time.time()
    total = sum(os.path.getsize(p) for p in inputs)
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="B", unit_scale=True, file=sys.stderr, desc="corpus")
    stats: dict = collections.Counter()
    shards = _Shards(paths)
    try:
        dropped = _run(files, options, num_workers, stats, shards, bar)
        if not shards.documents:
            raise DataError(f"{input_file}: no document left after cleaning ("
                            f"{_describe(dropped) or 'no document read'}); check "
                            "--input_format, --text_field and --min_sentences / "
                            "--min_document_words")
        if shards.documents < len(paths):  # an empty shard would stop the next script's glob
            raise DataError(f"{input_file}: {shards.documents} document(s) kept for "
                            f"--num_output_shards={len(paths)}: every shard needs one; lower "
                            "--num_output_shards")
        shard_counts = shards.finish()
    except BaseException:
        shards.discard()
        raise
    finally:
        if bar is not None:
            bar.close()
    seconds = time.time() - started
    summary = _summary(files, stats, dropped, shard_counts, seconds, total, options, flags_used)
    with open(summary_path(output_file) + ".tmp", "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    os.replace(summary_path(output_file) + ".tmp", summary_path(output_file))
    return summary


def _run(files, options, num_workers, stats, shards, bar) -> collections.Counter:
    dedup = Deduplicator(options)
    dropped: collections.Counter = collections.Counter()
    progress = bar.update if bar is not None else None
    for sentences, reason, counts, digest, minhash in _cleaned(
            _batches(files, options, stats, progress), options, num_workers):
        stats["documents_read"] += 1
        stats.update(counts)
        if reason is None:
            reason = dedup.reason(digest, minhash)
        if reason is not None:
            dropped[reason] += 1
            continue
        shards.write(sentences)
    for key in ("redirects", "not_articles", "empty_records"):
        if stats.get(key):
            dropped[key] = stats[key]
    return dropped


def _describe(dropped: dict) -> str:
    return ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in sorted(dropped.items()))


def _check_outputs(paths: list[str], inputs: list[str], overwrite_output: bool) -> None:
    read = {os.path.realpath(p) for p in inputs}
    for path in paths:
        parent = os.path.dirname(os.path.abspath(path))
        while parent and not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if parent and not os.path.isdir(parent):
            raise UsageError(f"--output_file: {parent} is a file, not a folder; choose another "
                             "--output_file")
        if os.path.realpath(path) in read:
            raise UsageError(f"--output_file: {path} is also an input; write elsewhere")
        if os.path.isdir(path):
            raise UsageError(f"--output_file: {path} is a folder; give a file name (shards "
                             "are named FILE-00000-of-0000N)")
    existing = [p for p in paths if os.path.exists(p)]
    if existing and not overwrite_output:
        raise UsageError(f"{existing[0]} exists ({len(existing)} output file(s) do); pass "
                         "--overwrite_output to replace them or choose another --output_file")


def _summary(files, stats, dropped, shard_counts, seconds, total, options, flags_used) -> dict:
    summary = {
        "inputs": [{"file": p, "format": f, "bytes": os.path.getsize(p)} for p, f in files],
        "documents_read": stats.get("documents_read", 0) + sum(
            stats.get(k, 0) for k in ("redirects", "not_articles", "empty_records")),
        "documents": sum(s["documents"] for s in shard_counts),
        "sentences": sum(s["sentences"] for s in shard_counts),
        "characters": sum(s["characters"] for s in shard_counts),
        "dropped": dict(sorted(dropped.items())),
        "sentences_dropped": {k.removeprefix("sentences_dropped_"): v
                              for k, v in sorted(stats.items())
                              if k.startswith("sentences_dropped_")},
        "markup_removed": {k: stats[k] for k in ("headings", "skipped_sections", "list_lines",
                                                 "preformatted_lines", "label_lines", "tables",
                                                 "formulas")
                           if stats.get(k)},
        "documents_cut_at_1m_characters": stats.get("documents_cut_at_1m_characters", 0),
        "invalid_utf8_bytes": stats.get("invalid_utf8_bytes", 0),
        "first_invalid_utf8": stats.get("first_invalid_utf8"),
        "shards": shard_counts,
        "seconds": round(seconds, 3),
        "input_mb_per_second": round(total / 1e6 / max(seconds, 1e-9), 3),
        "options": dataclasses.asdict(options),
    }
    if flags_used is not None:
        summary["flags"] = flags_used
    return summary

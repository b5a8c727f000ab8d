"""build_vocab.py's work: read a corpus (sampled to a byte budget), learn a vocabulary with
`bert_tf.tokenization.learn`, write vocab.txt, bert_config.json and vocab_summary.json, and
report how it splits held-out text next to another vocabulary."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from typing import Callable, Iterator

from bert_tf.errors import UsageError
from bert_tf.data.glue import DataError
from bert_tf.tokenization.learn import (
    VocabOptions,
    alphabet,
    check_layout,
    google_layout,
    heldout_report,
    learn_pieces,
)

OUTPUTS = ("vocab.txt", "bert_config.json", "vocab_summary.json")


def sampled_lines(paths: list[str], max_bytes: int, stats: dict | None = None,
                  progress: Callable[[int], None] | None = None) -> Iterator[str]:
    """The lines of `paths`, all of them if they hold at most `max_bytes`, else a deterministic
    sample keeping each line with probability max_bytes / total (a hash of its position).

    Invalid UTF-8 is replaced and counted in `stats` (`invalid_utf8_bytes`,
    `first_invalid_utf8`), as prepare_corpus.py does; `stats["bytes_read"]` counts the bytes
    kept. Raises DataError naming the file and byte offset of a NUL byte (a binary file)."""
    from bert_tf.data.mediawiki import replace_invalid_utf8

    stats = {} if stats is None else stats
    total = sum(os.path.getsize(p) for p in paths)
    keep = min(1.0, max_bytes / max(total, 1))
    threshold = int(keep * 2**64)
    for path in paths:
        offset = 0
        with open(path, "rb") as f:
            for number, raw in enumerate(f):
                start, offset = offset, offset + len(raw)
                if progress is not None:
                    progress(len(raw))
                if keep < 1.0:
                    digest = hashlib.blake2b(f"{path}:{number}".encode(), digest_size=8).digest()
                    if int.from_bytes(digest, "little") >= threshold:
                        continue
                if b"\x00" in raw:
                    raise DataError(f"{path}: byte {start + raw.index(bytes(1))} is a NUL byte: "
                                    "this looks like a binary file, not text")
                stats["bytes_read"] = stats.get("bytes_read", 0) + len(raw)
                try:
                    yield raw.decode("utf-8")
                except UnicodeDecodeError:
                    yield replace_invalid_utf8(raw, path, start, stats)


def build_vocab(input_file: str, output_dir: str, options: VocabOptions | None = None,
                bert_config_file: str | None = None, heldout_file: str | None = None,
                compare_vocab_file: str | None = None, overwrite_output: bool = False,
                show_progress: bool = True) -> dict:
    """Learns a vocabulary from `input_file` (comma-separated files or globs of text, e.g.
    prepare_corpus.py's output) and writes into `output_dir`:
      vocab.txt          Google's layout (see `bert_tf.tokenization.learn`), at most
                         `vocab_size` lines (fewer when the text has fewer pieces to give at
                         `min_frequency`: the summary and the script say so);
      bert_config.json   `bert_config_file` (default: BERT-Base's) with the real `vocab_size`;
      vocab_summary.json the options, what was fixed, the bytes read and invalid UTF-8
                         replaced, and with `heldout_file` the [UNK] rate and pieces per word
                         of this vocabulary and of `compare_vocab_file`.
    Returns the summary. Raises UsageError for settings the vocabulary cannot meet, missing
    files or outputs that exist (without overwrite_output), DataError for a binary input;
    nothing is written then.
    """
    from bert_tf.config import BertConfig
    from bert_tf.data.pretraining import expand_input_files

    options = options or VocabOptions()
    try:
        options.check()
    except ValueError as e:  # the tokenization layer's messages already name the flag
        raise UsageError(str(e)) from None
    paths = expand_input_files(input_file)
    for flag, path in (("--heldout_file", heldout_file), ("--compare_vocab_file",
                                                          compare_vocab_file),
                       ("--bert_config_file", bert_config_file)):
        if path and not os.path.isfile(path):
            raise UsageError(f"{flag}={path}: no such file")
    outputs = [os.path.join(output_dir, n) for n in OUTPUTS]
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise UsageError(f"--output_dir={output_dir} is a file, not a folder")
    existing = [p for p in outputs if os.path.exists(p)]
    if existing and not overwrite_output:
        raise UsageError(f"{existing[0]} exists; pass --overwrite_output or another --output_dir")
    config = BertConfig.from_json_file(bert_config_file or os.path.join(
        os.path.dirname(__file__), "..", "configs", "bert_base_config.json"))
    started = time.time()
    stats: dict = {}
    tokens, layout_stats = _learn(paths, options, stats, show_progress)
    summary = {"vocab_file": outputs[0], "size": len(tokens), "asked": options.vocab_size,
               **layout_stats, "seconds": round(time.time() - started, 2),
               "bytes_read": stats.get("bytes_read", 0),
               "invalid_utf8_bytes": stats.get("invalid_utf8_bytes", 0),
               "first_invalid_utf8": stats.get("first_invalid_utf8"),
               "options": vars(options), "inputs": paths}
    os.makedirs(output_dir, exist_ok=True)
    _write_atomic(outputs[0], "".join(t + "\n" for t in tokens))
    config_dict = config.to_dict()
    config_dict["vocab_size"] = len(tokens)
    _write_atomic(outputs[1], json.dumps(config_dict, indent=2) + "\n")
    if heldout_file:
        summary["heldout"] = _heldout(heldout_file, outputs[0], compare_vocab_file,
                                      options.do_lower_case)
    _write_atomic(outputs[2], json.dumps(summary, indent=1) + "\n")
    return summary


def _learn(paths: list[str], options: VocabOptions, stats: dict, show_progress: bool):
    """Two passes over the (sampled) text: the alphabet, then the pieces; Google's layout."""
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=2 * sum(os.path.getsize(p) for p in paths), unit="B",
                   unit_scale=True, file=sys.stderr, desc="reading (2 passes)")
    try:
        _, missing = alphabet(sampled_lines(paths, options.max_corpus_bytes, {},
                                            bar.update if bar else None), options)
        pieces = learn_pieces(sampled_lines(paths, options.max_corpus_bytes, stats,
                                            bar.update if bar else None), options, missing)
    finally:
        if bar is not None:
            bar.close()
    try:
        tokens, layout_stats = google_layout(pieces, options)
    except ValueError as e:  # a --vocab_size too small for the characters
        raise UsageError(str(e)) from None
    check_layout(tokens, options.num_unused)
    return tokens, layout_stats


def _heldout(heldout_file: str, vocab_file: str, compare_vocab_file: str | None,
             do_lower_case: bool) -> dict:
    with open(heldout_file, encoding="utf-8", errors="replace") as f:
        lines = f.readlines()
    report = {"file": heldout_file, "this": heldout_report(vocab_file, lines, do_lower_case)}
    if compare_vocab_file:
        report["compared"] = heldout_report(compare_vocab_file, lines, do_lower_case)
    return report


def _write_atomic(path: str, text: str) -> None:
    with open(path + ".tmp", "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    os.replace(path + ".tmp", path)

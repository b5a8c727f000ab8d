"""Tokenization speed: Google-style pure Python vs Hugging Face Rust vs tensorflow-text vs ours.

Tokenizes every line of a corpus (default: WikiText-2 test, 2,891 lines, ~273k
WordPiece tokens) into ids, without [CLS]/[SEP], with each of:

  full_tokenizer     bert_tf.tokenization.FullTokenizer: pure Python, Google's behaviour
  hf_tokenizers      Hugging Face `tokenizers` BertWordPieceTokenizer (Rust), encode_batch
  tf_text_fast_bert  tensorflow_text.FastBertTokenizer (C++), raw
  fast_tokenizer     bert_tf.tokenization.FastTokenizer.tokenize_to_ids (ours)
  fast_tokenizer_ragged  the same, stopping at the tf.RaggedTensor

Each is run once to warm up, then --repeats times; the median is reported, with
tokens/s and how many lines come out different from Google's ids (FullTokenizer's).
Every method ends with Python lists of ids except the _ragged row.

  cd /work/main && PYTHONPATH=. TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python bench/bench_tokenization.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BERT_TF_SHARED_DATA") or REPO.parent / "shared" / "data")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default=str(SHARED_DATA / "corpus" / "wikitext2_test.raw"))
    parser.add_argument("--vocab_file", default=str(SHARED_DATA / "vocab" / "uncased_vocab.txt"))
    parser.add_argument("--do_lower_case", default=True, action=argparse.BooleanOptionalAction)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs after one warm-up run")
    return parser.parse_args()


def main():
    args = parse_args()
    for path in (args.corpus, args.vocab_file):
        if not Path(path).is_file():
            sys.exit(f"{path} not found: pass --corpus/--vocab_file or set BERT_TF_SHARED_DATA")
    with open(args.corpus, encoding="utf-8") as f:  # universal newlines (the file is CRLF)
        lines = f.read().split("\n")

    import tensorflow as tf
    import tensorflow_text as tf_text
    from tokenizers import BertWordPieceTokenizer

    from bert_tf.tokenization import FastTokenizer, FullTokenizer

    full = FullTokenizer(args.vocab_file, do_lower_case=args.do_lower_case)
    fast = FastTokenizer(args.vocab_file, do_lower_case=args.do_lower_case)
    rust = BertWordPieceTokenizer(
        args.vocab_file, lowercase=args.do_lower_case, clean_text=True, handle_chinese_chars=True
    )
    vocab_list = [token for token, _ in sorted(full.vocab.items(), key=lambda item: item[1])]
    fast_bert = tf_text.FastBertTokenizer(
        vocab=vocab_list, token_out_type=tf.int32, lower_case_nfd_strip_accents=args.do_lower_case
    )

    def ragged_to_lists(ragged):
        flat = ragged.flat_values.numpy().tolist()
        splits = ragged.row_splits.numpy().tolist()
        return [flat[a:b] for a, b in zip(splits, splits[1:])]

    methods = {
        "full_tokenizer (pure Python, Google)": lambda: [
            full.convert_tokens_to_ids(full.tokenize(line)) for line in lines
        ],
        "hf_tokenizers BertWordPieceTokenizer (Rust, batched)": lambda: [
            encoding.ids for encoding in rust.encode_batch(lines, add_special_tokens=False)
        ],
        "tf_text FastBertTokenizer (C++, raw)": lambda: ragged_to_lists(
            fast_bert.tokenize(tf.constant(lines))
        ),
        "fast_tokenizer.tokenize_to_ids (ours)": lambda: fast.tokenize_to_ids(lines),
        "fast_tokenizer.tokenize_to_ragged (ours)": lambda: fast.tokenize_to_ragged(lines),
    }

    google = methods["full_tokenizer (pure Python, Google)"]()
    tokens = sum(map(len, google))
    print(f"{args.corpus}: {len(lines)} lines, {tokens} tokens (Google's tokenization), "
          f"median of {args.repeats} runs after a warm-up\n")
    print("| method | seconds | tokens/s | lines differing from Google |")
    print("|---|---:|---:|---:|")
    for name, run in methods.items():
        ids = run()  # warm-up (and tf.function tracing, thread pools)
        seconds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            run()
            seconds.append(time.perf_counter() - start)
        if isinstance(ids, tf.RaggedTensor):
            ids = ragged_to_lists(ids)
        differing = sum(a != b for a, b in zip(ids, google)) + abs(len(ids) - len(google))
        median = statistics.median(seconds)
        print(f"| {name} | {median:.3f} | {tokens / median:,.0f} | {differing} |", flush=True)


if __name__ == "__main__":
    main()

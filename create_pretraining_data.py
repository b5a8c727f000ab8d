"""Create BERT pre-training data (masked LM + next sentence prediction) as TFRecord files.

  python create_pretraining_data.py --input_file=../shared/data/corpus/python_docs_train.txt \
      --output_file=output/pretraining/python_docs.tfrecord --num_output_shards=4 \
      --vocab_file=../shared/data/vocab/uncased_vocab.txt --num_workers=2 \
      --max_seq_length=128 --max_predictions_per_seq=20 --dupe_factor=5 --do_whole_word_mask

Google's flags, defaults and semantics (one sentence a line, blank lines between documents;
features input_ids, input_mask, segment_ids, masked_lm_positions, masked_lm_ids,
masked_lm_weights, next_sentence_labels), streaming through --num_workers processes with
bounded memory. The shards depend on --random_seed and --num_output_shards, not on
--num_workers. Writes FILE.summary.json next to the output (counts, masking and NSP
statistics, the flags). See bert_tf/data/pretraining.py.
"""

import signal
import sys

from absl import app, flags

_ABSL_FLAGS = set(flags.FLAGS)  # absl's own; the rest, defined here, go into the summary
flags.DEFINE_string("input_file", None,
                    "Input text files: comma-separated, globs allowed. Format: --input_format.")
flags.DEFINE_string("output_file", None,
                    "Output TFRecord file(s), comma-separated; one file with "
                    "--num_output_shards=N > 1 becomes FILE-00000-of-0000N, ...")
flags.DEFINE_string("vocab_file", None, "The WordPiece vocab.txt the BERT model was trained on.")
flags.DEFINE_bool("do_lower_case", True,
                  "Lower-case the input (true for uncased models, false for cased ones).")
flags.DEFINE_bool("do_whole_word_mask", False,
                  "Mask whole words (all of their WordPieces) instead of single WordPieces.")
flags.DEFINE_integer("max_seq_length", 128, "Maximum sequence length, [CLS]/[SEP] included.")
flags.DEFINE_integer("max_predictions_per_seq", 20,
                     "Maximum masked LM predictions per sequence.")
flags.DEFINE_integer("random_seed", 12345, "Random seed for data generation.")
flags.DEFINE_integer("dupe_factor", 10,
                     "Number of times to duplicate the input data (with different masks).")
flags.DEFINE_float("masked_lm_prob", 0.15, "Masked LM probability.")
flags.DEFINE_float("short_seq_prob", 0.1,
                   "Probability of creating sequences shorter than the maximum length.")
flags.DEFINE_integer("num_workers", 2,
                     "Worker processes (tokenization, instances, writing); the output does not "
                     "depend on it. At most --num_output_shards are used.")
flags.DEFINE_integer("num_output_shards", None,
                     "Output shards (default: one per --output_file). Document k goes to shard "
                     "k % N; the output depends on N.")
flags.DEFINE_bool("dynamic_masking", False,
                  "Write no masked_lm_* features (input_ids, input_mask, segment_ids, "
                  "next_sentence_labels only): the training pipeline draws the masks.")
flags.DEFINE_enum("input_format", "sentences", ["sentences", "paragraphs", "wikitext"],
                  "sentences: one sentence a line, blank lines between documents (Google's). "
                  "paragraphs: one paragraph a line, split into sentences (blingfire). "
                  "wikitext: WikiText raw files (' = Title = ' starts a document), split into "
                  "sentences.")
flags.DEFINE_integer("document_window", 2048,
                     "Per shard: documents the random next segment is drawn from (half before, "
                     "half after the current one). Google draws from the whole corpus.")
flags.DEFINE_integer("window_tokens", 1_000_000,
                     "Per shard: WordPieces that window may hold (~36 bytes each); documents "
                     "leave it, or are processed early, beyond this. Bounds memory whatever "
                     "the document lengths.")
flags.DEFINE_integer("shuffle_buffer", 10000,
                     "Per shard: instances held in memory (~0.7 KB each at length 128). A "
                     "shard with more is shuffled globally through random temporary buckets "
                     "beside the output (disk: the shard's size), as Google shuffles all "
                     "instances.")
flags.DEFINE_bool("overwrite_output", False, "Replace existing output files.")
flags.DEFINE_bool("progress", True, "Show a progress bar (bytes read) on stderr.")
FLAGS = flags.FLAGS
_OWN_FLAGS = [name for name in FLAGS if name not in _ABSL_FLAGS]

_LIBRARY_OPTIONS = ("max_seq_length", "max_predictions_per_seq", "masked_lm_prob",
                    "short_seq_prob", "dupe_factor", "do_whole_word_mask", "random_seed",
                    "dynamic_masking", "input_format", "document_window", "window_tokens",
                    "shuffle_buffer")


def main(argv):
    del argv
    from bert_tf import cli
    from bert_tf.errors import UsageError
    from bert_tf.data.pretraining import PretrainingOptions, create_pretraining_data

    cli.setup_logging()
    for name in ("input_file", "output_file", "vocab_file"):
        if not FLAGS[name].value:
            raise UsageError(f"--{name} is required")
    options = PretrainingOptions(**{name: FLAGS[name].value for name in _LIBRARY_OPTIONS})
    flags_used = {name: FLAGS[name].value for name in _OWN_FLAGS}
    try:
        summary = create_pretraining_data(
            FLAGS.input_file, FLAGS.output_file, FLAGS.vocab_file, FLAGS.do_lower_case, options,
            num_workers=FLAGS.num_workers, num_output_shards=FLAGS.num_output_shards,
            overwrite_output=FLAGS.overwrite_output, show_progress=FLAGS.progress,
            flags_used=flags_used)
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: workers stopped, partial files removed
        why = f" ({e})" if str(e) else ""
        print(f"\ncreate_pretraining_data.py: interrupted{why}; no output was written (the "
              "partial files are removed); run the same command to start again", file=sys.stderr)
        sys.exit(128 + getattr(e, "signum", signal.SIGINT))  # as a shell reports a signal
    print(f"Wrote {summary['instances']} instances from {summary['documents']} documents to "
          f"{len(summary['shards'])} file(s) in {summary['seconds']:.1f} s "
          f"({summary['instances_per_second']:.0f} instances/s)")


if __name__ == "__main__":
    from bert_tf.cli import parse_flags, run_main

    app.run(lambda argv: run_main(main, argv, tensorflow=False), flags_parser=parse_flags)

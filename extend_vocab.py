"""Add domain words to a checkpoint's vocabulary for continued pre-training, without starting
over.

  # see what a corpus would gain (nothing written):
  python extend_vocab.py --init_checkpoint=uncased_L-12_H-768_A-12 \
      --corpus_file=corpus/docs.txt --num_new_tokens=200 --dry_run
  # add them (or --new_tokens=kubernetes,dataframe / --new_tokens_file=tokens.txt):
  python extend_vocab.py --init_checkpoint=uncased_L-12_H-768_A-12 \
      --corpus_file=corpus/docs.txt --num_new_tokens=200 --output_dir=bert_docs_vocab

--mode=replace_unused gives each token an [unusedN] line (size unchanged), append adds rows
(word embeddings and the MLM output bias grow, vocab_size follows), auto (default) takes unused
lines first. A new row starts as the mean of the rows of the pieces the old vocabulary split the
token into. Every old row and every other weight is copied bit for bit. The checkpoint is
written in the format it came in (Google TF1, Hugging Face, bert_tf) with vocab.txt, its config
and extension.json. Tokens the tokenizer could never produce are refused with the reason. See
bert_tf/tokenization/extension.py and bert_tf/checkpoints/extend.py.
"""

from absl import app, flags

flags.DEFINE_string("init_checkpoint", None, "The checkpoint to extend (any format "
                    "checkpoints.load reads: a directory, a prefix, a preset name).")
flags.DEFINE_string("vocab_file", None, "Its vocab.txt (default: the one beside it).")
flags.DEFINE_string("output_dir", None, "Where the extended checkpoint goes.")
flags.DEFINE_list("new_tokens", [], "Tokens to add, comma-separated (## for word pieces).")
flags.DEFINE_string("new_tokens_file", None, "Tokens to add, one a line.")
flags.DEFINE_string("corpus_file", None, "Text to propose tokens from (comma-separated, globs).")
flags.DEFINE_integer("num_new_tokens", 100, "With --corpus_file: how many tokens to propose.")
flags.DEFINE_integer("min_frequency", 20, "With --corpus_file: a proposed word occurs at least "
                     "this often.")
flags.DEFINE_enum("mode", "auto", ["replace_unused", "append", "auto"],
                  "replace_unused: take [unusedN] lines; append: add rows; auto: unused first.")
flags.DEFINE_bool("do_lower_case", None, "The vocabulary is uncased (default: what the "
                  "checkpoint says, else guessed from the vocabulary).")
flags.DEFINE_bool("dry_run", False, "Show the tokens, today's split and their rows; write "
                  "nothing.")
flags.DEFINE_bool("overwrite_output", False, "Replace an existing --output_dir checkpoint.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from bert_tf import cli
    from bert_tf.errors import UsageError
    from bert_tf.vocab_extension import ExtendArgs, extend_vocab

    cli.setup_logging()
    if not FLAGS.init_checkpoint:
        raise UsageError("--init_checkpoint is required")
    if not FLAGS.output_dir and not FLAGS.dry_run:
        raise UsageError("--output_dir is required (or --dry_run)")
    args = ExtendArgs(**{name: FLAGS[name].value for name in (
        "init_checkpoint", "vocab_file", "output_dir", "new_tokens", "new_tokens_file",
        "corpus_file", "num_new_tokens", "min_frequency", "mode", "do_lower_case", "dry_run",
        "overwrite_output")})
    summary = extend_vocab(args)
    for row in summary["tokens"][:30]:
        count = f" ({row['count']} times)" if "count" in row else ""
        print(f"  {row['token']:<24} id {row['id']:>6}  today: {' '.join(row['pieces'])}{count}")
    if len(summary["tokens"]) > 30:
        print(f"  ... {len(summary['tokens']) - 30} more in "
              f"{summary.get('summary_file', 'the summary')}")
    what = "would add" if FLAGS.dry_run else "added"
    print(f"{what} {len(summary['tokens'])} tokens ({summary['replaced']} in [unused] lines, "
          f"{summary['appended']} appended): vocabulary {summary['old_size']} -> "
          f"{summary['new_size']}" + ("" if FLAGS.dry_run else
                                      f"; {summary['format']} checkpoint in {FLAGS.output_dir}"))


if __name__ == "__main__":
    from bert_tf.cli import parse_flags, run_main

    app.run(lambda argv: run_main(main, argv, tensorflow=False), flags_parser=parse_flags)

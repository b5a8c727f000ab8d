"""Learn a WordPiece vocabulary from a corpus, in Google's layout, for pre-training from scratch.

  python build_vocab.py --input_file='corpus/docs.txt-*' --output_dir=vocab/docs \
      --vocab_size=30522 --do_lower_case \
      --heldout_file=corpus/heldout.txt --compare_vocab_file=uncased_L-12_H-768_A-12/vocab.txt

Normalises the text as the model will (Google's basic tokenization: lower case and accents
stripped with --do_lower_case), learns pieces with Hugging Face `tokenizers`' WordPiece trainer,
then writes vocab.txt in Google's layout ([PAD] 0, [unused0..98], [UNK] 100, [CLS] 101, [SEP]
102, [MASK] 103, --num_unused rows in all for later extension, then the pieces), with every
character both as `c` and `##c`; bert_config.json (--bert_config_file with the real
vocab_size) and vocab_summary.json ([UNK] rate and pieces per word on --heldout_file, beside
--compare_vocab_file's). See bert_tf/vocab_building.py and bert_tf/tokenization/learn.py.
"""

from absl import app, flags

flags.DEFINE_string("input_file", None, "Text files: comma-separated, globs allowed.")
flags.DEFINE_string("output_dir", None, "Where vocab.txt, bert_config.json and "
                    "vocab_summary.json are written.")
flags.DEFINE_integer("vocab_size", 30522, "Lines of vocab.txt, reserved rows included.")
flags.DEFINE_bool("do_lower_case", True, "Uncased: lower-case and strip accents (as the model "
                  "will see the text).")
flags.DEFINE_integer("num_unused", 994, "[unusedN] rows (Google's uncased: 994; at least 99).")
flags.DEFINE_integer("min_frequency", 2, "A merge must occur at least this often.")
flags.DEFINE_integer("limit_alphabet", 1000, "At most this many characters (the most "
                     "frequent); each takes two rows, c and ##c.")
flags.DEFINE_integer("max_corpus_bytes", 1 << 30, "Read about this much text at most; larger "
                     "corpora are sampled by line.")
flags.DEFINE_string("bert_config_file", None, "Config to copy, with vocab_size set "
                    "(default: configs/bert_base_config.json).")
flags.DEFINE_string("heldout_file", None, "Text to report [UNK] rate and pieces per word on.")
flags.DEFINE_string("compare_vocab_file", None, "A vocabulary to compare with on "
                    "--heldout_file (e.g. Google's).")
flags.DEFINE_bool("overwrite_output", False, "Replace existing files in --output_dir.")
flags.DEFINE_bool("progress", True, "Show a progress bar on stderr.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from bert_tf import cli
    from bert_tf.errors import UsageError
    from bert_tf.tokenization.learn import VocabOptions
    from bert_tf.vocab_building import build_vocab

    cli.setup_logging()
    for name in ("input_file", "output_dir"):
        if not FLAGS[name].value:
            raise UsageError(f"--{name} is required")
    options = VocabOptions(**{name: FLAGS[name].value for name in (
        "vocab_size", "num_unused", "do_lower_case", "min_frequency", "limit_alphabet",
        "max_corpus_bytes")})
    summary = build_vocab(FLAGS.input_file, FLAGS.output_dir, options,
                          bert_config_file=FLAGS.bert_config_file,
                          heldout_file=FLAGS.heldout_file,
                          compare_vocab_file=FLAGS.compare_vocab_file,
                          overwrite_output=FLAGS.overwrite_output, show_progress=FLAGS.progress)
    if summary["size"] < summary["asked"]:
        print(f"The text gives {summary['size']} entries, not --vocab_size={summary['asked']}: "
              f"no more pieces occur --min_frequency={FLAGS.min_frequency} times (lower it, or "
              "give more text)")
    if summary["invalid_utf8_bytes"]:
        print(f"Replaced {summary['invalid_utf8_bytes']} invalid UTF-8 byte(s); the first at "
              f"{summary['first_invalid_utf8']}")
    print(f"Wrote {summary['vocab_file']}: {summary['size']} entries ({summary['characters']} "
          f"characters, each as c and ##c; {len(summary['twins_added'])} rows the learner left "
          f"out added) in {summary['seconds']:.1f} s")
    heldout = summary.get("heldout")
    if heldout:
        for name, report in (("this vocabulary", heldout["this"]),
                             ("compared", heldout.get("compared"))):
            if report:
                print(f"  {name}: [UNK] rate {100 * report['unk_rate']:.3f}%, "
                      f"{report['pieces_per_word']:.3f} pieces per word on "
                      f"{heldout['file']} ({report['vocab_file']})")


if __name__ == "__main__":
    from bert_tf.cli import parse_flags, run_main

    app.run(lambda argv: run_main(main, argv, tensorflow=False), flags_parser=parse_flags)

"""Prepare a raw corpus for create_pretraining_data.py: one sentence a line, a blank line between
documents, in shards.

  python prepare_corpus.py \
      --input_file=enwiki-latest-pages-articles.xml.bz2 \
      --output_file=corpus/wiki.txt --num_output_shards=64 --num_workers=8

  python create_pretraining_data.py --input_file='corpus/wiki.txt-*' ...

Reads MediaWiki XML dumps (.xml, .xml.bz2), JSON Lines (.jsonl, .json, optionally .gz/.bz2;
--text_field), Parquet (a Hugging Face dataset saved with to_parquet; --text_field) and text
(one paragraph a line, blank lines between documents), streamed with bounded memory. Wiki markup
is removed with mwparserfromhell (headings, lists, tables, templates, references, formulas and
code never reach the text), sentences are split with blingfire (offline), short documents and
exact (optionally near) duplicates are dropped. The output depends on the inputs and flags,
not on --num_workers. Writes FILE.summary.json (documents, sentences, characters, what was
dropped and why, invalid UTF-8 bytes and where the first was). See bert_tf/data/corpus.py.
"""

from absl import app, flags

_ABSL_FLAGS = set(flags.FLAGS)
flags.DEFINE_string("input_file", None,
                    "Input files: comma-separated, globs allowed. Format by name, or "
                    "--input_format.")
flags.DEFINE_string("output_file", None,
                    "Output text file; with --num_output_shards=N > 1 it becomes "
                    "FILE-00000-of-0000N, ...")
flags.DEFINE_integer("num_output_shards", None,
                     "Output shards (default 1). Kept document k goes to shard k % N.")
flags.DEFINE_enum("input_format", "auto",
                  ["auto", "mediawiki", "jsonl", "parquet", "text", "lines"],
                  "auto: by name and first bytes (XML: mediawiki; .jsonl/.json/.ndjson: jsonl; "
                  ".parquet: parquet; else text, one paragraph a line, blank lines between "
                  "documents). lines: one document a line (never guessed).")
flags.DEFINE_string("text_field", "text", "The JSONL field / Parquet column holding the text.")
flags.DEFINE_integer("min_sentences", 2, "Drop documents with fewer sentences.")
flags.DEFINE_integer("min_document_words", 20, "Drop documents with fewer words.")
flags.DEFINE_integer("min_sentence_words", 1, "Drop sentences with fewer words.")
flags.DEFINE_bool("dedup", True, "Drop exact duplicate documents (after cleaning).")
flags.DEFINE_float("near_duplicate_threshold", 0.0,
                   "If > 0, also drop documents whose estimated Jaccard similarity (MinHash of "
                   "word 5-grams, datasketch) with a kept one reaches this; 0.8 is common. "
                   "Costs ~1 KB of memory a document.")
flags.DEFINE_integer("num_workers", 2,
                     "Worker processes cleaning documents; the output does not depend on it.")
flags.DEFINE_bool("overwrite_output", False, "Replace existing output files.")
flags.DEFINE_bool("progress", True, "Show a progress bar (input bytes) on stderr.")
FLAGS = flags.FLAGS
_OWN_FLAGS = [name for name in FLAGS if name not in _ABSL_FLAGS]
_OPTIONS = ("min_sentences", "min_document_words", "min_sentence_words", "dedup",
            "near_duplicate_threshold", "text_field", "input_format")


def main(argv):
    del argv
    from bert_tf import cli
    from bert_tf.errors import UsageError
    from bert_tf.data.corpus import CorpusOptions, prepare_corpus

    cli.setup_logging()
    for name in ("input_file", "output_file"):
        if not FLAGS[name].value:
            raise UsageError(f"--{name} is required")
    if FLAGS.num_workers < 1:
        raise UsageError(f"--num_workers={FLAGS.num_workers}: must be at least 1")
    summary = prepare_corpus(
        FLAGS.input_file, FLAGS.output_file,
        CorpusOptions(**{name: FLAGS[name].value for name in _OPTIONS}),
        num_output_shards=FLAGS.num_output_shards, num_workers=FLAGS.num_workers,
        overwrite_output=FLAGS.overwrite_output, show_progress=FLAGS.progress,
        flags_used={name: FLAGS[name].value for name in _OWN_FLAGS})
    dropped = ", ".join(f"{n} {k}" for k, n in summary["dropped"].items()) or "none"
    print(f"Wrote {summary['documents']} documents, {summary['sentences']} sentences to "
          f"{len(summary['shards'])} file(s) in {summary['seconds']:.1f} s "
          f"({summary['input_mb_per_second']:.1f} MB/s of input); dropped: {dropped}")
    if summary["documents_cut_at_1m_characters"]:
        print(f"Cut {summary['documents_cut_at_1m_characters']} text document(s) at 1 M "
              "characters: does the text lack blank lines between documents? "
              "(--input_format=lines reads one document a line)")
    if summary["invalid_utf8_bytes"]:
        print(f"Replaced {summary['invalid_utf8_bytes']} invalid UTF-8 byte(s); the first at "
              f"{summary['first_invalid_utf8']}")


if __name__ == "__main__":
    from bert_tf.cli import parse_flags, run_main

    app.run(lambda argv: run_main(main, argv, tensorflow=False), flags_parser=parse_flags)

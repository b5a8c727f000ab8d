"""Index pre-training records, or check every record of them.

  python index_records.py build --input_file='records/*.tfrecord' [--vocab_file=vocab.txt]
  python index_records.py verify --input_file='records/*.tfrecord' [--vocab_file=vocab.txt]

build: writes FILE.idx beside each record file (record count and byte offsets, schema and
lengths, the vocabulary's fingerprint when --vocab_file says which one the records were made
with). create_pretraining_data.py writes these itself; build is for records made elsewhere
(Google's or NVIDIA's scripts). It reads only the 12-byte frame header of each record; files
whose index is up to date are skipped (--rebuild redoes them). run_pretraining.py builds missing
indexes itself on the chief, so this is optional: run it once ahead of a multi-node job.

verify: reads everything and checks every record: CRCs, Google's schema and lengths, ids below
the vocabulary size (--vocab_file, else the size the index records), input_mask ones then zeros,
padding zeros, segment ids, masked positions inside the sequence, 0/1 weights and labels. Lists
the first problems with file and byte offset; exits 1 if there are any.
"""

import os
import sys
import time

from absl import app, flags

flags.DEFINE_string("input_file", None, "Record files: globs or a comma list.")
flags.DEFINE_string("vocab_file", None, "build: the vocabulary the records were made with (its "
                    "fingerprint goes into the index; training then refuses another one). "
                    "verify: ids must be below its size.")
flags.DEFINE_bool("rebuild", False, "build: rebuild indexes that are up to date too.")
flags.DEFINE_string("index_dir", None, "Where indexes go (and are looked for) when a record "
                    "file's folder cannot be written, e.g. a read-only mount; run_pretraining.py "
                    "looks in OUTPUT_DIR/record_index, so pass that.")
flags.DEFINE_bool("progress", True, "Show a progress bar on stderr.")
FLAGS = flags.FLAGS

COMMANDS = ("build", "verify")


def main(argv):
    from bert_tf import cli
    from bert_tf.errors import UsageError
    from bert_tf.data import pretraining_reader as records, record_index

    cli.setup_logging()
    command = argv[1] if len(argv) > 1 else None
    if command not in COMMANDS or len(argv) > 2:
        raise UsageError(f"give one command, {' or '.join(COMMANDS)}: python index_records.py "
                         "build --input_file=...")
    if not FLAGS.input_file:
        raise UsageError("--input_file is required")
    try:
        files = records.expand_files(FLAGS.input_file)
    except records.RecordError as e:
        raise UsageError(f"--input_file: {e}") from None
    vocab = None
    if FLAGS.vocab_file:
        if not os.path.isfile(FLAGS.vocab_file):
            raise UsageError(f"--vocab_file={FLAGS.vocab_file}: file not found")
        vocab = record_index.vocab_fingerprint(FLAGS.vocab_file)
    size = sum(os.path.getsize(f) for f in files)
    started = time.time()
    if command == "build":
        built = records.ensure_indexes(files, progress=FLAGS.progress, vocab=vocab,
                                       rebuild=FLAGS.rebuild or vocab is not None,
                                       index_dir=FLAGS.index_dir)
        seconds = time.time() - started
        count = sum(record_index.load_index(f, index_dir=FLAGS.index_dir).records
                    for f in files)
        built_bytes = sum(os.path.getsize(f) for f in built)
        print(f"{len(files)} file(s), {count:,} records, {size / 1e9:.2f} GB: indexed "
              f"{len(built)} in {seconds:.1f} s ({built_bytes / 1e6 / max(seconds, 1e-9):.0f} "
              f"MB/s), {len(files) - len(built)} already up to date")
        return
    from bert_tf.data.record_verify import verify_records

    result = verify_records(files, vocab_size=vocab["size"] if vocab else None,
                            progress=FLAGS.progress, index_dir=FLAGS.index_dir,
                            # a process per core pays off once the read outlasts
                            # their start (each imports TensorFlow, ~3 s)
                            # (each process holds TensorFlow: at most 8)
                            processes=min(8, os.cpu_count() or 1) if size > 2e9 else 1)
    seconds = time.time() - started
    for p in result["problems"]:
        print(f"{p['file']}: byte {p['offset']:,}: {p['what']}")
    print(f"{result['files']} file(s), {result['records']:,} records, {size / 1e9:.2f} GB "
          f"read in {seconds:.1f} s ({size / 1e6 / max(seconds, 1e-9):.0f} MB/s): "
          f"{result['problem_count']} problem(s)")
    if result["problem_count"]:
        sys.exit(1)


if __name__ == "__main__":
    from bert_tf.cli import parse_flags, run_main

    # build never needs TensorFlow (2.8-4.5 s to import): only verify parses records with it.
    app.run(lambda argv: run_main(main, argv, tensorflow="verify" in argv[1:]),
            flags_parser=parse_flags)

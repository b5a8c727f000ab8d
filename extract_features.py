"""Extract per-token BERT features (hidden states of chosen layers) as JSON lines.

  python extract_features.py --input_file=sentences.txt --output_file=features.jsonl \
      --init_checkpoint=../shared/data/models/all-MiniLM-L6-v2 --layers=-1,-2,-3,-4

One example per line in --input_file; `text_a ||| text_b` for a pair. The output follows Google's
extract_features.py: {"linex_index", "features": [{"token", "layers": [{"index", "values"}]}]}.
--bert_config_file, --vocab_file and --do_lower_case default to what sits next to
--init_checkpoint (a Google checkpoint directory, a Hugging Face directory, or a preset name
such as bert-base-uncased).
"""

import os
import sys

from absl import app, flags, logging

flags.DEFINE_string("input_file", None, "Text file, one example per line ('a ||| b' for pairs).")
flags.DEFINE_string("output_file", None, "Where to write the JSON lines.")
flags.DEFINE_bool("overwrite_output", False, "Replace --output_file if it exists.")
flags.DEFINE_string("layers", "-1,-2,-3,-4", "Comma-separated layer indexes (-1 is the last; "
                    "the default keeps the last four, or all of a shallower model).")
flags.DEFINE_string("bert_config_file", None,
                    "bert_config.json (default: the one next to --init_checkpoint).")
flags.DEFINE_string("vocab_file", None, "vocab.txt (default: the one next to --init_checkpoint).")
flags.DEFINE_string("init_checkpoint", None,
                    "Google checkpoint prefix/directory, Hugging Face directory, bert_tf "
                    "checkpoint, or a preset name (bert-base-uncased, bert-tiny, ...).")
flags.DEFINE_bool("do_lower_case", True,
                  "Lower-case the input; must match the checkpoint (uncased models: true). "
                  "Default: what the checkpoint says, else true.")
flags.DEFINE_integer("max_seq_length", 128, "Maximum tokens per example, [CLS]/[SEP] included; "
                     "longer inputs are truncated.")
flags.DEFINE_integer("batch_size", 32, "Examples per forward pass.")
flags.DEFINE_enum("dtype", "fp32", ["fp32", "fp16", "bf16"], "Compute precision.")
from bert_tf.flags import define_tokenizer_flag  # noqa: E402

define_tokenizer_flag()
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from bert_tf import cli
    from bert_tf.assets import resolve_model_assets
    from bert_tf.errors import UsageError

    cli.setup_logging()
    for name in ("input_file", "output_file", "init_checkpoint"):
        if not getattr(FLAGS, name):
            raise UsageError(f"--{name} is required")
    if not os.path.exists(FLAGS.input_file):
        raise UsageError(f"--input_file={FLAGS.input_file}: file not found")
    if os.path.exists(FLAGS.output_file) and not FLAGS.overwrite_output:
        raise UsageError(f"--output_file={FLAGS.output_file} exists; pass --overwrite_output to "
                         "replace it or choose another path")
    if FLAGS.batch_size < 1:
        raise UsageError(f"--batch_size={FLAGS.batch_size} must be at least 1")

    assets = resolve_model_assets(
        init_checkpoint=FLAGS.init_checkpoint, bert_config_file=FLAGS.bert_config_file,
        vocab_file=FLAGS.vocab_file, do_lower_case=FLAGS.do_lower_case,
        do_lower_case_given=FLAGS["do_lower_case"].present,
        max_seq_length=FLAGS.max_seq_length)

    from tqdm import tqdm

    from bert_tf import checkpoints, extract
    from bert_tf.modeling import BertEncoder
    from bert_tf.tokenization import make_tokenizer
    from bert_tf.training.precision import set_dtype

    try:
        spec = FLAGS.layers
        if not FLAGS["layers"].present:  # the default -1..-4, cut to the model's depth
            spec = ",".join(str(-k) for k in range(1, min(4, assets.config.num_hidden_layers) + 1))
        layers = extract.parse_layers(spec, assets.config.num_hidden_layers)
        examples = extract.read_examples(FLAGS.input_file)
    except ValueError as e:
        raise UsageError(str(e)) from None
    set_dtype(FLAGS.dtype)
    tokenizer = make_tokenizer(assets.vocab_file, assets.do_lower_case,
                               reference=FLAGS.reference_tokenizer)
    encoder = BertEncoder(assets.config)
    checkpoints.load(encoder, assets.init_checkpoint)  # logs what it loaded

    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output_file)), exist_ok=True)
    tmp = FLAGS.output_file + ".partial"
    with open(tmp, "w", encoding="utf-8") as out, \
            tqdm(total=len(examples), unit="ex", desc="extract", file=sys.stderr) as bar:
        n = extract.write_jsonl(extract.extract(encoder, examples, tokenizer, layers,
                                                FLAGS.max_seq_length, FLAGS.batch_size, bar), out)
    os.replace(tmp, FLAGS.output_file)  # only a complete file ever carries the final name
    logging.info("wrote %d examples to %s", n, FLAGS.output_file)


if __name__ == "__main__":
    from bert_tf.cli import parse_flags, run_main

    app.run(lambda argv: run_main(main, argv), flags_parser=parse_flags)

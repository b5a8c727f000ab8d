"""Export a fine-tuned model for serving: a SavedModel that takes raw text, Google's tokenizer
inside its graph (docs/serving.md).

  # a run of run_classifier.py or run_ner.py (its --output_dir):
  python export_model.py --model_dir=output/mrpc --export_dir=export/mrpc
  # any checkpoint with a classification head (Hugging Face, Google, bert_tf); labels from
  # the checkpoint (id2label, labels.json) or --task_name:
  python export_model.py --init_checkpoint=my-finetuned-sst2 --task_name=SST-2 \
      --export_dir=export/sst2

The same export is written at the end of a run with `--export=saved_model`. Load it with
TensorFlow and tensorflow-text only:

  import tensorflow as tf, tensorflow_text
  model = tf.saved_model.load("export/mrpc")
  model.signatures["serving_default"](text_a=tf.constant(["..."]), text_b=tf.constant(["..."]))

For latency, set TensorFlow's threads as serving_info.json's parallel_chains asks before the
first op (docs/serving.md, "Threads"; azure/scoring/score.py does it).
"""

from absl import app, flags

from bert_tf.export import PARALLEL_CHAINS

flags.DEFINE_string("model_dir", None, "A fine-tuning run's --output_dir: its newest "
                    "checkpoint, task, vocabulary, casing and max_seq_length are read from it.")
flags.DEFINE_string("init_checkpoint", None, "Or any checkpoint with a classification head "
                    "(a directory, a prefix, a .safetensors file).")
flags.DEFINE_string("task_name", None, "With --init_checkpoint: the GLUE task whose labels the "
                    "head predicts (default: the labels the checkpoint names).")
flags.DEFINE_string("vocab_file", None, "With --init_checkpoint: its vocab.txt (default: the "
                    "one beside it).")
flags.DEFINE_string("bert_config_file", None, "With --init_checkpoint: its config (default: the "
                    "one beside it).")
flags.DEFINE_bool("do_lower_case", True, "With --init_checkpoint: the vocabulary is uncased "
                  "(default: what the checkpoint says).")
flags.DEFINE_integer("max_seq_length", None, "Longest input in word pieces, [CLS] and [SEP] "
                     "included (default: the run's, else 128).")
flags.DEFINE_string("export_dir", None, "Where the export goes (default: "
                    "MODEL_DIR/export/saved_model or .../onnx). Replaced once the new one is "
                    "complete and checked.")
flags.DEFINE_enum("export", "saved_model", ["saved_model", "onnx"], "saved_model: a "
                  "SavedModel that takes raw text; onnx: model.onnx (ids in, logits out) for "
                  "onnxruntime, with vocab.txt and a client tokenizer (tokenization.py).")
flags.DEFINE_integer("parallel_chains", PARALLEL_CHAINS, "SavedModel: the cores one request "
                     "is cut for. The forward pass runs as this many chains of single-threaded "
                     "kernels over chunks of the sequence; serve with "
                     "inter_op_parallelism_threads=min(N, cores) and "
                     "intra_op_parallelism_threads=max(1, cores // N) (azure/scoring/score.py "
                     "does). 1 for a GPU.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from bert_tf import cli
    from bert_tf.export import ExportArgs, export_model

    cli.setup_logging()
    path = export_model(ExportArgs(
        model_dir=FLAGS.model_dir, init_checkpoint=FLAGS.init_checkpoint,
        task_name=FLAGS.task_name, vocab_file=FLAGS.vocab_file,
        bert_config_file=FLAGS.bert_config_file, do_lower_case=FLAGS.do_lower_case,
        do_lower_case_given=FLAGS["do_lower_case"].present,
        max_seq_length=FLAGS.max_seq_length, export_dir=FLAGS.export_dir, export=FLAGS.export,
        parallel_chains=FLAGS.parallel_chains))
    print(f"exported to {path}")


if __name__ == "__main__":
    from bert_tf.cli import parse_flags, run_main

    app.run(lambda argv: run_main(main, argv), flags_parser=parse_flags)

"""Fine-tune, evaluate and predict BERT for named-entity recognition on CoNLL-2003.

  python run_ner.py --do_train --do_eval --do_predict --data_dir=../shared/data/conll2003 \
      --init_checkpoint=../shared/data/models/all-MiniLM-L6-v2 --output_dir=output/ner

Reads eng.train / eng.testa (dev) / eng.testb (test); IOB1 tags are converted to IOB2. Only the
first word piece of each word is labelled and scored; sentences longer than --max_seq_length are
split between words. Writes eval_results.txt with entity-level precision/recall/F1 (conlleval's
definition) for dev and test, and {dev,test}_predictions.txt (word gold predicted) with
--do_predict. --train_batch_size is per worker.
"""

from absl import app, flags

from bert_tf.flags import define_finetune_flags, run_args

define_finetune_flags("conll2003")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from bert_tf import cli
    from bert_tf.finetune import run_ner

    cli.setup_logging()
    results = run_ner(run_args(FLAGS))
    for key in sorted(results):
        print(f"{key} = {results[key]}")


if __name__ == "__main__":
    from bert_tf.cli import parse_flags, run_main

    app.run(lambda argv: run_main(main, argv), flags_parser=parse_flags)

"""Fine-tune BERT for extractive question answering on SQuAD 1.1 / 2.0 and predict, with Google's
run_squad.py flags and output files.

  python run_squad.py --init_checkpoint=bert-base-uncased --do_train \
      --train_file=train-v1.1.json --do_predict --predict_file=dev-v1.1.json \
      --train_batch_size=12 --learning_rate=3e-5 --num_train_epochs=2.0 \
      --max_seq_length=384 --doc_stride=128 --output_dir=output/squad

Writes predictions.json ({question id: answer}), nbest_predictions.json and, with
--version_2_with_negative, null_odds.json, as Google's script does; when the predict file carries
answers, also eval_results.txt/.json with the official EM and F1 (2.0: HasAns/NoAns and best_f1 /
best_f1_thresh, the threshold search of evaluate-v2.0.py). --train_batch_size is per worker.
"""

from absl import app, flags

from bert_tf.flags import define_squad_flags, run_args

define_squad_flags()
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from bert_tf import cli
    from bert_tf.qa import SquadArgs, run_squad

    cli.setup_logging()
    results = run_squad(run_args(FLAGS, SquadArgs))
    for key in sorted(results):
        print(f"{key} = {results[key]}")


if __name__ == "__main__":
    from bert_tf.cli import parse_flags, run_main

    app.run(lambda argv: run_main(main, argv), flags_parser=parse_flags)

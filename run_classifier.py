"""Fine-tune, evaluate and predict BERT on a GLUE task.

  python run_classifier.py --task=MRPC --do_train --do_eval \
      --data_dir=../shared/data/glue/MRPC \
      --init_checkpoint=../shared/data/models/all-MiniLM-L6-v2 --output_dir=output/mrpc

Tasks: CoLA, SST-2, MRPC, STS-B, QQP, MNLI (AX is predicted with the MNLI model when AX.tsv is in
--data_dir), MNLI-mm, QNLI, RTE, WNLI. Writes eval_results.txt (Google's `key = value`) and
eval_results.json, GLUE-submission TSVs with --do_predict, metrics.jsonl and TensorBoard events.
Rerunning the same command after a crash resumes from the last checkpoint in --output_dir.
Horovod: `horovodrun -np N python run_classifier.py --use_horovod ...`; --train_batch_size is per
worker.
"""

from absl import app, flags

from bert_tf.flags import define_finetune_flags, run_args

define_finetune_flags("MRPC")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from bert_tf import cli
    from bert_tf.finetune import run_classifier

    cli.setup_logging()
    results = run_classifier(run_args(FLAGS))
    for key in sorted(results):
        print(f"{key} = {results[key]}")


if __name__ == "__main__":
    from bert_tf.cli import parse_flags, run_main

    app.run(lambda argv: run_main(main, argv), flags_parser=parse_flags)

"""Pre-train BERT (masked LM + next sentence) on records of create_pretraining_data.py, or
continue pre-training a released checkpoint on your own domain.

  python create_pretraining_data.py --input_file=corpus.txt --output_file=out/train.tfrecord \
      --vocab_file=vocab.txt --max_seq_length=128 --max_predictions_per_seq=20
  python run_pretraining.py --input_file=out/train.tfrecord --output_dir=out/pretrain \
      --bert_config_file=bert_config.json --vocab_file=vocab.txt --do_train --do_eval \
      --eval_input_file=out/heldout.tfrecord --num_train_steps=10000 --optimizer=lamb \
      --export=google,huggingface

--init_checkpoint takes any format bert_tf.checkpoints.load reads (Google TF1, Hugging Face,
bert_tf); heads it lacks start fresh. Rerunning the same command after a crash resumes at the
exact record. Horovod: `horovodrun -np N python run_pretraining.py --use_horovod ...`;
--train_batch_size is per worker and per micro-batch, --global_batch_size sets the accumulation.
"""

from absl import app, flags

from bert_tf.flags import define_pretraining_flags, run_args

define_pretraining_flags()
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from bert_tf import cli
    from bert_tf.pretrain import PretrainArgs, run_pretraining

    cli.setup_logging()
    results = run_pretraining(run_args(FLAGS, PretrainArgs))
    for key in sorted(results):
        print(f"{key} = {results[key]}")


if __name__ == "__main__":
    from bert_tf.cli import parse_flags, run_main

    app.run(lambda argv: run_main(main, argv), flags_parser=parse_flags)

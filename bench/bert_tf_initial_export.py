"""Write the BertPretrainer that `run_pretraining.py --seed=S --init_checkpoint=C` starts from
(C's weights, plus the fresh heads exactly as bert_tf draws them) in Hugging Face layout, so that
bench/hf_pretraining_reference.py can start from the very same weights. A diagnostic: with equal
initial weights the two frameworks differ only by their dropout masks, which separates the recipe
from the random draw of the fresh heads.

  .venv/bin/python bench/bert_tf_initial_export.py --seed=42 --output_dir=/tmp/bt_init42 \
      --init_checkpoint=../shared/data/models/all-MiniLM-L6-v2
  .venv/bin/python bench/hf_pretraining_reference.py --init_checkpoint=/tmp/bt_init42 ...

--hidden_dropout_prob=0 --attention_probs_dropout_prob=0 write a config without dropout: both
frameworks then compute the same function step for step (run_pretraining.py
--init_checkpoint=DIR reads the config next to the weights), and their training losses must agree
to float32 round-off.
"""

import argparse
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--init_checkpoint", default="../shared/data/models/all-MiniLM-L6-v2")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--output_dir", required=True)
    p.add_argument("--hidden_dropout_prob", type=float, default=None)
    p.add_argument("--attention_probs_dropout_prob", type=float, default=None)
    args = p.parse_args()

    import keras

    # As bert_tf.training.run.setup_runtime, before the model is built: the same draws.
    keras.utils.set_random_seed(args.seed)
    from bert_tf import checkpoints
    from bert_tf.assets import resolve_model_assets
    from bert_tf.modeling import BertPretrainer

    assets = resolve_model_assets(args.init_checkpoint, None, None, True, False, 128)
    model = BertPretrainer(assets.config)
    print(checkpoints.load(model, args.init_checkpoint).summary())
    checkpoints.save_huggingface(model, args.output_dir)
    shutil.copyfile(assets.vocab_file, os.path.join(args.output_dir, "vocab.txt"))
    overrides = {k: getattr(args, k) for k in ("hidden_dropout_prob",
                                               "attention_probs_dropout_prob")
                 if getattr(args, k) is not None}
    if overrides:
        path = os.path.join(args.output_dir, "config.json")
        with open(path) as f:
            config = json.load(f)
        config.update(overrides)
        with open(path, "w") as f:
            json.dump(config, f, indent=2)
    print(f"wrote {args.output_dir}{' with ' + str(overrides) if overrides else ''}")


if __name__ == "__main__":
    main()

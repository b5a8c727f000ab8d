"""Does run_pretraining.py's --export=huggingface load into transformers' BertForPreTraining and
give the logits of the model bert_tf trained?

  .venv/bin/python bench/hf_export_parity.py --output_dir=/work/runs/minilm_cont \
      --eval_input_file=/work/runs/data/heldout128.tfrecord

bert_tf side: a BertPretrainer restored from the last training checkpoint of --output_dir
(OUTPUT_DIR/checkpoints, the weights the loop trained, heads included; strict restore), and the
same model class loaded from the export with bert_tf.checkpoints.load (the round trip).
Hugging Face side: BertForPreTraining.from_pretrained(OUTPUT_DIR/export/huggingface), whose
missing / unexpected keys must be empty, run through its own forward (masked-LM logits at every
position, gathered here at masked_lm_positions). Both in eval mode, float32, on the first
--num_batches held-out batches. Exits non-zero when a difference exceeds --atol.
"""

import argparse
import json
import os
import sys

import numpy as np
import torch
import transformers

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bert_tf.data import records  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output_dir", required=True, help="run_pretraining.py's --output_dir")
    p.add_argument("--eval_input_file", required=True)
    p.add_argument("--num_batches", type=int, default=3)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--max_seq_length", type=int, default=128)
    p.add_argument("--max_predictions_per_seq", type=int, default=20)
    p.add_argument("--atol", type=float, default=1e-4)
    args = p.parse_args()

    import tensorflow as tf

    from bert_tf import BertConfig, checkpoints
    from bert_tf.modeling import BertPretrainer
    from bert_tf.training.loop import checkpoint_dir

    export = os.path.join(args.output_dir, "export", "huggingface")
    latest = tf.train.latest_checkpoint(checkpoint_dir(args.output_dir))
    if not latest:
        sys.exit(f"no training checkpoint in {checkpoint_dir(args.output_dir)}")
    config = BertConfig.from_json_file(os.path.join(export, "config.json"))

    trained = BertPretrainer(config)  # what the training loop wrote
    status = tf.train.Checkpoint(model=trained).read(latest)
    status.expect_partial()  # the optimizer slots and the step are not the model's
    status.assert_existing_objects_matched()
    round_trip = BertPretrainer(config)  # the export read back by bert_tf's loader
    report = checkpoints.load(round_trip, export)

    hf, info = transformers.BertForPreTraining.from_pretrained(export, output_loading_info=True)
    hf.eval()
    keys = {k: info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    print(f"bert_tf checkpoint {latest}; export {export}")
    print(f"bert_tf loader on the export: {len(report.loaded)} loaded, missing {report.missing}, "
          f"unused {report.unused}")
    print(f"transformers on the export: {keys}")

    worst = {"hf_vs_trained_mlm": 0.0, "hf_vs_trained_nsp": 0.0,
             "roundtrip_vs_trained_mlm": 0.0, "roundtrip_vs_trained_nsp": 0.0}
    agree = n_pred = 0
    held_out = records.open_pretraining_records(records.expand_files(args.eval_input_file),
                                                args.max_seq_length,
                                                args.max_predictions_per_seq)
    for batch in records.eval_pretraining_batches(held_out, args.batch_size,
                                                  max_steps=args.num_batches):
        out = trained(batch, training=False)
        tf_mlm, tf_nsp = np.asarray(out["mlm_logits"]), np.asarray(out["nsp_logits"])  # [B,P,V]
        out = round_trip(batch, training=False)
        rt_mlm, rt_nsp = np.asarray(out["mlm_logits"]), np.asarray(out["nsp_logits"])
        t = {k: torch.from_numpy(v.numpy().astype(np.int64)) for k, v in batch.items()
             if k != "masked_lm_weights"}
        with torch.no_grad():
            o = hf(input_ids=t["input_ids"], attention_mask=t["input_mask"],
                   token_type_ids=t["segment_ids"])
        pos = t["masked_lm_positions"]  # [B,P]
        hf_mlm = torch.gather(o.prediction_logits, 1, pos.unsqueeze(-1).expand(
            -1, -1, o.prediction_logits.shape[-1])).numpy()  # [B,S,V] -> [B,P,V]
        hf_nsp = o.seq_relationship_logits.numpy()
        worst["hf_vs_trained_mlm"] = max(worst["hf_vs_trained_mlm"],
                                         float(np.abs(hf_mlm - tf_mlm).max()))
        worst["hf_vs_trained_nsp"] = max(worst["hf_vs_trained_nsp"],
                                         float(np.abs(hf_nsp - tf_nsp).max()))
        worst["roundtrip_vs_trained_mlm"] = max(worst["roundtrip_vs_trained_mlm"],
                                                float(np.abs(rt_mlm - tf_mlm).max()))
        worst["roundtrip_vs_trained_nsp"] = max(worst["roundtrip_vs_trained_nsp"],
                                                float(np.abs(rt_nsp - tf_nsp).max()))
        w = batch["masked_lm_weights"].numpy() > 0
        agree += int((hf_mlm.argmax(-1) == tf_mlm.argmax(-1))[w].sum())
        n_pred += int(w.sum())
    ok = (not any(keys.values()) and not report.missing and not report.unused
          and all(v <= args.atol for v in worst.values()))
    result = {"ok": ok, "atol": args.atol, "batches": args.num_batches,
              "batch_size": args.batch_size, "max_abs_diff": worst,
              "argmax_agreement": agree / max(n_pred, 1), **keys}
    print(json.dumps(result, indent=1))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

"""The continued pre-training peer: Hugging Face's PyTorch BertForPreTraining trained on the same
pre-training records, in the same order, with the same recipe as run_pretraining.py, with the
held-out masked-LM accuracy curve written to JSON.

  .venv/bin/python bench/hf_pretraining_reference.py \
      --input_file='/work/runs/data/train128.tfrecord-*' \
      --eval_input_file=/work/runs/data/heldout128.tfrecord \
      --init_checkpoint=../shared/data/models/all-MiniLM-L6-v2 \
      --num_train_steps=600 --train_batch_size=32 --learning_rate=1e-4 \
      --warmup_proportion=0.1 --eval_every_steps=150 --seed=42 \
      --output_json=/work/runs/hf_minilm_cont.json

What is the same as bert_tf's run_pretraining.py (same flag names and defaults where they exist):
- Data: the batches come from bert_tf.data.records.pretraining_batches with run_pretraining.py's
  arguments (seed, batch, --shuffle_block_records 64), so step k trains on exactly the records
  bert_tf's step k does (the order is a function of the seed and the step alone); held-out
  batches from eval_pretraining_batches (file order, every record). Each batch is turned into
  torch tensors. (Runs before the record index landed used a tf.data shuffle buffer of 10000.)
- Model: BertForPreTraining.from_pretrained(--init_checkpoint). A checkpoint without heads
  (all-MiniLM-L6-v2) gets fresh masked-LM transform/bias and next-sentence classifier, the
  decoder tied to the word embeddings, as bert_tf; the keys transformers reports missing are
  printed and written to the JSON. Dropout as in config.json, in training mode only.
- Loss: masked-LM logits only at masked_lm_positions (gather sequence_output, then
  model.cls.predictions), cross-entropy weighted by masked_lm_weights,
  sum(w * ce) / (sum(w) + 1e-5), plus the mean next-sentence cross-entropy; in float32.
- Optimizer: Google's AdamWeightDecayOptimizer semantics (GoogleAdamW below): betas 0.9/0.999,
  eps 1e-6 added to sqrt(v), decoupled weight decay 0.01 on every weight except biases and
  LayerNorm parameters, NO bias correction. torch.optim.AdamW has no switch to turn bias
  correction off, hence the small class; with --adam_bias_correction the script uses
  torch.optim.AdamW itself, whose update (decay by lr*wd*w, then m_hat / (sqrt(v_hat) + eps))
  is bert_tf's AdamWeightDecay(bias_correction=True) exactly.
- Gradients clipped to global norm 1.0 (a step whose norm is not finite is skipped, the
  schedule still advancing, as bert_tf's loop does).
- Schedule (Google's): update k (0-based) uses peak * k / W during the W = int(N *
  warmup_proportion) warm-up steps, then peak * (1 - k / N): linear decay to 0 over ALL N steps,
  so the rate just after warm-up is peak * (1 - warmup_proportion), not the peak
  (transformers' get_linear_schedule_with_warmup decays from the full peak after warm-up).
- Evaluation (eval mode, no dropout): masked-LM accuracy and loss over the real predictions,
  next-sentence accuracy and loss over the examples, on every held-out record: before training,
  every --eval_every_steps steps and at the end.
What differs, necessarily: the random initial values of the fresh heads (torch's normal(0, 0.02)
vs bert_tf's truncated normal(0, 0.02)) and the dropout masks.
"""

import argparse
import hashlib
import json
import math
import os
import sys
import time

import numpy as np
import torch
import transformers

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bert_tf.data import records  # noqa: E402  (imports TensorFlow lazily)

# bert_tf's rule (optimization.NO_DECAY_MARKERS) in Hugging Face's parameter names.
NO_DECAY_MARKERS = ("LayerNorm", "layer_norm", "bias")


class GoogleAdamW(torch.optim.Optimizer):
    """Google BERT's AdamWeightDecayOptimizer:
        m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2     (bias correction only if asked)
        w -= lr * (m / (sqrt(v) + eps) + wd * w)
    The decay is decoupled (not added to g) and uses the weight before the update."""

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01,
                 bias_correction=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      bias_correction=bias_correction))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                state["step"] += 1
                m, v, g = state["m"], state["v"], p.grad
                m.mul_(b1).add_(g, alpha=1.0 - b1)
                v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
                if group["bias_correction"]:
                    t = state["step"]
                    update = (m / (1.0 - b1 ** t)) / ((v / (1.0 - b2 ** t)).sqrt_()
                                                       .add_(group["eps"]))
                else:
                    update = m / v.sqrt().add_(group["eps"])
                if group["weight_decay"]:
                    update.add_(p, alpha=group["weight_decay"])
                p.add_(update, alpha=-group["lr"])


def google_schedule(num_train_steps, num_warmup_steps):
    """LambdaLR factor of update k: k / W during warm-up, then 1 - k / N (bert_tf's
    WarmupLinearDecay)."""
    warm = max(num_warmup_steps, 1)

    def factor(k):
        if k < num_warmup_steps:
            return k / warm
        return max(0.0, 1.0 - k / num_train_steps)

    return factor


def to_torch(batch):
    """A parsed tf batch -> torch tensors: ids and positions int64, weights float32."""
    out = {}
    for k, v in batch.items():
        a = v.numpy()
        out[k] = torch.from_numpy(a.astype(np.int64) if a.dtype == np.int32 else a)
    return out


def forward(model, batch):
    """-> mlm_logits [B,P,V], nsp_logits [B,2], float32. The MLM head sees only the P masked
    positions (B batch, S sequence, H hidden, P predictions, V vocab)."""
    sequence_output, pooled_output = model.bert(
        input_ids=batch["input_ids"], attention_mask=batch["input_mask"],
        token_type_ids=batch["segment_ids"], return_dict=False)[:2]  # [B,S,H], [B,H]
    positions = batch["masked_lm_positions"]  # [B,P]
    index = positions.unsqueeze(-1).expand(-1, -1, sequence_output.shape[-1])  # [B,P,H]
    gathered = torch.gather(sequence_output, 1, index)  # [B,P,H]
    mlm_logits = model.cls.predictions(gathered)  # [B,P,V]
    nsp_logits = model.cls.seq_relationship(pooled_output)  # [B,2]
    return mlm_logits.float(), nsp_logits.float()


def pretraining_terms(model, batch, autocast):
    """Per-prediction and per-example terms, as bert_tf's tasks._pretraining_terms."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        mlm_logits, nsp_logits = forward(model, batch)
    ids, weights = batch["masked_lm_ids"], batch["masked_lm_weights"]
    mlm_ce = torch.nn.functional.cross_entropy(mlm_logits.transpose(1, 2), ids,
                                               reduction="none")  # [B,P]
    mlm_hit = (mlm_logits.argmax(-1) == ids).float()
    labels = batch["next_sentence_labels"]
    nsp_ce = torch.nn.functional.cross_entropy(nsp_logits, labels, reduction="none")  # [B]
    nsp_hit = (nsp_logits.argmax(-1) == labels).float()
    return mlm_ce, mlm_hit, weights, nsp_ce, nsp_hit


def pretraining_loss(model, batch, autocast):
    """Google's loss: sum(w * ce) / (sum(w) + 1e-5) + mean NSP cross-entropy."""
    mlm_ce, mlm_hit, weights, nsp_ce, nsp_hit = pretraining_terms(model, batch, autocast)
    denominator = weights.sum() + 1e-5
    mlm_loss = (mlm_ce * weights).sum() / denominator
    nsp_loss = nsp_ce.mean()
    return mlm_loss + nsp_loss, {"mlm_loss": mlm_loss.item(), "nsp_loss": nsp_loss.item(),
                                 "mlm_accuracy": ((mlm_hit * weights).sum() / denominator).item(),
                                 "nsp_accuracy": nsp_hit.mean().item()}


def evaluate(model, files, args, autocast):  # files: records.PretrainingRecords
    """Held-out metrics over every record (or --max_eval_steps batches), dropout off."""
    sums = dict.fromkeys(("masked_lm_loss", "masked_lm_accuracy", "next_sentence_loss",
                          "next_sentence_accuracy"), 0.0)
    n_pred = n_ex = 0.0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for tf_batch in records.eval_pretraining_batches(
                files, args.eval_batch_size, max_steps=args.max_eval_steps or None):
            mlm_ce, mlm_hit, w, nsp_ce, nsp_hit = pretraining_terms(model, to_torch(tf_batch),
                                                                    autocast)
            sums["masked_lm_loss"] += float((mlm_ce * w).sum())
            sums["masked_lm_accuracy"] += float((mlm_hit * w).sum())
            sums["next_sentence_loss"] += float(nsp_ce.sum())
            sums["next_sentence_accuracy"] += float(nsp_hit.sum())
            n_pred += float(w.sum())
            n_ex += nsp_ce.shape[0]
    model.train(was_training)
    out = {k: v / (n_pred if k.startswith("masked") else n_ex) for k, v in sums.items()}
    out["examples"] = int(n_ex)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input_file", required=True, help="training records: globs or a comma list")
    p.add_argument("--eval_input_file", required=True, help="held-out records")
    p.add_argument("--init_checkpoint", default="../shared/data/models/all-MiniLM-L6-v2",
                   help="a Hugging Face model directory")
    p.add_argument("--train_batch_size", type=int, default=32)
    p.add_argument("--eval_batch_size", type=int, default=64)
    p.add_argument("--learning_rate", type=float, default=5e-5, help="peak learning rate")
    p.add_argument("--num_train_steps", type=int, default=1000)
    p.add_argument("--warmup_proportion", type=float, default=0.1)
    p.add_argument("--num_warmup_steps", type=int, default=None,
                   help="overrides --warmup_proportion")
    p.add_argument("--max_seq_length", type=int, default=128)
    p.add_argument("--max_predictions_per_seq", type=int, default=20)
    p.add_argument("--shuffle_block_records", type=int, default=64)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--eval_every_steps", type=int, default=0)
    p.add_argument("--max_eval_steps", type=int, default=0, help="0: every held-out record")
    p.add_argument("--log_steps", type=int, default=50)
    p.add_argument("--optimizer", choices=["adamw"], default="adamw")
    p.add_argument("--adam_bias_correction", action="store_true")
    p.add_argument("--weight_decay_rate", type=float, default=0.01)
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32",
                   help="bf16: torch.autocast(cpu, bfloat16); losses stay float32")
    p.add_argument("--hidden_dropout_prob", type=float, default=None,
                   help="override config.json's (diagnostics: 0 makes a step deterministic)")
    p.add_argument("--attention_probs_dropout_prob", type=float, default=None)
    p.add_argument("--num_threads", type=int, default=os.cpu_count(),
                   help="torch threads; on a machine shared with other jobs also set "
                        "OMP_WAIT_POLICY=PASSIVE (spinning OpenMP threads halve the speed there)")
    p.add_argument("--output_json", default=None, help="write the curve and results here")
    p.add_argument("--output_dir", default=None, help="save_pretrained the trained model here")
    args = p.parse_args()

    # As bert_tf's setup_runtime (the record order itself is a function of --seed alone).
    import keras
    keras.utils.set_random_seed(args.seed)
    torch.manual_seed(args.seed)  # the fresh heads' initial values, the dropout masks
    torch.set_num_threads(args.num_threads)
    autocast = args.dtype == "bf16"
    num_warmup = min(args.num_warmup_steps if args.num_warmup_steps is not None
                     else int(args.num_train_steps * args.warmup_proportion),
                     args.num_train_steps)

    train_files = records.expand_files(args.input_file)
    eval_files = records.expand_files(args.eval_input_file)
    train_records = records.open_pretraining_records(train_files, args.max_seq_length,
                                                     args.max_predictions_per_seq)
    eval_records = records.open_pretraining_records(eval_files, args.max_seq_length,
                                                    args.max_predictions_per_seq)
    if not train_records.masked:
        sys.exit("the training records carry no masks (--dynamic_masking): this peer reads "
                 "static masks only")
    source = records.pretraining_batches(train_records, args.train_batch_size, args.seed,
                                         block_records=args.shuffle_block_records)

    overrides = {k: getattr(args, k) for k in ("hidden_dropout_prob",
                                               "attention_probs_dropout_prob")
                 if getattr(args, k) is not None}
    model, info = transformers.BertForPreTraining.from_pretrained(
        args.init_checkpoint, output_loading_info=True, **overrides)
    tied = (model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, attention "
          f"{model.config._attn_implementation}, {torch.get_num_threads()} threads")
    print(f"missing keys (fresh): {info['missing_keys']}")
    print(f"unexpected keys: {info['unexpected_keys']}; decoder tied to word embeddings: {tied}")
    print(f"dropout: hidden {model.config.hidden_dropout_prob}, attention "
          f"{model.config.attention_probs_dropout_prob}")

    named = list(model.named_parameters())  # the tied decoder weight and bias appear once
    decay = [p for n, p in named if not any(k in n for k in NO_DECAY_MARKERS)]
    no_decay = [p for n, p in named if any(k in n for k in NO_DECAY_MARKERS)]
    groups = [{"params": decay, "weight_decay": args.weight_decay_rate},
              {"params": no_decay, "weight_decay": 0.0}]
    if args.adam_bias_correction:
        optimizer = torch.optim.AdamW(groups, lr=args.learning_rate, betas=(0.9, 0.999),
                                      eps=1e-6)
        opt_name = "torch.optim.AdamW (bias-corrected)"
    else:
        optimizer = GoogleAdamW(groups, lr=args.learning_rate, betas=(0.9, 0.999), eps=1e-6)
        opt_name = "GoogleAdamW (no bias correction)"
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, google_schedule(args.num_train_steps, num_warmup))
    params = [p for _, p in named]
    print(f"{sum(p.numel() for p in params):,} parameters, {sum(p.numel() for p in decay):,} "
          f"decayed; {opt_name}; {args.num_train_steps} steps ({num_warmup} warm-up) of "
          f"{args.train_batch_size}; {source.records} records, "
          f"{args.num_train_steps / source.steps_per_epoch:.2f} epochs; dtype {args.dtype}",
          flush=True)

    curve, train_log = [], []

    def run_eval(step):
        t = time.time()
        result = evaluate(model, eval_records, args, autocast)
        result.update(step=step, seconds=time.time() - t)
        curve.append(result)
        print(f"step {step}: held-out masked-LM accuracy {result['masked_lm_accuracy']:.4f}, "
              f"loss {result['masked_lm_loss']:.4f}; next-sentence accuracy "
              f"{result['next_sentence_accuracy']:.4f} ({result['examples']} examples, "
              f"{result['seconds']:.0f} s)", flush=True)

    run_eval(0)
    model.train()
    stream = source(0)
    train_seconds, skipped = 0.0, 0
    window, window_t = [], 0.0
    fingerprint = hashlib.sha1()  # of the first 3 batches' input_ids: the data order
    for step in range(args.num_train_steps):
        t0 = time.time()
        _, tf_batch = next(stream)
        batch = to_torch(tf_batch)
        if step < 3:
            fingerprint.update(tf_batch["input_ids"].numpy().tobytes())
        lr = scheduler.get_last_lr()[0]
        loss, metrics = pretraining_loss(model, batch, autocast)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        if torch.isfinite(norm):
            optimizer.step()
        else:
            skipped += 1
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        dt = time.time() - t0
        train_seconds += dt
        window_t += dt
        window.append([loss.item(), metrics["mlm_loss"], metrics["nsp_loss"],
                       metrics["mlm_accuracy"], metrics["nsp_accuracy"]])
        done = step + 1
        if done % args.log_steps == 0 or done == args.num_train_steps:
            means = np.mean(window, axis=0)
            entry = {"step": done, "loss": means[0], "mlm_loss": means[1], "nsp_loss": means[2],
                     "mlm_accuracy": means[3], "nsp_accuracy": means[4], "learning_rate": lr,
                     "grad_norm": float(norm),
                     "examples_per_second": len(window) * args.train_batch_size / window_t}
            entry = {k: float(v) if k != "step" else v for k, v in entry.items()}
            train_log.append(entry)
            print(f"step {done}: loss {entry['loss']:.4f} (mlm {entry['mlm_loss']:.4f}, nsp "
                  f"{entry['nsp_loss']:.4f}), mlm acc {entry['mlm_accuracy']:.4f}, lr "
                  f"{lr:.3e}, grad norm {entry['grad_norm']:.3f}, "
                  f"{entry['examples_per_second']:.1f} seq/s", flush=True)
            window, window_t = [], 0.0
        if args.eval_every_steps and done % args.eval_every_steps == 0 \
                and done < args.num_train_steps:
            run_eval(done)
    run_eval(args.num_train_steps)

    final = curve[-1]
    result = {
        "peer": "hf-torch", "flags": vars(args), "num_warmup_steps": num_warmup,
        "optimizer": opt_name, "transformers": transformers.__version__,
        "torch": torch.__version__, "num_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "attention": model.config._attn_implementation,
        "missing_keys": info["missing_keys"], "unexpected_keys": info["unexpected_keys"],
        "decoder_tied": tied, "data_fingerprint": fingerprint.hexdigest()[:12],
        "train_seconds": train_seconds,
        "sequences_per_second": args.num_train_steps * args.train_batch_size / train_seconds,
        "nonfinite_steps": skipped, "curve": curve, "train_log": train_log,
        "final": {k: final[k] for k in ("masked_lm_accuracy", "masked_lm_loss",
                                        "next_sentence_accuracy", "next_sentence_loss")}}
    print("held-out masked-LM accuracy: " + ", ".join(
        f"{c['step']}: {c['masked_lm_accuracy']:.4f}" for c in curve))
    print(f"train: {train_seconds:.0f} s, {result['sequences_per_second']:.2f} seq/s; data "
          f"fingerprint {result['data_fingerprint']}")
    print(json.dumps({"peer": "hf-torch", **result["final"],
                      "sequences_per_second": result["sequences_per_second"]}))
    if args.output_json:
        os.makedirs(os.path.dirname(os.path.abspath(args.output_json)), exist_ok=True)
        with open(args.output_json, "w") as f:
            json.dump(result, f, indent=1)
    if args.output_dir:
        model.save_pretrained(args.output_dir)


if __name__ == "__main__":
    main()

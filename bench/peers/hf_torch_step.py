"""Hugging Face PyTorch training rounds (the peer) for bench_finetune.py and
bench_pretrain_step.py: a worker subprocess in the project venv.

torch on the CPU with 2 threads, and the optimizer step the HF Trainer takes by default:
AdamW (torch.optim, weight decay 0.01 except biases and LayerNorm), linear warm-up and decay,
gradients clipped to global norm 1.0. bf16 is the Trainer's CPU path, torch.autocast("cpu",
dtype=torch.bfloat16) around the forward pass and loss (weights and optimizer stay float32).

finetune: transformers' BertForSequenceClassification from the all-MiniLM-L6-v2 directory (2
labels). Padding: fixed = every batch max_seq_length wide; dynamic = DataCollatorWithPadding's
default, each shuffled batch padded to its longest row (no length grouping, the Trainer default).

pretrain: BertForPreTraining of --bert_config_file's dimensions (random weights, decoder tied to
the word embeddings), on one fixed batch in Google's schema. --mlm_head:
  all     the stock model: model(..., labels, next_sentence_label).loss; its head transforms and
          scores all S positions ([B,S,V] logits), the loss keeps the masked ones (labels -100
          elsewhere, i.e. where masked_lm_weights is 0);
  masked  the same modules, masked positions first: model.bert(...) -> sequence_output,
          gathered at masked_lm_positions [B,P,H] -> model.cls.predictions -> [B,P,V];
          model.cls.seq_relationship(pooled_output); loss as Google's, sum(w * ce) / (sum(w) +
          1e-5) + mean next-sentence cross-entropy. The like-for-like peer of bert_tf and Model
          Garden, which gather before the head.

Protocol and timing: bench/peers/worker.py. A round is warmup + timed steps (training goes on
from the previous round, on the same batches every round); torch on the CPU is synchronous and
`float(loss)` ends a step; batch assembly counts, as a DataLoader's would.
"""

from __future__ import annotations

import time

T_START = time.time()

import numpy as np  # noqa: E402

import worker  # noqa: E402  (bench/peers/worker.py)


def parse_args(argv=None):
    p = worker.arg_parser(__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--mlm_head", choices=("all", "masked"), default="masked",
                   help="pretrain: score all positions (stock BertForPreTraining) or gather the "
                        "masked positions before the head")
    return p.parse_args(argv)


def batches(d, batch_size, max_seq_length, padding, seed):
    """Shuffled batches (remainder dropped, as the other frameworks), endless."""
    rng = np.random.default_rng(seed)
    n = len(d["lengths"])
    while True:
        order = rng.permutation(n)
        for i in range(0, n - batch_size + 1, batch_size):
            rows = order[i:i + batch_size]
            width = max_seq_length if padding == "fixed" else int(d["lengths"][rows].max())
            yield {k: d[k][rows, :width] for k in ("input_ids", "input_mask", "segment_ids")}, \
                d["label_ids"][rows]


def finetune_model(a, torch):
    """(model, batch iterator factory, step loss): BertForSequenceClassification on MRPC."""
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification.from_pretrained(a.model_dir, num_labels=2)
    d = dict(np.load(a.features))

    def new_batches():
        return batches(d, a.batch_size, a.max_seq_length, a.padding, a.seed)

    def loss_of(batch):
        features, labels = batch
        return model(input_ids=torch.from_numpy(features["input_ids"]).long(),
                     attention_mask=torch.from_numpy(features["input_mask"]).long(),
                     token_type_ids=torch.from_numpy(features["segment_ids"]).long(),
                     labels=torch.from_numpy(labels).long()).loss

    return model, new_batches, loss_of, lambda batch: batch[0]["input_ids"].shape[1]


def pretrain_model(a, torch):
    """(model, batch iterator factory, step loss): BertForPreTraining on one fixed batch."""
    from transformers import BertConfig, BertForPreTraining

    model = BertForPreTraining(BertConfig(**worker.load_config(a)))
    nn = torch.nn.functional
    d = worker.load_pretraining_batch(a)

    def new_batches():
        while True:
            yield d  # numpy arrays, converted in the step as a DataLoader's collate would

    def encoder_inputs(batch):
        return {"input_ids": torch.from_numpy(batch["input_ids"]).long(),
                "attention_mask": torch.from_numpy(batch["input_mask"]).long(),
                "token_type_ids": torch.from_numpy(batch["segment_ids"]).long()}

    def loss_all(batch):
        # Labels [B,S]: the masked ids at the real predictions, -100 (ignored) elsewhere.
        labels = np.full(batch["input_ids"].shape, -100, np.int64)
        rows, cols = np.nonzero(batch["masked_lm_weights"] > 0)
        positions = batch["masked_lm_positions"][rows, cols]
        labels[rows, positions] = batch["masked_lm_ids"][rows, cols]
        return model(**encoder_inputs(batch), labels=torch.from_numpy(labels),
                     next_sentence_label=torch.from_numpy(
                         batch["next_sentence_labels"]).long()).loss

    def loss_masked(batch):
        sequence_output, pooled_output = model.bert(**encoder_inputs(batch),
                                                    return_dict=False)[:2]
        positions = torch.from_numpy(batch["masked_lm_positions"]).long()  # [B,P]
        index = positions.unsqueeze(-1).expand(-1, -1, sequence_output.shape[-1])  # [B,P,H]
        gathered = torch.gather(sequence_output, 1, index)  # [B,P,H]
        mlm_logits = model.cls.predictions(gathered).float()  # [B,P,V]
        ids = torch.from_numpy(batch["masked_lm_ids"]).long()
        weights = torch.from_numpy(batch["masked_lm_weights"]).float()
        ce = nn.cross_entropy(mlm_logits.reshape(-1, mlm_logits.shape[-1]), ids.reshape(-1),
                              reduction="none").reshape(ids.shape)
        mlm_loss = (ce * weights).sum() / (weights.sum() + 1e-5)
        nsp_logits = model.cls.seq_relationship(pooled_output).float()
        nsp_loss = nn.cross_entropy(nsp_logits,
                                    torch.from_numpy(batch["next_sentence_labels"]).long())
        return mlm_loss + nsp_loss

    loss_of = loss_all if a.mlm_head == "all" else loss_masked
    return model, new_batches, loss_of, lambda batch: batch["input_ids"].shape[1]


def main(argv=None) -> None:
    a = parse_args(argv)
    worker.check_args(a)
    import torch
    import transformers
    from transformers import get_linear_schedule_with_warmup

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    build = finetune_model if a.task == "finetune" else pretrain_model
    model, new_batches, loss_of, width_of = build(a, torch)
    model.train()
    no_decay = ("bias", "LayerNorm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)],
         "weight_decay": 0.01},
        {"params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)],
         "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=a.learning_rate)
    total = (a.warmup + a.steps) * a.rounds
    scheduler = get_linear_schedule_with_warmup(optimizer, max(1, total // 10), total + 1)
    setup_seconds = time.time() - T_START

    def step(batch):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.dtype == "bf16"):
            loss = loss_of(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss)

    def run_round() -> dict:
        # new_batches() starts the same batch order every round
        info = worker.timed_round(step, new_batches(), a.warmup, a.steps, width_of)
        return worker.result(a, "hf_torch", "off", "", setup_seconds, info,
                             mlm_head=a.mlm_head if a.task == "pretrain" else None,
                             attn_implementation=getattr(model.config, "_attn_implementation",
                                                         None),
                             torch_version=torch.__version__,
                             transformers_version=transformers.__version__,
                             threads=torch.get_num_threads(), optimizer="torch.optim.AdamW")

    worker.serve(run_round)

if __name__ == "__main__":
    main()

"""TF Model Garden fine-tuning rounds (the peer) for bench_finetune.py: a worker subprocess.

Runs in the separate venv of bench/setup_peers.sh (tensorflow 2.18, tf-keras 2.18,
tf-models-official 2.18) with TF_USE_LEGACY_KERAS=1; it imports nothing from bert_tf.

Model: official.nlp.modeling.networks.BertEncoder + models.BertClassifier with MiniLM's
dimensions (L6 H384 A12 I1536, vocab 30522, 2 token types, exact gelu), random initial weights
(the timing does not depend on them). Step: Model Garden's Task.train_step (forward, sparse
softmax cross-entropy, tape gradients, optimizer.apply_gradients) with the optimizer of
official.nlp.optimization.create_optimizer (AdamWeightDecay, lr 5e-5, weight decay 0.01 except
LayerNorm and biases, global-norm clip 1.0, warm-up + linear decay), the whole step in one
tf.function, jit_compile=True under --xla on. bf16 = tf_keras mixed_bfloat16 policy.

Model Garden's sentence-classification pipeline reads fixed-length records, so batches are
always max_seq_length wide.

Protocol and timing: bench/peers/worker.py. A round is warmup + timed steps (training goes on
from the previous round), each step ended by reading the loss; the warm-up steps (the first
round's include tracing and XLA compilation) are not timed.
"""

from __future__ import annotations

import json
import os
import time

T_START = time.time()

import numpy as np  # noqa: E402

import worker  # noqa: E402  (bench/peers/worker.py)


def parse_args(argv=None):
    p = worker.arg_parser(__doc__.split("\n")[0], paddings=("fixed",))
    p.add_argument("--xla", choices=("off", "on"), default="off")
    return p.parse_args(argv)


def main(argv=None) -> None:
    a = parse_args(argv)
    if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        raise SystemExit("run with TF_USE_LEGACY_KERAS=1 (Model Garden needs Keras 2)")
    import tensorflow as tf
    import tf_keras
    from official.nlp import optimization
    from official.nlp.modeling import models, networks

    tf.random.set_seed(a.seed)
    if a.dtype == "bf16":
        tf_keras.mixed_precision.set_global_policy("mixed_bfloat16")
    with open(os.path.join(a.model_dir, "config.json"), encoding="utf-8") as f:
        c = json.load(f)
    encoder = networks.BertEncoder(
        vocab_size=c["vocab_size"], hidden_size=c["hidden_size"],
        num_layers=c["num_hidden_layers"], num_attention_heads=c["num_attention_heads"],
        max_sequence_length=c["max_position_embeddings"], type_vocab_size=c["type_vocab_size"],
        inner_dim=c["intermediate_size"],
        inner_activation=lambda x: tf_keras.activations.gelu(x, approximate=False),
        output_dropout=c["hidden_dropout_prob"],
        attention_dropout=c["attention_probs_dropout_prob"],
        initializer=tf_keras.initializers.TruncatedNormal(stddev=c["initializer_range"]))
    model = models.BertClassifier(network=encoder, num_classes=2,
                                  dropout_rate=c["hidden_dropout_prob"])
    total = (a.warmup + a.steps) * a.rounds
    optimizer = optimization.create_optimizer(5e-5, total + 1, max(1, total // 10))

    d = dict(np.load(a.features))
    rng = np.random.default_rng(a.seed)

    def batches():
        n = len(d["lengths"])
        while True:
            order = rng.permutation(n)
            for i in range(0, n - a.batch_size + 1, a.batch_size):
                rows = order[i:i + a.batch_size]
                yield ({"input_word_ids": d["input_ids"][rows],
                        "input_mask": d["input_mask"][rows],
                        "input_type_ids": d["segment_ids"][rows]}, d["label_ids"][rows])

    ds = tf.data.Dataset.from_generator(
        batches, output_signature=(
            {k: tf.TensorSpec((a.batch_size, a.max_seq_length), tf.int32)
             for k in ("input_word_ids", "input_mask", "input_type_ids")},
            tf.TensorSpec((a.batch_size,), tf.int32))).prefetch(tf.data.AUTOTUNE)
    it = iter(ds)

    @tf.function(jit_compile=a.xla == "on")
    def train_step(features, labels):
        with tf.GradientTape() as tape:
            logits = tf.cast(model(features, training=True), tf.float32)
            loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(
                labels, logits, from_logits=True))
        tvars = model.trainable_variables
        grads = tape.gradient(loss, tvars)
        optimizer.apply_gradients(list(zip(grads, tvars)))
        return loss

    setup_seconds = time.time() - T_START

    def run_round() -> dict:
        info = worker.timed_round(lambda batch: float(train_step(*batch)), it, a.warmup,
                                  a.steps, lambda batch: a.max_seq_length)
        return worker.result(a, "model_garden", a.xla, os.environ.get("XLA_FLAGS", ""),
                             setup_seconds, info, tf_version=tf.__version__,
                             tf_keras_version=tf_keras.__version__)

    worker.serve(run_round)


if __name__ == "__main__":
    main()

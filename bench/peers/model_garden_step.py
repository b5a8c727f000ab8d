"""TF Model Garden training rounds (the peer) for bench_finetune.py and bench_pretrain_step.py: a
worker subprocess.

Runs in the separate venv of bench/setup_peers.sh (tensorflow 2.18, tf-keras 2.18,
tf-models-official 2.18) with TF_USE_LEGACY_KERAS=1; it imports nothing from bert_tf.

Encoder: official.nlp.modeling.networks.BertEncoder with the dimensions of MiniLM's config.json
(finetune) or of --bert_config_file (pretrain), exact gelu, random initial weights (the timing
does not depend on them). Heads:
- finetune: models.BertClassifier (2 classes), sparse softmax cross-entropy;
- pretrain: models.BertPretrainerV2 as Model Garden's MaskedLMTask builds it (layers.MaskedLM,
  which gathers the masked positions before its transform and the tied [H,V] decoder, with gelu;
  a layers.ClassificationHead "next_sentence" on the [CLS] token: inner Dense H + tanh, dropout,
  2 classes), and MaskedLMTask.build_losses' loss: weighted masked-LM cross-entropy
  sum(w * ce) / sum(w) plus mean next-sentence cross-entropy; masked-LM and next-sentence
  accuracies are computed in the step, as MaskedLMTask.process_metrics does.
Step: Model Garden's Task.train_step (forward, loss, tape gradients, optimizer.apply_gradients)
with the optimizer of official.nlp.optimization.create_optimizer (AdamWeightDecay, weight decay
0.01 except LayerNorm and biases, global-norm clip 1.0 inside apply_gradients, warm-up + linear
decay), the whole step in one tf.function, jit_compile=True under --xla on. bf16 = tf_keras
mixed_bfloat16 policy. Variables that get no gradient (the encoder's own pooler, which
BertPretrainerV2's next-sentence head does not read) are left out of apply_gradients.

Batches are always max_seq_length wide: Model Garden's classifier pipeline reads fixed-length
records, and pre-training records are fixed-length.

Protocol and timing: bench/peers/worker.py. A round is warmup + timed steps (training goes on
from the previous round), each step ended by reading the loss; the warm-up steps (the first
round's include tracing and XLA compilation) are not timed.
"""

from __future__ import annotations

import os
import time

T_START = time.time()

import numpy as np  # noqa: E402

import worker  # noqa: E402  (bench/peers/worker.py)


def parse_args(argv=None):
    p = worker.arg_parser(__doc__.split("\n")[0], paddings=("fixed",))
    p.add_argument("--xla", choices=("off", "on"), default="off")
    return p.parse_args(argv)


def build(a):
    """The model, optimizer and data of the task -> (step(batch) -> float loss, batch iterator,
    the tf.function of the step). bench/profile_step.py trace reuses it."""
    if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        raise SystemExit("run with TF_USE_LEGACY_KERAS=1 (Model Garden needs Keras 2)")
    import tensorflow as tf
    import tf_keras
    from official.nlp import optimization
    from official.nlp.modeling import layers, models, networks

    tf.random.set_seed(a.seed)
    if a.dtype == "bf16":
        tf_keras.mixed_precision.set_global_policy("mixed_bfloat16")
    c = worker.load_config(a)

    def gelu(x):
        return tf_keras.activations.gelu(x, approximate=False)

    def initializer():
        return tf_keras.initializers.TruncatedNormal(stddev=c["initializer_range"])

    encoder = networks.BertEncoder(
        vocab_size=c["vocab_size"], hidden_size=c["hidden_size"],
        num_layers=c["num_hidden_layers"], num_attention_heads=c["num_attention_heads"],
        max_sequence_length=c["max_position_embeddings"], type_vocab_size=c["type_vocab_size"],
        inner_dim=c["intermediate_size"], inner_activation=gelu,
        output_dropout=c["hidden_dropout_prob"],
        attention_dropout=c["attention_probs_dropout_prob"], initializer=initializer())
    total = (a.warmup + a.steps) * a.rounds
    optimizer = optimization.create_optimizer(a.learning_rate, total + 1, max(1, total // 10))

    if a.task == "finetune":
        model = models.BertClassifier(network=encoder, num_classes=2,
                                      dropout_rate=c["hidden_dropout_prob"])
        d = dict(np.load(a.features))
        rng = np.random.default_rng(a.seed)

        def batches():
            n = len(d["lengths"])
            while True:
                order = rng.permutation(n)
                for i in range(0, n - a.batch_size + 1, a.batch_size):
                    rows = order[i:i + a.batch_size]
                    yield {"input_word_ids": d["input_ids"][rows],
                           "input_mask": d["input_mask"][rows],
                           "input_type_ids": d["segment_ids"][rows],
                           "label_ids": d["label_ids"][rows]}

        spec = {k: tf.TensorSpec((a.batch_size, a.max_seq_length), tf.int32)
                for k in ("input_word_ids", "input_mask", "input_type_ids")}
        spec["label_ids"] = tf.TensorSpec((a.batch_size,), tf.int32)
        ds = tf.data.Dataset.from_generator(batches, output_signature=spec)

        def loss_fn(inputs):
            features = {k: inputs[k] for k in ("input_word_ids", "input_mask", "input_type_ids")}
            logits = tf.cast(model(features, training=True), tf.float32)
            return tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(
                inputs["label_ids"], logits, from_logits=True))
    else:
        model = models.BertPretrainerV2(
            encoder_network=encoder, mlm_activation=gelu, mlm_initializer=initializer(),
            classification_heads=[layers.ClassificationHead(
                inner_dim=c["hidden_size"], num_classes=2,
                dropout_rate=c["hidden_dropout_prob"], initializer=initializer(),
                name="next_sentence")])
        batch = worker.load_pretraining_batch(a)
        batch = {("input_word_ids" if k == "input_ids" else "input_type_ids"
                  if k == "segment_ids" else k): v for k, v in batch.items()}
        ds = tf.data.Dataset.from_tensors(batch).repeat()
        model(batch, training=False)  # builds the heads' weights outside the step function

        def loss_fn(inputs):
            # MaskedLMTask.build_losses, then the accuracies of MaskedLMTask.process_metrics.
            outputs = model(inputs, training=True)
            mlm_logits = tf.cast(outputs["mlm_logits"], tf.float32)
            ce = tf_keras.losses.sparse_categorical_crossentropy(
                inputs["masked_lm_ids"], mlm_logits, from_logits=True)
            w = inputs["masked_lm_weights"]
            mlm_loss = tf.math.divide_no_nan(tf.reduce_sum(ce * w), tf.reduce_sum(w))
            nsp_logits = tf.cast(outputs["next_sentence"], tf.float32)
            labels = inputs["next_sentence_labels"]
            nsp_loss = tf.reduce_mean(tf_keras.losses.sparse_categorical_crossentropy(
                labels, nsp_logits, from_logits=True))
            hit = tf.cast(tf.equal(tf.argmax(mlm_logits, -1, output_type=tf.int32),
                                   inputs["masked_lm_ids"]), tf.float32)
            nsp_hit = tf.cast(tf.equal(tf.argmax(nsp_logits, -1, output_type=tf.int32),
                                       labels), tf.float32)
            accuracy = (tf.math.divide_no_nan(tf.reduce_sum(hit * w), tf.reduce_sum(w)),
                        tf.reduce_mean(nsp_hit))
            return mlm_loss + nsp_loss, accuracy

    it = iter(ds.prefetch(tf.data.AUTOTUNE))

    @tf.function(jit_compile=a.xla == "on")
    def train_step(inputs):
        with tf.GradientTape() as tape:
            out = loss_fn(inputs)
            loss = out[0] if isinstance(out, tuple) else out
        tvars = model.trainable_variables
        grads = tape.gradient(loss, tvars)
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, tvars) if g is not None])
        return out

    def step(inputs):
        out = train_step(inputs)
        return float(out[0] if isinstance(out, tuple) else out)

    return step, it, train_step


def main(argv=None) -> None:
    a = parse_args(argv)
    worker.check_args(a)
    step, it, _ = build(a)
    import tensorflow as tf
    import tf_keras

    setup_seconds = time.time() - T_START

    def run_round() -> dict:
        info = worker.timed_round(step, it, a.warmup, a.steps, lambda batch: a.max_seq_length)
        return worker.result(a, "model_garden", a.xla, os.environ.get("XLA_FLAGS", ""),
                             setup_seconds, info, tf_version=tf.__version__,
                             tf_keras_version=tf_keras.__version__,
                             optimizer="official.nlp.optimization.AdamWeightDecay")

    worker.serve(run_round)


if __name__ == "__main__":
    main()

"""Checkpoint interoperability, checked against Hugging Face's PyTorch BERT as the oracle."""

import json
import os

import numpy as np
import pytest

from tests.conftest import random_batch, shared, tiny_config

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from bert_tf import BertConfig  # noqa: E402
from bert_tf import checkpoints as ck  # noqa: E402
from bert_tf.checkpoints.huggingface import hf_config_dict  # noqa: E402
from bert_tf.modeling import (BertClassifier, BertEncoder, BertPretrainer,  # noqa: E402
                              BertTokenClassifier)


def hf_model(cls, config, **extra):
    hf_config = transformers.BertConfig(**{**hf_config_dict(config), **extra})
    model = cls(hf_config).eval()
    return model


def torch_inputs(batch):
    return dict(input_ids=torch.tensor(batch["input_ids"], dtype=torch.long),
                attention_mask=torch.tensor(batch["input_mask"], dtype=torch.long),
                token_type_ids=torch.tensor(batch["segment_ids"], dtype=torch.long))


def masked_max_diff(ours, theirs, mask):
    """Largest difference over real (unpadded) positions; padded positions are garbage in both."""
    keep = mask.astype(bool)
    return float(np.abs(np.asarray(ours)[keep] - np.asarray(theirs)[keep]).max())


@pytest.mark.parametrize("act", ["gelu", "gelu_tanh", "relu"])
def test_save_google_matches_hf_tf_loader(tmp_path, act):
    """(a) A random model written in Google's layout, read by transformers' own TF1 loader."""
    config = tiny_config(hidden_act=act)
    model = BertPretrainer(config)
    batch = random_batch(config)
    ours = model(batch, training=False)
    prefix = ck.save_google(model, str(tmp_path / "bert_model.ckpt"))
    assert json.loads((tmp_path / "bert_config.json").read_text())["vocab_size"] == 99

    theirs_model = hf_model(transformers.BertForPreTraining, config)
    transformers.models.bert.modeling_bert.load_tf_weights_in_bert(
        theirs_model, theirs_model.config, prefix)
    with torch.no_grad():
        out = theirs_model(**torch_inputs(batch), output_hidden_states=True)
    mask = batch["input_mask"]
    seq = out.hidden_states[-1].numpy()
    assert masked_max_diff(ours["sequence_output"], seq, mask) <= 1e-5
    pooled = theirs_model.bert.pooler(out.hidden_states[-1]).detach().numpy()
    assert np.abs(ours["pooled_output"] - pooled).max() <= 1e-5
    mlm = np.take_along_axis(out.prediction_logits.numpy(),
                             batch["masked_lm_positions"][..., None], axis=1)
    assert np.abs(ours["mlm_logits"] - mlm).max() <= 1e-5
    assert np.abs(ours["nsp_logits"] - out.seq_relationship_logits.numpy()).max() <= 1e-5
    # The logits pre-training trains on (the last layer only at [CLS] and the masked positions)
    sparse = model.pretraining_logits(batch, training=False)
    assert np.abs(np.asarray(sparse["mlm_logits"]) - mlm).max() <= 1e-5
    assert np.abs(np.asarray(sparse["nsp_logits"])
                  - out.seq_relationship_logits.numpy()).max() <= 1e-5


def test_save_huggingface_loads_in_transformers(tmp_path):
    config = tiny_config()
    model = BertClassifier(config, num_labels=3)
    batch = random_batch(config)
    ours = model(batch, training=False)["logits"]
    ck.save_huggingface(model, str(tmp_path))
    # The weights file is as readable as config.json (safetensors alone creates it 0600).
    mode = (tmp_path / "model.safetensors").stat().st_mode & 0o777
    assert mode == (tmp_path / "config.json").stat().st_mode & 0o777
    theirs = transformers.BertForSequenceClassification.from_pretrained(str(tmp_path)).eval()
    with torch.no_grad():
        logits = theirs(**torch_inputs(batch)).logits.numpy()
    assert np.abs(ours - logits).max() <= 1e-5


def test_hf_checkpoint_loads_into_ours(tmp_path):
    """The other direction: a random model made and saved by transformers."""
    config = tiny_config()
    torch.manual_seed(0)
    theirs = hf_model(transformers.BertForTokenClassification, config, num_labels=5)
    theirs.save_pretrained(str(tmp_path), safe_serialization=True)
    model = BertTokenClassifier(BertConfig.from_json_file(tmp_path / "config.json"), 5)
    report = ck.load(model, str(tmp_path))
    assert report.format == "huggingface" and not report.unused
    # transformers saves token classifiers without a pooler: reported, not fatal
    assert report.missing == ["bert.pooler.dense.weight", "bert.pooler.dense.bias"]
    batch = random_batch(config)
    with torch.no_grad():
        logits = theirs(**torch_inputs(batch)).logits.numpy()
    ours = model(batch, training=False)["logits"]
    assert masked_max_diff(ours, logits, batch["input_mask"]) <= 1e-5


def _mrpc_sentences(n):
    lines = shared("glue", "MRPC", "dev.tsv").read_text(encoding="utf-8-sig").splitlines()[1:]
    sentences = []
    for line in lines[:n]:
        cols = line.split("\t")
        sentences += [cols[3], cols[4]]
    return sentences


def test_real_pretrained_checkpoint_matches_hf():
    """(b) all-MiniLM-L6-v2, loaded by both, on real MRPC sentences: every layer within 1e-4."""
    directory = shared("models", "all-MiniLM-L6-v2")
    tokenizer = transformers.BertTokenizer(str(directory / "vocab.txt"), do_lower_case=True)
    sentences = _mrpc_sentences(4)
    enc = tokenizer(sentences[0::2], sentences[1::2], padding=True, truncation=True,
                    max_length=128, return_tensors="np")
    batch = {"input_ids": enc["input_ids"].astype("int32"),
             "input_mask": enc["attention_mask"].astype("int32"),
             "segment_ids": enc["token_type_ids"].astype("int32")}
    assert batch["input_mask"].min() == 0  # the batch really has padding

    config = BertConfig.from_json_file(directory / "config.json")
    encoder = BertEncoder(config)
    report = ck.load(encoder, str(directory))
    assert len(report.loaded) == len(encoder.weights) and not report.unused
    ours = encoder(batch, training=False)

    theirs = transformers.BertModel.from_pretrained(str(directory)).eval()
    with torch.no_grad():
        out = theirs(**torch_inputs(batch), output_hidden_states=True)
    assert len(ours["encoder_outputs"]) == len(out.hidden_states) - 1 == 6
    for layer, (a, b) in enumerate(zip(ours["encoder_outputs"], out.hidden_states[1:])):
        diff = masked_max_diff(a, b.numpy(), batch["input_mask"])
        assert diff <= 1e-4, f"layer {layer}: {diff}"
    assert np.abs(ours["pooled_output"] - out.pooler_output.numpy()).max() <= 1e-4


def test_google_tiny_checkpoint_every_weight_used_and_matches_hf():
    """(c) the real Google TF1 layout (with adam_m/adam_v slots): every weight used."""
    directory = shared("checkpoints", "google-tf1-tiny-random")
    config = BertConfig.from_json_file(directory / "bert_config.json")
    model = BertPretrainer(config)
    report = ck.load(model, str(directory))
    assert report.format == "google"
    assert not report.missing and not report.unused
    assert len(report.loaded) == len(model.weights) == 46

    theirs = hf_model(transformers.BertForPreTraining, config)
    transformers.models.bert.modeling_bert.load_tf_weights_in_bert(
        theirs, theirs.config, str(directory / "bert_model.ckpt"))
    batch = random_batch(config, seq=16)
    batch["input_ids"] = batch["input_ids"] % config.vocab_size
    with torch.no_grad():
        out = theirs(**torch_inputs(batch))
    ours = model(batch, training=False)
    assert np.abs(ours["nsp_logits"] - out.seq_relationship_logits.numpy()).max() <= 1e-5
    mlm = np.take_along_axis(out.prediction_logits.numpy(),
                             batch["masked_lm_positions"][..., None], axis=1)
    assert np.abs(ours["mlm_logits"] - mlm).max() <= 1e-5


def _write_named_checkpoint(prefix, shapes, seed=0):
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    names = list(shapes)
    tensors = [tf.constant(rng.standard_normal(shapes[n]).astype("float32") * 0.02)
               for n in names]
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=tensors)


def test_released_bert_medium_names_and_shapes_all_map(tmp_path):
    """(c) every variable of Google's released BERT-Medium maps to our model, by name and shape."""
    directory = shared("checkpoints", "bert-medium-index-only")
    shapes = {}
    for line in (directory / "variables_list.txt").read_text().splitlines():
        name, shape = line.split("\t")
        shapes[name] = json.loads(shape)
    assert len(shapes) == 142
    prefix = str(tmp_path / "bert_model.ckpt")
    _write_named_checkpoint(prefix, shapes)
    model = BertPretrainer(BertConfig.from_json_file(directory / "bert_config.json"))
    report = ck.load(model, prefix)
    assert sorted(report.loaded) == sorted(shapes)
    assert not report.missing and not report.unused
    # and the values land where the names say
    import tensorflow as tf
    want = tf.train.load_checkpoint(prefix).get_tensor("cls/seq_relationship/output_weights")
    np.testing.assert_array_equal(model.next_sentence_head.dense.kernel.numpy(), want.T)


def test_pretrained_encoder_into_classifier_reports_fresh_head(tmp_path):
    directory = shared("checkpoints", "google-tf1-tiny-random")
    config = BertConfig.from_json_file(directory / "bert_config.json")
    model = BertClassifier(config, num_labels=2)
    report = ck.load(model, str(directory))
    assert report.missing == ["output_weights", "output_bias"]
    assert "cls/seq_relationship/output_weights" in report.unused


def test_shape_mismatch_raises_and_leaves_model_untouched(tmp_path):
    config = tiny_config()
    prefix = ck.save_google(BertEncoder(config), str(tmp_path / "bert_model.ckpt"))
    other = BertEncoder(tiny_config(vocab_size=120))
    before = [w.numpy().copy() for w in other.weights]
    with pytest.raises(ck.CheckpointError, match="vocab_size is 120"):
        ck.load(other, prefix)
    for w, b in zip(other.weights, before):
        np.testing.assert_array_equal(w.numpy(), b)
    with pytest.raises(ck.CheckpointError, match="hidden_size|shape"):
        ck.load(BertEncoder(tiny_config(hidden_size=16, intermediate_size=20)), prefix)


def test_unused_and_missing_encoder_weights_raise(tmp_path):
    prefix = ck.save_google(BertEncoder(tiny_config(num_hidden_layers=3)),
                            str(tmp_path / "deep" / "bert_model.ckpt"))
    with pytest.raises(ck.CheckpointError, match="layer_2"):
        ck.load(BertEncoder(tiny_config(num_hidden_layers=2)), prefix)
    shallow = ck.save_google(BertEncoder(tiny_config(num_hidden_layers=1)),
                             str(tmp_path / "shallow" / "bert_model.ckpt"))
    with pytest.raises(ck.CheckpointError, match="lacks.*layer_1"):
        ck.load(BertEncoder(tiny_config(num_hidden_layers=2)), shallow)


def test_missing_path_and_pickle_only_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint found"):
        ck.load(BertEncoder(tiny_config()), str(tmp_path / "nothing"))
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "pytorch_model.bin").write_bytes(b"not really")
    with pytest.raises(FileNotFoundError, match="does not unpickle"):
        ck.load(BertEncoder(tiny_config()), str(tmp_path / "hf"))


def test_native_checkpoint_round_trip_and_encoder_transfer(tmp_path):
    config = tiny_config()
    pretrainer = BertPretrainer(config)
    batch = random_batch(config)
    prefix = ck.save(pretrainer, str(tmp_path / "ckpt" / "model"))
    again = BertPretrainer(config)
    report = ck.load(again, prefix)
    assert report.format == "bert_tf"
    a, b = pretrainer(batch, training=False), again(batch, training=False)
    np.testing.assert_array_equal(a["mlm_logits"], b["mlm_logits"])
    classifier = BertClassifier(config, num_labels=2)
    ck.load(classifier, str(tmp_path / "ckpt"))
    np.testing.assert_array_equal(classifier.encoder(batch, training=False)["pooled_output"],
                                  a["pooled_output"])
    with pytest.raises(ck.CheckpointError):
        ck.load(BertEncoder(tiny_config(hidden_size=16, intermediate_size=20)), prefix)


def test_training_checkpoint_loads_heads_only_into_the_class_it_names(tmp_path):
    """A run's ckpt-N (tf.train.Checkpoint of model, encoder, optimizer, step: the training
    loop's layout) loads whole into the model class its marker names. With no marker (a run's
    checkpoint from before runs wrote one) or into another class, the encoder only: a 2-label
    classifier's head has the NSP head's shapes, and must not be given it."""
    import keras
    import tensorflow as tf

    config = tiny_config()
    trained = BertPretrainer(config)
    optimizer = keras.optimizers.Adam()
    optimizer.build(trained.trainable_variables)
    directory = tmp_path / "checkpoints"
    prefix = tf.train.Checkpoint(model=trained, encoder=trained.encoder, optimizer=optimizer,
                                 step=tf.Variable(7, dtype=tf.int64)).write(
        str(directory / "ckpt-7"))

    def fresh_loads(model, path):
        before = [w.numpy() for w in model.weights]
        report = ck.load(model, path)
        return report, before

    again = BertPretrainer(config)
    report, _ = fresh_loads(again, prefix)  # no marker yet: encoder only, heads reported
    assert len(report.missing) == len(trained.weights) - len(trained.encoder.weights) > 0
    ck.write_marker(str(directory), trained)
    again = BertPretrainer(config)
    report, _ = fresh_loads(again, prefix)
    assert report.missing == [] and len(report.loaded) == len(trained.weights)
    for a, b in zip(trained.weights, again.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    classifier = BertClassifier(config, num_labels=2)
    report, before = fresh_loads(classifier, prefix)
    assert sorted(report.missing) == ["classifier/logits/bias", "classifier/logits/kernel"]
    np.testing.assert_array_equal(classifier.head.dense.kernel.numpy(),
                                  before[[w.path for w in classifier.weights].index(
                                      classifier.head.dense.kernel.path)])
    np.testing.assert_array_equal(classifier.encoder.weights[0].numpy(),
                                  trained.encoder.weights[0].numpy())


def test_find_assets_in_hf_directory():
    directory = shared("models", "all-MiniLM-L6-v2")
    assets = ck.find_assets(str(directory))
    assert assets.config_file.endswith("config.json")
    assert assets.vocab_file.endswith("vocab.txt")
    assert assets.do_lower_case is True

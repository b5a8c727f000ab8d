"""Hugging Face BERT checkpoints: a directory with `config.json` and `model.safetensors`.

Read with `safetensors` only: PyTorch `.bin` files are pickles, which can run code when loaded, so
they are refused with a message saying how to convert them.
"""

from __future__ import annotations

import glob
import json
import os

import numpy as np

from bert_tf.checkpoints.names import variable_map

# Keys a Hugging Face BERT checkpoint carries that hold no separate weight of ours.
_IGNORED_SUFFIXES = (
    "embeddings.position_ids",  # a buffer 0..P-1
    "cls.predictions.decoder.weight",  # tied to the word embeddings
    "cls.predictions.decoder.bias",  # tied to cls.predictions.bias
)
_ENCODER_PARTS = ("embeddings.", "encoder.", "pooler.")

# hidden_act as Hugging Face spells it.
_HF_ACT = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}


def safetensors_files(path: str) -> list[str]:
    if os.path.isfile(path):
        return [path]
    files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
    if not files:
        bins = glob.glob(os.path.join(path, "*.bin")) + glob.glob(os.path.join(path, "*.pt"))
        hint = (" It holds PyTorch pickle files, which bert_tf does not unpickle (a pickle can "
                "run arbitrary code); convert them once with transformers: "
                "`BertModel.from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True)`."
                if bins else "")
        raise FileNotFoundError(f"{path}: no *.safetensors file found.{hint}")
    return files


class SafetensorsReader:
    """name -> np.ndarray over one or more safetensors files, keys normalised to `bert.`-prefixed
    names with LayerNorm weight/bias (old checkpoints say gamma/beta)."""

    def __init__(self, path: str):
        from safetensors import safe_open

        self.path = path
        self._handles = {}
        self._where = {}
        self.shapes = {}
        files = safetensors_files(path)
        raw_keys = []
        for f in files:
            try:
                handle = safe_open(f, framework="np")
            except Exception as e:  # safetensors' own SafetensorError, or an OS error
                from bert_tf.checkpoints import CheckpointError
                raise CheckpointError(
                    f"{f}: not a readable safetensors file ({e}); it is incomplete or "
                    "corrupt: download it again") from None
            self._handles[f] = handle
            for k in handle.keys():
                raw_keys.append((f, k))
        # A bare BertModel is saved without the "bert." prefix.
        has_prefix = any(k.startswith("bert.") for _, k in raw_keys)
        for f, k in raw_keys:
            name = k
            if not has_prefix and k.startswith(_ENCODER_PARTS):
                name = "bert." + k
            name = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace(
                "LayerNorm.beta", "LayerNorm.bias")
            if name.endswith(_IGNORED_SUFFIXES):
                continue
            self._where[name] = (f, k)
            self.shapes[name] = tuple(self._handles[f].get_slice(k).get_shape())

    def __contains__(self, name):
        return name in self.shapes

    def __iter__(self):
        return iter(self.shapes)

    def __getitem__(self, name) -> np.ndarray:
        f, k = self._where[name]
        return self._handles[f].get_tensor(k)


def hf_config_dict(config, architecture="BertModel", num_labels=None, label_names=None) -> dict:
    out = {
        "architectures": [architecture],
        "model_type": "bert",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "intermediate_size": config.intermediate_size,
        "hidden_act": _HF_ACT[config.hidden_act],
        "hidden_dropout_prob": config.hidden_dropout_prob,
        "attention_probs_dropout_prob": config.attention_probs_dropout_prob,
        "max_position_embeddings": config.max_position_embeddings,
        "type_vocab_size": config.type_vocab_size,
        "initializer_range": config.initializer_range,
        "layer_norm_eps": config.layer_norm_eps,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
    }
    if num_labels is not None:
        names = list(label_names) if label_names and len(label_names) == num_labels else [
            f"LABEL_{i}" for i in range(num_labels)]
        out["id2label"] = {str(i): name for i, name in enumerate(names)}
        out["label2id"] = {name: i for i, name in enumerate(names)}
        if num_labels == 1:
            out["problem_type"] = "regression"
    return out


def save_huggingface(model, directory: str) -> str:
    """Write `config.json` + `model.safetensors` that transformers' BERT classes load."""
    from safetensors.numpy import save_file

    from bert_tf.checkpoints.names import hf_transposed
    from bert_tf.modeling import (BertClassifier, BertPretrainer, BertSpanExtractor,
                                  BertTokenClassifier)

    os.makedirs(directory, exist_ok=True)
    tensors = {}
    for entry in variable_map(model):
        value = np.asarray(entry.variable.numpy(), dtype=np.float32)
        google_value = value.T if entry.transpose else value
        hf_value = google_value.T if hf_transposed(entry.google_name) else google_value
        tensors[entry.hf_name] = np.ascontiguousarray(hf_value)
    num_labels = None
    if isinstance(model, BertPretrainer):
        arch = "BertForPreTraining"
    elif isinstance(model, BertClassifier):
        arch, num_labels = "BertForSequenceClassification", model.num_labels
    elif isinstance(model, BertTokenClassifier):
        arch, num_labels = "BertForTokenClassification", model.num_labels
    elif isinstance(model, BertSpanExtractor):
        arch = "BertForQuestionAnswering"
    else:
        arch = "BertModel"
    config = model.config
    tmp = os.path.join(directory, "model.safetensors.tmp")
    config_file = os.path.join(directory, "config.json")
    with open(config_file, "w", encoding="utf-8") as f:
        json.dump(hf_config_dict(config, arch, num_labels, getattr(model, "label_names", None)),
                  f, indent=2, sort_keys=True)
        f.write("\n")
    save_file(tensors, tmp, metadata={"format": "pt"})
    # safetensors creates the file 0600; give it config.json's mode (the umask's).
    os.chmod(tmp, os.stat(config_file).st_mode & 0o777)
    os.replace(tmp, os.path.join(directory, "model.safetensors"))
    return directory

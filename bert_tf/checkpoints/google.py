"""Google's TF1 BERT checkpoints: name-based TensorFlow checkpoints (`bert_model.ckpt.index` +
`.data-*`) with variables such as `bert/encoder/layer_0/attention/self/query/kernel`."""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from bert_tf.checkpoints.names import variable_map

# Variables a TF1 training run leaves in the checkpoint that hold no model weights.
_SLOT_SUFFIXES = ("/adam_m", "/adam_v", "/Momentum", "/Adam", "/Adam_1", "/lamb_m", "/lamb_v")
_NON_WEIGHTS = ("global_step", "beta1_power", "beta2_power", "loss_scale", "good_steps",
                "current_loss_scale")


def is_optimizer_state(name: str) -> bool:
    """A known slot or counter name (used when the weight it belongs to is not at hand)."""
    return name.endswith(_SLOT_SUFFIXES) or name.split("/")[-1] in _NON_WEIGHTS


def optimizer_state(names) -> set[str]:
    """The names among `names` that hold no model weight: TF1 slots and averages live under
    the name of the variable they belong to (`W/adam_m`, `W/BERTAdam`, `W/BERTAdam_1` in early
    domain BERTs such as BioBERT v1.0, `W/ExponentialMovingAverage`, `W/Momentum`, ...), so any
    variable nested under another variable's name is state, whatever made it; plus the known
    counters (global_step, beta1_power, loss scale)."""
    names = set(names)
    state = set()
    for name in names:
        parts = name.split("/")
        if any("/".join(parts[:i]) in names for i in range(1, len(parts))) or \
                is_optimizer_state(name):
            state.add(name)
    return state


def is_object_based(prefix: str) -> bool:
    """True for checkpoints written by tf.train.Checkpoint (this project's own format)."""
    names = {n for n, _ in tf.train.list_variables(prefix)}
    return "_CHECKPOINTABLE_OBJECT_GRAPH" in names


class LazyReader:
    """A mapping name -> np.ndarray over a TF checkpoint that reads a tensor only when asked."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self._reader = tf.train.load_checkpoint(prefix)
        shapes = self._reader.get_variable_to_shape_map()
        self.state = sorted(optimizer_state(shapes))  # slots, averages, counters: not weights
        state = set(self.state)
        self.shapes = {n: tuple(s) for n, s in shapes.items() if n not in state}

    def __contains__(self, name):
        return name in self.shapes

    def __iter__(self):
        return iter(self.shapes)

    def __getitem__(self, name) -> np.ndarray:
        return self._reader.get_tensor(name)


def save_google(model, prefix: str, config_file: bool = True) -> str:
    """Write `model`'s weights as a Google TF1 checkpoint at `prefix` (e.g. dir/bert_model.ckpt),
    plus `bert_config.json` next to it, so Google's scripts and Hugging Face's
    `load_tf_weights_in_bert` read it. Returns the prefix."""
    directory = os.path.dirname(os.path.abspath(prefix))
    os.makedirs(directory, exist_ok=True)
    names, tensors = [], []
    for entry in variable_map(model):
        value = np.asarray(entry.variable.numpy(), dtype=np.float32)
        names.append(entry.google_name)
        tensors.append(tf.constant(value.T if entry.transpose else value))
    # Write under a temporary prefix and move into place, so a crash never leaves a half-written
    # checkpoint under the final name.
    tmp = prefix + ".tmp-write"
    tf.raw_ops.SaveV2(prefix=tmp, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=tensors)
    for suffix in (".index", ".data-00000-of-00001"):
        os.replace(tmp + suffix, prefix + suffix)
    if config_file:
        config = model.config if hasattr(model, "config") else model.encoder.config
        import json
        with open(os.path.join(directory, "bert_config.json"), "w", encoding="utf-8") as f:
            json.dump(config.to_google_dict(), f, indent=2, sort_keys=True)
            f.write("\n")
    if getattr(model, "label_names", None):
        from bert_tf.checkpoints import write_label_names
        write_label_names(directory, model.label_names)
    return prefix

"""Loading and saving BERT weights in Google's, Hugging Face's and this project's formats.

    load(model, path)            detects the format, checks every shape, reports what it loaded
    save_google(model, prefix)   Google TF1 layout (bert_model.ckpt.*, bert_config.json)
    save_huggingface(model, dir) config.json + model.safetensors
    save(model, prefix)          this project's object-based checkpoint (+ bert_config.json)
    find_assets(path)            the config, vocab and checkpoint a directory or preset holds
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re

import numpy as np

from bert_tf.checkpoints.names import google_to_hf, hf_transposed, variable_map

logger = logging.getLogger("bert_tf.checkpoints")

NATIVE_MARKER = "bert_tf_checkpoint.json"


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model: the message lists every offending weight."""


@dataclasses.dataclass
class LoadReport:
    path: str
    format: str  # "google", "huggingface" or "bert_tf"
    loaded: list = dataclasses.field(default_factory=list)
    missing: list = dataclasses.field(default_factory=list)  # model weights not in the checkpoint
    unused: list = dataclasses.field(default_factory=list)  # checkpoint weights the model lacks
    state: list = dataclasses.field(default_factory=list)  # optimizer slots etc., not loaded

    def summary(self) -> str:
        parts = [f"loaded {len(self.loaded)} weights from {self.format} checkpoint {self.path}"]
        if self.missing:
            parts.append(f"{len(self.missing)} model weights not in the checkpoint keep their "
                         f"initial values: {', '.join(self.missing)}")
        if self.unused:
            parts.append(f"{len(self.unused)} checkpoint weights not used by this model: "
                         f"{', '.join(self.unused)}")
        if self.state:
            kinds = sorted({name.rsplit("/", 1)[-1] for name in self.state})
            parts.append(f"{len(self.state)} optimizer-state variables ignored ({', '.join(kinds)})")
        return "; ".join(parts)


# -- format detection ------------------------------------------------------------------------------

def _tf_prefix(path: str) -> str | None:
    """The TF checkpoint prefix `path` names (prefix, dir with bert_model.ckpt or a `checkpoint`
    file), or None."""
    if os.path.exists(path + ".index"):
        return path
    if os.path.isdir(path):
        google = os.path.join(path, "bert_model.ckpt")
        if os.path.exists(google + ".index"):
            return google
        marker = os.path.join(path, NATIVE_MARKER)
        if os.path.exists(marker):
            with open(marker, encoding="utf-8") as f:
                native = json.load(f).get("prefix")  # none in a training run's checkpoints/
            if native and os.path.exists(os.path.join(path, native) + ".index"):
                return os.path.join(path, native)
        import tensorflow as tf
        latest = tf.train.latest_checkpoint(path)
        if latest:
            return latest
    return None


def detect_format(path: str) -> tuple[str, str]:
    """-> (format, resolved path). Raises FileNotFoundError with what was looked for."""
    path = os.fspath(path)
    if path.endswith(".safetensors") and os.path.isfile(path):
        return "huggingface", path
    prefix = _tf_prefix(path)
    if prefix is not None:
        from bert_tf.checkpoints.google import is_object_based
        return ("bert_tf" if is_object_based(prefix) else "google"), prefix
    if os.path.isdir(path):
        from bert_tf.checkpoints.huggingface import safetensors_files
        safetensors_files(path)  # raises with a conversion hint when only .bin files are there
        return "huggingface", path
    raise FileNotFoundError(
        f"{path}: no checkpoint found. Expected a TF checkpoint prefix (PATH.index exists, e.g. "
        ".../bert_model.ckpt), a directory holding bert_model.ckpt.* or model.safetensors, or a "
        ".safetensors file")


# -- loading -----------------------------------------------------------------------------------------

def _shape_message(entry, source_name, stored, want_stored):
    """Both shapes in the checkpoint's own layout (as its files store them)."""
    msg = (f"{source_name}: the checkpoint stores {list(stored)}, this model needs "
           f"{list(want_stored)}")
    src_shape, want = stored, want_stored
    if not entry.encoder:
        msg += (" (a head trained for another task or number of labels: pass --fresh_head to "
                "start the head from random weights and load only the encoder)")
    elif entry.google_name == "bert/embeddings/word_embeddings":
        msg += (f" (the checkpoint's vocabulary has {src_shape[0]} entries and the config's "
                f"vocab_size is {want[0]}: use the bert_config.json and vocab.txt that came with "
                "the checkpoint)")
    elif entry.google_name == "bert/embeddings/position_embeddings":
        msg += " (max_position_embeddings differs from the checkpoint's)"
    return msg


def _load_by_name(model, reader, fmt, path, allow_missing_encoder=False,
                  fresh_head=False) -> LoadReport:
    """Map a name -> array reader (Google or Hugging Face names) onto the model; check everything
    before assigning anything, so a failed load leaves the model untouched."""
    report = LoadReport(path=path, format=fmt, state=list(getattr(reader, "state", [])))
    entries = variable_map(model)
    hf = fmt == "huggingface"
    used, errors, assignments, missing_encoder = set(), [], [], []
    for entry in entries:
        name = entry.hf_name if hf else entry.google_name
        if fresh_head and not entry.encoder:
            report.missing.append(name)  # keeps its initial values, by request
            continue
        if name not in reader:
            # The pooler is optional: Hugging Face token-classification and QA checkpoints are
            # saved without one; it keeps its initial values and the report says so.
            strict = entry.encoder and "pooler" not in entry.google_name
            (missing_encoder if strict else report.missing).append(name)
            continue
        used.add(name)
        stored = tuple(reader.shapes[name])
        # The model's shape in the checkpoint's layout: Google's [in, out] kernels are ours,
        # its output_weights [out, in] are our kernel transposed, HF Linear weights [out, in].
        want = tuple(entry.variable.shape)
        if entry.transpose:
            want = want[::-1]  # -> Google layout
        if hf and hf_transposed(entry.google_name):
            want = want[::-1]  # -> Hugging Face layout
        if stored != want:
            errors.append(_shape_message(entry, name, stored, want))
            continue
        assignments.append((entry, name))
    unused = sorted(n for n in reader if n not in used and not (
        fresh_head and not n.startswith("bert/" if not hf else "bert.")))
    encoder_prefix = "bert." if hf else "bert/"
    unused_encoder = [n for n in unused if n.startswith(encoder_prefix)]
    report.unused = [n for n in unused if not n.startswith(encoder_prefix)]
    if unused_encoder:
        errors.append("encoder weights in the checkpoint that the model has no place for (a "
                      "config with fewer layers or another architecture?): "
                      + ", ".join(unused_encoder))
    if missing_encoder and not allow_missing_encoder:
        errors.append("encoder weights the checkpoint lacks: " + ", ".join(missing_encoder))
    elif missing_encoder:
        report.missing = missing_encoder + report.missing
    if errors:
        if any("--fresh_head" in e for e in errors):
            errors = [e.split(" (a head trained")[0] for e in errors] + [
                "the head was trained for another task or number of labels: pass --fresh_head "
                "to start the head from random weights and load only the encoder"]
        raise CheckpointError(f"{path} does not fit the model: " + "; ".join(errors))
    for entry, name in assignments:
        value = np.asarray(reader[name], dtype=np.float32)
        if hf and hf_transposed(entry.google_name):
            value = value.T
        if entry.transpose:
            value = value.T
        entry.variable.assign(value)
        report.loaded.append(name)
    return report


def _load_native(model, prefix) -> LoadReport:
    """Load this project's checkpoint: `save`'s export or a training run's ckpt-N. The whole
    model (heads included) when the marker beside it names the model's class, else the encoder
    (a checkpoint with no marker, e.g. a run's ckpt-N from before runs wrote one, gives the
    encoder only: a head is never guessed, since an NSP head fits a 2-label classifier)."""
    import tensorflow as tf

    marker = os.path.join(os.path.dirname(prefix), NATIVE_MARKER)
    saved_class = None
    if os.path.exists(marker):
        with open(marker, encoding="utf-8") as f:
            saved_class = json.load(f).get("model_class")
    encoder = model if not hasattr(model, "encoder") else model.encoder
    try:
        if saved_class == type(model).__name__:
            status = tf.train.Checkpoint(model=model).read(prefix)
            status.expect_partial()
            status.assert_existing_objects_matched()
            loaded = [v.path for v in model.weights]
        else:
            status = tf.train.Checkpoint(encoder=encoder).read(prefix)
            status.expect_partial()
            status.assert_existing_objects_matched()
            loaded = [v.path for v in encoder.weights]
    except (AssertionError, ValueError, tf.errors.InvalidArgumentError) as e:
        raise CheckpointError(f"{prefix} does not fit the model: {e}") from None
    report = LoadReport(path=prefix, format="bert_tf", loaded=loaded)
    if hasattr(model, "encoder") and len(loaded) < len(model.weights):
        report.missing = [v.path for v in model.weights if id(v) not in
                          {id(w) for w in encoder.weights}]
    return report


LABELS_FILE = "labels.json"  # beside a Google-layout checkpoint: the head's label names by id
_GENERIC_LABEL = re.compile(r"^LABEL_\d+$")


def stored_label_names(path: str) -> list[str] | None:
    """The label names of a checkpoint's classification head, index = output row, or None when
    the checkpoint does not say: Hugging Face `config.json` id2label (unless transformers'
    placeholders LABEL_0..N), `labels.json` beside a Google or bert_tf checkpoint."""
    fmt, resolved = detect_format(path)
    directory = resolved if os.path.isdir(resolved) else os.path.dirname(resolved)
    if fmt == "huggingface":
        config_file = os.path.join(directory, "config.json")
        if not os.path.exists(config_file):
            return None
        with open(config_file, encoding="utf-8") as f:
            id2label = json.load(f).get("id2label") or {}
        names = [id2label[k] for k in sorted(id2label, key=int)]
        if not names or all(_GENERIC_LABEL.match(str(n)) for n in names):
            return None
        return [str(n) for n in names]
    labels_file = os.path.join(directory, LABELS_FILE)
    if os.path.exists(labels_file):
        with open(labels_file, encoding="utf-8") as f:
            return [str(n) for n in json.load(f)]
    return None


def _head_variables(model):
    """(kernel [H, N], bias [N]) of a classification or tagging head, else None."""
    from bert_tf.modeling import BertClassifier, BertTokenClassifier

    if isinstance(model, (BertClassifier, BertTokenClassifier)):
        return model.head.dense.kernel, model.head.dense.bias
    return None


def _order_head(model, path: str, label_names, report: LoadReport) -> None:
    """Put the loaded head's outputs in the task's label order (case-insensitive names), or
    raise CheckpointError when the checkpoint's labels are not the task's."""
    head = _head_variables(model)
    if head is None or not label_names or len(label_names) < 2:
        return
    if not any(n in report.loaded for n in ("output_weights", "classifier.weight")) and \
            report.format != "bert_tf":
        return  # the head was not loaded: nothing to order
    if report.format == "bert_tf" and len(report.loaded) < len(model.weights):
        return  # encoder only
    stored = stored_label_names(path)
    if stored is None:
        logger.warning("%s does not name its labels: its head's outputs are taken to be in the "
                       "task's order %s", path, label_names)
        return
    want = [n.lower() for n in label_names]
    have = [n.lower() for n in stored]
    # Other names of the task's labels (GLUE's binary tasks say "0"/"1"; Hugging Face's datasets
    # say not_equivalent/equivalent, negative/positive, ...): by label id.
    for i, alias in enumerate(getattr(model, "label_aliases", ()) or ()):
        if i < len(want):
            have = [want[i] if name == alias.lower() else name for name in have]
    if sorted(want) != sorted(have) or len(set(have)) != len(have):
        raise CheckpointError(
            f"{path}: its head was trained for the labels {stored}, this task has "
            f"{list(label_names)}: pass --fresh_head to start a new head on the encoder, or use "
            "a checkpoint fine-tuned for this task")
    if have == want:
        return
    order = [have.index(name) for name in want]  # task label i = checkpoint output order[i]
    kernel, bias = head
    kernel.assign(kernel.numpy()[:, order])
    bias.assign(bias.numpy()[order])
    logger.info("reordered the head of %s from its labels %s to the task's %s", path, stored,
                list(label_names))


def write_label_names(directory: str, label_names) -> None:
    """labels.json beside a Google-layout or bert_tf checkpoint (read by `stored_label_names`)."""
    with open(os.path.join(directory, LABELS_FILE), "w", encoding="utf-8") as f:
        json.dump(list(label_names), f)
        f.write("\n")


def load(model, path: str, allow_missing_encoder: bool = False,
         fresh_head: bool = False, label_names=None) -> LoadReport:
    """Load weights into `model` (a BertEncoder or any task model) from a Google TF1 checkpoint
    prefix, a Hugging Face directory / .safetensors file, or this project's checkpoint.

    Raises CheckpointError, listing every problem, on any shape mismatch, on encoder weights the
    checkpoint has but the model lacks, and (unless allow_missing_encoder) on encoder weights the
    checkpoint lacks. Head weights absent from the checkpoint (a fresh classifier) keep their
    initial values and are reported; checkpoint heads the model lacks are reported as unused.
    fresh_head=True loads the encoder only: the model's head keeps its initial values even where
    the checkpoint has one (a model fine-tuned for another task or number of labels). Optimizer
    slots and counters in a Google checkpoint are ignored and counted in the report.
    label_names (the task's labels, by output index) put a loaded classification or tagging
    head in that order when the checkpoint names its own labels in another order (Hugging Face
    id2label, labels.json); labels that differ raise CheckpointError.
    """
    fmt, resolved = detect_format(path)
    if fmt == "bert_tf":
        report = _load_native(model, resolved)
    elif fmt == "google":
        from bert_tf.checkpoints.google import LazyReader
        report = _load_by_name(model, LazyReader(resolved), fmt, resolved, allow_missing_encoder,
                               fresh_head)
    else:
        from bert_tf.checkpoints.huggingface import SafetensorsReader
        report = _load_by_name(model, SafetensorsReader(resolved), fmt, resolved,
                               allow_missing_encoder, fresh_head)
    if not fresh_head:
        _order_head(model, resolved, label_names, report)
    logger.info(report.summary())
    return report


# -- saving ------------------------------------------------------------------------------------------

def save(model, prefix: str) -> str:
    """This project's checkpoint: tf.train.Checkpoint of the model and its encoder (so an encoder
    pre-trained here loads into any task model), with bert_config.json beside it."""
    import tensorflow as tf

    directory = os.path.dirname(os.path.abspath(prefix))
    os.makedirs(directory, exist_ok=True)
    encoder = model if not hasattr(model, "encoder") else model.encoder
    path = tf.train.Checkpoint(model=model, encoder=encoder).write(prefix)
    encoder.config.to_json_file(os.path.join(directory, "bert_config.json"))
    if getattr(model, "label_names", None):
        write_label_names(directory, model.label_names)
    write_marker(directory, model, prefix)
    return path


def write_marker(directory: str, model, prefix: str | None = None) -> None:
    """bert_tf_checkpoint.json in `directory`: the model class the checkpoints there hold (so
    `load` restores the heads into the same class) and, for `save`'s export, its prefix (a
    training run's checkpoints/ has none: its newest ckpt-N is taken)."""
    marker = {"model_class": type(model).__name__}
    if prefix is not None:
        marker["prefix"] = os.path.basename(prefix)
    with open(os.path.join(directory, NATIVE_MARKER), "w", encoding="utf-8") as f:
        json.dump(marker, f)


def save_google(model, prefix: str) -> str:
    from bert_tf.checkpoints.google import save_google as _save
    return _save(model, prefix)


def save_huggingface(model, directory: str) -> str:
    from bert_tf.checkpoints.huggingface import save_huggingface as _save
    return _save(model, directory)


# -- assets next to a checkpoint ---------------------------------------------------------------------

@dataclasses.dataclass
class Assets:
    checkpoint: str | None
    config_file: str | None
    vocab_file: str | None
    do_lower_case: bool | None = None  # known for presets and Hugging Face tokenizer configs


def side_file_dirs(directory: str) -> list[str]:
    """Where a checkpoint's config sits: its directory, and for a training run's checkpoints/
    (a marker that names no prefix) the run's output_dir above it, where the run wrote
    bert_config.json."""
    marker = os.path.join(directory, NATIVE_MARKER)
    if os.path.exists(marker):
        with open(marker, encoding="utf-8") as f:
            if "prefix" not in json.load(f):
                return [directory, os.path.dirname(os.path.abspath(directory))]
    return [directory]


def find_assets(path: str | None) -> Assets:
    """For --init_checkpoint: the bert_config.json / config.json and vocab.txt that sit next to
    the checkpoint (a directory, a prefix inside one, or a preset name that is downloaded)."""
    if not path:
        return Assets(None, None, None)
    do_lower_case = None
    if not os.path.exists(path) and not os.path.exists(path + ".index"):
        from bert_tf.checkpoints import presets
        if path in presets.PRESETS:
            do_lower_case = presets.PRESETS[path].do_lower_case
            path = presets.resolve(path)
    directory = path if os.path.isdir(path) else os.path.dirname(path)
    config_file = None
    for folder in side_file_dirs(directory):
        for name in ("bert_config.json", "config.json"):
            if config_file is None and os.path.exists(os.path.join(folder, name)):
                config_file = os.path.join(folder, name)
    vocab = os.path.join(directory, "vocab.txt")
    tok_config = os.path.join(directory, "tokenizer_config.json")
    if do_lower_case is None and os.path.exists(tok_config):
        with open(tok_config, encoding="utf-8") as f:
            do_lower_case = json.load(f).get("do_lower_case")
    return Assets(path, config_file, vocab if os.path.exists(vocab) else None, do_lower_case)


__all__ = ["load", "save", "save_google", "save_huggingface", "find_assets", "detect_format",
           "LoadReport", "CheckpointError", "Assets", "variable_map", "google_to_hf"]

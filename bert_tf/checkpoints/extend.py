"""A checkpoint's vocabulary-sized weights resized for new tokens (`extend_vocab.py`), in the
format it came in: Google TF1, Hugging Face safetensors, or this project's own.

The checkpoint is rewritten tensor by tensor, never through a model, so every weight that is
not vocabulary-sized is copied bit for bit, and so are all the old rows of those that are
(optimizer slots and, for this project's format, the object graph included). The word embedding
row of a new token starts as the mean of the rows of the pieces the old vocabulary splits it
into, and so does its masked-LM output bias (never zeros: a zero bias against biases that are
mostly negative would make the new token the MLM's favourite guess); optimizer slots get zero
rows; a row an `[unusedN]` line gave up is overwritten.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np

from bert_tf.checkpoints import (LABELS_FILE, NATIVE_MARKER, CheckpointError, detect_format,
                                 side_file_dirs)
from bert_tf.tokenization.extension import Plan

# The word-embedding and masked-LM output-bias tensors, by format.
_EMBEDDINGS = {"google": "bert/embeddings/word_embeddings",
               "bert_tf": "encoder/embeddings/word_embeddings/.ATTRIBUTES/VARIABLE_VALUE",
               "huggingface": ("bert.embeddings.word_embeddings.weight",
                               "embeddings.word_embeddings.weight",
                               "cls.predictions.decoder.weight")}
_BIASES = {"google": "cls/predictions/output_bias",
           "bert_tf": "model/masked_lm_head/output_bias/.ATTRIBUTES/VARIABLE_VALUE",
           "huggingface": ("cls.predictions.bias", "cls.predictions.decoder.bias")}


def resized(value: np.ndarray, plan: Plan, old_ids: dict, kind: str) -> np.ndarray:
    """`value` [old_size, ...] -> [new_size, ...]: old rows kept, each new token's row the mean
    of its pieces' rows (kind "mean") or zeros (kind "zero", optimizer slots)."""
    if value.shape[0] != plan.old_size:
        raise CheckpointError(f"a vocabulary-sized weight has {value.shape[0]} rows but the "
                              f"vocabulary {plan.old_size} lines: pass the vocab.txt of this "
                              "checkpoint")
    out = np.zeros((len(plan.tokens),) + value.shape[1:], dtype=value.dtype)
    out[:plan.old_size] = value
    for token, row in plan.rows.items():
        if kind == "mean":
            ids = [old_ids[p] for p in plan.pieces[token]]
            out[row] = value[ids].astype(np.float64).mean(axis=0).astype(value.dtype)
        else:
            out[row] = 0
    return out


def _role(name: str, fmt: str) -> str | None:
    """"mean" for the embedding or bias tensors, "zero" for their optimizer slots (TF names
    under them), None for any other tensor."""
    main = _EMBEDDINGS[fmt], _BIASES[fmt]
    if fmt == "huggingface":
        return "mean" if name in main[0] or name in main[1] else None
    if name in main:
        return "mean"
    stems = [m.split("/.ATTRIBUTES")[0] + "/" for m in main]
    return "zero" if any(name.startswith(s) for s in stems) else None


def embedding_rows(path: str, fmt: str) -> int | None:
    """Rows of the checkpoint's word-embedding tensor (None if it has none)."""
    if fmt == "huggingface":
        from safetensors import safe_open

        from bert_tf.checkpoints.huggingface import safetensors_files

        for file in safetensors_files(path):
            with safe_open(file, framework="np") as handle:
                for name in _EMBEDDINGS[fmt]:
                    if name in handle.keys():
                        return handle.get_slice(name).get_shape()[0]
        return None
    import tensorflow as tf

    shapes = tf.train.load_checkpoint(path).get_variable_to_shape_map()
    shape = shapes.get(_EMBEDDINGS[fmt])
    return shape[0] if shape else None


def extend_checkpoint(init_checkpoint: str, output_dir: str, plan: Plan,
                      old_ids: dict) -> dict:
    """Writes the checkpoint `init_checkpoint` with vocabulary-sized tensors resized by `plan`
    into `output_dir`, in the same format, with its config (`vocab_size` updated), the new
    vocab.txt and its fingerprint. Everything is written into `output_dir.partial` and moved
    into place at the end: a failure leaves nothing under `output_dir`.
    A training checkpoint's optimizer slots and counters are left out (`_training_state`).
    Returns {"format", "resized": [names], "copied": count, "dropped": count}. Raises CheckpointError if the
    checkpoint has no word-embedding tensor or one of another size than the vocabulary."""
    fmt, path = detect_format(init_checkpoint)
    rows = embedding_rows(path, fmt)
    if rows is None:
        raise CheckpointError(f"{init_checkpoint}: no word-embedding tensor found "
                              f"({_EMBEDDINGS[fmt]}); is it a BERT checkpoint?")
    if rows != plan.old_size:
        raise CheckpointError(f"{init_checkpoint}: its word embeddings have {rows} rows but "
                              f"the vocabulary has {plan.old_size} lines: pass the vocab.txt "
                              "that came with this checkpoint (--vocab_file)")
    partial = output_dir.rstrip("/") + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    try:
        if fmt == "huggingface":
            report = _extend_safetensors(path, partial, plan, old_ids)
        else:
            report = _extend_tf(path, fmt, partial, plan, old_ids)
        source_dir = path if os.path.isdir(path) else os.path.dirname(path)
        _copy_side_files(source_dir, partial, fmt, len(plan.tokens))
        if fmt == "bert_tf":
            _name_prefix(partial, os.path.basename(path))
        vocab_file = os.path.join(partial, "vocab.txt")
        with open(vocab_file, "w", encoding="utf-8", newline="\n") as f:
            f.write("".join(t + "\n" for t in plan.tokens))
        from bert_tf.data.record_index import vocab_fingerprint, write_fingerprint

        write_fingerprint(partial, vocab_fingerprint(vocab_file))
        if os.path.isdir(output_dir):
            shutil.rmtree(output_dir)  # the caller checked it may be replaced
        os.replace(partial, output_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    report["format"] = fmt
    return report


def _extend_tf(prefix: str, fmt: str, output_dir: str, plan: Plan, old_ids: dict) -> dict:
    import tensorflow as tf

    reader = tf.train.load_checkpoint(prefix)
    dtypes = reader.get_variable_to_dtype_map()
    all_names = sorted(reader.get_variable_to_shape_map())
    state = _training_state(all_names, fmt)
    names, tensors, resized_names = [], [], []
    for name in all_names:
        if name in state:
            continue
        value = reader.get_tensor(name)
        role = _role(name, fmt)
        if role is not None and np.ndim(value) >= 1 and np.shape(value)[0] == plan.old_size:
            value = resized(value, plan, old_ids, role)
            resized_names.append(name)
        names.append(name)
        tensors.append(tf.constant(value, dtype=dtypes[name]))
    target = os.path.join(output_dir, os.path.basename(prefix))
    tmp = target + ".tmp-write"
    tf.raw_ops.SaveV2(prefix=tmp, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=tensors)
    for suffix in (".index", ".data-00000-of-00001"):
        os.replace(tmp + suffix, target + suffix)
    return {"resized": resized_names, "copied": len(names) - len(resized_names),
            "dropped": len(state)}


def _training_state(names: list[str], fmt: str) -> set[str]:
    """What a training checkpoint holds besides weights, left out of an extended one (a new
    starting point, not a run to resume; slots of the word embeddings would not fit it
    either): a Google checkpoint's slots and counters; in this project's format (a run's
    ckpt-N) the optimizer's slots and iterations and the loop's counters. (A run's checkpoint
    stores each variable once, under its shortest path: weights the encoder does not reach are
    under `optimizer/_trainable_variables/`, and stay.)"""
    if fmt == "google":
        from bert_tf.checkpoints.google import optimizer_state

        return optimizer_state(names)
    counters = tuple(f"{name}/.ATTRIBUTES/" for name in (
        "step", "loss_scale", "good_since_growth", "nonfinite_total"))
    return {n for n in names if n.startswith(("optimizer/_variables/", "optimizer/_iterations/"))
            or n.startswith(counters)}


def _extend_safetensors(path: str, output_dir: str, plan: Plan, old_ids: dict) -> dict:
    from safetensors import safe_open
    from safetensors.numpy import save_file

    from bert_tf.checkpoints.huggingface import safetensors_files

    resized_names, copied = [], 0
    for file in safetensors_files(path):
        with safe_open(file, framework="np") as handle:
            metadata = handle.metadata()
            tensors = {}
            for name in handle.keys():
                value = handle.get_tensor(name)
                if _role(name, "huggingface") and value.shape[0] == plan.old_size:
                    value = resized(value, plan, old_ids, "mean")
                    resized_names.append(name)
                else:
                    copied += 1
                tensors[name] = value
        target = os.path.join(output_dir, os.path.basename(file))
        save_file(tensors, target, metadata=metadata)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(target, 0o666 & ~umask)  # safetensors writes 0600: a plain file's mode
    return {"resized": resized_names, "copied": copied, "dropped": 0}


def _name_prefix(output_dir: str, prefix_name: str) -> None:
    """The native marker in `output_dir` names the written prefix (a training run's ckpt-N is
    found through its `checkpoint` file, which is not copied), keeping the model class when the
    source's marker named one."""
    marker_file = os.path.join(output_dir, NATIVE_MARKER)
    marker = {}
    if os.path.exists(marker_file):
        with open(marker_file, encoding="utf-8") as f:
            marker = json.load(f)
    marker["prefix"] = prefix_name
    with open(marker_file, "w", encoding="utf-8") as f:
        json.dump(marker, f)


def _copy_side_files(source_dir: str, output_dir: str, fmt: str, vocab_size: int) -> None:
    """The config with the new vocab_size, and what else describes the checkpoint (the native
    marker, label names, tokenizer_config.json, safetensors index). tokenizer.json holds the old
    vocabulary and is left out (transformers rebuilds it from vocab.txt)."""
    for name in ("bert_config.json", "config.json"):
        source = next((os.path.join(d, name) for d in side_file_dirs(source_dir)
                       if os.path.exists(os.path.join(d, name))), "")
        if source:
            with open(source, encoding="utf-8") as f:
                config = json.load(f)
            config["vocab_size"] = vocab_size
            with open(os.path.join(output_dir, name), "w", encoding="utf-8") as f:
                json.dump(config, f, indent=2, sort_keys=True)
                f.write("\n")
    keep = {NATIVE_MARKER, LABELS_FILE, "tokenizer_config.json",
            "special_tokens_map.json", "model.safetensors.index.json"}
    for name in sorted(keep):
        source = os.path.join(source_dir, name)
        if os.path.exists(source) and os.path.abspath(source_dir) != os.path.abspath(output_dir):
            shutil.copyfile(source, os.path.join(output_dir, name))

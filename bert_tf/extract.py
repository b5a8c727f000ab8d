"""Feature extraction: per-token hidden states of chosen layers, in Google's extract_features.py
JSON-lines format:

  {"linex_index": 0, "features": [{"token": "[CLS]",
                                    "layers": [{"index": -1, "values": [0.12, ...]}, ...]}, ...]}
"""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np

from bert_tf.data.glue import truncate_pair

_PAIR = re.compile(r"^(.*) \|\|\| (.*)$")


class InputError(ValueError):
    """A malformed input file; the message is `path:line: what is wrong`."""


@dataclasses.dataclass
class Example:
    index: int
    text_a: str
    text_b: str | None


def read_examples(path: str) -> list[Example]:
    """Google's extract_features.read_examples, line for line: line k (0-based) is example
    `linex_index` k. Lines end at "\n" only; "\r" characters are dropped (TensorFlow's GFile
    reader, which Google's script reads with, skips them); each line is `strip()`ped, then split
    at the last " ||| " into text_a and text_b. So an empty line is an example too
    ([CLS] [SEP]), "jack ||| " is the single text "jack |||", and a newline at the end of the
    file ends the last line without starting another.

    Raises InputError naming the file when it is not UTF-8 or holds no line at all."""
    from bert_tf.tokenization.wordpiece import gfile_lines

    try:
        lines = gfile_lines(path)
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e}); give one sentence (or "
                         "'text_a ||| text_b') a line") from None
    if not lines:
        raise InputError(f"{path}: no examples in the file")
    examples = []
    for line in lines:
        m = _PAIR.match(line)
        a, b = (m.group(1), m.group(2)) if m else (line, None)
        examples.append(Example(len(examples), a, b))
    return examples


def example_to_tokens(example: Example, tokenizer, max_seq_length: int):
    """-> (tokens, segment_ids) with [CLS] a [SEP] (b [SEP])."""
    a = tokenizer.tokenize(example.text_a)
    b = tokenizer.tokenize(example.text_b) if example.text_b else None  # Google: `if text_b`
    if b is not None:
        truncate_pair(a, b, max_seq_length - 3)
    else:
        del a[max_seq_length - 2:]
    tokens = ["[CLS]"] + a + ["[SEP]"]
    segments = [0] * len(tokens)
    if b is not None:
        tokens += b + ["[SEP]"]
        segments += [1] * (len(b) + 1)
    return tokens, segments


def batches(examples, tokenizer, max_seq_length: int, batch_size: int):
    """Yield (examples, tokens, features) with each batch padded to its own longest row."""
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        rows = [example_to_tokens(e, tokenizer, max_seq_length) for e in chunk]
        width = max(len(t) for t, _ in rows)
        ids = np.zeros((len(rows), width), np.int32)
        mask = np.zeros_like(ids)
        segs = np.zeros_like(ids)
        for i, (tokens, segments) in enumerate(rows):
            n = len(tokens)
            ids[i, :n] = tokenizer.convert_tokens_to_ids(tokens)
            mask[i, :n] = 1
            segs[i, :n] = segments
        yield chunk, [t for t, _ in rows], {"input_ids": ids, "input_mask": mask,
                                            "segment_ids": segs}


def parse_layers(spec: str, num_hidden_layers: int) -> list[int]:
    """'-1,-2,-3,-4' -> [-1, -2, -3, -4], each checked against the model's depth."""
    try:
        layers = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--layers={spec!r}: expected comma-separated integers like -1,-2") \
            from None
    if not layers:
        raise ValueError("--layers is empty")
    for layer in layers:
        if not -num_hidden_layers <= layer < num_hidden_layers:
            raise ValueError(f"--layers: layer {layer} does not exist in a model with "
                             f"{num_hidden_layers} layers (use -1..-{num_hidden_layers} or "
                             f"0..{num_hidden_layers - 1})")
    return layers


def extract(encoder, examples, tokenizer, layers, max_seq_length, batch_size, progress=None):
    """Yield one JSON-ready dict per example, in input order."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def run(features):
        return encoder(features, training=False)["encoder_outputs"]

    for chunk, tokens, features in batches(examples, tokenizer, max_seq_length, batch_size):
        outputs = run({k: tf.constant(v) for k, v in features.items()})
        chosen = {layer: np.asarray(outputs[layer], np.float32) for layer in layers}
        for row, example in enumerate(chunk):
            feats = []
            for pos, token in enumerate(tokens[row]):
                feats.append({"token": token, "layers": [
                    {"index": layer,
                     "values": [round(float(x), 6) for x in chosen[layer][row, pos]]}
                    for layer in layers]})
            yield {"linex_index": example.index, "features": feats}
        if progress is not None:
            progress.update(len(chunk))


def write_jsonl(rows, handle) -> int:
    n = 0
    for row in rows:
        handle.write(json.dumps(row) + "\n")
        n += 1
    return n

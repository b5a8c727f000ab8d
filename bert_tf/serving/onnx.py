"""A fine-tuned model as ONNX for onnxruntime: ids in, logits out (the tokenizer stays on the
client: the export carries Google's tokenizer as one standard-library Python file).

    session = onnxruntime.InferenceSession("model.onnx")
    logits, = session.run(["logits"], {"input_ids": ids, "input_mask": mask,
                                       "segment_ids": segments})   # int32 [batch, seq] each

Converted with tf2onnx from a tf.function of the model (float32, opset 17). tf2onnx exits
normally on ops it cannot convert and leaves them in the graph under their TensorFlow names, so
`export_onnx` checks the graph (onnx's checker, every node a standard ONNX op), loads it in
onnxruntime and compares its logits with TensorFlow's on real-looking inputs before the file
is kept. Requires the `onnx` extra: tf2onnx, onnx, onnxruntime.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from bert_tf.errors import UsageError

INPUTS = ("input_ids", "input_mask", "segment_ids")
OPSET = 17  # tf2onnx 1.17 converts up to opset 18; 17 is what onnxruntime has run longest


class OnnxExportError(UsageError):
    """The converted graph is not plain ONNX, does not load, or does not give the model's
    logits."""


def _serving_function(model):
    spec = [tf.TensorSpec([None, None], tf.int32, name=name) for name in INPUTS]

    @tf.function(input_signature=spec)
    def serve(input_ids, input_mask, segment_ids):
        features = {"input_ids": input_ids, "input_mask": input_mask, "segment_ids": segment_ids}
        return {"logits": tf.cast(model(features, training=False)["logits"], tf.float32)}

    return serve, spec


def _check_graph(proto) -> None:
    import onnx

    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as e:
        raise OnnxExportError(f"the converted graph is not valid ONNX: {e}") from None
    foreign = sorted({f"{n.domain or 'ai.onnx'}:{n.op_type}" for n in proto.graph.node
                      if n.domain not in ("", "ai.onnx") or not onnx.defs.has(n.op_type)})
    if foreign:
        raise OnnxExportError(f"tf2onnx left ops ONNX does not define: {', '.join(foreign)}")


def _name_axes(proto) -> None:
    """tf2onnx names dynamic axes unk__N: call them batch and seq."""
    for value in list(proto.graph.input) + list(proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        for dim, name in zip(dims, ("batch", "seq")):
            if not dim.dim_value:
                dim.dim_param = name


def probe_inputs(vocab_size: int, batch: int = 8, seq: int = 48, seed: int = 0) -> dict:
    """int32 [batch, seq] inputs with real padding and two segments, for the comparison."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, seq + 1, size=batch)
    lengths[0] = seq
    ids = rng.integers(min(1000, vocab_size // 2), vocab_size, size=(batch, seq)).astype(np.int32)
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int32)
    segments = ((np.arange(seq)[None, :] >= lengths[:, None] // 2) & (mask == 1)).astype(np.int32)
    ids[:, 0] = 101
    return {"input_ids": ids * mask, "input_mask": mask, "segment_ids": segments}


def export_onnx(model, path: str, opset: int = OPSET, tolerance: float = 1e-4) -> dict:
    """Convert `model` (a float32 BertClassifier / BertTokenClassifier / any model with a
    "logits" output) to ONNX at `path`, written only once it is checked. Returns
    {"max_abs_diff": float, "nodes": int}: onnxruntime against TensorFlow on probe inputs.
    Raises OnnxExportError (unconvertible ops, a graph onnxruntime refuses, logits further than
    `tolerance` from TensorFlow's)."""
    import onnxruntime
    import tf2onnx

    serve, spec = _serving_function(model)
    proto, _ = tf2onnx.convert.from_function(serve, input_signature=spec, opset=opset)
    _check_graph(proto)
    _name_axes(proto)
    partial = f"{path}.partial"
    with open(partial, "wb") as f:
        f.write(proto.SerializeToString())
    try:
        try:
            session = onnxruntime.InferenceSession(partial, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own Fail / InvalidGraph classes
            raise OnnxExportError(f"onnxruntime cannot load the converted graph: {e}") from None
        inputs = probe_inputs(model.config.vocab_size)
        got = session.run(["logits"], inputs)[0]
        want = serve(**{k: tf.constant(v) for k, v in inputs.items()})["logits"].numpy()
        mask = inputs["input_mask"].astype(bool)
        if got.ndim == 3:  # per position: padding's logits are meaningless
            got, want = got[mask], want[mask]
        diff = float(np.abs(got - want).max())
        if not diff <= tolerance:
            raise OnnxExportError(f"onnxruntime's logits differ from TensorFlow's by {diff:.2e} "
                                  f"(more than {tolerance:g})")
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return {"max_abs_diff": diff, "nodes": len(proto.graph.node)}

"""The one table that ties our Keras variables to Google's and Hugging Face's checkpoint names.

Every format is read into {name: array} and mapped through `variable_map(model)`, which lists each
model variable once under its Google TF1 name. Hugging Face names are derived from Google names by
`google_to_hf`, so there is a single source of truth for the layout.

Layout differences handled here:
  * Keras Dense kernels are [in, out], as Google's `kernel`s; Hugging Face Linear weights are
    [out, in], so every `kernel` is transposed on the way to or from Hugging Face.
  * Google stores the next-sentence and classifier weights as `output_weights` [num_labels, H],
    the transpose of our Dense kernel [H, num_labels]; Hugging Face stores them as [num_labels, H].
"""

from __future__ import annotations

import dataclasses
import re


@dataclasses.dataclass(frozen=True)
class Entry:
    google_name: str
    variable: object  # a keras.Variable
    transpose: bool  # our array == google array transposed
    encoder: bool  # part of the encoder (strict: must be present, must be used)

    @property
    def hf_name(self) -> str:
        return google_to_hf(self.google_name)


def _dense(prefix, layer, encoder, transpose=False):
    return [Entry(f"{prefix}/kernel", layer.kernel, transpose, encoder),
            Entry(f"{prefix}/bias", layer.bias, False, encoder)]


def _norm(prefix, layer, encoder):
    return [Entry(f"{prefix}/gamma", layer.gamma, False, encoder),
            Entry(f"{prefix}/beta", layer.beta, False, encoder)]


def encoder_entries(encoder) -> list[Entry]:
    emb = encoder.embeddings
    out = [Entry("bert/embeddings/word_embeddings", emb.word_embeddings, False, True),
           Entry("bert/embeddings/position_embeddings", emb.position_embeddings, False, True),
           Entry("bert/embeddings/token_type_embeddings", emb.token_type_embeddings, False, True)]
    out += _norm("bert/embeddings/LayerNorm", emb.layer_norm, True)
    for i, block in enumerate(encoder.transformer_layers):
        p = f"bert/encoder/layer_{i}"
        out += _dense(f"{p}/attention/self/query", block.query, True)
        out += _dense(f"{p}/attention/self/key", block.key, True)
        out += _dense(f"{p}/attention/self/value", block.value, True)
        out += _dense(f"{p}/attention/output/dense", block.attention_output, True)
        out += _norm(f"{p}/attention/output/LayerNorm", block.attention_layer_norm, True)
        out += _dense(f"{p}/intermediate/dense", block.intermediate, True)
        out += _dense(f"{p}/output/dense", block.output_dense, True)
        out += _norm(f"{p}/output/LayerNorm", block.output_layer_norm, True)
    out += _dense("bert/pooler/dense", encoder.pooler, True)
    return out


def variable_map(model) -> list[Entry]:
    """Every variable of `model` (an encoder or a task model) with its Google TF1 name."""
    from bert_tf.modeling import (BertClassifier, BertEncoder, BertPretrainer,
                                  BertSpanExtractor, BertTokenClassifier)

    if isinstance(model, BertEncoder):
        entries = encoder_entries(model)
    else:
        entries = encoder_entries(model.encoder)
    if isinstance(model, BertPretrainer):
        mlm, nsp = model.masked_lm_head, model.next_sentence_head
        entries += _dense("cls/predictions/transform/dense", mlm.transform, False)
        entries += _norm("cls/predictions/transform/LayerNorm", mlm.transform_layer_norm, False)
        entries.append(Entry("cls/predictions/output_bias", mlm.output_bias, False, False))
        entries.append(Entry("cls/seq_relationship/output_weights", nsp.dense.kernel, True, False))
        entries.append(Entry("cls/seq_relationship/output_bias", nsp.dense.bias, False, False))
    elif isinstance(model, (BertClassifier, BertTokenClassifier)):
        # Google's run_classifier.py names its head output_weights / output_bias.
        entries.append(Entry("output_weights", model.head.dense.kernel, True, False))
        entries.append(Entry("output_bias", model.head.dense.bias, False, False))
    elif isinstance(model, BertSpanExtractor):
        entries.append(Entry("cls/squad/output_weights", model.head.dense.kernel, True, False))
        entries.append(Entry("cls/squad/output_bias", model.head.dense.bias, False, False))
    elif not isinstance(model, BertEncoder):
        raise TypeError(f"no checkpoint mapping for {type(model).__name__}")
    mapped = {id(e.variable) for e in entries}
    unmapped = [v.path for v in model.weights if id(v) not in mapped]
    if unmapped:  # a new layer was added without a mapping: fail loudly, never skip a weight
        raise AssertionError(f"variables without a checkpoint name: {unmapped}")
    return entries


_HF_SPECIAL = {
    "cls/predictions/output_bias": "cls.predictions.bias",
    "cls/seq_relationship/output_weights": "cls.seq_relationship.weight",
    "cls/seq_relationship/output_bias": "cls.seq_relationship.bias",
    "output_weights": "classifier.weight",
    "output_bias": "classifier.bias",
    "cls/squad/output_weights": "qa_outputs.weight",
    "cls/squad/output_bias": "qa_outputs.bias",
}


def google_to_hf(name: str) -> str:
    """bert/encoder/layer_3/attention/self/query/kernel -> bert.encoder.layer.3.attention.self.query.weight"""
    if name in _HF_SPECIAL:
        return _HF_SPECIAL[name]
    parts = name.split("/")
    leaf = parts[-1]
    if leaf in ("kernel", "gamma"):
        parts[-1] = "weight"
    elif leaf == "beta":
        parts[-1] = "bias"
    elif leaf.endswith("_embeddings"):
        parts.append("weight")
    out = ".".join(parts)
    return re.sub(r"\blayer_(\d+)\b", r"layer.\1", out)


def hf_transposed(google_name: str) -> bool:
    """Hugging Face array == Google array transposed (Linear [out,in] vs kernel [in,out])."""
    return google_name.endswith("/kernel")

"""Task models: an encoder plus heads, as functional Keras models with named dict outputs.

Every model exposes `.encoder` (a BertEncoder) so weights move between tasks: pre-train a
BertPretrainer, then hand its encoder to a BertClassifier.
"""

from __future__ import annotations

import keras

from bert_tf.modeling.encoder import BertEncoder, DictInputModel, _as_config, encoder_inputs
from bert_tf.modeling.heads import (ClassificationHead, MaskedLMHead, NextSentenceHead,
                                    SpanHead, TokenClassificationHead)


def _encoder_for(config, encoder):
    config = _as_config(config)
    if encoder is None:
        return config, BertEncoder(config, name="bert")
    if encoder.config.to_dict() != config.to_dict():
        raise ValueError("the encoder passed in was built from another config than the model's")
    return config, encoder


class BertPretrainer(DictInputModel):
    """Masked-LM and next-sentence heads on a BertEncoder.

    Inputs: input_ids, input_mask, segment_ids [B,S], masked_lm_positions [B,P] (int32).
    Outputs: mlm_logits [B,P,V], nsp_logits [B,2] (float32), plus the encoder's outputs.

    Training and evaluation call `pretraining_logits`, which gives the same two logits with less
    work: see there.
    """

    def __init__(self, config, encoder=None, **kwargs):
        config, encoder = _encoder_for(config, encoder)
        mlm = MaskedLMHead(encoder.embeddings, hidden_act=config.hidden_act,
                           initializer_range=config.initializer_range,
                           layer_norm_eps=config.layer_norm_eps, name="predictions")
        nsp = NextSentenceHead(initializer_range=config.initializer_range,
                               name="seq_relationship")
        inputs = encoder_inputs()
        inputs["masked_lm_positions"] = keras.Input(shape=(None,), dtype="int32",
                                                    name="masked_lm_positions")
        enc = encoder({k: inputs[k] for k in ("input_ids", "input_mask", "segment_ids")})
        outputs = {
            "mlm_logits": mlm(enc["sequence_output"], inputs["masked_lm_positions"]),
            "nsp_logits": nsp(enc["pooled_output"]),
            "sequence_output": enc["sequence_output"],
            "pooled_output": enc["pooled_output"],
        }
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.config = config
        self.encoder = encoder
        self.masked_lm_head = mlm
        self.next_sentence_head = nsp

    def pretraining_logits(self, features: dict, training=None) -> dict:
        """{"mlm_logits": float32 [B,P,V], "nsp_logits": float32 [B,2]}: the values calling the
        model gives, with the last transformer layer computed only where the heads read it,
        at [CLS] (through the pooler) and the masked positions (`BertEncoder.outputs_at`).
        With BERT-Small at S = 128, P = 20 that removes ~15% of a training step's
        multiply-adds; the results agree with `model(features)` to float rounding.

        features: a batch holding input_ids, input_mask, segment_ids [B,S] and
        masked_lm_positions [B,P] (int); other keys are ignored. KeyError names a missing one.
        """
        features = self.select_features(features)
        enc = self.encoder.outputs_at(features, features["masked_lm_positions"], training)
        return {"mlm_logits": self.masked_lm_head(enc["sequence_output"]),
                "nsp_logits": self.next_sentence_head(enc["pooled_output"], training=training)}

    def get_config(self):
        return {"config": self.config.to_dict(), "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class _SingleHeadModel(DictInputModel):
    head_class = None
    uses_sequence = False

    def __init__(self, config, num_labels, encoder=None, dropout_rate=None, **kwargs):
        config, encoder = _encoder_for(config, encoder)
        if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
            raise ValueError(f"num_labels must be a positive integer, got {num_labels!r}")
        rate = config.hidden_dropout_prob if dropout_rate is None else dropout_rate
        head = self.head_class(num_labels, dropout_rate=rate,
                               initializer_range=config.initializer_range, name="classifier")
        inputs = encoder_inputs()
        enc = encoder(inputs)
        features = enc["sequence_output"] if self.uses_sequence else enc["pooled_output"]
        super().__init__(inputs=inputs, outputs={"logits": head(features)}, **kwargs)
        self.config = config
        self.num_labels = num_labels
        self.dropout_rate = rate
        self.encoder = encoder
        self.head = head

    @property
    def unused_variables(self):
        """Weights that get no gradient: the pooler, when the head reads every position."""
        return list(self.encoder.pooler.weights) if self.uses_sequence else []

    def get_config(self):
        return {"config": self.config.to_dict(), "num_labels": self.num_labels,
                "dropout_rate": self.dropout_rate, "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class BertClassifier(_SingleHeadModel):
    """Sequence classification on the pooled [CLS] output: logits [B,num_labels]
    (num_labels=1 is regression, e.g. STS-B)."""
    head_class = ClassificationHead


class BertTokenClassifier(_SingleHeadModel):
    """Token classification (NER) on every position: logits [B,S,num_labels]."""
    head_class = TokenClassificationHead
    uses_sequence = True


class BertSpanExtractor(DictInputModel):
    """Extractive QA (SQuAD): start_logits [B,S], end_logits [B,S]."""

    def __init__(self, config, encoder=None, **kwargs):
        config, encoder = _encoder_for(config, encoder)
        head = SpanHead(initializer_range=config.initializer_range, name="qa_outputs")
        inputs = encoder_inputs()
        start, end = head(encoder(inputs)["sequence_output"])
        super().__init__(inputs=inputs, outputs={"start_logits": start, "end_logits": end},
                         **kwargs)
        self.config = config
        self.encoder = encoder
        self.head = head

    @property
    def unused_variables(self):
        return list(self.encoder.pooler.weights)

    def get_config(self):
        return {"config": self.config.to_dict(), "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

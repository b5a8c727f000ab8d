"""BertEncoder: the BERT backbone as a functional Keras model with named dict inputs and outputs."""

from __future__ import annotations

import keras
from keras import ops

from bert_tf.config import BertConfig
from bert_tf.modeling.layers import AttentionMask, BertEmbeddings, TransformerBlock, truncated_normal

INPUT_NAMES = ("input_ids", "input_mask", "segment_ids")


def _as_config(config) -> BertConfig:
    return config if isinstance(config, BertConfig) else BertConfig.from_dict(dict(config))


def encoder_inputs():
    """Symbolic int32 [B,S] inputs named as the features are named in every pipeline."""
    return {name: keras.Input(shape=(None,), dtype="int32", name=name) for name in INPUT_NAMES}


class DictInputModel(keras.Model):
    """A functional model called with a dict of features: takes the keys it needs and ignores the
    rest (a pipeline's batch also holds labels and masked-LM targets), and names a missing one.

    Keras' functional models match dict inputs by position after flattening, so an extra key
    would otherwise silently shift every input after it.
    """

    def call(self, inputs, training=None, mask=None, **kwargs):
        if isinstance(inputs, dict):
            inputs = self.select_features(inputs)
        return super().call(inputs, training=training, mask=mask, **kwargs)

    def select_features(self, features: dict) -> dict:
        """The model's inputs out of a batch of features; KeyError naming any that is missing."""
        names = list(self._inputs_struct)
        missing = [n for n in names if n not in features]
        if missing:
            raise KeyError(f"{self.name}: input features {missing} are missing; the model "
                           f"takes {names}, got {sorted(features)}")
        return {n: features[n] for n in names}


class BertEncoder(DictInputModel):
    """The BERT encoder without heads.

    Call with {"input_ids", "input_mask", "segment_ids"} (int32 [B,S]); returns
      sequence_output  [B,S,H]  last layer's hidden states (float32)
      pooled_output    [B,H]    tanh(Dense(sequence_output[:, 0])), the [CLS] summary
      encoder_outputs  list of [B,S,H], one per transformer layer
    """

    def __init__(self, config, **kwargs):
        config = _as_config(config)
        c = config
        embeddings = BertEmbeddings(
            c.vocab_size, c.hidden_size, c.max_position_embeddings, c.type_vocab_size,
            initializer_range=c.initializer_range, dropout_rate=c.hidden_dropout_prob,
            layer_norm_eps=c.layer_norm_eps, name="embeddings")
        blocks = [TransformerBlock(
            c.hidden_size, c.num_attention_heads, c.intermediate_size, hidden_act=c.hidden_act,
            hidden_dropout_prob=c.hidden_dropout_prob,
            attention_probs_dropout_prob=c.attention_probs_dropout_prob,
            initializer_range=c.initializer_range, layer_norm_eps=c.layer_norm_eps,
            name=f"layer_{i}") for i in range(c.num_hidden_layers)]
        pooler = keras.layers.Dense(c.hidden_size, activation="tanh", name="pooler",
                                    kernel_initializer=truncated_normal(c.initializer_range))

        inputs = encoder_inputs()
        attention_mask = AttentionMask(name="attention_mask")
        mask = attention_mask(inputs["input_mask"])  # [B,1,1,S]
        x = embeddings(inputs["input_ids"], inputs["segment_ids"])  # [B,S,H]
        layer_outputs = []
        for block in blocks:
            x = block(x, mask)
            layer_outputs.append(x)
        first_token = keras.layers.Lambda(lambda t: t[:, 0, :], name="first_token")(x)  # [B,H]
        pooled = pooler(first_token)
        outputs = {"sequence_output": x, "pooled_output": pooled,
                   "encoder_outputs": layer_outputs}
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        self.config = config
        self.embeddings = embeddings
        self.attention_mask = attention_mask
        self.transformer_layers = blocks
        self.pooler = pooler

    def outputs_at(self, features: dict, positions, training=None) -> dict:
        """The encoder's outputs where a head reads them, computing the last layer there only.

        features: input_ids, input_mask, segment_ids [B,S] (other keys ignored; KeyError names
        a missing one); positions: int [B,P]. Returns
          sequence_output  [B,P,H]  the last layer's states at the positions
          pooled_output    [B,H]    as calling the encoder gives it
        Every layer but the last runs in full. The last runs its queries, attention output,
        feed-forward and LayerNorms on [CLS] and the P positions only (its keys and values on
        all S: `TransformerBlock.call(positions=...)`), so the values equal the full encoder's
        at those rows to float rounding with fewer multiply-adds: 0.7/L of the encoder's for
        L layers at P = 20 of S = 128. The same layers are called, so dropout and the dtype
        policy behave as in the full model.
        """
        features = self.select_features(features)
        mask = self.attention_mask(features["input_mask"])  # [B,1,1,S]
        x = self.embeddings(features["input_ids"], features["segment_ids"],
                            training=training)  # [B,S,H]
        for block in self.transformer_layers[:-1]:
            x = block(x, mask, training=training)
        positions = ops.cast(positions, "int32")
        cls = ops.zeros((ops.shape(positions)[0], 1), "int32")
        rows = ops.concatenate([cls, positions], axis=1)  # [B,1+P]
        x = self.transformer_layers[-1](x, mask, training=training, positions=rows)
        return {"sequence_output": x[:, 1:], "pooled_output": self.pooler(x[:, 0])}

    def get_config(self):
        return {"config": self.config.to_dict(), "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

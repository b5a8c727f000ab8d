"""BertConfig: the model hyperparameters, under the keys of Google's bert_config.json.

The same JSON file that ships with Google's released checkpoints loads here unchanged; Hugging Face
`config.json` files load too (they use the same key names plus a few extra ones, which are kept in
`extra` and ignored by the model).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from typing import Any

# hidden_act values the model implements. "gelu" is the exact erf form (Hugging Face's "gelu",
# Google's TF2 releases); "gelu_tanh" is the tanh approximation in Google's original
# modeling.py, which Hugging Face calls "gelu_new" (also "gelu_pytorch_tanh").
ACTIVATIONS = ("gelu", "gelu_tanh", "relu")
_ACTIVATION_ALIASES = {
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
}

# Keys Hugging Face writes that describe the same model in other words; anything else unknown is
# kept in `extra` so to_json_file round-trips it.
_HF_ONLY_KEYS = ("layer_norm_eps",)


class ConfigError(ValueError):
    """A bert_config.json that cannot describe a BERT model. The message says which key and why."""


@dataclasses.dataclass
class BertConfig:
    vocab_size: int
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    # Keys from the file that the model does not use (Hugging Face's architectures, model_type...).
    extra: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)
    # Where the config came from, for error messages; not written out.
    source: str | None = dataclasses.field(default=None, repr=False, compare=False)

    def __post_init__(self):
        self.hidden_act = _ACTIVATION_ALIASES.get(self.hidden_act, self.hidden_act)
        self.validate()

    # -- validation ---------------------------------------------------------------------------
    def validate(self) -> None:
        where = f"{self.source}: " if self.source else ""

        def fail(msg):
            raise ConfigError(where + msg)

        for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                    "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int):
                fail(f"{key} must be an integer, got {value!r}")
            if value < 1:
                fail(f"{key} must be at least 1, got {value}")
        if self.hidden_size % self.num_attention_heads:
            fail(f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads "
                 f"{self.num_attention_heads}: each head gets hidden_size / num_attention_heads "
                 "dimensions")
        if self.hidden_act not in ACTIVATIONS:
            fail(f"hidden_act {self.hidden_act!r} is not supported; use one of "
                 f"{', '.join(ACTIVATIONS)} (or the alias gelu_new for gelu_tanh)")
        for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                fail(f"{key} must be a number in [0, 1), got {value!r}")
        if not isinstance(self.initializer_range, (int, float)) or self.initializer_range <= 0:
            fail(f"initializer_range must be a positive number, got {self.initializer_range!r}")
        if not isinstance(self.layer_norm_eps, (int, float)) or self.layer_norm_eps <= 0:
            fail(f"layer_norm_eps must be a positive number, got {self.layer_norm_eps!r}")

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    # -- (de)serialisation --------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | None = None) -> "BertConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"{source or 'config'}: expected a JSON object, got "
                              f"{type(data).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)} - {"extra", "source"}
        if "vocab_size" not in data:
            raise ConfigError(f"{source or 'config'}: missing required key 'vocab_size'")
        known = {k: v for k, v in data.items() if k in fields}
        extra = {k: v for k, v in data.items() if k not in fields}
        return cls(**known, extra=extra, source=source)

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "BertConfig":
        path = os.fspath(path)
        if not os.path.exists(path):
            raise ConfigError(f"{path}: config file not found; pass --bert_config_file with the "
                              "bert_config.json that came with the checkpoint")
        with open(path, encoding="utf-8") as f:
            text = f.read()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        return cls.from_dict(data, source=path)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name not in ("extra", "source")}
        for k, v in self.extra.items():
            out.setdefault(k, v)
        return out

    def to_google_dict(self) -> dict[str, Any]:
        """Exactly the keys of Google's bert_config.json. hidden_act is written as this project
        names it ("gelu" = exact erf form, as Hugging Face and Google's TF2 code read it)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name not in ("extra", "source", "layer_norm_eps")}
        return out

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json_string())

    def replace(self, **changes) -> "BertConfig":
        new = copy.deepcopy(self)
        for k, v in changes.items():
            setattr(new, k, v)
        new.__post_init__()
        return new

"""The one place that sets the Keras dtype policy (fp32, fp16 or bf16 mixed precision)."""

from __future__ import annotations

import keras

POLICIES = {"fp32": "float32", "fp16": "mixed_float16", "bf16": "mixed_bfloat16"}


def set_dtype(dtype: str) -> str:
    """--dtype=fp32|fp16|bf16 -> the global Keras policy; build models after calling this.
    Variables stay float32; LayerNorm, softmax and logits run in float32 (see modeling/)."""
    if dtype not in POLICIES:
        raise ValueError(f"--dtype={dtype!r}: use one of {', '.join(POLICIES)}")
    keras.mixed_precision.set_global_policy(POLICIES[dtype])
    return POLICIES[dtype]

"""A tiny self-attention encoder for sequences (sensor windows, MFCC frames)."""

from __future__ import annotations

from typing import Any

from toolkit.builders.base import BuildContext, register
from toolkit.builders.sequence import _INPUTS, _positive, _sequence_input
from toolkit.core.errors import UserError


@register(
    "transformer_tiny",
    tasks=("classification", "regression"),
    inputs=_INPUTS,
    description="Conv1D embedding, pre-norm self-attention blocks (ReLU MLP), average pooling.",
)
def transformer_tiny(
    ctx: BuildContext,
    *,
    d_model: int = 32,
    heads: int = 2,
    blocks: int = 2,
    ff: int = 64,
    dropout: float = 0.1,
) -> Any:
    """A kernel-3 Conv1D embeds each step and its neighbours, which gives attention position
    information without a positional table. ReLU (not GELU) keeps the MLP int8-friendly."""
    import keras
    from keras import layers

    _positive("transformer_tiny", d_model=d_model, heads=heads, ff=ff)
    if int(blocks) < 1 or int(d_model) % int(heads):
        raise UserError(
            f"transformer_tiny: blocks must be >= 1 and d_model ({d_model}) divisible by "
            f"heads ({heads})"
        )
    inputs, x, _ = _sequence_input(ctx, "transformer_tiny")
    d, reg = int(d_model), ctx.regularizer()
    x = layers.Conv1D(d, 3, padding="same", kernel_regularizer=reg, name="embed")(x)
    for i in range(int(blocks)):
        y = layers.LayerNormalization(epsilon=1e-5, name=f"block{i}_ln0")(x)
        y = layers.MultiHeadAttention(int(heads), d // int(heads), name=f"block{i}_attn")(y, y)
        x = layers.Add(name=f"block{i}_add0")([x, y])
        y = layers.LayerNormalization(epsilon=1e-5, name=f"block{i}_ln1")(x)
        y = layers.Dense(int(ff), activation="relu", kernel_regularizer=reg, name=f"block{i}_ff0")(
            y
        )
        y = layers.Dense(d, kernel_regularizer=reg, name=f"block{i}_ff1")(y)
        x = layers.Add(name=f"block{i}_add1")([x, y])
    x = layers.LayerNormalization(epsilon=1e-5, name="final_ln")(x)
    x = layers.GlobalAveragePooling1D(name="gap")(x)
    return keras.Model(inputs, ctx.head(x, dropout), name="transformer_tiny")

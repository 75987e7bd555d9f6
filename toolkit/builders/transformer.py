"""Tiny self-attention encoders: for sequences (sensor windows, MFCC frames) and images."""

from __future__ import annotations

from typing import Any

from toolkit.builders.base import BuildContext, register
from toolkit.builders.sequence import _INPUTS, _positive, _sequence_input
from toolkit.core.errors import UserError


def _encoder(
    x: Any, blocks: int, d: int, heads: int, ff: int, activation: str, reg: Any, eps: float
) -> Any:
    """Pre-norm blocks (LayerNorm -> self-attention -> add, LayerNorm -> MLP -> add), then a
    final LayerNorm; the layer names are part of saved models, so both builders share them."""
    from keras import layers

    for i in range(blocks):
        y = layers.LayerNormalization(epsilon=eps, name=f"block{i}_ln0")(x)
        y = layers.MultiHeadAttention(heads, d // heads, name=f"block{i}_attn")(y, y)
        x = layers.Add(name=f"block{i}_add0")([x, y])
        y = layers.LayerNormalization(epsilon=eps, name=f"block{i}_ln1")(x)
        y = layers.Dense(ff, activation=activation, kernel_regularizer=reg,
                         name=f"block{i}_ff0")(y)  # fmt: skip
        y = layers.Dense(d, kernel_regularizer=reg, name=f"block{i}_ff1")(y)
        x = layers.Add(name=f"block{i}_add1")([x, y])
    return layers.LayerNormalization(epsilon=eps, name="final_ln")(x)


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
    x = _encoder(x, int(blocks), d, int(heads), int(ff), "relu", reg, 1e-5)
    x = layers.GlobalAveragePooling1D(name="gap")(x)
    return keras.Model(inputs, ctx.head(x, dropout), name="transformer_tiny")


@register(
    "vit_tiny",
    tasks=("classification", "regression"),
    inputs="image HxWxC, H and W divisible by patch (CIFAR-10: 32x32x3, patch 4)",
    description="Patch embedding, depthwise positional conv, pre-norm GELU transformer blocks.",
)
def vit_tiny(
    ctx: BuildContext,
    *,
    patch: int = 4,
    d_model: int = 64,
    heads: int = 4,
    blocks: int = 4,
    ff: int = 128,
    activation: str = "gelu",
    dropout: float = 0.1,
) -> Any:
    """A small vision transformer: a stride-`patch` Conv2D cuts patches, a 3x3 depthwise
    conv added back (CPVT's positional generator) gives position without a learned table
    (no custom layer, so the .keras file and both converters stay plain). GELU, LayerNorm
    and softmax attention are what makes ViTs hard for int8, which is why bench/ptq.py
    trains one; `activation: relu` is the int8-friendly choice."""
    import keras
    from keras import layers

    _positive("vit_tiny", patch=patch, d_model=d_model, heads=heads, ff=ff)
    ctx.require_image("vit_tiny", min_size=int(patch))
    height, width = int(ctx.input_shape[0]), int(ctx.input_shape[1])
    p, d = int(patch), int(d_model)
    if height % p or width % p or int(blocks) < 1 or d % int(heads):
        raise UserError(
            f"vit_tiny: the image ({height}x{width}) must divide by patch ({p}), blocks must "
            f"be >= 1 and d_model ({d}) divisible by heads ({heads})"
        )
    inputs, x = ctx.inputs()
    reg = ctx.regularizer()
    x = layers.Conv2D(d, p, strides=p, kernel_regularizer=reg, name="patch_embed")(x)
    pos = layers.DepthwiseConv2D(3, padding="same", name="pos_conv")(x)
    x = layers.Add(name="pos_add")([x, pos])
    x = layers.Reshape(((height // p) * (width // p), d), name="tokens")(x)
    x = _encoder(x, int(blocks), d, int(heads), int(ff), activation, reg, 1e-6)
    x = layers.GlobalAveragePooling1D(name="gap")(x)
    return keras.Model(inputs, ctx.head(x, dropout), name="vit_tiny")

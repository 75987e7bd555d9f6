"""A dense autoencoder whose output is the anomaly score (per-sample reconstruction MSE).

The score is computed inside the model with built-in layers (Subtract, Multiply, pooling), so
an exported TFLite/ONNX file outputs the score a device thresholds, and loading needs no
custom objects. Training (task `anomaly`) minimises the score on the normal samples only.
"""

from __future__ import annotations

import math
from typing import Any

from toolkit.builders.base import BuildContext, register
from toolkit.core.errors import UserError


@register(
    "autoencoder",
    tasks=("anomaly",),
    inputs="features (N,) or any shape (flattened); labels 0 normal / 1 anomaly",
    description="Dense encoder-bottleneck-decoder; outputs reconstruction MSE (anomaly score).",
)
def autoencoder(
    ctx: BuildContext,
    *,
    hidden: list[int] = (32, 16),  # type: ignore[assignment]
    bottleneck: int = 8,
    dropout: float = 0.0,
) -> Any:
    """Scores standardized inputs (the baked-in Normalization), so every feature counts alike.
    The decoder mirrors the encoder; ReLU everywhere but the linear reconstruction."""
    import keras
    from keras import layers

    if any(int(h) < 1 for h in hidden) or int(bottleneck) < 1:
        raise UserError(
            f"autoencoder: hidden and bottleneck must be positive; got {hidden}, {bottleneck}"
        )
    width = math.prod(int(d) for d in ctx.input_shape)
    reg = ctx.regularizer()
    rate = dropout if ctx.dropout is None else ctx.dropout
    inputs, x = ctx.inputs()
    flat = layers.Flatten(name="flatten")(x) if len(ctx.input_shape) > 1 else x
    h = flat
    sizes = [int(v) for v in hidden]
    for i, units in enumerate([*sizes, int(bottleneck), *reversed(sizes)]):
        name = "bottleneck" if i == len(sizes) else f"dense{i}"
        h = layers.Dense(units, activation="relu", kernel_regularizer=reg, name=name)(h)
        if rate and i != len(sizes):
            h = layers.Dropout(rate, name=f"dropout{i}")(h)
    recon = layers.Dense(width, kernel_regularizer=reg, name="reconstruction")(h)
    diff = layers.Subtract(name="residual")([flat, recon])
    squared = layers.Multiply(name="squared")([diff, diff])
    squared = layers.Reshape((width, 1), name="to_steps")(squared)
    score = layers.GlobalAveragePooling1D(name="score")(squared)
    return keras.Model(inputs, score, name="autoencoder")

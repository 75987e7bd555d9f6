"""A multilayer perceptron for tabular classification and regression."""

from __future__ import annotations

from typing import Any

from toolkit.builders.base import BuildContext, register
from toolkit.core.errors import UserError


@register(
    "mlp",
    tasks=("classification", "regression"),
    inputs="features (N,) or any shape (flattened)",
    description="Dense-ReLU layers with optional BatchNorm; tabular classification/regression.",
)
def mlp(
    ctx: BuildContext,
    *,
    hidden: list[int] = (64, 32),  # type: ignore[assignment]
    batch_norm: bool = False,
    dropout: float = 0.1,
) -> Any:
    """Dense + ReLU stack. Standardized inputs come from the baked-in Normalization layer."""
    import keras
    from keras import layers

    if any(int(h) < 1 for h in hidden):
        raise UserError(f"mlp: hidden sizes must be positive ints, got {hidden}")
    reg = ctx.regularizer()
    inputs, x = ctx.inputs()
    if len(ctx.input_shape) > 1:
        x = layers.Flatten(name="flatten")(x)
    rate = dropout if ctx.dropout is None else ctx.dropout
    for i, width in enumerate(hidden):
        x = layers.Dense(int(width), kernel_regularizer=reg, name=f"dense{i}")(x)
        if batch_norm:
            x = layers.BatchNormalization(momentum=0.9, name=f"bn{i}")(x)
        x = layers.ReLU(name=f"relu{i}")(x)
        if rate and i < len(hidden) - 1:
            x = layers.Dropout(rate, name=f"dropout{i}")(x)
    outputs = ctx.head(x, rate)
    return keras.Model(inputs, outputs, name="mlp")

"""A plain conv net: the small-image workhorse that quantizes cleanly to int8."""

from __future__ import annotations

from typing import Any

from toolkit.builders.base import BuildContext, register
from toolkit.core.errors import UserError


@register(
    "cnn",
    tasks=("classification", "regression"),
    inputs="image HxWxC, H,W >= 8",
    description="Conv blocks (Conv-BN-ReLU x2, max-pool) then global pooling and a dense head.",
)
def cnn(
    ctx: BuildContext,
    *,
    filters: list[int] = (16, 32, 64),  # type: ignore[assignment]
    convs_per_block: int = 2,
    kernel_size: int = 3,
    batch_norm: bool = True,
    bn_momentum: float = 0.9,
    dense: int = 64,
    dropout: float = 0.2,
    pooling: str = "avg",
) -> Any:
    """Conv-BN-ReLU blocks. BN momentum 0.9 (not Keras' 0.99) so the moving statistics catch
    up on small datasets: with 0.99 a digits model scores 99 % in training and near chance in
    inference mode. ReLU (not swish) keeps int8 activations well-behaved."""
    from keras import layers

    if not filters or any(int(f) < 1 for f in filters):
        raise UserError(f"cnn: filters must be a non-empty list of positive ints, got {filters}")
    if pooling not in ("avg", "flatten"):
        raise UserError(f"cnn: pooling must be 'avg' or 'flatten', got {pooling!r}")
    ctx.require_image("cnn", min_size=2 ** len(filters))
    reg = ctx.regularizer()
    inputs, x = ctx.inputs()
    for block, width in enumerate(filters):
        for i in range(convs_per_block):
            x = layers.Conv2D(
                int(width),
                kernel_size,
                padding="same",
                use_bias=not batch_norm,
                kernel_regularizer=reg,
                name=f"block{block}_conv{i}",
            )(x)
            if batch_norm:
                x = layers.BatchNormalization(momentum=bn_momentum, name=f"block{block}_bn{i}")(x)
            x = layers.ReLU(name=f"block{block}_relu{i}")(x)
        x = layers.MaxPooling2D(name=f"block{block}_pool")(x)
    if pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="pool")(x)
    else:
        x = layers.Flatten(name="flatten")(x)
    if dense:
        x = layers.Dense(dense, kernel_regularizer=reg, name="dense")(x)
        x = layers.ReLU(name="dense_relu")(x)
    outputs = ctx.head(x, dropout)
    import keras

    return keras.Model(inputs, outputs, name="cnn")

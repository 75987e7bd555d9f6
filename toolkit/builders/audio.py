"""DS-CNN: keyword spotting on MFCC-like features (the MLPerf Tiny KWS reference shape)."""

from __future__ import annotations

from typing import Any

from toolkit.builders.base import BuildContext, register
from toolkit.core.errors import UserError


@register(
    "ds_cnn",
    tasks=("classification",),
    inputs="features TxF (frames x coefficients) or TxFx1, T,F >= 4 (MLPerf Tiny: 49x10)",
    description="Conv 10x4 stride 2, then depthwise-separable blocks; keyword spotting on MFCCs.",
)
def ds_cnn(
    ctx: BuildContext,
    *,
    filters: int = 64,
    blocks: int = 4,
    first_kernel: list[int] = (10, 4),  # type: ignore[assignment]
    dropout: float = 0.4,
    bn_momentum: float = 0.9,
) -> Any:
    """A 2-D input (frames, coefficients) gets a channel axis. Depthwise 3x3 + pointwise 1x1
    with BN and ReLU: all ops have int8 kernels on microcontrollers (CMSIS-NN) and LiteRT."""
    import keras
    from keras import layers

    shape = tuple(ctx.input_shape)
    if (len(shape) == 3 and shape[-1] != 1) or len(shape) not in (2, 3):
        raise UserError(
            f"ds_cnn needs features shaped (frames, coefficients) or (frames, coefficients, 1); "
            f"the dataset gives {shape}"
        )
    if min(shape[0], shape[1]) < 4:
        raise UserError(f"ds_cnn needs at least 4 frames and 4 coefficients; got {shape[:2]}")
    if int(filters) < 1 or int(blocks) < 0:
        raise UserError(f"ds_cnn: filters must be >= 1 and blocks >= 0; got {filters}, {blocks}")
    reg = ctx.regularizer()
    inputs, x = ctx.inputs()
    if len(shape) == 2:
        x = layers.Reshape((*shape, 1), name="add_channel")(x)
    kernel = (min(int(first_kernel[0]), shape[0]), min(int(first_kernel[1]), shape[1]))
    x = layers.Conv2D(
        int(filters), kernel, strides=2, padding="same", use_bias=False,
        kernel_regularizer=reg, name="conv0",
    )(x)  # fmt: skip
    x = layers.ReLU(name="relu0")(layers.BatchNormalization(momentum=bn_momentum, name="bn0")(x))
    for i in range(1, int(blocks) + 1):
        x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"dw{i}")(x)
        x = layers.BatchNormalization(momentum=bn_momentum, name=f"dw{i}_bn")(x)
        x = layers.ReLU(name=f"dw{i}_relu")(x)
        x = layers.Conv2D(int(filters), 1, use_bias=False, kernel_regularizer=reg, name=f"pw{i}")(x)
        x = layers.BatchNormalization(momentum=bn_momentum, name=f"pw{i}_bn")(x)
        x = layers.ReLU(name=f"pw{i}_relu")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, ctx.head(x, dropout), name="ds_cnn")

"""ResNet-8: the MLPerf Tiny image-classification reference (CIFAR-10, 32x32)."""

from __future__ import annotations

from typing import Any

from toolkit.builders.base import BuildContext, register
from toolkit.core.errors import UserError


@register(
    "resnet8",
    tasks=("classification", "regression"),
    inputs="image HxWxC, H,W >= 8 (MLPerf Tiny: 32x32x3)",
    description="Three residual stacks (16/32/64 filters), global pooling; MLPerf Tiny IC shape.",
)
def resnet8(
    ctx: BuildContext,
    *,
    filters: list[int] = (16, 32, 64),  # type: ignore[assignment]
    dropout: float = 0.0,
    bn_momentum: float = 0.9,
) -> Any:
    """Conv-BN-ReLU stem, then per stack two 3x3 convs with a shortcut (1x1 stride-2 conv when
    the shape changes). BN folds into the convs and Add/ReLU quantize cleanly in int8."""
    import keras
    from keras import layers

    if not filters or any(int(f) < 1 for f in filters):
        raise UserError(f"resnet8: filters must be a list of positive ints, got {filters}")
    ctx.require_image("resnet8", min_size=2 ** len(filters))
    reg = ctx.regularizer() or keras.regularizers.L2(1e-4)

    def conv(x: Any, width: int, kernel: int, stride: int, name: str) -> Any:
        return layers.Conv2D(
            width, kernel, strides=stride, padding="same", use_bias=False,
            kernel_initializer="he_normal", kernel_regularizer=reg, name=name,
        )(x)  # fmt: skip

    def bn(x: Any, name: str) -> Any:
        return layers.BatchNormalization(momentum=bn_momentum, name=name)(x)

    inputs, x = ctx.inputs()
    x = layers.ReLU(name="stem_relu")(bn(conv(x, int(filters[0]), 3, 1, "stem_conv"), "stem_bn"))
    for i, width in enumerate(int(f) for f in filters):
        stride = 1 if i == 0 else 2
        y = conv(x, width, 3, stride, f"stack{i}_conv0")
        y = layers.ReLU(name=f"stack{i}_relu0")(bn(y, f"stack{i}_bn0"))
        y = bn(conv(y, width, 3, 1, f"stack{i}_conv1"), f"stack{i}_bn1")
        if stride != 1 or x.shape[-1] != width:
            x = conv(x, width, 1, stride, f"stack{i}_shortcut")
        x = layers.ReLU(name=f"stack{i}_relu1")(layers.Add(name=f"stack{i}_add")([x, y]))
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, ctx.head(x, dropout), name="resnet8")

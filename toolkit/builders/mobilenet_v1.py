"""MobileNetV1: the depthwise-separable net of most microcontroller and VWW deployments."""

from __future__ import annotations

from typing import Any

from toolkit.builders.base import BuildContext, register
from toolkit.builders.mobilenet import (
    _backbone_input,
    _finish,
    _offline_weights,
    _weights_arg,
    set_bn_momentum,
)
from toolkit.core.errors import UserError


@register(
    "mobilenet_v1",
    tasks=("classification", "regression"),
    inputs="image HxWxC, H,W >= 32 (imagenet weights: 128..224 square, alpha 0.25..1)",
    description="keras.applications MobileNet (V1, ReLU6); alpha 0.25 is the MLPerf Tiny VWW size.",
    normalize="symmetric",
)
def mobilenet_v1(
    ctx: BuildContext,
    *,
    alpha: float = 0.25,
    depth_multiplier: int = 1,
    weights: str | None = None,
    dropout: float = 0.2,
    bn_momentum: float | None = None,
) -> Any:
    """ReLU6 and plain depthwise/pointwise convolutions: the most int8-robust MobileNet."""
    import keras

    if not 0 < float(alpha) <= 2:
        raise UserError(f"mobilenet_v1: alpha must be in (0, 2]; got {alpha}")
    ctx.require_image("mobilenet_v1", min_size=32)
    w = _weights_arg(ctx, "mobilenet_v1", weights)
    inputs, x = ctx.inputs()
    x = _backbone_input(ctx, x, w)
    with _offline_weights("mobilenet_v1"):
        backbone = keras.applications.MobileNet(
            input_shape=tuple(x.shape[1:]),
            input_tensor=x,
            alpha=alpha,
            depth_multiplier=depth_multiplier,
            include_top=False,
            weights=w,
        )
    set_bn_momentum(backbone, ctx, w, bn_momentum, "mobilenet_v1")
    return _finish(ctx, backbone, inputs, dropout, "mobilenet_v1")

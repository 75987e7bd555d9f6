"""Detectors: a FOMO-style centroid net and a single-shot anchor-free box detector.

Both run a truncated MobileNet-style backbone (ReLU6, depthwise-separable convolutions, BN that
folds) down to stride 8 and predict per grid cell, so one 96x96 image is 12x12 cells. Output
contracts (decoded by `core.detection`, NMS in the runner or bundle, never in the graph):

- `fomo`: `class_map` (G, G, C+1) softmax, channel 0 background: which cells hold an object's
  centre region. Tens of KB: fits a microcontroller.
- `box_detector`: `boxes` (G, G, 4) xyxy in input pixels (decoded in-graph by `BoxDecode`) and
  `scores` (G, G, C) sigmoid, two tensors so int8 gives each its own scale.
  `concatenated(model)` rebuilds one as a single (G*G*(4+C)) tensor, the layout that costs int8.
"""

from __future__ import annotations

from typing import Any

from toolkit.builders.base import BuildContext, register, scratch_bn_momentum
from toolkit.core.errors import UserError

STRIDE = 8
SCORE_PRIOR_BIAS = -2.2  # sigmoid(-2.2) ~ 0.1: rare positives start from a calm loss


def _conv_bn(x: Any, filters: int, stride: int, name: str, momentum: float) -> Any:
    from keras import layers

    x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=name)(x)
    x = layers.BatchNormalization(momentum=momentum, name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_relu")(x)


def _separable(x: Any, filters: int, stride: int, name: str, momentum: float) -> Any:
    from keras import layers

    x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False,
                               name=f"{name}_dw")(x)  # fmt: skip
    x = layers.BatchNormalization(momentum=momentum, name=f"{name}_dw_bn")(x)
    x = layers.ReLU(6.0, name=f"{name}_dw_relu")(x)
    x = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pw")(x)
    x = layers.BatchNormalization(momentum=momentum, name=f"{name}_pw_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_pw_relu")(x)


def _backbone(ctx: BuildContext, builder: str, widths: list[int], extra: int) -> Any:
    """Input (+ baked preprocessing) -> stride-8 features: a stem and three separable stages,
    then `extra` stride-1 blocks that widen the receptive field for larger objects."""
    ctx.require_image(builder, min_size=16)
    h, w = ctx.input_shape[0], ctx.input_shape[1]
    if h % STRIDE or w % STRIDE:
        raise UserError(f"{builder}: image height and width must be multiples of {STRIDE}; "
                        f"got {h}x{w} (set dataset.image_size)")  # fmt: skip
    if len(widths) != 4:
        raise UserError(f"{builder}: widths needs 4 values (stem, stride 2, 4, 8); got {widths}")
    momentum = scratch_bn_momentum(ctx.total_steps)
    inputs, x = ctx.inputs()
    x = _conv_bn(x, widths[0], 2, "stem", momentum)
    x = _separable(x, widths[1], 1, "block1", momentum)
    x = _separable(x, widths[2], 2, "block2", momentum)
    x = _separable(x, widths[2], 1, "block3", momentum)
    x = _separable(x, widths[3], 2, "block4", momentum)
    for i in range(extra):
        x = _separable(x, widths[3], 1, f"block{5 + i}", momentum)
    return inputs, x, momentum


@register(
    "fomo",
    tasks=("detection",),
    inputs="image HxWxC, H,W multiples of 8 (>= 16)",
    description="FOMO-style centroid detector: stride-8 class map (C+1 softmax), MCU-sized.",
    normalize="rescale",
)
def fomo(ctx: BuildContext, *, widths: list[int] | None = None, extra: int = 1) -> Any:
    """Truncated MobileNet-style backbone + 1x1 head: every cell says background or a class."""
    import keras
    from keras import layers

    inputs, x, _ = _backbone(ctx, "fomo", list(widths or [8, 16, 24, 32]), extra)
    x = layers.Conv2D(32, 1, activation="relu", name="head")(x)
    out = layers.Conv2D(ctx.num_outputs + 1, 1, activation="softmax", name="class_map")(x)
    return keras.Model(inputs, out, name="fomo")


@register(
    "box_detector",
    tasks=("detection",),
    inputs="image HxWxC, H,W multiples of 8 (>= 16)",
    description="Anchor-free single-shot detector: per-cell boxes (pixels) + class scores.",
    normalize="rescale",
)
def box_detector(
    ctx: BuildContext, *, widths: list[int] | None = None, extra: int = 2, head: int = 64
) -> Any:
    """Stride-8 backbone, one shared separable block, then a score head (sigmoid, prior-biased)
    and a distance head (ReLU, in cells) decoded to pixel boxes in the graph."""
    import keras
    from keras import layers

    from toolkit.core.layers import BoxDecode

    inputs, x, momentum = _backbone(ctx, "box_detector", list(widths or [16, 32, 48, 64]), extra)
    x = _separable(x, head, 1, "neck", momentum)
    cls = _separable(x, head, 1, "cls", momentum)
    prior = keras.initializers.Constant(SCORE_PRIOR_BIAS)
    scores = layers.Conv2D(ctx.num_outputs, 1, activation="sigmoid", bias_initializer=prior,
                           name="scores")(cls)  # fmt: skip
    reg = _separable(x, head, 1, "reg", momentum)
    distances = layers.Conv2D(4, 1, activation="relu", name="distances")(reg)
    boxes = BoxDecode(STRIDE, name="boxes")(distances)
    return keras.Model(inputs, [boxes, scores], name="box_detector")


def concatenated(model: Any) -> Any:
    """The same detector (same weights) with boxes and scores flattened into one output,
    in the flat order `core.detection` decodes: what a one-tensor export looks like."""
    import keras
    from keras import layers

    boxes, scores = model.get_layer("boxes").output, model.get_layer("scores").output
    flat = [layers.Flatten(name=f"{n}_flat")(t) for n, t in (("b", boxes), ("s", scores))]
    out = layers.Concatenate(name="detections")(flat)
    return keras.Model(model.inputs, out, name=f"{model.name}_concatenated")

"""MobileNetV2 / V3-Small from keras.applications, with offline-only pretrained weights.

Nothing may be downloaded at run time, so `weights: imagenet` works only when Keras' cache
(~/.keras/models or $KERAS_HOME/models) already holds the file; otherwise the user gets a
one-line error naming the file to put there. `weights: PATH` loads a local weights file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from toolkit.builders.base import BuildContext, register, scratch_bn_momentum
from toolkit.core.errors import UserError

_IMAGENET_SIZES = (96, 128, 160, 192, 224)


@contextlib.contextmanager
def _offline_weights(builder: str) -> Iterator[None]:
    """Let keras.applications read its weight cache but never reach the network."""
    from keras.src.backend import config
    from keras.src.utils import file_utils

    original = file_utils.get_file

    def cached_only(fname: str | None = None, origin: str | None = None, **kwargs: Any) -> str:
        cache_dir = kwargs.get("cache_dir") or config.keras_home()
        name = fname or os.path.basename(origin or "")
        path = Path(os.path.expanduser(cache_dir)) / kwargs.get("cache_subdir", "datasets") / name
        if not path.is_file():
            raise UserError(
                f"{builder}: ImageNet weights are not in the local Keras cache ({path}) and "
                "nothing can be downloaded; copy that file there, or use weights: none or "
                "weights: PATH/TO/FILE.h5"
            )
        return original(fname=fname, origin=origin, **kwargs)

    file_utils.get_file = cached_only
    try:
        yield
    finally:
        file_utils.get_file = original


def _weights_arg(ctx: BuildContext, builder: str, weights: str | None) -> str | None:
    if weights in (None, "none", "None", ""):
        return None
    if weights == "imagenet":
        h, w, _ = ctx.input_shape
        if h != w or h not in _IMAGENET_SIZES:
            raise UserError(
                f"{builder}: ImageNet weights exist for square inputs of "
                f"{', '.join(map(str, _IMAGENET_SIZES))} px; got {h}x{w} "
                "(set dataset.image_size)"
            )
        return "imagenet"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise UserError(f"{builder}: weights file not found: {weights}")
    return str(path)


def _backbone_input(ctx: BuildContext, x: Any, weights: str | None) -> Any:
    """Pretrained weights expect 3 channels: tile a grayscale image instead of failing."""
    from keras import layers

    if weights is not None and ctx.input_shape[-1] == 1:
        return layers.Concatenate(name="gray_to_rgb")([x, x, x])
    if weights is not None and ctx.input_shape[-1] != 3:
        raise UserError(f"pretrained weights need 1 or 3 input channels; got {ctx.input_shape[-1]}")
    return x


def set_bn_momentum(
    backbone: Any, ctx: BuildContext, weights: str | None, bn_momentum: float | None, name: str
) -> None:
    """keras.applications builds BatchNorm with momentum 0.999, right for ImageNet-length runs
    and pretrained weights, fatal from scratch on a short run (see `scratch_bn_momentum`).
    `bn_momentum: null` keeps a pretrained backbone's and picks one for the run otherwise."""
    from keras import layers

    if bn_momentum is None:
        if weights is not None:
            return
        bn_momentum = scratch_bn_momentum(ctx.total_steps)
    if not 0.0 < float(bn_momentum) < 1.0:
        raise UserError(f"{name}: bn_momentum must be between 0 and 1; got {bn_momentum}")
    for layer in backbone.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = float(bn_momentum)


def _finish(ctx: BuildContext, backbone: Any, inputs: Any, dropout: float, name: str) -> Any:
    import keras
    from keras import layers

    x = layers.GlobalAveragePooling2D(name="pool")(backbone.output)
    outputs = ctx.head(x, dropout)
    return keras.Model(inputs, outputs, name=name)


@register(
    "mobilenet_v2",
    tasks=("classification", "regression"),
    inputs="image HxWxC, H,W >= 32 (imagenet weights: 96..224 square)",
    description="keras.applications MobileNetV2 (ReLU6, int8-friendly); alpha scales width.",
    normalize="symmetric",
)
def mobilenet_v2(
    ctx: BuildContext,
    *,
    alpha: float = 0.35,
    weights: str | None = None,
    dropout: float = 0.2,
    bn_momentum: float | None = None,
) -> Any:
    """Inputs are mapped to [-1, 1] by the baked-in preprocessing (what the weights expect).
    bn_momentum null: chosen from the run's steps from scratch, kept with pretrained weights."""
    import keras

    ctx.require_image("mobilenet_v2", min_size=32)
    w = _weights_arg(ctx, "mobilenet_v2", weights)
    inputs, x = ctx.inputs()
    x = _backbone_input(ctx, x, w)
    with _offline_weights("mobilenet_v2"):
        backbone = keras.applications.MobileNetV2(
            input_shape=tuple(x.shape[1:]), input_tensor=x, alpha=alpha, include_top=False,
            weights=w,
        )  # fmt: skip
    set_bn_momentum(backbone, ctx, w, bn_momentum, "mobilenet_v2")
    return _finish(ctx, backbone, inputs, dropout, "mobilenet_v2")


def _mobilenet_v3(
    ctx: BuildContext, name: str, app: str, alpha: float, minimalistic: bool,
    weights: str | None, dropout: float, bn_momentum: float | None,
) -> Any:  # fmt: skip
    """Both V3 sizes: our preprocessing replaces keras.applications' own Rescaling layer."""
    import keras

    ctx.require_image(name, min_size=32)
    w = _weights_arg(ctx, name, weights)
    inputs, x = ctx.inputs()
    x = _backbone_input(ctx, x, w)
    with _offline_weights(name):
        backbone = getattr(keras.applications, app)(
            input_shape=tuple(x.shape[1:]),
            input_tensor=x,
            alpha=alpha,
            minimalistic=minimalistic,
            include_top=False,
            weights=w,
            include_preprocessing=False,
        )
    set_bn_momentum(backbone, ctx, w, bn_momentum, name)
    return _finish(ctx, backbone, inputs, dropout, name)


@register(
    "mobilenet_v3_small",
    tasks=("classification", "regression"),
    inputs="image HxWxC, H,W >= 32 (imagenet weights: 96..224 square)",
    description="keras.applications MobileNetV3-Small; minimalistic=True drops hard-swish and SE.",
    normalize="symmetric",
)
def mobilenet_v3_small(
    ctx: BuildContext,
    *,
    alpha: float = 1.0,
    minimalistic: bool = True,
    weights: str | None = None,
    dropout: float = 0.2,
    bn_momentum: float | None = None,
) -> Any:
    """Minimalistic by default: hard-swish and squeeze-excite cost int8 accuracy on devices."""
    name, app = "mobilenet_v3_small", "MobileNetV3Small"
    return _mobilenet_v3(ctx, name, app, alpha, minimalistic, weights, dropout, bn_momentum)


@register(
    "mobilenet_v3_large",
    tasks=("classification", "regression"),
    inputs="image HxWxC, H,W >= 32 (imagenet weights: 96..224 square)",
    description="keras.applications MobileNetV3-Large; minimalistic=True drops hard-swish and SE.",
    normalize="symmetric",
)
def mobilenet_v3_large(
    ctx: BuildContext,
    *,
    alpha: float = 1.0,
    minimalistic: bool = True,
    weights: str | None = None,
    dropout: float = 0.2,
    bn_momentum: float | None = None,
) -> Any:
    """The larger V3 for phones; minimalistic by default for the same int8 reasons as Small."""
    name, app = "mobilenet_v3_large", "MobileNetV3Large"
    return _mobilenet_v3(ctx, name, app, alpha, minimalistic, weights, dropout, bn_momentum)

"""Time-series builders (sensor windows, MFCC frames): 1-D convs, LSTM, GRU.

Inputs are (steps, channels); a 1-D (steps,) input gets a channel axis. The LSTM is toolkit's
`FusedLSTM`, which converts to TFLite's fused UNIDIRECTIONAL_SEQUENCE_LSTM kernel; TFLite has
no fused GRU, so the GRU is unrolled into plain int8-quantizable ops (fine for short windows).
"""

from __future__ import annotations

from typing import Any

from toolkit.builders.base import BuildContext, register
from toolkit.core.errors import UserError

_INPUTS = "sequence TxC (steps x channels) or T, T >= 2"


def _sequence_input(ctx: BuildContext, builder: str) -> tuple[Any, Any, tuple[int, int]]:
    """(model input, preprocessed tensor shaped (T, C), (T, C))."""
    from keras import layers

    shape = tuple(ctx.input_shape)
    if len(shape) not in (1, 2):
        raise UserError(
            f"builder {builder!r} needs sequence input (steps, channels); the dataset gives "
            f"shape {shape} (image data: use cnn, resnet8 or a mobilenet)"
        )
    if shape[0] < 2:
        raise UserError(f"builder {builder!r} needs at least 2 steps; got {shape[0]}")
    inputs, x = ctx.inputs()
    if len(shape) == 1:
        x = layers.Reshape((shape[0], 1), name="add_channel")(x)
        shape = (shape[0], 1)
    return inputs, x, (int(shape[0]), int(shape[1]))


def _positive(builder: str, **values: Any) -> None:
    for key, value in values.items():
        items = value if isinstance(value, (list, tuple)) else [value]
        if not items or any(int(v) < 1 for v in items):
            raise UserError(f"{builder}: {key} must be positive int(s); got {value!r}")


@register(
    "conv1d",
    tasks=("classification", "regression"),
    inputs=_INPUTS,
    description="Conv1D-BN-ReLU blocks with max-pooling, global average pooling, dense head.",
)
def conv1d(
    ctx: BuildContext,
    *,
    filters: list[int] = (32, 64),  # type: ignore[assignment]
    kernel_size: int = 5,
    dropout: float = 0.2,
    bn_momentum: float = 0.9,
) -> Any:
    """The cheapest sequence model on devices: every op is an int8 conv or pool."""
    import keras
    from keras import layers

    _positive("conv1d", filters=filters, kernel_size=kernel_size)
    inputs, x, (steps, _) = _sequence_input(ctx, "conv1d")
    reg = ctx.regularizer()
    for i, width in enumerate(filters):
        x = layers.Conv1D(
            int(width), int(kernel_size), padding="same", use_bias=False,
            kernel_regularizer=reg, name=f"conv{i}",
        )(x)  # fmt: skip
        x = layers.BatchNormalization(momentum=bn_momentum, name=f"bn{i}")(x)
        x = layers.ReLU(name=f"relu{i}")(x)
        if steps >= 4:
            x = layers.MaxPooling1D(2, name=f"pool{i}")(x)
            steps //= 2
    x = layers.GlobalAveragePooling1D(name="gap")(x)
    return keras.Model(inputs, ctx.head(x, dropout), name="conv1d")


@register(
    "lstm",
    tasks=("classification", "regression"),
    inputs=_INPUTS,
    description="Stacked LSTM (converts to TFLite's fused UNIDIRECTIONAL_SEQUENCE_LSTM op).",
)
def lstm(
    ctx: BuildContext,
    *,
    units: list[int] = (32,),
    dropout: float = 0.2,  # type: ignore[assignment]
) -> Any:
    """Last layer returns its final step; earlier layers feed whole sequences on."""
    import keras

    from toolkit.core.layers import FusedLSTM

    _positive("lstm", units=units)
    inputs, x, _ = _sequence_input(ctx, "lstm")
    for i, width in enumerate(units):
        x = FusedLSTM(int(width), return_sequences=i < len(units) - 1, name=f"lstm{i}")(x)
    return keras.Model(inputs, ctx.head(x, dropout), name="lstm")


@register(
    "gru",
    tasks=("classification", "regression"),
    inputs=_INPUTS + " (unrolled: keep T <= ~200)",
    description="Stacked GRU, unrolled so TFLite int8 gets plain ops (no fused GRU kernel exists).",
)
def gru(
    ctx: BuildContext,
    *,
    units: list[int] = (32,),
    dropout: float = 0.2,  # type: ignore[assignment]
) -> Any:
    """Unrolled: a WHILE loop would not quantize to int8; long sequences make big graphs."""
    import keras
    from keras import layers

    _positive("gru", units=units)
    inputs, x, (steps, _) = _sequence_input(ctx, "gru")
    if steps > 400:
        raise UserError(f"gru: {steps} steps is too long to unroll; use lstm or conv1d")
    for i, width in enumerate(units):
        x = layers.GRU(
            int(width), return_sequences=i < len(units) - 1, unroll=True, name=f"gru{i}"
        )(x)
    return keras.Model(inputs, ctx.head(x, dropout), name="gru")

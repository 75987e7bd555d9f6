"""Builders are plain functions registered by name (timm's idea): `keras-edge builders` prints them.

Every builder takes a `BuildContext` (input shape, task, output size, the preprocessing layers
to put first, regularization) plus its own keyword arguments, and returns a Keras 3 functional
model whose first layers are the baked-in preprocessing. Defaults are int8-friendly: ReLU/ReLU6,
BatchNorm that folds into convolutions, no exotic ops.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from toolkit.core.errors import UserError


@dataclass(frozen=True)
class BuilderInfo:
    name: str
    fn: Callable[..., Any]
    tasks: tuple[str, ...]
    inputs: str  # e.g. "image HxWxC (H,W >= 8)"
    description: str
    normalize: str = "standardize"  # the preprocessing `normalize: auto` picks for it

    def params(self) -> dict[str, Any]:
        """The builder's own keyword arguments and their defaults."""
        sig = inspect.signature(self.fn)
        return {
            name: p.default
            for name, p in sig.parameters.items()
            if name != "ctx" and p.kind is p.KEYWORD_ONLY
        }


BUILDERS: dict[str, BuilderInfo] = {}


def register(
    name: str,
    *,
    tasks: tuple[str, ...],
    inputs: str,
    description: str,
    normalize: str = "standardize",
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        BUILDERS[name] = BuilderInfo(name, fn, tasks, inputs, description, normalize)
        return fn

    return wrap


@dataclass
class BuildContext:
    """What the data says about the model to build."""

    input_shape: tuple[int, ...]
    task: str  # classification | regression
    num_outputs: int  # classes, or regression targets
    preprocess: list[Any] = field(default_factory=list)  # Keras layers applied first, in order
    l1: float = 0.0
    l2: float = 0.0
    dropout: float | None = None  # recipe override of the builder's default
    # regression: (mean, std) of the training targets. The head predicts standardized values and
    # a final Rescaling maps them back, so the model outputs real units yet trains well-scaled.
    target_scale: tuple[float, float] | None = None
    # The run's optimizer steps (steps per epoch x epochs), when a training run builds the
    # model: BatchNorm momentum from scratch depends on it (`scratch_bn_momentum`).
    total_steps: int | None = None

    def regularizer(self) -> Any:
        import keras

        if not (self.l1 or self.l2):
            return None
        return keras.regularizers.L1L2(l1=self.l1, l2=self.l2)

    def inputs(self) -> tuple[Any, Any]:
        """(model input, tensor after the baked-in preprocessing)."""
        import keras

        inputs = keras.Input(shape=self.input_shape, name="input")
        x = inputs
        for layer in self.preprocess:
            x = layer(x)
        return inputs, x

    def head(self, x: Any, default_dropout: float) -> Any:
        """Dropout + the output layer that suits the task (softmax / sigmoid / linear)."""
        from keras import layers

        rate = default_dropout if self.dropout is None else self.dropout
        if rate:
            x = layers.Dropout(rate, name="head_dropout")(x)
        if self.task == "regression":
            units, activation = self.num_outputs, None
        elif self.num_outputs == 2 and self._binary:
            units, activation = 1, "sigmoid"
        else:
            units, activation = self.num_outputs, "softmax"
        name = "output" if self.target_scale is None or activation else "dense_output"
        x = layers.Dense(
            units, activation=activation, kernel_regularizer=self.regularizer(), name=name
        )(x)
        if self.task == "regression" and self.target_scale is not None:
            mean, std = self.target_scale
            x = layers.Rescaling(std, offset=mean, name="output")(x)
        return x

    _binary: bool = False  # set by train.py when the loss is binary cross-entropy

    def require_image(self, builder: str, min_size: int = 8) -> None:
        shape = self.input_shape
        if len(shape) != 3:
            raise UserError(
                f"builder {builder!r} needs image input (height, width, channels); "
                f"the dataset gives shape {tuple(shape)}"
            )
        if min(shape[0], shape[1]) < min_size:
            raise UserError(
                f"builder {builder!r} needs images of at least {min_size}x{min_size}; "
                f"got {shape[0]}x{shape[1]} (set dataset.image_size in the recipe)"
            )


# BatchNorm momenta a from-scratch model may get, largest first: Keras' defaults and ours.
BN_MOMENTA = (0.999, 0.99, 0.9)
# The moving averages' window, 1 / (1 - momentum) steps, may be at most this share of a run.
BN_WINDOW_SHARE = 0.02


def scratch_bn_momentum(total_steps: int | None) -> float:
    """The largest of 0.999 / 0.99 / 0.9 whose averaging window fits 2 % of the run's steps.

    Inference uses the moving statistics, which trail the weights by about 1 / (1 - m) steps:
    keras.applications' 0.999 averages over ~1,000 steps, so a 1,250-step run from scratch
    ends with statistics of weights long gone and predicts one class. 1,250 steps -> 0.9,
    5,000 -> 0.99, 50,000 -> 0.999; unknown -> 0.9 (what the cnn/resnet builders use).
    """
    if not total_steps:
        return BN_MOMENTA[-1]
    for momentum in BN_MOMENTA:
        if 1.0 / (1.0 - momentum) <= BN_WINDOW_SHARE * total_steps:
            return momentum
    return BN_MOMENTA[-1]

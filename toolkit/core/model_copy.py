"""Copying a Keras model's weights into a clone, state included.

`clone.set_weights(model.get_weights())` is not enough: an adapted `Normalization` layer keeps
its mean and variance in variables that only `finalize_state()` turns into what `call` uses
(Keras does it on load, not on `set_weights`). A clone of a model with standardization baked
in then computed with mean 0, variance 1: the LSTM and transformer of bench/ptq.py fell to
chance accuracy under bias correction and equalization.
"""

from __future__ import annotations

from typing import Any


def copy_weights(source: Any, clone: Any) -> Any:
    """Set `clone`'s weights from `source` (same architecture) and finalize each layer's
    state, nested models included; returns `clone`."""
    clone.set_weights(source.get_weights())
    stack = [clone]
    while stack:
        for layer in getattr(stack.pop(), "layers", []):
            if getattr(layer, "layers", None):
                stack.append(layer)
            elif hasattr(layer, "finalize_state") and getattr(layer, "built", False):
                layer.finalize_state()
    return clone


def clone_with_weights(model: Any) -> Any:
    """`keras.models.clone_model` with the weights and the layers' state of `model`."""
    import keras

    return copy_weights(model, keras.models.clone_model(model))

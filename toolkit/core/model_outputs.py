"""What a Keras model's output looks like: its shape and final activation.

Task inference for a model that came without a recipe reads these (softmax means classes, an
output shaped like the input means a reconstruction). Works on any loaded Keras 3 model without
importing TensorFlow beyond what loading it already did.
"""

from __future__ import annotations

from typing import Any


def output_shape(model: Any) -> tuple[int, ...]:
    """The per-sample shape of the (first) output, batch dimension removed."""
    shape = tuple(model.outputs[0].shape)[1:]
    return tuple(int(d) if d is not None else -1 for d in shape)


def final_activation(model: Any) -> str | None:
    """'softmax' / 'sigmoid' / 'linear' / ... of the layer that produces the output, following
    layers that only reshape or rescale; None when it cannot be told (e.g. a wrapped graph)."""
    try:
        layer = model.outputs[0]._keras_history.operation
    except (AttributeError, IndexError):
        return None
    for _ in range(8):  # Activation/Softmax layers, or a Dense with its own activation
        name = type(layer).__name__
        if name == "Softmax":
            return "softmax"
        activation = getattr(layer, "activation", None)
        if activation is not None:
            return getattr(activation, "__name__", str(activation))
        if name not in ("Reshape", "Flatten", "Rescaling", "Identity"):
            return None
        try:
            layer = layer._inbound_nodes[0].input_tensors[0]._keras_history.operation
        except (AttributeError, IndexError):
            return None
    return None

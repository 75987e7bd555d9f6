"""The traced function a `.tflite` is converted from, and its `serving_default` SignatureDef.

`TFLiteConverter.from_concrete_functions([f], trackable_obj)` writes a SignatureDef only when
it is given a trackable object (it then converts through a SavedModel); without one the file has
none, and signature runners (LiteRT's `get_signature_runner`, Android's `runSignature`) and
ai-edge-quantizer refuse it. Tracking the Keras 3 model itself leaves its variables unfrozen
(NaN outputs on TF 2.21); a plain `tf.Module` holding the underlying tf.Variables freezes them.
The signature carries the Keras names: the input layer's name in, the output layers' names out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from toolkit.convert.calibration import default_input_shape
from toolkit.core.errors import UserError

SIGNATURE_KEY = "serving_default"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


def _clean(name: Any, fallback: str) -> str:
    """A name TF accepts as a placeholder / signature key (no spaces, slashes or colons)."""
    text = _UNSAFE.sub("_", str(name or "")).strip("_.-")
    return text or fallback


def _layer_name(tensor: Any) -> str | None:
    history = getattr(tensor, "_keras_history", None)
    operation = history[0] if history else None
    return getattr(operation, "name", None)


def input_names(model: Any) -> list[str]:
    """The Keras input names ("input" for toolkit builders): the InputLayer's name, which a
    saved .keras file keeps, rather than an unnamed tensor's session-local "keras_tensor_7"."""
    names = []
    for i, tensor in enumerate(model.inputs):
        name = getattr(tensor, "name", None)
        if not name or str(name).startswith("keras_tensor"):
            name = _layer_name(tensor) or name
        names.append(_clean(name, f"input_{i}" if i else "input"))
    return names


def output_names(model: Any) -> list[str]:
    """The Keras output names (Functional `output_names`; the producing layers otherwise)."""
    names = list(getattr(model, "output_names", None) or [])
    if len(names) != len(model.outputs):
        names = [_layer_name(t) or f"output_{i}" for i, t in enumerate(model.outputs)]
    cleaned = [_clean(n, f"output_{i}") for i, n in enumerate(names)]
    if len(set(cleaned)) != len(cleaned):  # two heads named alike: keep them apart
        cleaned = [f"{n}_{i}" for i, n in enumerate(cleaned)]
    return cleaned


def input_signature(model: Any, given: Sequence[Any] | None) -> list[Any]:
    """The TensorSpecs to trace with: the caller's, named after the Keras inputs when unnamed;
    else the model's input at batch 1 (what edge delegates prefer)."""
    import tensorflow as tf

    names = input_names(model)
    if given is None:
        shape = default_input_shape(model, batch=1)
        return [tf.TensorSpec(shape, tf.float32, name=names[0])]
    specs = list(given)
    if len(specs) != len(model.inputs) or not all(isinstance(s, tf.TensorSpec) for s in specs):
        raise UserError(
            f"input_signature must be a list of {len(model.inputs)} tf.TensorSpec "
            f"(one per model input); got {given!r}"
        )
    named = zip(specs, names, strict=True)
    return [s if s.name else tf.TensorSpec(s.shape, s.dtype, name=n) for s, n in named]


def concrete_function(model: Any, signature: list[Any]) -> Any:
    """`model(x)` traced at `signature`, returning {keras output name: tensor} so the
    SignatureDef's outputs are named like the model's (not "output_0")."""
    import tensorflow as tf

    names = output_names(model)

    @tf.function(input_signature=signature)
    def serve(*args: Any) -> dict[str, Any]:
        result = model(args[0] if len(args) == 1 else list(args), training=False)
        flat = tf.nest.flatten(result)
        if len(flat) != len(names):
            return {f"output_{i}": t for i, t in enumerate(flat)}
        return dict(zip(names, flat, strict=True))

    return serve.get_concrete_function()


def variables_holder(model: Any) -> Any:
    """A `tf.Module` tracking the model's tf.Variables: the converter's trackable object.

    With it the converter writes the SignatureDef and freezes the variables (and keeps the
    `api_implements` functions it fuses, e.g. toolkit's FusedLSTM, instead of inlining them).
    """
    import tensorflow as tf

    holder = tf.Module()
    holder.tracked = [getattr(v, "value", v) for v in model.variables]
    return holder


def signature_keys(content: bytes) -> list[str]:
    """The SignatureDef keys of a `.tflite` flatbuffer (no interpreter needed)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(bytearray(content), 0)
    keys = []
    for i in range(model.SignatureDefsLength()):
        key = model.SignatureDefs(i).SignatureKey()
        keys.append(key.decode() if isinstance(key, bytes) else str(key))
    return keys

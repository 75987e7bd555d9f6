"""Keras 3 <-> tf_keras (Keras 2) model bridge, so tfmot can prune, cluster and quantize.

tfmot only wraps tf_keras layers. The bridge rebuilds a Keras 3 functional (or sequential)
model as tf_keras from its config and copies the weights, and rebuilds a plain (stripped)
tf_keras model back as Keras 3 the same way. Layer configs are translated generically: keys
are kept only when the target layer's constructor accepts them, so a new Keras-only key never
breaks the rebuild. Adapted Normalization layers travel as constant mean/variance (their
adapt state is an eager tensor that clones and `set_weights` would leave stale). Every
conversion is checked: outputs on a random batch must match, or the bridge refuses.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from toolkit.core.errors import UserError

# Base-layer keywords that tf_keras and Keras 3 accept through **kwargs.
_BASE_KEYS = {"name", "dtype", "trainable", "input_shape", "batch_input_shape", "batch_size"}
_MODEL_CLASSES = {"Functional", "Model", "Sequential"}
_OBJECT_MODULES = ("initializers", "regularizers", "constraints")
TOLERANCE = 1e-5


def _accepted(cls: type) -> set[str] | None:
    """Constructor keywords of a class through its bases."""
    from toolkit.core.layer_config import constructor_keywords

    return set(_BASE_KEYS) | constructor_keywords(cls)


def _lib(target: str) -> Any:
    if target == "tf_keras":
        import tf_keras

        return tf_keras
    import keras

    return keras


def _object(value: dict[str, Any], lib: Any) -> Any:
    """A serialized nested object (initializer, regularizer, dtype policy) for the target."""
    name = value["class_name"]
    if name in ("DTypePolicy", "FloatDTypePolicy", "Policy"):
        return value.get("config", {}).get("name", "float32")
    config = value.get("config", {})
    for module in _OBJECT_MODULES:
        cls = getattr(getattr(lib, module), name, None)
        if isinstance(cls, type):
            keep = _accepted(cls) or set(config)
            return {"class_name": name, "config": {k: v for k, v in config.items() if k in keep}}
    return {"class_name": name, "config": _values(config, lib)}


def _values(config: dict[str, Any], lib: Any) -> dict[str, Any]:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and "class_name" in value and "config" in value:
            value = _object(value, lib)
        out[key] = value
    return out


def _to_legacy_nodes(nodes: list[Any], layer: str = "?", class_name: str = "?") -> list[Any]:
    """Keras 3 node dicts (`args` of `__keras_tensor__` with keras_history) -> tf_keras lists."""
    legacy = []
    for node in nodes:
        if isinstance(node, list):  # already legacy
            legacy.append(node)
            continue
        refs: list[list[Any]] = []

        def collect(obj: Any, refs: list[list[Any]] = refs) -> None:
            if isinstance(obj, dict) and obj.get("class_name") == "__keras_tensor__":
                layer, node_index, tensor_index = obj["config"]["keras_history"]
                refs.append([layer, node_index, tensor_index, {}])
            elif isinstance(obj, (list, tuple)):
                for item in obj:
                    collect(item)

        args = node.get("args", [])
        if len(args) > 1:
            raise UserError(
                f"layer {layer!r} of class {class_name} is called with {len(args)} tensor "
                "arguments; the optimize bridge maps single-argument calls only"
            )
        collect(args)
        kwargs = {k: v for k, v in node.get("kwargs", {}).items() if v is not None}
        if any(isinstance(v, (dict, list)) for v in kwargs.values()):
            raise UserError(f"a layer is called with tensor keyword arguments {sorted(kwargs)}")
        if refs and kwargs:
            refs[0][3] = kwargs
        legacy.append(refs)
    return legacy


def _io(value: Any, target: str) -> list[Any]:
    """Input/output layer lists; Keras 3 wants a single one unwrapped (else it warns on call)."""
    refs = [value] if value and isinstance(value[0], str) else list(value)
    return refs[0] if target == "keras" and len(refs) == 1 else refs


def _layer_config(layer_cfg: dict[str, Any], lib: Any, target: str) -> dict[str, Any]:
    name = layer_cfg.get("name") or layer_cfg["config"].get("name")
    class_name = layer_cfg["class_name"]
    if class_name in _MODEL_CLASSES:
        inner = translate_config(layer_cfg["config"], target)
        return {"class_name": "Functional", "config": inner, "name": name,
                "inbound_nodes": _nodes(layer_cfg)}  # fmt: skip
    cls = getattr(lib.layers, class_name, None)
    if not isinstance(cls, type):
        where = "tf_keras (Keras 2)" if target == "tf_keras" else "Keras 3"
        raise UserError(
            f"layer {name!r} of class {class_name} has no {where} equivalent: the optimize bridge "
            "knows only built-in Keras layers; replace or remove it to prune/cluster/QAT"
        )
    config = dict(layer_cfg["config"])
    if class_name == "InputLayer":
        shape = config.pop("batch_shape", None) or config.pop("batch_input_shape", None)
        config["batch_shape" if target == "keras" else "batch_input_shape"] = shape
    config = _values(config, lib)
    keep = _accepted(cls)
    config = {k: v for k, v in config.items() if k in keep}
    if class_name == "BatchNormalization" and target == "tf_keras":
        # Keras 3 normalizes with tf.nn.batch_normalization; tf_keras' fused kernel rounds
        # differently (~1e-5 off after MobileNetV2's 50 BN layers). Unfused, outputs are equal.
        config["fused"] = False
    return {"class_name": class_name, "config": config, "name": name,
            "inbound_nodes": _nodes(layer_cfg)}  # fmt: skip


def _nodes(layer_cfg: dict[str, Any]) -> list[Any]:
    # Keras 3 reads the legacy list format itself, so both directions use it.
    name = layer_cfg.get("name") or layer_cfg["config"].get("name")
    return _to_legacy_nodes(layer_cfg.get("inbound_nodes", []), name, layer_cfg["class_name"])


def translate_config(config: dict[str, Any], target: str) -> dict[str, Any]:
    """A functional model config for `target` ('tf_keras' or 'keras')."""
    lib = _lib(target)
    return {
        "name": config.get("name", "model"),
        "layers": [_layer_config(layer, lib, target) for layer in config["layers"]],
        "input_layers": _io(config["input_layers"], target),
        "output_layers": _io(config["output_layers"], target),
    }


def _as_functional(model: Any) -> Any:
    """Sequential models become functional over the same layer objects (same names)."""
    if type(model).__name__ != "Sequential":
        return model
    if not model.inputs:
        raise UserError("the Sequential model is not built; give it an Input first")
    import keras

    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, model.outputs, name=model.name)


def _freeze_normalization(config: dict[str, Any], model: Any) -> None:
    """Adapted Normalization layers: put their mean/variance into the config as constants."""
    for layer_cfg in config["layers"]:
        if layer_cfg["class_name"] != "Normalization":
            continue
        cfg = layer_cfg["config"]
        if cfg.get("mean") is not None:
            continue
        layer = model.get_layer(layer_cfg["name"])
        mean = np.asarray(layer.adapt_mean if hasattr(layer, "adapt_mean") else layer.mean)
        var = np.asarray(
            layer.adapt_variance if hasattr(layer, "adapt_variance") else layer.variance
        )
        cfg["mean"], cfg["variance"] = mean.reshape(-1).tolist(), var.reshape(-1).tolist()


def _copy_weights(source: Any, dest: Any) -> None:
    by_name = {layer.name: layer for layer in dest.layers}
    for layer in source.layers:
        weights = layer.get_weights()
        if not weights or layer.name not in by_name:
            continue
        target = by_name[layer.name]
        if type(layer).__name__ == "Normalization" and not target.get_weights():
            continue  # frozen into constants by _freeze_normalization
        if len(target.get_weights()) != len(weights):
            raise UserError(
                f"layer {layer.name!r} ({type(layer).__name__}) has {len(weights)} weights but "
                f"its rebuilt twin has {len(target.get_weights())}; the bridge cannot map it"
            )
        target.set_weights(weights)


def max_abs_diff(a: Any, b: Any, samples: int = 4, seed: int = 0) -> float:
    """Largest output difference of two single-input models on a random batch (inference mode)."""
    shape = tuple(int(d) for d in a.inputs[0].shape[1:])
    x = np.random.default_rng(seed).uniform(0, 1, (samples, *shape)).astype("float32")
    ya = np.asarray(a(x, training=False))
    yb = np.asarray(b(x, training=False))
    return float(np.max(np.abs(ya - yb)))


def _rebuild(model: Any, target: str, check: bool) -> Any:
    lib = _lib(target)
    config = model.get_config()
    if "layers" not in config or "input_layers" not in config:
        raise UserError(
            f"model {model.name!r} ({type(model).__name__}) is not functional or sequential; "
            "the optimize bridge needs a model built from keras.Input"
        )
    _freeze_normalization(config, model)
    translated = translate_config(config, target)
    try:
        rebuilt = lib.Model.from_config(translated)
    except UserError:
        raise
    except Exception as exc:
        reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise UserError(f"the optimize bridge could not rebuild {model.name!r}: {reason}") from exc
    _copy_weights(model, rebuilt)
    if check:
        diff = max_abs_diff(model, rebuilt)
        if not diff <= TOLERANCE:
            raise UserError(
                f"the bridged model's outputs differ from {model.name!r} (max abs diff {diff:.3g})"
            )
    return rebuilt


def to_tf_keras(model: Any, *, check: bool = True) -> Any:
    """A tf_keras copy of a Keras 3 functional/sequential model (weights copied, outputs equal)."""
    return _rebuild(_as_functional(model), "tf_keras", check)


def to_keras(model: Any, *, check: bool = True) -> Any:
    """A Keras 3 copy of a plain tf_keras model (no tfmot wrappers: strip them first)."""
    wrapped = [layer.name for layer in model.layers if type(layer).__module__.startswith(
        "tensorflow_model_optimization")]  # fmt: skip
    if wrapped:
        raise UserError(
            f"layer {wrapped[0]!r} is still a tfmot wrapper; strip the model before converting back"
        )
    return _rebuild(model, "keras", check)

"""Quantization-aware training with tfmot, optionally preserving sparsity or clusters.

Only layers tfmot's 8-bit registry supports are annotated (plus BatchNorm after a
Conv/Dense, which tfmot folds only when annotated); baked-in preprocessing
(Normalization, Rescaling) stays float in front, and the TFLite converter calibrates that
edge from the representative data. The result keeps tfmot's quantize wrappers, so it stays
a tf_keras model: it is saved as a SavedModel that `toolkit.core.modelio` loads and
`toolkit.convert` turns into TFLite int8 and ONNX QDQ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from toolkit.core.errors import UserError

FOLDS_INTO = ("Conv2D", "DepthwiseConv2D", "Dense")  # tfmot's Conv/Dense + BatchNorm transforms


def apply(model: Any, preserve: str = "none") -> Any:
    """Annotate every supported layer and apply QAT (`preserve`: none | sparsity | clusters)."""
    import tensorflow_model_optimization as tfmot
    import tf_keras
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry as registry,
    )

    quant = tfmot.quantization.keras
    supported = registry.Default8BitQuantizeRegistry()
    folded = foldable_batchnorms(model)
    annotated = [0]

    def annotate(layer: Any) -> Any:
        if type(layer).__name__ == "InputLayer":
            return layer
        if not supported.supports(layer) and layer.name not in folded:
            return layer
        annotated[0] += 1
        return quant.quantize_annotate_layer(layer)

    marked = tf_keras.models.clone_model(model, clone_function=annotate)
    if not annotated[0]:
        raise UserError("qat: no layer of the model is supported by tfmot's 8-bit scheme")
    combine = tfmot.experimental.combine
    schemes = {
        "none": None,
        "sparsity": combine.Default8BitPrunePreserveQuantizeScheme,
        "clusters": lambda: combine.Default8BitClusterPreserveQuantizeScheme(
            preserve_sparsity=True
        ),
    }
    scheme = schemes[preserve]
    if scheme is not None:
        scheme = _only_supported(scheme, supported)
    with quant.quantize_scope():
        try:
            if scheme is None:
                return quant.quantize_apply(marked)
            return quant.quantize_apply(marked, scheme())
        except (ValueError, RuntimeError, TypeError) as exc:
            reason = str(exc).splitlines()[0][:300]
            raise UserError(f"qat: tfmot could not quantize the model: {reason}") from exc


def foldable_batchnorms(model: Any) -> set[str]:
    """BatchNorm layers right after a linear Conv/DepthwiseConv/Dense: what converters fold.

    tfmot's registry answers "unsupported" for BatchNormalization; its layout transforms only
    fold an *annotated* BN into the layer before it. Left unannotated, QAT fake-quantizes the
    conv output before BN, a point TFLite and ONNX never quantize (they fold BN first), so
    the QAT model and its int8 conversions compute different things.
    """
    names = set()
    for layer in model.layers:
        if type(layer).__name__ not in ("BatchNormalization", "SyncBatchNormalization"):
            continue
        nodes = getattr(layer, "inbound_nodes", None) or []
        inbound = nodes[0].inbound_layers if nodes else []
        before = inbound if isinstance(inbound, list) else [inbound]
        if (
            len(before) == 1
            and type(before[0]).__name__ in FOLDS_INTO
            and (before[0].get_config().get("activation") == "linear")
        ):
            names.add(layer.name)
    return names


def _only_supported(make_scheme: Any, default: Any) -> Any:
    """Collaborative schemes claim every weightless layer (Normalization with constants
    included) and then fail on it; narrow them to what the default 8-bit registry takes."""

    class Registry:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def supports(self, layer: Any) -> bool:
            return default.supports(layer) and self.inner.supports(layer)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    def build() -> Any:
        scheme = make_scheme()
        registry = scheme.get_quantize_registry()
        scheme.get_quantize_registry = lambda: Registry(registry)
        return scheme

    return build


def init_ranges(model: Any, x: Any, batch_size: int = 64) -> None:
    """Set every fake-quant range from real inputs before fine-tuning.

    tfmot starts activation ranges at [-6, 6] and moves them by an EMA with decay 0.999, so a
    fine-tune of a few hundred steps keeps them near that guess: ranges too wide waste int8
    levels, too narrow clip, and the QAT model stops matching what the converters build from
    it. Training-mode passes over `x` in batches of the fine-tune's size, with the EMA decay at
    0, record each batch's ranges; their mean is where the EMA would settle. Every other
    weight (BatchNorm statistics included) is restored afterwards.
    """
    import numpy as np
    from tensorflow_model_optimization.python.core.quantization.keras import quant_ops

    ranges = [
        v for v in model.non_trainable_weights if v.name.split(":")[0].endswith(("_min", "_max"))
    ]
    if not ranges:
        return
    before = model.get_weights()
    original = quant_ops.MovingAvgQuantize

    def record(*args: Any, **kwargs: Any) -> Any:
        return original(*args, **{**kwargs, "ema_decay": 0.0})

    x = np.asarray(x, dtype="float32")
    total = [np.zeros(v.shape, "float64") for v in ranges]
    quant_ops.MovingAvgQuantize = record
    try:
        for start in range(0, len(x), batch_size):  # each pass overwrites the ranges
            part = x[start : start + batch_size]
            model(part, training=True)
            for sum_, variable in zip(total, ranges, strict=True):
                sum_ += len(part) * np.asarray(variable.numpy(), "float64")
    finally:
        quant_ops.MovingAvgQuantize = original
    observed = [sum_ / len(x) for sum_ in total]
    model.set_weights(before)
    for variable, value in zip(ranges, observed, strict=True):
        variable.assign(value.astype("float32"))


def save(model: Any, directory: Path) -> None:
    """An inference-only SavedModel with a fixed-shape `serving_default` signature.

    Saving the tf_keras model itself would need tfmot's custom objects to load; a plain
    tf.Module with the inference function holds the fake-quant graph and nothing else.
    """
    import tensorflow as tf

    tensor = model.inputs[0]
    spec = tf.TensorSpec([None, *tensor.shape[1:]], tf.float32, name="input")
    module = tf.Module()
    module.variables_ = list(model.variables)
    module.serve = tf.function(lambda x: {"output": model(x, training=False)},
                               input_signature=[spec])  # fmt: skip
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve})

"""Quantization-aware training with tfmot, optionally preserving sparsity or clusters.

Only layers tfmot's 8-bit registry supports are annotated; baked-in preprocessing
(Normalization, Rescaling) stays float in front, and the TFLite converter calibrates that
edge from the representative data. The result keeps tfmot's quantize wrappers, so it stays
a tf_keras model: it is saved as a SavedModel that `toolkit.modelio` loads and
`toolkit.convert` turns into TFLite int8 and ONNX QDQ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from toolkit.errors import UserError


def apply(model: Any, preserve: str = "none") -> Any:
    """Annotate every supported layer and apply QAT (`preserve`: none | sparsity | clusters)."""
    import tensorflow_model_optimization as tfmot
    import tf_keras
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry as registry,
    )

    quant = tfmot.quantization.keras
    supported = registry.Default8BitQuantizeRegistry()
    annotated = [0]

    def annotate(layer: Any) -> Any:
        if type(layer).__name__ == "InputLayer" or not supported.supports(layer):
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

"""Magnitude pruning of a tf_keras model with tfmot (constant/polynomial schedule, 2:4, skips).

Only layers with kernels (Conv, Dense, DepthwiseConv) are wrapped; everything else
(Normalization, BatchNorm, pooling) is reused as is, so baked-in preprocessing survives.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from toolkit.core.errors import UserError
from toolkit.core.optimize_config import PruneConfig

PRUNABLE = {
    "Conv1D", "Conv2D", "Conv3D", "Conv2DTranspose", "Dense", "DepthwiseConv2D",
    "SeparableConv1D", "SeparableConv2D",
}  # fmt: skip
# TFLite's 2:4 kernels cover plain convolutions and fully connected layers.
M_BY_N = {"Conv2D", "Dense"}


def check_skips(model: Any, skip: list[str], step: str) -> None:
    names = {layer.name for layer in model.layers}
    unknown = [s for s in skip if s not in names]
    if unknown:
        raise UserError(
            f"{step}: skip_layers {unknown[0]!r} is not a layer of the model; its weight layers: "
            + ", ".join(layer.name for layer in model.layers if type(layer).__name__ in PRUNABLE)
        )


def targets(model: Any, skip: list[str]) -> list[Any]:
    """The layers pruning will wrap: kernel layers not skipped."""
    return [
        layer
        for layer in model.layers
        if type(layer).__name__ in PRUNABLE and layer.name not in skip and layer.weights
    ]


def _check_m_by_n(layers: list[Any]) -> None:
    """2:4 groups run along the input channels: the layer needs a plain kernel and C_in % 4 == 0."""
    for layer in layers:
        kind = type(layer).__name__
        c_in = int(layer.kernel.shape[-2]) if hasattr(layer, "kernel") else 0
        if kind not in M_BY_N or c_in % 4:
            why = f"{kind} is not Conv2D/Dense" if kind not in M_BY_N else f"{c_in} input channels"
            raise UserError(
                f"structured 2:4 cannot apply to layer {layer.name!r} ({why}; 2:4 needs input "
                f"channels divisible by 4); skip it with --skip {layer.name}"
            )


def frequency_for(config: PruneConfig, total_steps: int) -> int:
    """tfmot's 100-step default can exceed a small fine-tune: aim for ~10 mask updates."""
    if config.frequency is not None:
        return config.frequency
    return max(1, min(100, total_steps // 10))


def schedule(config: PruneConfig, total_steps: int) -> Any:
    """The tfmot schedule; polynomial ends at ~70 % of the run so the last epochs recover."""
    import tensorflow_model_optimization as tfmot

    freq = frequency_for(config, total_steps)
    sparsity = tfmot.sparsity.keras
    if config.schedule == "constant" or config.structured:
        return sparsity.ConstantSparsity(config.target, begin_step=0, frequency=freq)
    end = max(freq, (int(total_steps * 0.7) // freq) * freq)
    return sparsity.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=config.target, begin_step=0, end_step=end,
        frequency=freq,
    )  # fmt: skip


def apply(model: Any, config: PruneConfig, total_steps: int) -> tuple[Any, list[Any]]:
    """(the model with pruning wrappers, the callbacks fit needs)."""
    import tensorflow_model_optimization as tfmot
    import tf_keras

    check_skips(model, config.skip_layers, "prune")
    chosen = targets(model, config.skip_layers)
    if not chosen:
        raise UserError("prune: the model has no Conv/Dense layers left to prune")
    if config.structured:
        _check_m_by_n(chosen)
    names = {layer.name for layer in chosen}
    kwargs: dict[str, Any] = {"pruning_schedule": schedule(config, total_steps)}
    if config.structured:
        kwargs["sparsity_m_by_n"] = (2, 4)

    def wrap(layer: Any) -> Any:
        if layer.name in names:
            return tfmot.sparsity.keras.prune_low_magnitude(layer, **kwargs)
        return layer

    wrapped = tf_keras.models.clone_model(model, clone_function=wrap)
    return wrapped, [tfmot.sparsity.keras.UpdatePruningStep()]


def strip(model: Any) -> Any:
    import tensorflow_model_optimization as tfmot

    return tfmot.sparsity.keras.strip_pruning(model)


def kernel_of(layer: Any) -> np.ndarray | None:
    """The kernel's value, found by weight name: a QAT wrapper owns its inner layer's weights."""
    for weight in layer.weights:
        last = (getattr(weight, "path", None) or weight.name).split(":")[0].split("/")[-1]
        if last.endswith("kernel"):
            return np.asarray(weight.numpy())
    return None


def layer_report(model: Any) -> list[dict[str, Any]]:
    """Per weight layer (plain or wrapped): kernel size, sparsity and unique values."""
    rows = []
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        if type(inner).__name__ not in PRUNABLE:
            continue
        kernel = kernel_of(layer)
        if kernel is None:
            continue
        rows.append({
            "layer": inner.name,
            "class": type(inner).__name__,
            "weights": int(kernel.size),
            "sparsity": round(float(np.mean(kernel == 0)), 4),
            "unique_weights": int(np.unique(kernel).size),
        })  # fmt: skip
    return rows


def check_not_optimized(model: Any) -> None:
    """Re-optimizing a stripped or QAT model compounds losses silently: refuse it."""
    for layer in model.layers:
        module = type(layer).__module__
        if "tensorflow_model_optimization" in module or "quantiz" in type(layer).__name__.lower():
            raise UserError(
                f"layer {layer.name!r} ({type(layer).__name__}) is a tfmot wrapper: this model is "
                "already pruned/clustered/quantization-aware; optimize the original run instead"
            )
        if type(layer).__name__ == "TFSMLayer":
            raise UserError(
                "the model is a SavedModel (a QAT or foreign graph) with no per-layer structure; "
                "optimize the original run (its model.keras) instead"
            )

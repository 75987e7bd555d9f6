"""Which ReLU6 layers reach their clip on calibration samples (`equalize` turns only the
others into ReLU: there ReLU computes the same, so equalizing across them stays exact)."""

from __future__ import annotations

from typing import Any

import numpy as np


def _cap(layer: Any) -> float | None:
    """The clip of a ReLU6-like activation at `layer`'s output (a ReLU's max_value,
    Activation("relu6"), relu6 fused into a conv / dense), else None."""
    if type(layer).__name__ == "ReLU":
        return None if layer.max_value is None else float(layer.max_value)
    act = getattr(getattr(layer, "activation", None), "__name__", None)
    return 6.0 if act == "relu6" else None


def _caps_inside(layer: Any) -> bool:
    """Whether a nested model holds a ReLU6 anywhere (else it need not be probed)."""
    inner = getattr(layer, "layers", None) or []
    return any(_cap(sub) is not None or _caps_inside(sub) for sub in inner)


def clipping(model: Any, calibration: np.ndarray, batch: int = 32) -> set[str] | None:
    """Names of `model`'s ReLU6s (a nested model's as "outer/inner") whose output reaches
    its clip on some calibration sample; None (treat all as clipping) when they cannot be
    probed (several inputs, a layer called twice)."""
    import keras

    capped = [(layer, c) for layer in model.layers if (c := _cap(layer)) is not None]
    nested = [layer for layer in model.layers if _caps_inside(layer)]
    if not capped and not nested:
        return set()
    try:
        if len(model.inputs) != 1:
            return None
        ins = [layer._inbound_nodes[0].input_tensors[0] for layer in nested]
        probe = keras.Model(model.inputs[0], [layer.output for layer, _ in capped] + ins)
    except (AttributeError, IndexError, ValueError):
        return None
    peaks, fed = np.full(len(capped), -np.inf), [[] for _ in nested]
    for start in range(0, len(calibration), batch):
        outs = probe(calibration[start : start + batch], training=False)
        outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
        peaks = np.maximum(peaks, [float(np.max(o)) for o in outs[: len(capped)]])
        for held, o in zip(fed, outs[len(capped) :], strict=True):
            held.append(np.asarray(o))
    names = {layer.name for (layer, c), peak in zip(capped, peaks, strict=True) if peak >= c}
    for layer, held in zip(nested, fed, strict=True):
        inner = clipping(layer, np.concatenate(held), batch)
        if inner is None:  # every ReLU6 of that model is kept
            inner = {sub.name for sub in layer.layers if _cap(sub) is not None}
        names |= {f"{layer.name}/{n}" for n in inner}
    return names

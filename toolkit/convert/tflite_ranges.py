"""Activation ranges other than min-max for the TFLite int8 precisions (`ranges=`).

TFLiteConverter sets each activation's int8 range to the min and max seen in calibration: one
outlier stretches the range and every other value loses resolution. Here the calibrated model
(the converter's own float model carrying those min/max statistics) is run again over the
calibration samples with every tensor kept, a 2048-bin histogram per activation is built over
its calibrated [min, max], and a tighter range is written back before the converter's own
quantizer (`mlir_quantize`) turns it into int8:

- "percentile": clip 0.01 % of the values at each end that extends past zero;
- "mse": the clipping that minimises the expected squared error of the int8 values (rounding
  noise step^2/12 inside, the clipping distance outside), over 61 scales of the range, 1 % to
  100 % (the
  min-max range itself is one candidate, so the estimate is never worse than min-max's).

The graph input keeps its range (it is what the device feeds).
"""

from __future__ import annotations

from typing import Any

import numpy as np

METHODS = ("minmax", "percentile", "mse")
BINS = 2048
TAIL = 1e-4  # percentile: the fraction clipped at each end
SCALES = np.geomspace(0.01, 1.0, 61)


def _clip_error(hist: np.ndarray, centers: np.ndarray, lo: float, hi: float) -> float:
    step = (hi - lo) / 255.0
    inside = (centers >= lo) & (centers <= hi)
    err = np.where(inside, step * step / 12.0, 0.0)
    err = err + np.where(centers < lo, (lo - centers) ** 2, 0.0)
    err = err + np.where(centers > hi, (centers - hi) ** 2, 0.0)
    return float(np.sum(hist * err))


def choose(hist: np.ndarray, lo: float, hi: float, method: str) -> tuple[float, float]:
    """The range `method` picks for an activation with this histogram over [lo, hi]."""
    if method == "minmax" or hi <= lo or hist.sum() == 0:
        return lo, hi
    width = (hi - lo) / len(hist)
    centers = lo + (np.arange(len(hist)) + 0.5) * width
    if method == "percentile":
        cum = np.cumsum(hist) / hist.sum()
        new_lo = lo if lo >= 0 else float(centers[np.searchsorted(cum, TAIL)] - width / 2)
        top = np.searchsorted(cum, 1.0 - TAIL)
        new_hi = hi if hi <= 0 else float(centers[min(top, len(hist) - 1)] + width / 2)
        return (new_lo, new_hi) if new_hi > new_lo else (lo, hi)
    # mse: scale the range towards zero (or towards its low end when it does not hold zero)
    anchor = 0.0 if lo <= 0.0 <= hi else lo
    best = (_clip_error(hist, centers, lo, hi), lo, hi)
    for s in SCALES:
        c_lo, c_hi = anchor + (lo - anchor) * s, anchor + (hi - anchor) * s
        if c_hi > c_lo:
            best = min(best, (_clip_error(hist, centers, c_lo, c_hi), c_lo, c_hi))
    return best[1], best[2]


def retune(calibrated: bytes, calibration: np.ndarray, method: str) -> bytes:
    """The calibrated model with every activation's range chosen by `method`."""
    from ai_edge_litert import interpreter as litert
    from tensorflow.lite.tools import flatbuffer_utils

    from toolkit.core.quiet import muted_stderr

    if method == "minmax":
        return calibrated
    model: Any = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
    graph = model.subgraphs[0]
    inputs = {int(i) for i in graph.inputs}
    targets: dict[int, tuple[float, float]] = {}
    for index, tensor in enumerate(graph.tensors):
        q = tensor.quantization
        if index in inputs or q is None or q.min is None or len(q.min) != 1:
            continue
        targets[index] = (float(q.min[0]), float(q.max[0]))
    with muted_stderr():
        interp = litert.Interpreter(
            model_content=calibrated, experimental_preserve_all_tensors=True
        )
    interp.allocate_tensors()
    in_index = int(graph.inputs[0])
    hists = {i: np.zeros(BINS) for i in targets}
    for sample in np.asarray(calibration, np.float32):
        interp.set_tensor(in_index, sample[None])
        interp.invoke()
        for index, (lo, hi) in targets.items():
            if hi > lo:
                hists[index] += np.histogram(interp.get_tensor(index), BINS, (lo, hi))[0]
    for index, (lo, hi) in targets.items():
        new_lo, new_hi = choose(hists[index], lo, hi, method)
        q = graph.tensors[index].quantization
        q.min, q.max = np.array([new_lo], np.float32), np.array([new_hi], np.float32)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))

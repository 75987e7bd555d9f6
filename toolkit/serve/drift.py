"""Drift: reference statistics of validation data, and PSI / KS of live inputs against them.

The reference (recorded in a bundle's manifest at package time, or computed from the export's
dataset when serving an export) is small and JSON-friendly: per input feature/channel the mean,
std, 101 quantiles and PSI bins with their reference fractions; for the outputs the class
distribution and a confidence histogram. The live side keeps a rolling window of recent
samples and compares: PSI per feature (binned on the reference's quantile edges), a KS
statistic per feature against the reference CDF (piecewise linear through the quantiles,
atoms kept), and PSI of the predicted-class and confidence distributions.
The bundle's standalone serve.py computes the same numbers with numpy only.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

import numpy as np

QUANTILES = np.linspace(0.0, 1.0, 101)
PSI_BINS = 10  # deciles of the reference; tied edges (atoms such as 0 pixels) merge
CONFIDENCE_EDGES = [round(v, 2) for v in np.linspace(0.0, 1.0, 11)]
POSITIONS = 256  # values per sample and channel kept in the window (a fixed stride subset)
EPS = 1e-4  # floor for empty bins, so PSI stays finite
DEFAULT_PSI_THRESHOLD = 0.2  # the usual "significant shift" level for PSI
DEFAULT_KS_THRESHOLD = 0.1
DEFAULT_WINDOW = 500
MIN_SAMPLES = 30  # fewer samples than this: drift is reported as not yet known


def per_feature(x: np.ndarray) -> np.ndarray:
    """(N, ..., C) raw inputs -> (C, N * positions): the last axis is the feature/channel."""
    x = np.asarray(x, dtype=np.float64)
    features = x.shape[-1] if x.ndim > 1 else 1
    return x.reshape(len(x), -1, features).transpose(2, 0, 1).reshape(features, -1)


def sample_positions(x: np.ndarray) -> np.ndarray:
    """(N, ..., C) -> (N, C, k): at most POSITIONS values per sample and channel, same stride
    for every sample, so a window of big images stays small."""
    x = np.asarray(x, dtype=np.float64)
    flat = x.reshape(len(x), -1, x.shape[-1] if x.ndim > 1 else 1)
    stride = max(1, flat.shape[1] // POSITIONS)
    return flat[:, ::stride, :][:, :POSITIONS, :].transpose(0, 2, 1)


def psi_edges(values: np.ndarray) -> list[float]:
    """Inner bin edges from the reference deciles (ties merged); outer bins are open."""
    inner = np.unique(np.quantile(values, np.linspace(0, 1, PSI_BINS + 1)[1:-1]))
    return [float(v) for v in inner]


def bin_fractions(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """Fraction of values per bin: (-inf, e0], (e0, e1], ..., (e_last, inf)."""
    idx = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="left")
    counts = np.bincount(idx, minlength=len(edges) + 1).astype(np.float64)
    return counts / max(1.0, counts.sum())


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two distributions over the same bins."""
    e = np.maximum(np.asarray(expected, np.float64), EPS)
    a = np.maximum(np.asarray(actual, np.float64), EPS)
    return float(np.sum((a - e) * np.log(a / e)))


def reference_cdf(quantile_values: list[float], side: str = "right") -> Any:
    """The reference CDF through its 101 quantiles: linear between distinct values, with the
    jumps of repeated values (a pixel that is 0 in 40 % of images) kept. `side="left"` gives
    the left limits, F(x-), which the KS statistic needs at a jump."""
    qv = np.asarray(quantile_values, dtype=np.float64)

    def cdf(x: Any) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        i = np.clip(np.searchsorted(qv, x, side=side), 1, len(qv) - 1)
        lo, hi = qv[i - 1], qv[i]
        span = np.where(hi > lo, hi - lo, 1.0)
        frac = np.where(hi > lo, np.clip((x - lo) / span, 0.0, 1.0), 1.0)
        out = QUANTILES[i - 1] + frac * (QUANTILES[i] - QUANTILES[i - 1])
        below = x < qv[0] if side == "right" else x <= qv[0]
        above = x >= qv[-1] if side == "right" else x > qv[-1]
        return np.where(below, 0.0, np.where(above, 1.0, out))

    return cdf


def ks_statistic(values: np.ndarray, quantile_values: list[float]) -> float:
    """sup |F_window - F_reference|, exact for a reference with atoms.

    scipy.stats.kstest assumes a continuous reference: on pixel data (half the values are 0)
    it reports ~0.5 for data drawn from the reference itself. Here both CDFs are compared at
    every jump point, from the right and from the left; tests check it against
    scipy.stats.ks_2samp."""
    v = np.sort(np.asarray(values, dtype=np.float64).reshape(-1))
    if not len(v):
        return 0.0
    points = np.unique(np.concatenate([v, np.asarray(quantile_values, dtype=np.float64)]))
    right = np.searchsorted(v, points, side="right") / len(v)
    left = np.searchsorted(v, points, side="left") / len(v)
    ref_right = reference_cdf(quantile_values, "right")(points)
    ref_left = reference_cdf(quantile_values, "left")(points)
    return float(max(np.abs(right - ref_right).max(), np.abs(left - ref_left).max()))


def reference_stats(
    x: np.ndarray,
    probabilities: np.ndarray | None,
    *,
    names: list[str] | None = None,
    source: str = "",
    psi_threshold: float = DEFAULT_PSI_THRESHOLD,
    ks_threshold: float = DEFAULT_KS_THRESHOLD,
) -> dict[str, Any]:
    """The reference a server compares live traffic with (JSON-ready)."""
    columns = per_feature(sample_positions(x).transpose(0, 2, 1))
    features = []
    for c, values in enumerate(columns):
        edges = psi_edges(values)
        features.append(
            {
                "name": names[c] if names and c < len(names) else f"channel {c}",
                "mean": round(float(values.mean()), 6),
                "std": round(float(values.std()), 6),
                "quantiles": [round(float(v), 6) for v in np.quantile(values, QUANTILES)],
                "psi_edges": [round(v, 6) for v in edges],
                "psi_fractions": [round(float(v), 6) for v in bin_fractions(values, edges)],
            }
        )
    out: dict[str, Any] = {
        "schema": 1,
        "samples": len(x),
        "source": source,
        "positions_per_sample": POSITIONS,
        "inputs": features,
        "threshold": {"psi": psi_threshold, "ks": ks_threshold},
    }
    if probabilities is not None and probabilities.ndim == 2 and probabilities.shape[1] > 1:
        winners = probabilities.argmax(1)
        counts = np.bincount(winners, minlength=probabilities.shape[1]) / len(winners)
        conf = np.histogram(probabilities.max(1), bins=CONFIDENCE_EDGES)[0] / len(winners)
        out["outputs"] = {
            "class_distribution": [round(float(v), 6) for v in counts],
            "confidence_edges": CONFIDENCE_EDGES,
            "confidence_histogram": [round(float(v), 6) for v in conf],
        }
    return out


def psi_limit_for(base: float, bins: int, n_ref: int, n_window: int) -> float:
    """The PSI threshold, never below three times the PSI that sampling alone gives on average
    ((bins - 1) x (1/n_ref + 1/n_window)): a small window or reference is not drift."""
    return round(max(base, 3.0 * (bins - 1) * (1.0 / n_ref + 1.0 / max(1, n_window))), 6)


def ks_limit_for(base: float, n_ref: int, n_window: int) -> float:
    """The KS threshold, never below the two-sample critical value at the 1 % level (counted
    in samples, not pixels, so correlated values within a sample do not shrink it)."""
    m = max(1, n_window)
    return round(max(base, 1.628 * float(np.sqrt((n_ref + m) / (n_ref * m)))), 6)


def compare(
    reference: dict[str, Any], inputs: np.ndarray, probabilities: np.ndarray | None
) -> dict[str, Any]:
    """PSI and KS per feature plus output drift of a set of samples against the reference.

    `inputs` is (N, C, k) as `sample_positions` gives; `probabilities` (N, classes) or None."""
    n = len(inputs)
    limits = reference.get("threshold") or {}
    psi_limit = float(limits.get("psi", DEFAULT_PSI_THRESHOLD))
    ks_limit = float(limits.get("ks", DEFAULT_KS_THRESHOLD))
    result: dict[str, Any] = {"samples": n, "threshold": {"psi": psi_limit, "ks": ks_limit}}
    if n < MIN_SAMPLES:
        result.update(status="warming up", drift=None, features=[], outputs=None)
        result["note"] = f"{n} of the {MIN_SAMPLES} samples drift needs"
        return result
    n_ref = int(reference.get("samples") or 1)
    ks_floor = ks_limit_for(ks_limit, n_ref, n)
    columns = inputs.transpose(1, 0, 2).reshape(inputs.shape[1], -1)
    features = []
    for ref, values in zip(reference["inputs"], columns, strict=False):
        bins = len(ref["psi_fractions"])
        features.append(
            {
                "name": ref["name"],
                "psi": round(psi(ref["psi_fractions"], bin_fractions(values, ref["psi_edges"])), 6),
                "ks": round(ks_statistic(values, ref["quantiles"]), 6),
                "psi_limit": psi_limit_for(psi_limit, bins, n_ref, n),
                "ks_limit": ks_floor,
                "mean": round(float(values.mean()), 6),
                "reference_mean": ref["mean"],
            }
        )
    outputs = None
    ref_out = reference.get("outputs")
    if ref_out and probabilities is not None and len(probabilities):
        classes = len(ref_out["class_distribution"])
        winners = np.bincount(probabilities.argmax(1), minlength=classes)[:classes] / n
        conf = np.histogram(probabilities.max(1), bins=ref_out["confidence_edges"])[0] / n
        bins = len(ref_out["confidence_histogram"])
        outputs = {
            "class_psi": round(psi(ref_out["class_distribution"], winners), 6),
            "confidence_psi": round(psi(ref_out["confidence_histogram"], conf), 6),
            "class_psi_limit": psi_limit_for(psi_limit, classes, n_ref, n),
            "confidence_psi_limit": psi_limit_for(psi_limit, bins, n_ref, n),
            "mean_confidence": round(float(probabilities.max(1).mean()), 6),
        }
    worst = max([f["psi"] for f in features] or [0.0])
    worst_out = max(outputs["class_psi"], outputs["confidence_psi"]) if outputs else 0.0
    drifted = any(f["psi"] > f["psi_limit"] or f["ks"] > f["ks_limit"] for f in features)
    drifted = drifted or (
        bool(outputs)
        and (
            outputs["class_psi"] > outputs["class_psi_limit"]
            or outputs["confidence_psi"] > outputs["confidence_psi_limit"]
        )
    )
    result.update(
        status="drift" if drifted else "ok",
        drift=bool(drifted),
        max_input_psi=round(worst, 6),
        max_output_psi=round(float(worst_out), 6),
        features=features,
        outputs=outputs,
    )
    return result


class DriftWindow:
    """The last `size` served samples (a strided subset of each input, plus its class
    probabilities); thread-safe, since requests and scrapes arrive on different threads."""

    def __init__(self, reference: dict[str, Any] | None, size: int = DEFAULT_WINDOW) -> None:
        self.reference = reference
        self._inputs: deque[np.ndarray] = deque(maxlen=size)
        self._probs: deque[np.ndarray | None] = deque(maxlen=size)
        self._lock = threading.Lock()
        self.seen = 0

    def add(self, x: np.ndarray, probabilities: np.ndarray | None) -> None:
        if self.reference is None:
            return
        sampled = sample_positions(x)
        with self._lock:
            for i, row in enumerate(sampled):
                self._inputs.append(row)
                self._probs.append(None if probabilities is None else probabilities[i])
            self.seen += len(sampled)

    def report(self) -> dict[str, Any]:
        if self.reference is None:
            return {
                "status": "unavailable",
                "drift": None,
                "samples": 0,
                "note": "no reference statistics: package the model with keras-edge package, "
                "or serve an export whose dataset can be loaded",
            }
        with self._lock:
            inputs = np.stack(self._inputs) if self._inputs else np.zeros((0, 1, 1))
            probs = [p for p in self._probs if p is not None]
        stacked = np.stack(probs) if probs and len(probs) == len(inputs) else None
        out = compare(self.reference, inputs, stacked)
        out["seen"] = self.seen
        out["window"] = self._inputs.maxlen
        return out

"""Drift statistics for the bundle's serve.py: numpy only, the same numbers as keras-edge serve.

The manifest's `drift` reference is computed by `reference_stats` here at package time; the
server compares its rolling window with it through `compare`: PSI per input channel/feature
(bins from the reference deciles), a KS statistic against the reference CDF (its 101 quantiles,
jumps kept), and PSI of the predicted classes and confidences.
"""

from __future__ import annotations

import numpy as np

QUANTILES = np.linspace(0.0, 1.0, 101)
PSI_BINS, POSITIONS, EPS, MIN_SAMPLES = 10, 256, 1e-4, 30
CONFIDENCE_EDGES = [round(v, 2) for v in np.linspace(0.0, 1.0, 11)]


def sample_positions(x: np.ndarray) -> np.ndarray:
    """(N, ..., C) -> (N, C, k): at most POSITIONS values per sample and channel."""
    x = np.asarray(x, dtype=np.float64)
    flat = x.reshape(len(x), -1, x.shape[-1] if x.ndim > 1 else 1)
    stride = max(1, flat.shape[1] // POSITIONS)
    return flat[:, ::stride, :][:, :POSITIONS, :].transpose(0, 2, 1)


def bin_fractions(values: np.ndarray, edges: list) -> np.ndarray:
    idx = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="left")
    counts = np.bincount(idx, minlength=len(edges) + 1).astype(np.float64)
    return counts / max(1.0, counts.sum())


def psi(expected, actual) -> float:
    e, a = np.maximum(np.asarray(expected, float), EPS), np.maximum(np.asarray(actual, float), EPS)
    return float(np.sum((a - e) * np.log(a / e)))


def _cdf(qv: np.ndarray, x: np.ndarray, side: str) -> np.ndarray:
    i = np.clip(np.searchsorted(qv, x, side=side), 1, len(qv) - 1)
    lo, hi = qv[i - 1], qv[i]
    frac = np.where(hi > lo, np.clip((x - lo) / np.where(hi > lo, hi - lo, 1.0), 0, 1), 1.0)
    out = QUANTILES[i - 1] + frac * (QUANTILES[i] - QUANTILES[i - 1])
    below, above = (x < qv[0], x >= qv[-1]) if side == "right" else (x <= qv[0], x > qv[-1])
    return np.where(below, 0.0, np.where(above, 1.0, out))


def ks_statistic(values: np.ndarray, quantile_values: list) -> float:
    """sup |F_window - F_reference| at every jump, from both sides (the reference has atoms)."""
    v, qv = np.sort(np.asarray(values, float).reshape(-1)), np.asarray(quantile_values, float)
    points = np.unique(np.concatenate([v, qv]))
    right = np.abs(np.searchsorted(v, points, "right") / len(v) - _cdf(qv, points, "right"))
    left = np.abs(np.searchsorted(v, points, "left") / len(v) - _cdf(qv, points, "left"))
    return float(max(right.max(), left.max()))


def reference_stats(x: np.ndarray, probs, names=None, source: str = "") -> dict:
    """The manifest's drift reference (computed at package time by this very function)."""
    columns = sample_positions(x).transpose(1, 0, 2).reshape(x.shape[-1] if x.ndim > 1 else 1, -1)
    features = []
    for c, values in enumerate(columns):
        edges = np.unique(np.quantile(values, np.linspace(0, 1, PSI_BINS + 1)[1:-1]))
        features.append(
            {
                "name": names[c] if names and c < len(names) else f"channel {c}",
                "mean": round(float(values.mean()), 6),
                "std": round(float(values.std()), 6),
                "quantiles": [round(float(v), 6) for v in np.quantile(values, QUANTILES)],
                "psi_edges": [round(float(v), 6) for v in edges],
                "psi_fractions": [round(float(v), 6) for v in bin_fractions(values, list(edges))],
            }
        )
    out = {
        "schema": 1,
        "samples": len(x),
        "source": source,
        "positions_per_sample": POSITIONS,
        "inputs": features,
        "threshold": {"psi": 0.2, "ks": 0.1},
    }
    if probs is not None and probs.ndim == 2 and probs.shape[1] > 1:
        n = len(probs)
        out["outputs"] = {
            "class_distribution": [
                round(float(v), 6)
                for v in np.bincount(probs.argmax(1), minlength=probs.shape[1]) / n
            ],
            "confidence_edges": CONFIDENCE_EDGES,
            "confidence_histogram": [
                round(float(v), 6) for v in np.histogram(probs.max(1), bins=CONFIDENCE_EDGES)[0] / n
            ],
        }
    return out


def psi_limit_for(base: float, bins: int, n_ref: int, n_window: int) -> float:
    """Never below 3 x the mean PSI of sampling noise alone: (bins - 1)(1/n_ref + 1/n_window)."""
    return round(max(base, 3.0 * (bins - 1) * (1.0 / n_ref + 1.0 / max(1, n_window))), 6)


def ks_limit_for(base: float, n_ref: int, n_window: int) -> float:
    """Never below the two-sample KS critical value at the 1 % level (counted in samples)."""
    m = max(1, n_window)
    return round(max(base, 1.628 * float(np.sqrt((n_ref + m) / (n_ref * m)))), 6)


def compare(reference: dict, inputs: np.ndarray, probs) -> dict:
    n, limits = len(inputs), reference.get("threshold") or {"psi": 0.2, "ks": 0.1}
    if n < MIN_SAMPLES:
        return {
            "samples": n,
            "threshold": limits,
            "status": "warming up",
            "drift": None,
            "features": [],
            "outputs": None,
        }
    n_ref = int(reference.get("samples") or 1)
    ks_floor = ks_limit_for(limits["ks"], n_ref, n)
    columns = inputs.transpose(1, 0, 2).reshape(inputs.shape[1], -1)
    features = [
        {
            "name": ref["name"],
            "psi": round(psi(ref["psi_fractions"], bin_fractions(v, ref["psi_edges"])), 6),
            "ks": round(ks_statistic(v, ref["quantiles"]), 6),
            "psi_limit": psi_limit_for(limits["psi"], len(ref["psi_fractions"]), n_ref, n),
            "ks_limit": ks_floor,
            "mean": round(float(v.mean()), 6),
            "reference_mean": ref["mean"],
        }
        for ref, v in zip(reference["inputs"], columns, strict=False)
    ]
    outputs, ref_out = None, reference.get("outputs")
    if ref_out and probs is not None and len(probs):
        k = len(ref_out["class_distribution"])
        winners = np.bincount(probs.argmax(1), minlength=k)[:k] / n
        conf = np.histogram(probs.max(1), bins=ref_out["confidence_edges"])[0] / n
        bins = len(ref_out["confidence_histogram"])
        outputs = {
            "class_psi": round(psi(ref_out["class_distribution"], winners), 6),
            "confidence_psi": round(psi(ref_out["confidence_histogram"], conf), 6),
            "class_psi_limit": psi_limit_for(limits["psi"], k, n_ref, n),
            "confidence_psi_limit": psi_limit_for(limits["psi"], bins, n_ref, n),
            "mean_confidence": round(float(probs.max(1).mean()), 6),
        }
    worst = max(f["psi"] for f in features)
    worst_out = max(outputs["class_psi"], outputs["confidence_psi"]) if outputs else 0.0
    drift = any(f["psi"] > f["psi_limit"] or f["ks"] > f["ks_limit"] for f in features)
    drift = drift or (
        bool(outputs)
        and (
            outputs["class_psi"] > outputs["class_psi_limit"]
            or outputs["confidence_psi"] > outputs["confidence_psi_limit"]
        )
    )
    return {
        "samples": n,
        "threshold": limits,
        "status": "drift" if drift else "ok",
        "drift": bool(drift),
        "max_input_psi": round(worst, 6),
        "max_output_psi": round(worst_out, 6),
        "features": features,
        "outputs": outputs,
    }

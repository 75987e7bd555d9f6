"""Raw model outputs -> the answer a client reads, exactly as the bundle's run.py prints it.

The same arithmetic as run.py (softmax moved to the host, sigmoid for one logit, scores that
already sum to one left alone), so a served prediction equals the bundled script's.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def softmax(values: np.ndarray) -> np.ndarray:
    v = values.reshape(len(values), -1).astype(np.float64)
    e = np.exp(v - v.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def probabilities(outputs: np.ndarray, *, host_softmax: bool) -> np.ndarray:
    """Class scores -> probabilities (softmax/sigmoid unless they already are)."""
    if host_softmax:
        return softmax(outputs)
    out = outputs.reshape(len(outputs), -1).astype(np.float64)
    if out.shape[1] == 1:
        p = out if ((out >= 0) & (out <= 1)).all() else 1 / (1 + np.exp(-out))
        return np.concatenate([1 - p, p], axis=1)
    if (out >= -1e-6).all() and np.allclose(out.sum(axis=1), 1.0, atol=0.02):
        return out
    return softmax(out)


def _label(labels: list[str], i: int) -> str:
    return labels[i] if i < len(labels) else str(i)


def answers(
    outputs: np.ndarray, post: str, labels: list[str], top_k: int, *, host_softmax: bool
) -> tuple[list[dict[str, Any]], np.ndarray | None]:
    """One answer per sample, plus class probabilities (None for non-class tasks) for drift."""
    if post in ("values", "score", "labels"):
        values = outputs.reshape(len(outputs), -1).astype(np.float64)
        if post == "score":
            return [{"score": float(row.mean())} for row in values], None
        if post == "labels":
            return [
                {
                    "labels": [_label(labels, int(i)) for i in np.flatnonzero(row >= 0.5)],
                    "scores": [round(float(v), 6) for v in row],
                }
                for row in values
            ], None
        return [{"value": [float(v) for v in row]} for row in values], None
    probs = probabilities(outputs, host_softmax=host_softmax)
    result = []
    for row in probs:
        order = np.argsort(-row, kind="stable")[: max(1, top_k)]
        top = [
            {"label": _label(labels, int(i)), "index": int(i), "score": round(float(row[i]), 6)}
            for i in order
        ]
        result.append(
            {
                "label": top[0]["label"],
                "index": top[0]["index"],
                "score": top[0]["score"],
                "top": top,
            }
        )
    return result, probs

"""Scoring one set of outputs: the task's metrics (when there are labels) and label-free fidelity.

Every artifact row and the reference row go through `score`, so the reference's own numbers are
computed exactly like the artifacts' (its fidelity to itself is the ceiling: cosine 1, SQNR cap).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from toolkit.core.metrics import fidelity
from toolkit.core.tasks import get_task, task_metrics
from toolkit.data.evaldata import EvalData


def metric_outputs(data: EvalData, outputs: np.ndarray) -> np.ndarray:
    """What the task's metrics read: e.g. an autoencoder's reconstruction -> its error."""
    task = get_task(data.task)
    if task.decode is not None:  # detection: NMS-decoded boxes, what mAP and agreement read
        return task.decode(outputs, tuple(data.x.shape[1:]), len(data.labels or []))
    if task.scores is None:
        return outputs
    return task.scores(outputs, data.all_inputs())


def score(
    data: EvalData, outputs: np.ndarray, reference: np.ndarray, scored: np.ndarray | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics, fidelity) of `outputs` against the labels and the reference outputs.

    The metrics dict also holds the fidelity keys, so a headline such as `cosine` (features, or
    any task on unlabelled data) is looked up like any other metric. `scored`: the outputs'
    `metric_outputs`, when the caller already has them (an anomaly score reads every input)."""
    task = get_task(data.task)
    fid = fidelity(outputs, reference, classes=task.classifies)
    metrics: dict[str, Any] = {}
    if data.labelled:
        if scored is None:
            scored = metric_outputs(data, outputs)
        metrics = task_metrics(data.metric_task, data.y, scored, data.labels)
    return {**metrics, **fid}, fid


def headline_value(metrics: dict[str, Any], name: str) -> float | None:
    value = metrics.get(name)
    return None if value is None else float(value)


def _per_sample(
    name: str, data: EvalData, outputs: np.ndarray, reference: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """(reference, artifact) per-sample values whose mean is metric `name`, where one exists."""
    from toolkit.core.metrics import predicted_classes

    out = np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)
    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    if name == "accuracy" and data.labelled:
        y = np.asarray(data.y).reshape(-1)
        return (predicted_classes(ref) == y).astype(float), (predicted_classes(out) == y).astype(
            float
        )
    if name == "mae" and data.labelled:
        y = np.asarray(data.y, dtype=np.float64).reshape(len(out), -1)
        return np.abs(ref - y).mean(axis=1), np.abs(out - y).mean(axis=1)
    if name == "cosine":
        norms = np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1)
        cos = np.where(norms > 0, np.sum(out * ref, axis=1) / np.where(norms > 0, norms, 1), 1.0)
        return np.ones(len(out)), cos
    return None


def drop_statistics(
    data: EvalData,
    outputs: np.ndarray,
    reference: np.ndarray,
    metric: str,
    higher_is_better: bool,
    scored: tuple[np.ndarray, np.ndarray],
) -> dict[str, Any]:
    """report.json's `drop_ci95`, `mcnemar_p` and `significant` for one artifact; `scored` is
    (reference, artifact) `metric_outputs`, computed once by the caller."""
    from toolkit.validate.stats import drop_stats

    per = _per_sample(metric, data, outputs, reference)
    correctness = per if metric == "accuracy" else None
    recompute = None
    if per is None and data.labelled and get_task(data.task).resample:

        def recompute(idx: np.ndarray, artifact: bool) -> float | None:
            values = task_metrics(data.metric_task, np.asarray(data.y)[idx],
                                  np.asarray(scored[int(artifact)])[idx], data.labels)  # fmt: skip
            return headline_value(values, metric)

    stats = drop_stats(per, recompute, len(outputs), higher_is_better, correctness)
    return stats.to_dict()

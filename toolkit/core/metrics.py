"""Task metrics, all computed by scikit-learn from model outputs.

Used by training (metrics.json) and by validation (the same metric on every converted
artifact), so a number means the same thing everywhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def predicted_classes(outputs: np.ndarray) -> np.ndarray:
    """Class indices from softmax (N, C) or sigmoid (N, 1) outputs."""
    outputs = np.asarray(outputs)
    if outputs.ndim == 2 and outputs.shape[1] == 1:
        return (outputs[:, 0] >= 0.5).astype(np.int64)
    return np.argmax(outputs.reshape(len(outputs), -1), axis=1)


def class_probabilities(outputs: np.ndarray) -> np.ndarray:
    outputs = np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)
    if outputs.shape[1] == 1:
        return np.concatenate([1.0 - outputs, outputs], axis=1)
    return outputs


def classification_metrics(
    y_true: np.ndarray, outputs: np.ndarray, labels: list[str] | None = None
) -> dict[str, Any]:
    from sklearn import metrics

    y_true = np.asarray(y_true).astype(np.int64).reshape(-1)
    y_pred = predicted_classes(outputs)
    proba = class_probabilities(outputs)
    n_classes = proba.shape[1]
    label_ids = list(range(n_classes))
    precision, recall, f1, _ = metrics.precision_recall_fscore_support(
        y_true, y_pred, labels=label_ids, average="macro", zero_division=0
    )
    result: dict[str, Any] = {
        "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
        "precision_macro": float(precision),
        "recall_macro": float(recall),
        "f1_macro": float(f1),
        "confusion_matrix": metrics.confusion_matrix(y_true, y_pred, labels=label_ids).tolist(),
        "labels": labels or [str(i) for i in label_ids],
        "samples": len(y_true),
    }
    try:
        if n_classes == 2:
            result["roc_auc"] = float(metrics.roc_auc_score(y_true, proba[:, 1]))
        else:
            safe = proba / np.clip(proba.sum(axis=1, keepdims=True), 1e-12, None)
            result["roc_auc"] = float(
                metrics.roc_auc_score(
                    y_true, safe, multi_class="ovr", average="macro", labels=label_ids
                )
            )
    except ValueError:  # a class absent from y_true: AUC is undefined, say so
        result["roc_auc"] = None
    return result


def regression_metrics(
    y_true: np.ndarray, outputs: np.ndarray, labels: list[str] | None = None
) -> dict[str, Any]:
    from sklearn import metrics

    y_true = np.asarray(y_true, dtype=np.float64).reshape(len(y_true), -1)
    y_pred = np.asarray(outputs, dtype=np.float64).reshape(len(y_true), -1)
    mse = float(metrics.mean_squared_error(y_true, y_pred))
    result: dict[str, Any] = {
        "mae": float(metrics.mean_absolute_error(y_true, y_pred)),
        "mse": mse,
        "rmse": float(np.sqrt(mse)),
        "r2": float(metrics.r2_score(y_true, y_pred)) if len(y_true) > 1 else None,
        "samples": len(y_true),
    }
    if y_true.shape[1] > 1:  # several outputs: each one's MAE beside the overall mean
        per = metrics.mean_absolute_error(y_true, y_pred, multioutput="raw_values")
        result["mae_per_output"] = [float(v) for v in per]
    return result


def anomaly_metrics(y_true: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """Labels 0 normal / 1 anomaly against a score where higher means more anomalous (an
    autoencoder's reconstruction error). ROC-AUC needs no threshold, so it leads; the F1 is
    at the best threshold on this split (optimistic; a deployment picks it on validation)."""
    from sklearn import metrics

    y_true = np.asarray(y_true).astype(np.int64).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(len(y_true), -1).mean(axis=1)
    result: dict[str, Any] = {
        "samples": len(y_true),
        "anomalies": int(y_true.sum()),
        "roc_auc": None,
        "average_precision": None,
        "best_f1": None,
        "best_threshold": None,
    }
    if 0 < y_true.sum() < len(y_true):
        result["roc_auc"] = float(metrics.roc_auc_score(y_true, scores))
        result["average_precision"] = float(metrics.average_precision_score(y_true, scores))
        precision, recall, thresholds = metrics.precision_recall_curve(y_true, scores)
        f1 = 2 * precision * recall / np.clip(precision + recall, 1e-12, None)
        best = int(np.argmax(f1[:-1])) if len(thresholds) else 0
        result["best_f1"] = float(f1[best])
        result["best_threshold"] = float(thresholds[best]) if len(thresholds) else None
    return result


def binary_metrics(
    y_true: np.ndarray, outputs: np.ndarray, labels: list[str] | None = None
) -> dict[str, Any]:
    """Two classes from one sigmoid (N, 1) or a 2-way softmax: AUC leads (threshold-free)."""
    from sklearn import metrics

    y_true = np.asarray(y_true).astype(np.int64).reshape(-1)
    score = class_probabilities(outputs)[:, -1]
    y_pred = (score >= 0.5).astype(np.int64)
    both = 0 < y_true.sum() < len(y_true)
    return {
        "roc_auc": float(metrics.roc_auc_score(y_true, score)) if both else None,
        "average_precision": float(metrics.average_precision_score(y_true, score))
        if both
        else None,
        "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
        "f1": float(metrics.f1_score(y_true, y_pred, zero_division=0)),
        "confusion_matrix": metrics.confusion_matrix(y_true, y_pred, labels=[0, 1]).tolist(),
        "labels": labels or ["0", "1"],
        "samples": len(y_true),
    }


def multilabel_metrics(
    y_true: np.ndarray, outputs: np.ndarray, labels: list[str] | None = None
) -> dict[str, Any]:
    """(N, L) 0/1 targets against (N, L) sigmoids thresholded at 0.5."""
    from sklearn import metrics

    y_true = np.asarray(y_true).astype(np.int64).reshape(len(y_true), -1)
    y_pred = (np.asarray(outputs, dtype=np.float64).reshape(len(y_true), -1) >= 0.5).astype(int)
    return {
        "f1_micro": float(metrics.f1_score(y_true, y_pred, average="micro", zero_division=0)),
        "f1_macro": float(metrics.f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "subset_accuracy": float(metrics.accuracy_score(y_true, y_pred)),
        "hamming_loss": float(metrics.hamming_loss(y_true, y_pred)),
        "labels": labels or [str(i) for i in range(y_true.shape[1])],
        "samples": len(y_true),
    }


SQNR_CAP_DB = 200.0  # identical outputs: report a finite ceiling, JSON has no infinity
TOP_K = 5


def fidelity(outputs: np.ndarray, reference: np.ndarray, classes: bool) -> dict[str, Any]:
    """How closely an artifact reproduces the reference model's outputs, with no labels at all.

    sqnr_db: 10 log10(signal power / error power) over every output value (capped at 200);
    cosine: mean per-sample cosine similarity of the output vectors (two zero vectors agree);
    relative_rmse: RMS error over RMS reference value; top5_agreement (class outputs): the
    fraction of samples whose reference top-1 class is among the artifact's top 5.
    """
    out = np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)
    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    err = out - ref
    signal, noise = float(np.sum(ref**2)), float(np.sum(err**2))
    if noise == 0.0:
        sqnr = SQNR_CAP_DB
    elif signal == 0.0:
        sqnr = -SQNR_CAP_DB
    else:
        sqnr = float(np.clip(10.0 * np.log10(signal / noise), -SQNR_CAP_DB, SQNR_CAP_DB))
    norms = np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1)
    dots = np.sum(out * ref, axis=1)
    both_zero = (np.linalg.norm(out, axis=1) == 0) & (np.linalg.norm(ref, axis=1) == 0)
    cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), both_zero.astype(float))
    rms_ref = float(np.sqrt(np.mean(ref**2)))
    result: dict[str, Any] = {
        "sqnr_db": sqnr,
        "cosine": float(np.mean(cos)),
        "relative_rmse": float(np.sqrt(np.mean(err**2)) / rms_ref) if rms_ref > 0 else None,
    }
    if classes and ref.shape[1] > 1:
        k = min(TOP_K, ref.shape[1])
        top = np.argsort(-out, axis=1, kind="stable")[:, :k]
        result[f"top{TOP_K}_agreement"] = float(np.mean(np.any(top == ref.argmax(1)[:, None], 1)))
    return result

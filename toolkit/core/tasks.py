"""The Task registry: everything that differs between what a model is *for*, in one table.

A task says which metric a report leads with (and which way is better), how metrics are computed
(scikit-learn, in `core.metrics`), what "the artifact agrees with the reference" means, which
labels it needs, the loss that trains it, what training checkpoints on, how a prediction prints,
and how a bundle post-processes the raw output. Stages ask `get_task(name)` instead of branching
on task names, so adding a task is one entry here plus its metric functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from toolkit.core import detection as det
from toolkit.core import metrics as m
from toolkit.core.errors import unknown

Metrics = Callable[[np.ndarray, np.ndarray, "list[str] | None"], dict[str, Any]]
Agreement = Callable[[np.ndarray, np.ndarray], float]
Baseline = Callable[[np.ndarray, np.ndarray], float]
View = Callable[[np.ndarray, "list[str]", int], dict[str, Any]]

# Regression outputs "agree" when every value is within this fraction of the reference
# outputs' range (max - min over the evaluation set): scale-free, like top-1 agreement.
REGRESSION_AGREEMENT_TOLERANCE = 0.01


def _flat(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(len(a), -1)


def top1_agreement(outputs: np.ndarray, reference: np.ndarray) -> float:
    return float(
        np.mean(m.predicted_classes(_flat(outputs)) == m.predicted_classes(_flat(reference)))
    )


def multilabel_agreement(outputs: np.ndarray, reference: np.ndarray) -> float:
    """Samples whose whole label set (each sigmoid >= 0.5) is the reference's."""
    return float(np.mean(np.all((_flat(outputs) >= 0.5) == (_flat(reference) >= 0.5), axis=1)))


def value_agreement(outputs: np.ndarray, reference: np.ndarray) -> float:
    """Samples whose outputs are all within 1 % of the reference outputs' range (a constant
    reference uses an absolute 1e-6)."""
    out, ref = _flat(outputs), _flat(reference)
    spread = ref.max(axis=0) - ref.min(axis=0)
    tolerance = np.maximum(REGRESSION_AGREEMENT_TOLERANCE * spread, 1e-6)
    return float(np.mean(np.all(np.abs(out - ref) <= tolerance, axis=1)))


def _majority(y_train: np.ndarray, y_test: np.ndarray) -> float:
    values, counts = np.unique(np.asarray(y_train), return_counts=True)
    return float(np.mean(np.asarray(y_test) == values[np.argmax(counts)]))


def _median_mae(y_train: np.ndarray, y_test: np.ndarray) -> float:
    y_train = _flat(y_train)
    return float(np.mean(np.abs(_flat(y_test) - np.median(y_train, axis=0))))


def _top_view(row: np.ndarray, labels: list[str], top_k: int) -> dict[str, Any]:
    proba = m.class_probabilities(np.asarray(row)[None])[0]
    order = np.argsort(-proba, kind="stable")[:top_k]
    names = [labels[i] if i < len(labels) else str(i) for i in range(len(proba))]
    return {"top": [{"label": names[i], "index": int(i), "score": float(proba[i])} for i in order]}


def _labels_view(row: np.ndarray, labels: list[str], top_k: int) -> dict[str, Any]:
    scores = np.ravel(np.asarray(row, dtype=np.float64))
    names = [labels[i] if i < len(labels) else str(i) for i in range(len(scores))]
    on = [{"label": names[i], "index": int(i), "score": float(scores[i])}
          for i in np.argsort(-scores, kind="stable") if scores[i] >= 0.5]  # fmt: skip
    return {"labels": on}


def _value_view(row: np.ndarray, labels: list[str], top_k: int) -> dict[str, Any]:
    return {"value": [float(v) for v in np.ravel(row)]}


def _score_view(row: np.ndarray, labels: list[str], top_k: int) -> dict[str, Any]:
    return {"score": float(np.mean(np.asarray(row, dtype=np.float64)))}


def anomaly_scores(outputs: np.ndarray, inputs: np.ndarray | None) -> np.ndarray:
    """An autoencoder that outputs its reconstruction is scored by the per-sample MSE against its
    input; a model that outputs a score (ours: the MSE inside the graph) is its own score."""
    out = _flat(outputs)
    if inputs is not None and out.shape[1] > 1 and out.shape[1] == _flat(inputs).shape[1]:
        return np.mean((out - _flat(inputs)) ** 2, axis=1)
    return out.mean(axis=1)


def _no_metrics(y: np.ndarray, outputs: np.ndarray, labels: list[str] | None) -> dict[str, Any]:
    return {"samples": len(outputs)}


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    headline: str  # the metric a report leads with
    higher_is_better: bool
    metrics: Metrics
    agreement: Agreement
    agreement_means: str
    labels: str  # "classes" | "values" | "anomaly" (0/1) | "boxes" | "none"
    summary_keys: tuple[str, ...]  # rows of the training summary table
    baseline: Baseline | None  # what a model that ignores its input scores
    baseline_means: str
    default_loss: str
    losses: frozenset[str]  # losses that fit this task
    monitor: str  # what the best checkpoint watches
    view: View  # one prediction as JSON-able dict (predict, serve)
    output: str  # how a bundle post-processes raw outputs: "classes" | "values" | "score" | ...
    # outputs (+ the inputs that produced them) -> what the metrics score; None: the outputs
    scores: Callable[[np.ndarray, np.ndarray | None], np.ndarray] | None = None
    decode: Callable[..., np.ndarray] | None = None  # (outputs, input shape, classes) -> boxes
    resample: bool = True  # False: too slow to recompute 200 times (COCO mAP): no drop interval

    @property
    def needs_labels(self) -> bool:
        return self.labels != "none"

    @property
    def classifies(self) -> bool:
        return self.labels == "classes"

    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"


CLASS_LOSSES = frozenset({"sparse_categorical_crossentropy", "categorical_crossentropy",
                          "binary_crossentropy"})  # fmt: skip
VALUE_LOSSES = frozenset({"mse", "mae", "huber"})

TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task(
            name="classification",
            description="one class per sample (softmax, or one sigmoid for two classes)",
            headline="accuracy",
            higher_is_better=True,
            metrics=m.classification_metrics,
            agreement=top1_agreement,
            agreement_means="fraction of samples with the reference's top-1 class",
            labels="classes",
            summary_keys=("accuracy", "precision_macro", "recall_macro", "f1_macro", "roc_auc"),
            baseline=_majority,
            baseline_means="majority-class accuracy",
            default_loss="sparse_categorical_crossentropy",
            losses=CLASS_LOSSES,
            monitor="val_accuracy",
            view=_top_view,
            output="classes",
        ),
        Task(
            name="binary",
            description="two classes from one sigmoid output (or a 2-way softmax)",
            headline="roc_auc",
            higher_is_better=True,
            metrics=m.binary_metrics,
            agreement=top1_agreement,
            agreement_means="fraction of samples on the reference's side of 0.5",
            labels="classes",
            summary_keys=("roc_auc", "accuracy", "average_precision", "f1"),
            baseline=lambda y_train, y_test: 0.5,
            baseline_means="constant-score AUC",
            default_loss="binary_crossentropy",
            losses=CLASS_LOSSES,
            monitor="val_loss",
            view=_top_view,
            output="classes",
        ),
        Task(
            name="multilabel",
            description="any number of labels per sample (one sigmoid each)",
            headline="f1_micro",
            higher_is_better=True,
            metrics=m.multilabel_metrics,
            agreement=multilabel_agreement,
            agreement_means="fraction of samples with the reference's whole label set",
            labels="values",
            summary_keys=("f1_micro", "f1_macro", "subset_accuracy", "hamming_loss"),
            baseline=None,
            baseline_means="",
            default_loss="binary_crossentropy",
            losses=frozenset({"binary_crossentropy"}),
            monitor="val_loss",
            view=_labels_view,
            output="labels",
        ),
        Task(
            name="regression",
            description="1..N real-valued outputs per sample",
            headline="mae",
            higher_is_better=False,
            metrics=m.regression_metrics,
            agreement=value_agreement,
            agreement_means="fraction of samples whose outputs are all within 1% of the "
            "reference outputs' range",
            labels="values",
            summary_keys=("mae", "rmse", "r2"),
            baseline=_median_mae,
            baseline_means="median MAE",
            default_loss="mse",
            losses=VALUE_LOSSES,
            monitor="val_loss",
            view=_value_view,
            output="values",
        ),
        Task(
            name="anomaly",
            description="an anomaly score per sample (higher = more anomalous), scored by AUC",
            headline="roc_auc",
            higher_is_better=True,
            metrics=lambda y, scores, labels=None: m.anomaly_metrics(y, scores),
            agreement=value_agreement,
            agreement_means="fraction of samples whose score is within 1% of the reference "
            "scores' range",
            labels="anomaly",
            summary_keys=("roc_auc", "average_precision", "best_f1", "anomalies"),
            baseline=lambda y_train, y_test: 0.5,  # the ROC-AUC of a constant score
            baseline_means="constant-score AUC",
            default_loss="reconstruction",
            losses=frozenset({"reconstruction"}),
            monitor="val_loss",
            view=_score_view,
            output="score",
            scores=anomaly_scores,
        ),
        Task(
            name="detection",
            description="boxes + classes per image, scored by COCO mAP (pycocotools)",
            headline="map50",
            higher_is_better=True,
            metrics=det.coco_metrics,
            agreement=det.box_agreement,
            agreement_means="matched-box F1 vs the reference (score >= 0.5, IoU >= 0.5)",
            labels="boxes",
            summary_keys=("map50", "map50_95", "precision", "recall"),
            baseline=None,
            baseline_means="",
            default_loss="detection",
            losses=frozenset({"detection"}),
            monitor="val_loss",
            view=det.boxes_view,
            output="boxes",
            decode=det.decode,
            resample=False,
        ),
        Task(
            name="features",
            description="an embedding or feature map; no labels, judged on fidelity alone",
            headline="cosine",
            higher_is_better=True,
            metrics=_no_metrics,
            agreement=value_agreement,
            agreement_means="fraction of samples whose outputs are all within 1% of the "
            "reference outputs' range",
            labels="none",
            summary_keys=(),
            baseline=None,
            baseline_means="",
            default_loss="mse",
            losses=VALUE_LOSSES,
            monitor="val_loss",
            view=_value_view,
            output="values",
        ),
    )
}


# Metrics where a smaller value is better, for reports written before `higher_is_better` was
# stored next to the metric name.
# Metrics that are a fraction of samples: their sampling noise follows from the sample count.
PROPORTION_METRICS = frozenset({"accuracy", "subset_accuracy"})
LOWER_IS_BETTER = frozenset({"mae", "mse", "rmse", "hamming_loss", "relative_rmse"})


def higher_is_better(metric: dict[str, Any]) -> bool:
    """A report's `{"name", "higher_is_better"?}` metric: its stored direction, else by name."""
    return bool(metric.get("higher_is_better", metric["name"] not in LOWER_IS_BETTER))


def get_task(name: str) -> Task:
    """The registry entry for `name`; an unknown name is a UserError naming the closest."""
    if name not in TASKS:
        raise unknown("task", name, TASKS)
    return TASKS[name]


def task_names() -> list[str]:
    return list(TASKS)


def task_metrics(
    task: str, y_true: np.ndarray, outputs: np.ndarray, labels: list[str] | None = None
) -> dict[str, Any]:
    return get_task(task).metrics(y_true, outputs, labels)


def headline(task: str) -> tuple[str, bool]:
    """The one metric a report leads with, and whether higher is better."""
    entry = get_task(task)
    return entry.headline, entry.higher_is_better


def majority_baseline(task: str, y_train: np.ndarray, y_test: np.ndarray) -> float | None:
    """What a model that ignores its input scores: the bar every recipe must clear."""
    baseline = get_task(task).baseline
    return None if baseline is None else baseline(y_train, y_test)


def resolve_loss(loss: str, task: str, num_classes: int) -> str:
    """`auto` -> the task's default loss; any other name must be one the task can train with."""
    from toolkit.core.errors import UserError

    entry = get_task(task)
    if loss == "auto":
        return entry.default_loss
    if loss not in entry.losses:
        fits = ", ".join(sorted(entry.losses | {"auto"}))
        tasks = "/".join(t.name for t in TASKS.values() if loss in t.losses) or "no task"
        raise UserError(
            f"train.loss {loss!r} is for {tasks}; this dataset is {task}: use one of {fits}"
        )
    if loss == "binary_crossentropy" and entry.classifies and num_classes != 2:
        raise UserError(f"train.loss binary_crossentropy needs 2 classes; got {num_classes}")
    return loss


def evaluate_model(model: Any, ds: Any, batch_size: int = 256) -> dict[str, Any]:
    """Test and validation metrics in inference mode (model.predict never trains BN)."""
    out: dict[str, Any] = {"task": ds.task}
    decode = get_task(ds.task).decode
    for split in ("val", "test"):
        data = getattr(ds, split)
        outputs = model.predict(data.inputs(batch_size), verbose=0)  # several heads: flat
        outputs = det.flat_outputs(outputs, list(getattr(model, "output_names", None) or []))
        if decode is not None:
            outputs = decode(outputs, ds.input_shape, ds.num_classes)
        out[split] = task_metrics(ds.task, data.y, outputs, ds.labels)
    out["baseline"] = majority_baseline(ds.task, ds.train.y, ds.test.y)
    return out


def infer_task(
    input_shape: tuple[int, ...],
    output_shape: tuple[int, ...],
    activation: str | None,
    data_task: str | None,
    classes: int = 0,
) -> tuple[str, str]:
    """(task, why) for a model that came without one, from its output and the data's labels."""
    width = int(np.prod(output_shape)) if output_shape else 1
    if tuple(output_shape) == tuple(input_shape) and width > 1:
        return "anomaly", "output shape equals input shape"
    if activation == "softmax":
        return "classification", "softmax output"
    if activation == "sigmoid":
        if width > 1:
            return "multilabel", f"{width} sigmoid outputs"
        return "classification", "one sigmoid output"
    if data_task in ("classification", "binary") and width in (classes, 1 if classes == 2 else -1):
        return data_task, f"{width} outputs for the data's {classes} classes"
    if data_task in ("regression", "multilabel", "anomaly"):
        return data_task, f"the data's labels are {data_task} targets"
    return "features", "no labels the outputs can be scored against"


def check_task_fits(
    task: str,
    input_shape: tuple[int, ...],
    output_shape: tuple[int, ...],
    classes: int = 0,
    targets: int = 0,
) -> None:
    """A task the model's outputs cannot serve is a UserError, before any conversion."""
    from toolkit.core.errors import UserError

    get_task(task)
    width = int(np.prod(output_shape)) if output_shape else 1
    shapes = f"the model maps {tuple(input_shape)} to {tuple(output_shape)}"
    if task == "anomaly" and width > 1 and tuple(output_shape) != tuple(input_shape):
        raise UserError(
            f"--task anomaly needs a reconstruction (output shape = input shape) or one score "
            f"per sample; {shapes}"
        )
    if task in ("classification", "binary") and classes and width not in (classes, 1):
        raise UserError(f"--task {task}: the data has {classes} classes but {shapes}")
    if task in ("regression", "multilabel") and targets and width != targets:
        raise UserError(f"--task {task}: the data has {targets} target columns but {shapes}")

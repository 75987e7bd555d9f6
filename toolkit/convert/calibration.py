"""What every exporter checks first (the model, the calibration array), how a conversion
failure is reported, and atomic writes."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.core.errors import UserError
from toolkit.core.rundir import atomic_write_bytes

__all__ = [
    "ConversionFailed",
    "atomic_write_bytes",
    "check_calibration",
    "check_model",
    "short_reason",
    "temp_path_beside",
]

_LOCATION = re.compile(r"^(?:<unknown>|loc\(.*?\)|\S+:\d+:\d+)[:\s]*")
_NODE_NAME = re.compile(r",? node name: [^)]*")  # ONNX checker: graph paths hundreds long


def short_reason(exc: BaseException, limit: int = 200) -> str:
    """The one line of a converter's error that says why: MLIR dumps many lines (locations,
    notes, the op); the first 'error:' line, without its location, is the sentence."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    line = errors[0].split("error:", 1)[1] if errors else (lines[0] if lines else "")
    for _ in range(3):  # "loc(...): " prefixes can nest
        line = _LOCATION.sub("", line.strip())
    line = _NODE_NAME.sub("", line)
    return (line.strip() or type(exc).__name__)[:limit]


class ConversionFailed(UserError):
    """A converter could not build this artifact for this model (an op with no kernel at this
    precision, a fake-quant graph at int16x8, ...): a property of the model, not a mistake in
    the call. The export stage skips such an artifact unless it was asked for by name."""

    def __init__(self, artifact: str, step: str, exc: BaseException) -> None:
        self.artifact = artifact
        self.reason = short_reason(exc)
        super().__init__(f"{artifact}: {step} failed: {self.reason}")


def check_model(model: Any) -> Any:
    """Accept a built Keras model (or a path to a `.keras` file, loaded in safe mode)."""
    if isinstance(model, (str, Path)):
        import keras

        path = Path(model)
        if not path.is_file():
            raise UserError(f"Keras model not found: {path}")
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    if not hasattr(model, "inputs") or not getattr(model, "built", True) or not model.inputs:
        raise UserError(
            "expected a built Keras model with known inputs (functional, or sequential "
            f"with an Input); got {type(model).__name__}"
        )
    if len(model.inputs) != 1:
        raise UserError(f"expected a single-input model; got {len(model.inputs)} inputs")
    return model


def default_input_shape(model: Any, batch: int | None = 1) -> list[int | None]:
    """The model's input shape with the batch dim set to `batch` (None = dynamic)."""
    shape = list(model.inputs[0].shape)[1:]
    if any(d is None for d in shape):
        raise UserError(
            f"model input has dynamic non-batch dimensions {tuple(model.inputs[0].shape)}; "
            "pass an explicit input_signature with fixed sizes"
        )
    return [batch, *(int(d) for d in shape)]


def check_calibration(
    calibration: np.ndarray | None, input_shape: Sequence[int | None], artifact: str
) -> np.ndarray:
    """A float32 (N, *input_shape[1:]) array, or a UserError that says what was wrong."""
    if calibration is None:
        raise UserError(
            f"{artifact} needs calibration data (representative raw inputs, a few hundred "
            "samples) and none was given"
        )
    data = np.asarray(calibration)
    expected = tuple(int(d) for d in list(input_shape)[1:])
    if data.ndim != len(expected) + 1 or tuple(data.shape[1:]) != expected:
        raise UserError(
            f"{artifact}: calibration data must have shape (N, {', '.join(map(str, expected))}); "
            f"got {data.shape}"
        )
    if len(data) == 0:
        raise UserError(f"{artifact}: calibration data is empty")
    if not np.issubdtype(data.dtype, np.number) or not np.all(np.isfinite(data)):
        raise UserError(f"{artifact}: calibration data must be finite numbers")
    return data.astype(np.float32, copy=False)


def temp_path_beside(filepath: str | Path, suffix: str) -> Path:
    """A fresh temp file name next to `filepath`, for tools that insist on writing paths."""
    filepath = Path(filepath)
    fd, tmp = tempfile.mkstemp(prefix=f".{filepath.stem}.", suffix=suffix, dir=filepath.parent)
    os.close(fd)
    return Path(tmp)

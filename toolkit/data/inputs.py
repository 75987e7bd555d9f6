"""Turn user input files (images, .npy, .csv) into raw model inputs, guided by the input spec.

Images are converted to the model's channel count and size and scaled into the value range the
model was trained on (a digits model takes 0..16), so `predict` works on a plain PNG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from toolkit.core.errors import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def find_input_spec(artifact: Path) -> dict[str, Any] | None:
    """The artifact's input spec (`data.preprocess.find_input_spec` says where it looks)."""
    from toolkit.data.preprocess import find_input_spec as find

    found = find(artifact)
    return found[1] if found else None


def _image(path: Path, shape: tuple[int, ...], value_range: tuple[float, float]) -> np.ndarray:
    """Decode exactly as training did (toolkit.data.images): 16-bit, palette, CMYK, alpha alike."""
    from PIL import Image, UnidentifiedImageError

    from toolkit.data.images import decode_image

    if len(shape) != 3 or shape[2] not in (1, 3):
        raise UserError(f"{path}: an image was given but the model takes shape {shape}")
    height, width, channels = shape
    try:
        arr = decode_image(str(path), "grayscale" if channels == 1 else "rgb", (height, width))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise UserError(f"{path}: not a readable image ({err.__class__.__name__})") from None
    lo, hi = value_range
    return lo + arr / 255.0 * (hi - lo)


def _array(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise UserError(f"{path}: not a readable .npy array ({err})") from None
    return _batch(arr.astype(np.float32), shape, path)


def _csv(path: Path, shape: tuple[int, ...], features: list[str] | None) -> np.ndarray:
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except (ValueError, OSError) as err:
        raise UserError(f"{path}: not a readable CSV ({err})") from None
    if features and set(features) <= set(frame.columns):
        frame = frame[features]
    try:
        values = frame.to_numpy(dtype=np.float32)
    except ValueError:
        raise UserError(f"{path}: every feature must be numeric") from None
    if not np.isfinite(values).all():
        raise UserError(f"{path}: contains NaN or infinite values")
    return _batch(values, shape, path)


def _batch(arr: np.ndarray, shape: tuple[int, ...], path: Path) -> np.ndarray:
    if tuple(arr.shape) == tuple(shape):
        return arr[None]
    if tuple(arr.shape[1:]) == tuple(shape):
        return arr
    raise UserError(f"{path}: input has shape {arr.shape}, the model takes {shape} (or N x that)")


def load_inputs(
    paths: list[Path], shape: tuple[int, ...], spec: dict[str, Any] | None
) -> tuple[np.ndarray, list[str]]:
    """Stack every input file into one batch; returns (batch, one name per sample)."""
    value_range = tuple(spec["value_range"]) if spec else (0.0, 255.0)
    features = spec.get("feature_names") if spec else None
    batches, names = [], []
    for path in paths:
        if not path.is_file():
            raise UserError(f"input file not found: {path}")
        suffix = path.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            arr = _image(path, shape, value_range)[None]  # type: ignore[arg-type]
        elif suffix == ".npy":
            arr = _array(path, shape)
        elif suffix == ".csv":
            arr = _csv(path, shape, features)
        else:
            raise UserError(
                f"{path}: unsupported input type {suffix or '(none)'}; give an image "
                f"({', '.join(sorted(IMAGE_SUFFIXES))}), a .npy array or a .csv table"
            )
        batches.append(arr)
        names += [path.name] if len(arr) == 1 else [f"{path.name}[{i}]" for i in range(len(arr))]
    return np.concatenate(batches).astype(np.float32), names

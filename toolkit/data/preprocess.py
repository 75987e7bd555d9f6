"""Preprocessing that travels with the model, and the input spec later stages read.

Normalization is baked into the model (a Normalization layer adapted on training data, or a
Rescaling layer), so an exported TFLite/ONNX file takes the raw values a device sees: pixels
0..255, table values as in the file. Augmentation runs in the tf.data pipeline only, so it
never reaches an exported graph.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.core.errors import UserError
from toolkit.data.base import Dataset

INPUT_SPEC_FILE = "input_spec.json"
SPEC_VERSION = 1


def preprocessing_layers(
    ds: Dataset, mode: str, *, batch_size: int = 256
) -> tuple[list[Any], dict[str, Any]]:
    """Keras layers that map raw inputs to what the model body expects, plus their record.

    `mode` is standardize | rescale | symmetric | none (`auto` is resolved by the caller).
    """
    from keras import layers

    lo, hi = (float(v) for v in ds.value_range)
    span = hi - lo if hi > lo else 1.0
    if mode == "none":
        return [], {"normalize": "none"}
    if mode == "rescale":
        layer = layers.Rescaling(1.0 / span, offset=-lo / span, name="rescale")
        return [layer], {"normalize": "rescale", "scale": 1.0 / span, "offset": -lo / span}
    if mode == "symmetric":
        scale, offset = 2.0 / span, -1.0 - 2.0 * lo / span
        layer = layers.Rescaling(scale, offset=offset, name="rescale")
        return [layer], {"normalize": "symmetric", "scale": scale, "offset": offset}
    if mode == "standardize":
        layer = layers.Normalization(axis=-1, name="normalize")
        layer.adapt(ds.train.inputs(batch_size))
        mean = np.asarray(layer.mean).reshape(-1)
        std = np.sqrt(np.maximum(np.asarray(layer.variance).reshape(-1), 0.0))
        return [layer], {
            "normalize": "standardize",
            "mean": [round(float(v), 6) for v in mean],
            "std": [round(float(v), 6) for v in std],
        }
    raise ValueError(f"unknown normalize mode {mode!r}")


def augmentation(config: Any, seed: int) -> Any | None:
    """A Keras Sequential of random layers for the training pipeline, or None when off."""
    import keras
    from keras import layers

    steps: list[Any] = []
    if config.flip:
        steps.append(layers.RandomFlip(config.flip, seed=seed))
    if config.rotation:
        steps.append(layers.RandomRotation(config.rotation, fill_mode="nearest", seed=seed))
    if config.zoom:
        steps.append(layers.RandomZoom(config.zoom, fill_mode="nearest", seed=seed))
    if config.translation:
        steps.append(
            layers.RandomTranslation(
                config.translation, config.translation, fill_mode="nearest", seed=seed
            )
        )
    if config.contrast:
        # RandomContrast clips to [0, 255]: raw inputs here are pixel values, so that holds.
        steps.append(layers.RandomContrast(config.contrast, seed=seed))
    return keras.Sequential(steps, name="augment") if steps else None


def build_input_spec(ds: Dataset, record: dict[str, Any], data_spec: Any) -> dict[str, Any]:
    """Everything a later stage (export, validate, package, predict) needs about the input."""
    layout = {"image": "NHWC", "tabular": "NC", "sequence": "NTC"}.get(ds.kind, "N...")
    return {
        "version": SPEC_VERSION,
        "kind": ds.kind,
        "task": ds.task,
        "shape": [int(d) for d in ds.input_shape],
        "dtype": "float32",
        "layout": layout,
        "value_range": [float(v) for v in ds.value_range],
        **record,
        "labels": ds.labels,
        "feature_names": ds.feature_names,
        "dataset": {k: v for k, v in asdict(data_spec).items()},
    }


def save_input_spec(spec: dict[str, Any], directory: Path) -> Path:
    from toolkit.core.rundir import atomic_write_text

    return atomic_write_text(directory / INPUT_SPEC_FILE, json.dumps(spec, indent=2) + "\n")


def load_input_spec(directory: Path) -> dict[str, Any] | None:
    """The spec saved in `directory` itself, or None when there is none."""
    path = Path(directory) / INPUT_SPEC_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:  # JSON and Unicode errors are ValueErrors
        raise UserError(f"{path} is not valid JSON ({exc})") from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc}") from None


def find_input_spec(near: Path) -> tuple[Path, dict[str, Any]] | None:
    """The one rule for where a model's input spec lives: in its directory (a run, an export
    dir, a bundle) or up to two levels above it (RUN/export/model.tflite and
    RUN/bundles/pi/model.tflite find RUN/input_spec.json). Returns (path, spec) or None."""
    near = Path(near)
    start = near if near.is_dir() else near.parent
    for folder in (start, *list(start.parents)[:2]):
        spec = load_input_spec(folder)
        if spec is not None:
            return folder / INPUT_SPEC_FILE, spec
    return None

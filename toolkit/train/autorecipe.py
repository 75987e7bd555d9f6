"""The one-line start: `keras-edge train --data KIND:PATH` picks a recipe from the data itself.

A new user has data, not a recipe. This looks at the loaded data (kind, image size, channels,
classes and their balance, sample count) and writes the recipe an experienced user would start
from; the CLI prints it and the run saves it as runs/<name>/recipe.yaml, so
`keras-edge train runs/<name>/recipe.yaml` repeats the run and editing that file is the next step.
The rules are few and documented in docs/training.md ("One-line start").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.core.errors import UserError
from toolkit.core.recipe import Recipe, parse_recipe

SMALL_IMAGE = 64  # images up to this side train a small-stride net at their own size
LARGE_IMAGE = 96  # larger images are resized to this (MobileNetV2: a 3x3 final map)
MIN_IMAGE = 16  # smaller images are upsampled to this
STEPS_TARGET = 1980  # optimizer steps a default run aims for (CIFAR-10 folder: 18 epochs)
MIN_EPOCHS, MAX_EPOCHS = 10, 50
IMBALANCE = 1.5  # largest / smallest class count from which classes are weighted
KIND_BUILDER = {"tabular": "mlp", "sequence": "conv1d"}
TASK_BUILDER = {"detection": "box_detector"}  # tasks whose labels need their own head


@dataclass
class AutoRecipe:
    recipe: Recipe
    notes: list[str] = field(default_factory=list)  # what was chosen and why, for the user
    dataset: Any = None  # the loaded Dataset when the recipe's data spec is what was loaded


def _run_name(data: str, builder: str) -> str:
    stem = Path(data.partition(":")[2].rstrip("/") or data).stem
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-.") or "data"
    return f"{stem}-{builder}"


def _image_size(ds: Any, requested: int | None) -> tuple[int, int]:
    if requested is not None:
        return requested, requested
    height, width = (int(v) for v in ds.input_shape[:2])
    if min(height, width) < MIN_IMAGE:
        return MIN_IMAGE, MIN_IMAGE
    if max(height, width) > LARGE_IMAGE:
        return LARGE_IMAGE, LARGE_IMAGE
    return height, width


def _pick_builder(ds: Any, size: tuple[int, int] | None) -> str:
    if ds.task in TASK_BUILDER:
        return TASK_BUILDER[ds.task]
    if ds.kind != "image":
        return KIND_BUILDER.get(ds.kind, "mlp")
    assert size is not None
    return "resnet8" if min(size) <= SMALL_IMAGE else "mobilenet_v2"


def _check_builder(name: str, ds: Any, shape: tuple[int, ...]) -> None:
    """Build the named builder once, bare, on the data's shape: a misfit fails here, in one
    line, before anything is printed or trained (the auto choice always fits)."""
    from toolkit.builders import BuildContext, build_model, get_builder

    get_builder(name)  # unknown names: the registry's error with a suggestion
    outputs = ds.num_classes if ds.task in ("classification", "detection") else 1
    build_model(name, BuildContext(input_shape=shape, task=ds.task, num_outputs=outputs), {})


def _augment(ds: Any) -> dict[str, Any]:
    if ds.kind != "image":
        return {}
    if ds.task == "detection":  # moves the boxes too; no rotation (boxes would not stay tight)
        return {"translation": 0.1, "zoom": 0.1}
    if ds.input_shape[-1] == 3:  # photos: mirror images are the same class
        return {"flip": "horizontal", "translation": 0.1}
    return {"rotation": 0.03, "zoom": 0.1}  # digits, scans: mirroring changes meaning


def _imbalance(ds: Any) -> float | None:
    if ds.task != "classification":
        return None
    counts = np.bincount(np.asarray(ds.train.y), minlength=ds.num_classes)
    return float(counts.max() / max(counts.min(), 1))


def auto_recipe(
    data: str,
    *,
    builder: str | None = None,
    image_size: int | None = None,
    epochs: int | None = None,
    name: str | None = None,
) -> AutoRecipe:
    """A recipe for `data` (a dataset name or KIND:PATH) with sensible defaults; see module doc."""
    from toolkit.data import load_dataset
    from toolkit.data.base import DataSpec

    if image_size is not None and image_size < 1:
        raise UserError(f"--image-size must be a positive number of pixels; got {image_size}")
    if epochs is not None and epochs < 1:
        raise UserError(f"--epochs must be at least 1; got {epochs}")
    loaded_size = (image_size, image_size) if image_size else None
    ds = load_dataset(DataSpec(name=data, image_size=loaded_size))
    if image_size is not None and ds.kind != "image":
        raise UserError(f"--image-size is for image data; {data} gives {ds.kind} data")
    size = _image_size(ds, image_size) if ds.kind == "image" else None
    if size and ds.task == "detection":  # the detectors' stride-8 grid
        size = tuple(max(16, 8 * round(v / 8)) for v in size)
    shape = (*size, int(ds.input_shape[-1])) if size else tuple(ds.input_shape)
    chosen = builder or _pick_builder(ds, size)
    if builder is not None:
        _check_builder(builder, ds, shape)

    n_train = len(ds.train)
    batch = 64 if n_train >= 2000 else 32
    steps = int(np.ceil(n_train / batch))
    epochs = epochs or int(np.clip(np.ceil(STEPS_TARGET / steps), MIN_EPOCHS, MAX_EPOCHS))
    classify = ds.task == "classification"
    ratio = _imbalance(ds)
    weighted = ratio is not None and ratio >= IMBALANCE
    what = f"{n_train} training samples, {'x'.join(map(str, ds.input_shape))}"
    what += f", {ds.num_classes} classes" if classify else f", {ds.task}"
    notes = [f"data: {what}; builder {chosen}" + (f" at {size[0]}x{size[1]}" if size else "")]
    if weighted:
        notes.append(f"classes are imbalanced (largest/smallest {ratio:.1f}): weighted, balanced")
    recipe = {
        "name": name or _run_name(data, chosen),
        "description": f"one-line start: {what}",
        "dataset": {"name": data, **({"image_size": list(size)} if size else {})},
        "preprocess": {"normalize": "auto", "augment": _augment(ds)},
        "model": {"builder": chosen, "args": {}},
        "train": {
            "epochs": epochs,
            "batch_size": batch,
            "optimizer": {"name": "adam", "learning_rate": 0.002 if size else 0.001},
            "schedule": {"name": "cosine", "warmup_epochs": 1 if epochs < 30 else 2},
            "early_stopping": {
                "monitor": "val_accuracy" if classify else "val_loss",
                "patience": max(5, epochs // 4),
            },
            "checkpoint": "best",
            "class_weight": "balanced" if weighted else None,
            "seed": 0,
            "tensorboard": False,
        },
    }
    parsed = parse_recipe(recipe, source="the one-line start")
    same = size is None or tuple(size) == tuple(int(v) for v in ds.input_shape[:2])
    return AutoRecipe(parsed, notes, ds if same and not ds.notes else None)

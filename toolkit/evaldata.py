"""The data the export stage calibrates and validates with, shaped for the model at hand.

Calibration comes from the training split and validation from held-out splits (the budget
ladder chooses on validation, the report measures on test), so nothing is tuned on the
numbers it is judged by. Foreign models (a third-party .h5) may expect another value range
than the raw data (`--input-range 0,1`), and may not share the data's labels at all
(`--parity`: the reference model's own predictions become the labels, so the metric measures
parity with the reference, not accuracy).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from toolkit.errors import UserError

Adapter = Callable[[np.ndarray], np.ndarray]


def dataset_for_model(loaded: Any, data: str | None, seed: int = 0) -> Any | None:
    """`--data`, else the run's recipe dataset, else the dataset named in the input spec."""
    from toolkit.data import DataSpec, load_dataset
    from toolkit.modelio import model_input_shape
    from toolkit.recipe import load_recipe

    if data:
        shape = model_input_shape(loaded.model)
        image = len(shape) == 3 and shape[-1] in (1, 3)
        spec = DataSpec(
            name=data,
            image_size=(int(shape[0]), int(shape[1])) if image else None,
            color_mode=("grayscale" if shape[-1] == 1 else "rgb") if image else None,
            seed=seed,
        )
        return load_dataset(spec)
    if loaded.recipe_path is not None:
        return load_dataset(load_recipe(str(loaded.recipe_path)).dataset.spec())
    if loaded.input_spec and loaded.input_spec.get("dataset"):
        spec = dict(loaded.input_spec["dataset"])
        if spec.get("image_size") is not None:
            spec["image_size"] = tuple(spec["image_size"])
        return load_dataset(DataSpec(**spec))
    return None


def check_fits(ds: Any, model: Any) -> None:
    """Data of the wrong shape for the model is a user error, caught before any conversion."""
    from toolkit.modelio import model_input_shape

    want = tuple(int(d) for d in model_input_shape(model))
    got = tuple(int(d) for d in ds.input_shape)
    if want != got:
        raise UserError(
            f"data {ds.name} has samples of shape {got} but the model takes {want}; "
            "pass --data with matching inputs"
        )


def parse_range(text: str | None) -> tuple[float, float] | None:
    if not text:
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--input-range expects LO,HI (e.g. 0,1), got {text!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise UserError(f"--input-range needs finite LO < HI, got {text!r}")
    return lo, hi


def range_adapter(ds: Any, target: tuple[float, float] | None) -> Adapter:
    """Map the data's raw value range linearly onto the range the model expects."""
    if target is None:
        return lambda x: x
    lo, hi = (float(v) for v in ds.value_range)
    t_lo, t_hi = target
    scale = (t_hi - t_lo) / ((hi - lo) or 1.0)
    return lambda x: ((x - lo) * scale + t_lo).astype(np.float32)


def calibration_data(ds: Any, samples: int, seed: int, adapt: Adapter) -> np.ndarray:
    """A deterministic choice of training inputs: the same samples for every conversion."""
    return adapt(ds.train.take_x(samples, seed=seed))


def eval_data(
    ds: Any,
    split: str,
    *,
    limit: int | None = None,
    seed: int = 0,
    adapt: Adapter | None = None,
    parity_model: Any = None,
) -> Any:
    """Held-out inputs and labels as EvalData (labels from `parity_model` when given)."""
    from toolkit.validate import EvalData

    part = getattr(ds, split)
    x = part.take_x(limit, seed=seed)
    x = adapt(x) if adapt else x
    y = np.asarray(part.y)
    if limit is not None and limit < len(y):  # take_x picks with the same seeded rule
        y = y[np.sort(np.random.default_rng(seed).choice(len(y), size=limit, replace=False))]
    name = f"{ds.name} {split} split ({len(y)} samples)"
    task, labels = ds.task, ds.labels
    if parity_model is not None:
        from toolkit.metrics import predicted_classes

        outputs = parity_model.predict(x, verbose=0)
        regression = outputs.ndim == 1 or (outputs.shape[-1] == 1 and ds.task == "regression")
        task = "regression" if regression else "classification"
        y = outputs.astype(np.float32) if regression else predicted_classes(outputs)
        labels = None
        name += ", labels = reference predictions (parity, not accuracy)"
    return EvalData(x, y, task, labels, name=name)

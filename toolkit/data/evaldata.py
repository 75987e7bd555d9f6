"""The data the export stage calibrates and validates with, shaped for the model at hand.

Calibration comes from the training split and validation from held-out splits (the budget
ladder chooses on validation, the report measures on test), so nothing is tuned on the
numbers it is judged by. Foreign models (a third-party .h5) may expect another value range
than the raw data (`--input-range 0,1`), and may not share the data's labels at all
(`--parity`: the reference model's own predictions become the labels, so the metric measures
parity with the reference, not accuracy).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from toolkit.core.errors import UserError
from toolkit.core.tasks import get_task

Adapter = Callable[[np.ndarray], np.ndarray]


class StreamedInputs:
    """Held-out inputs that stay on disk and are decoded one batch at a time when read.

    An image folder's test split (10,000 images of a 50,000-image folder: ~120 MB as float32,
    more while stacking) is never one array: validation feeds every runtime batch by batch.
    Length and `[i]` (latency uses one sample) work like the array it stands for.
    """

    def __init__(
        self, split: Any, limit: int | None, seed: int, adapt: Adapter, batch_size: int = 256
    ) -> None:
        self._split, self._limit, self._seed, self._adapt = split, limit, seed, adapt
        self._batch_size = batch_size
        total = len(split.y)
        self._len = total if limit is None else min(limit, total)
        self.shape = (self._len, *split.sample_shape)

    def __len__(self) -> int:
        return self._len

    def batches(self, batch_size: int | None = None) -> Iterator[np.ndarray]:
        """Float32 batches in the order `take_x(limit, seed)` would return them."""
        size = batch_size or self._batch_size
        for x in self._split.x_batches(self._limit, seed=self._seed, batch_size=size):
            yield np.asarray(self._adapt(x), dtype=np.float32)

    def __getitem__(self, index: int) -> np.ndarray:
        if not isinstance(index, (int, np.integer)) or not -self._len <= index < self._len:
            raise IndexError(f"streamed inputs take one sample index in [0, {self._len})")
        index %= self._len
        first = self.batches(index + 1)  # decodes only the first index + 1 files
        try:
            return next(first)[index]
        finally:
            first.close()


@dataclass
class EvalData:
    """Held-out samples as a device sees them (raw float32, before any in-model rescaling)."""

    x: np.ndarray
    y: np.ndarray
    task: str  # a name in the Task registry (core.tasks)
    labels: list[str] | None = None
    name: str = ""
    labelled: bool = True  # False: `y` is a placeholder; only label-free fidelity is measured

    def __post_init__(self) -> None:
        if not isinstance(self.x, StreamedInputs):  # an image folder's split stays on disk
            self.x = np.asarray(self.x, dtype=np.float32)
        self.y = np.asarray(self.y)
        if not get_task(self.task).needs_labels:
            self.labelled = False
        if len(self.x) == 0:
            raise UserError("validation needs at least one held-out sample; got none")
        if len(self.x) != len(self.y):
            raise UserError(
                f"held-out inputs and labels differ in length: {len(self.x)} vs {len(self.y)}"
            )
        if not self.name:
            self.name = f"held-out data ({len(self.x)} samples)"

    @property
    def metric_task(self) -> str:
        """The task whose metrics can be computed: without labels, fidelity (`features`)."""
        return self.task if self.labelled else "features"

    def head(self, n: int) -> EvalData:
        """The first `n` samples (the evaluation order is already a seeded shuffle): the
        deterministic subset slow runtimes (LiteRT reference kernels) are checked on."""
        if n >= len(self.x):
            return self
        if isinstance(self.x, StreamedInputs):
            taken, got = [], 0
            for batch in self.x.batches():
                taken.append(batch[: n - got])
                got += len(taken[-1])
                if got >= n:
                    break
            x = np.concatenate(taken)
        else:
            x = self.x[:n]
        return EvalData(x, self.y[:n], self.task, self.labels,
                        name=f"{self.name}, first {n}", labelled=self.labelled)  # fmt: skip

    def all_inputs(self) -> np.ndarray:
        """Every input as one array (streamed splits are decoded once more)."""
        if isinstance(self.x, StreamedInputs):
            return np.concatenate(list(self.x.batches()))
        return self.x


def predict_batched(predict: Callable[[np.ndarray], np.ndarray], x: Any) -> np.ndarray:
    """`predict` over all of `x`: an array in one call, StreamedInputs batch by batch."""
    if isinstance(x, StreamedInputs):
        return np.concatenate([np.asarray(predict(batch)) for batch in x.batches()])
    return np.asarray(predict(x))


def dataset_for_model(
    loaded: Any,
    data: str | None,
    seed: int = 0,
    *,
    task: str | None = None,
    target: str | None = None,
) -> Any | None:
    """`--data`, else the run's recipe dataset, else the dataset named in the input spec.

    `task` decides how `--data` labels are read (anomaly 0/1, several regression columns);
    `target` names a CSV's target column(s), comma-separated."""
    from toolkit.core.modelio import model_input_shape
    from toolkit.core.recipe import load_recipe
    from toolkit.data import DataSpec, load_dataset

    if data:
        shape = model_input_shape(loaded.model)
        image = len(shape) == 3 and shape[-1] in (1, 3)
        spec = DataSpec(
            name=data,
            image_size=(int(shape[0]), int(shape[1])) if image else None,
            color_mode=("grayscale" if shape[-1] == 1 else "rgb") if image else None,
            seed=seed,
            task=task if task not in (None, "features") else None,
            target=target,
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
    from toolkit.core.modelio import model_input_shape

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
    task: str | None = None,
) -> Any:
    """Held-out inputs and labels as EvalData (labels from `parity_model` when given).

    Splits that stream from disk (image folders) give StreamedInputs, not one big array.
    """
    part = getattr(ds, split)
    if hasattr(part, "x_batches"):
        x: Any = StreamedInputs(part, limit, seed, adapt or (lambda a: a))
    else:
        x = part.take_x(limit, seed=seed)
        x = adapt(x) if adapt else x
    y = np.asarray(part.y)
    if limit is not None and limit < len(y):  # take_x picks with the same seeded rule
        y = y[np.sort(np.random.default_rng(seed).choice(len(y), size=limit, replace=False))]
    name = f"{ds.name} {split} split ({len(y)} samples)"
    labelled = ds.task != "features"  # an npz with `x` alone, or another unlabelled source
    task, labels = task or ds.task, ds.labels
    if parity_model is not None:
        from toolkit.core.batching import batch_size_for
        from toolkit.core.metrics import predicted_classes

        step = batch_size_for(tuple(x.shape[1:]))
        outputs = predict_batched(lambda b: parity_model.predict(b, batch_size=step, verbose=0), x)
        regression = outputs.ndim == 1 or (outputs.shape[-1] == 1 and ds.task == "regression")
        task = "regression" if regression else "classification"
        y = outputs.astype(np.float32) if regression else predicted_classes(outputs)
        labels = None
        name += ", labels = reference predictions (parity, not accuracy)"
        labelled = True
    return EvalData(x, y, task, labels, name=name, labelled=labelled)


def task_for_model(loaded: Any, ds: Any, explicit: str | None) -> tuple[str, str | None]:
    """(task, note): `--task`, else the run's recipe task, else inferred from the model's output
    and the data; the note says what was inferred and why (printed once by the caller)."""
    from toolkit.core.model_outputs import final_activation, output_shape
    from toolkit.core.modelio import model_input_shape
    from toolkit.core.tasks import check_task_fits, get_task, infer_task

    shape_in, shape_out = model_input_shape(loaded.model), output_shape(loaded.model)
    labelled = ds is not None and ds.task != "features"
    classes = ds.num_classes if labelled and get_task(ds.task).classifies else 0
    targets = 0
    if labelled and ds.task in ("regression", "multilabel"):
        y = np.asarray(ds.train.y)
        targets = 1 if y.ndim == 1 else int(y.shape[1])
    if explicit:
        check_task_fits(explicit, shape_in, shape_out, classes, targets)
        return explicit, None
    known = (loaded.input_spec or {}).get("task")
    if known:
        return str(known), None
    task, why = infer_task(shape_in, shape_out, final_activation(loaded.model),
                           ds.task if labelled else None, classes)  # fmt: skip
    return task, f"task: {task}, inferred: {why}; override with --task"

"""Checks that catch a run that will not work, said while it trains rather than after.

Two failures look fine in the training-mode numbers: a feature map shrunk below 2x2 (a
stride-32 backbone on 32x32 images), and a model that learns in training mode while inference
mode predicts one class (BatchNorm moving statistics that never caught up with the weights).
Keras' `val_*` metrics are computed in inference mode, so the collapse check reads them from
the epoch logs; the baseline is what a model ignoring its input scores on the same split.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

COLLAPSE_EPOCHS = 3  # epochs in a row at the baseline before the warning
COLLAPSE_BAND = 0.02  # "at the baseline": val accuracy within 2 pp of the majority class
TRAIN_MARGIN = 0.10  # "well above": training accuracy 10 pp over the baseline (R² over 0.1)
SMALL_STRIDE_BUILDERS = ("resnet8", "cnn")


def batchnorm_layers(model: Any) -> list[Any]:
    """Every BatchNormalization layer, nested models (a transfer backbone) included."""
    from keras import layers

    found, stack = [], list(model.layers)
    while stack:
        layer = stack.pop()
        stack.extend(getattr(layer, "layers", []))
        if isinstance(layer, layers.BatchNormalization):
            found.append(layer)
    return found


def bn_momenta(model: Any) -> list[float]:
    """The distinct BatchNorm momenta in a model (recorded in metrics.json)."""
    return sorted({round(float(layer.momentum), 6) for layer in batchnorm_layers(model)})


def _spatial_outputs(model: Any) -> list[tuple[int, int]]:
    shapes, stack = [], list(model.layers)
    while stack:
        layer = stack.pop()
        stack.extend(getattr(layer, "layers", []))
        try:
            shape = tuple(layer.output.shape)
        except (AttributeError, ValueError):  # a layer with several or no outputs
            continue
        if len(shape) == 4 and shape[1] and shape[2]:
            shapes.append((int(shape[1]), int(shape[2])))
    return shapes


def input_size_warning(model: Any, builder: str) -> str | None:
    """A message when the model shrinks its image input below a 2x2 feature map, else None."""
    shape = tuple(model.inputs[0].shape[1:])
    spatial = _spatial_outputs(model)
    if len(shape) != 3 or not spatial:
        return None
    smallest = min(spatial, key=lambda hw: hw[0] * hw[1])
    if min(smallest) >= 2:
        return None
    height, width = int(shape[0]), int(shape[1])
    stride = max(height // smallest[0], width // smallest[1])
    others = ", ".join(b for b in SMALL_STRIDE_BUILDERS if b != builder)
    return (
        f"{builder} reduces the {height}x{width} input to a {smallest[0]}x{smallest[1]} feature "
        f"map (total stride {stride}), too little to learn from; use image_size "
        f"[{2 * stride}, {2 * stride}] or larger (--image-size {2 * stride}), or a builder "
        f"that keeps a map at {height}x{width} ({others})"
    )


def collapse_callback(
    task: str,
    val_baseline: float | None,
    *,
    total_steps: int,
    bn_momentum: list[float],
    log: Callable[[str], None],
    epochs: int = COLLAPSE_EPOCHS,
) -> Any:
    """A Keras callback that warns once when inference-mode validation sits at the baseline for
    `epochs` epochs while training improves well above it; `.finding` holds what it saw."""
    import keras

    regression = task == "regression"
    if regression:
        metric, base, what = "r2", 0.0, "val R² stayed <= 0 (no better than the mean)"
    else:
        metric, base = "accuracy", float(val_baseline or 0.0)
        what = f"val accuracy stayed within 2 pp of the majority-class baseline ({base:.3f})"

    class CollapseWatch(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.finding: dict[str, Any] | None = None
            self.streak: list[tuple[int, float, float]] = []

        def on_train_begin(self, logs: dict | None = None) -> None:
            self.streak = []

        def _at_baseline(self, val: float) -> bool:
            return val <= base if regression else abs(val - base) <= COLLAPSE_BAND

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = logs or {}
            train, val = logs.get(metric), logs.get(f"val_{metric}")
            if train is None or val is None:
                return
            if not self._at_baseline(float(val)):
                self.streak = []
                if self.finding is not None and self.finding.get("recovered_epoch") is None:
                    self.finding["recovered_epoch"] = epoch + 1
                return
            self.streak.append((epoch + 1, float(train), float(val)))
            if self.finding is not None or len(self.streak) < epochs:
                return
            first, last = self.streak[-epochs], self.streak[-1]
            if last[1] < base + TRAIN_MARGIN or last[1] <= first[1]:
                return
            self.finding = _finding(what, metric, first, last, total_steps, bn_momentum)
            log(self.finding["message"])

    return CollapseWatch()


def _finding(
    what: str,
    metric: str,
    first: tuple[int, float, float],
    last: tuple[int, float, float],
    total_steps: int,
    bn_momentum: list[float],
) -> dict[str, Any]:
    label = "R²" if metric == "r2" else "accuracy"
    if bn_momentum:
        cause = (
            f"likely cause: BatchNorm moving statistics (momentum {max(bn_momentum):g}) lag the "
            f"weights over this run's {total_steps} steps, and inference mode uses them; fix: "
            "set model.args.bn_momentum (e.g. 0.9) or train for more steps"
        )
    else:
        cause = (
            "the model has no BatchNorm: check that validation data looks like training data "
            "(preprocessing, label order) and lower the learning rate"
        )
    message = (
        f"inference-mode collapse: {what} in epochs {first[0]}-{last[0]} while training "
        f"{label} rose from {first[1]:.3f} to {last[1]:.3f}; {cause}"
    )
    return {
        "kind": "collapse",
        "metric": metric,
        "epochs": [first[0], last[0]],
        "train": round(last[1], 4),
        "val": round(last[2], 4),
        "message": message,
        "recovered_epoch": None,
    }

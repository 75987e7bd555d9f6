"""Optimizers, learning-rate schedules and losses named by a recipe (registries, not if-chains)."""

from __future__ import annotations

from typing import Any

from toolkit.core.errors import UserError


def make_loss(name: str, label_smoothing: float) -> Any:
    import keras

    table = {
        "sparse_categorical_crossentropy": lambda: keras.losses.SparseCategoricalCrossentropy(),
        "categorical_crossentropy": lambda: keras.losses.CategoricalCrossentropy(
            label_smoothing=label_smoothing
        ),
        "binary_crossentropy": lambda: keras.losses.BinaryCrossentropy(
            label_smoothing=label_smoothing
        ),
        "mse": keras.losses.MeanSquaredError,
        "mae": keras.losses.MeanAbsoluteError,
        "huber": keras.losses.Huber,
        "reconstruction": lambda: reconstruction_loss,
    }
    return table[name]()


def reconstruction_loss(y_true: Any, y_pred: Any) -> Any:
    """Mean anomaly score (the model's output) over the *normal* samples (label 0) of a batch:
    an autoencoder learns what normal looks like; anomalies in training data are ignored."""
    import keras

    ops = keras.ops
    normal = 1.0 - ops.reshape(ops.cast(y_true, y_pred.dtype), (-1,))
    score = ops.reshape(y_pred, (-1,))
    return ops.sum(score * normal) / ops.maximum(ops.sum(normal), 1.0)


def metrics_for(loss: str) -> list[Any]:
    import keras

    table = {
        "sparse_categorical_crossentropy": [keras.metrics.SparseCategoricalAccuracy("accuracy")],
        "categorical_crossentropy": [keras.metrics.CategoricalAccuracy("accuracy")],
        "binary_crossentropy": [keras.metrics.BinaryAccuracy("accuracy")],
    }
    if loss == "reconstruction":
        return []  # the loss is the metric: mean reconstruction error on normal samples
    # R² beside MAE: the collapse check (train/health.py) compares train and val R² with 0.
    return table.get(
        loss, [keras.metrics.MeanAbsoluteError("mae"), keras.metrics.R2Score(name="r2")]
    )


def make_schedule(config: Any, base_lr: float, steps_per_epoch: int, epochs: int) -> Any:
    """A keras LearningRateSchedule, or the plain float for `constant`."""
    import keras

    schedules = keras.optimizers.schedules
    total = max(1, steps_per_epoch * epochs)
    warmup = min(total - 1, steps_per_epoch * config.warmup_epochs)
    if config.name == "constant":
        if warmup:
            raise UserError("train.schedule.warmup_epochs needs a cosine schedule")
        return base_lr
    if config.name == "cosine":
        return schedules.CosineDecay(
            initial_learning_rate=base_lr / 10 if warmup else base_lr,
            decay_steps=max(1, total - warmup),
            alpha=config.min_lr_fraction,
            warmup_target=base_lr if warmup else None,
            warmup_steps=warmup,
        )
    if config.name == "exponential":
        return schedules.ExponentialDecay(base_lr, steps_per_epoch, config.decay_rate)
    return schedules.ExponentialDecay(  # step
        base_lr, steps_per_epoch * config.step_epochs, config.decay_rate, staircase=True
    )


def make_optimizer(config: Any, learning_rate: Any) -> Any:
    import keras

    opt = keras.optimizers
    common: dict[str, Any] = {"learning_rate": learning_rate}
    if config.clipnorm:
        common["clipnorm"] = config.clipnorm
    table = {
        "adam": lambda: opt.Adam(**common),
        "adamw": lambda: opt.AdamW(weight_decay=config.weight_decay or 1e-4, **common),
        "sgd": lambda: opt.SGD(momentum=config.momentum, nesterov=config.nesterov, **common),
        "rmsprop": lambda: opt.RMSprop(momentum=config.momentum, **common),
        "adagrad": lambda: opt.Adagrad(**common),
    }
    return table[config.name]()

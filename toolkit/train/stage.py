"""The train stage: recipe -> runs/<name>/ (model.keras, input spec, history, metrics, plots).

The run directory is assembled under a hidden temp name and renamed into place at the end,
so an interrupted or failed run never leaves a directory that looks finished. Metrics are
measured in inference mode on the held-out test split.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.core.errors import UserError
from toolkit.core.recipe import Recipe
from toolkit.core.tasks import get_task

MONITORS = {"loss", "val_loss", "accuracy", "val_accuracy", "mae", "val_mae"}


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict[str, Any]
    history: dict[str, list[float]]
    params: int
    optimized: Any = None  # the OptimizeResult when the recipe's optimize: section ran

    @property
    def headline(self) -> tuple[str, float]:
        from toolkit.core.tasks import get_task

        name = get_task(self.metrics["task"]).headline
        return name, float(self.metrics["test"][name])


def _check_training_options(recipe: Recipe, task: str) -> None:
    cfg = recipe.train
    for section in (cfg.early_stopping, cfg.reduce_lr):
        if section is not None and section.monitor not in MONITORS:
            raise UserError(
                f"recipe: monitor {section.monitor!r} is not logged; use one of "
                f"{', '.join(sorted(MONITORS))}"
            )
        if section is not None and not get_task(task).classifies and "accuracy" in section.monitor:
            raise UserError(f"recipe: {task} runs log no accuracy; monitor val_loss or val_mae")
    if cfg.reduce_lr is not None and cfg.schedule.name != "constant":
        raise UserError(
            "recipe: train.reduce_lr needs a constant learning rate; "
            f"it cannot adjust the {cfg.schedule.name!r} schedule"
        )


def _callbacks(recipe: Recipe, work: Path, task: str) -> list[Any]:
    import keras

    from toolkit.core.progress import epoch_callback

    cfg = recipe.train
    best_monitor = get_task(task).monitor
    callbacks: list[Any] = [
        epoch_callback(cfg.epochs + _fine_tune_epochs(recipe), f"train {recipe.name}"),
        keras.callbacks.CSVLogger(str(work / "history.csv")),
        keras.callbacks.ModelCheckpoint(
            str(work / "best.weights.h5"),
            monitor=best_monitor,
            save_best_only=cfg.checkpoint == "best",
            save_weights_only=True,
        ),
    ]
    if cfg.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(str(work / "logs"), profile_batch=0))
    if cfg.early_stopping is not None:
        es = cfg.early_stopping
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=es.monitor, patience=es.patience, min_delta=es.min_delta
            )
        )
    if cfg.reduce_lr is not None:
        rl = cfg.reduce_lr
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor=rl.monitor, patience=rl.patience, factor=rl.factor, min_lr=rl.min_lr
            )
        )
    return callbacks


def _fine_tune_epochs(recipe: Recipe) -> int:
    transfer = getattr(recipe, "transfer", None)
    return transfer.fine_tune_epochs if transfer is not None and transfer.pretrained else 0


def build_for_data(
    recipe: Recipe, ds: Any, loss: str, total_steps: int | None = None
) -> tuple[Any, dict[str, Any]]:
    """The recipe's builder on this data, with preprocessing baked in. Returns (model, record).
    `total_steps` (the run's optimizer steps) lets builders fit BatchNorm momentum to the run."""
    from toolkit.builders import BuildContext, build_model, get_builder
    from toolkit.data.preprocess import preprocessing_layers

    if getattr(recipe, "transfer", None) is not None:
        from toolkit.train.transfer import build_transfer_model

        return build_transfer_model(recipe, ds, loss)
    info = get_builder(recipe.model.builder)
    mode = recipe.preprocess.normalize
    if mode == "auto":
        mode = info.normalize if ds.kind == "image" else "standardize"
    layers, record = preprocessing_layers(ds, mode)
    per_class = get_task(ds.task).classifies or get_task(ds.task).labels == "boxes"
    outputs = ds.num_classes if per_class else _regression_width(ds)
    ctx = BuildContext(
        input_shape=tuple(ds.input_shape),
        task=ds.task,
        num_outputs=outputs,
        preprocess=layers,
        l1=recipe.train.l1,
        l2=recipe.train.l2,
        dropout=recipe.train.dropout,
        total_steps=total_steps,
    )
    ctx._binary = loss == "binary_crossentropy"
    if get_task(ds.task).output == "values":
        y = np.asarray(ds.train.y, dtype=np.float64)
        ctx.target_scale = (float(y.mean()), float(y.std()) or 1.0)
        record["target_mean"], record["target_std"] = ctx.target_scale
    return build_model(recipe.model.builder, ctx, dict(recipe.model.args)), record


def _regression_width(ds: Any) -> int:
    y = np.asarray(ds.train.y)
    return 1 if y.ndim == 1 else int(y.shape[1])


def warn(message: str) -> None:
    """One yellow `warning:` line on stderr, beside the progress output."""
    from toolkit.core.progress import console

    console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def class_weights(recipe: Recipe, ds: Any) -> dict[int, float] | None:
    """`train.class_weight: balanced` -> {class index: weight} (scikit-learn's rule)."""
    if recipe.train.class_weight is None:
        return None
    if not get_task(ds.task).classifies:
        raise UserError(f"recipe: train.class_weight needs classes; this dataset is {ds.task}")
    from sklearn.utils.class_weight import compute_class_weight

    classes = np.arange(ds.num_classes)
    weights = compute_class_weight(recipe.train.class_weight, classes=classes, y=ds.train.y)
    return {int(c): round(float(w), 6) for c, w in zip(classes, weights, strict=True)}


def _watch(model: Any, ds: Any, total_steps: int) -> Any:
    """The collapse check for this run's task (train/health.py)."""
    from toolkit.train.health import bn_momenta, collapse_callback

    baseline = None
    if get_task(ds.task).classifies:
        values, counts = np.unique(np.asarray(ds.train.y), return_counts=True)
        baseline = float(np.mean(np.asarray(ds.val.y) == values[np.argmax(counts)]))
    return collapse_callback(
        "regression" if ds.task == "regression" else "classification",
        baseline,
        total_steps=total_steps,
        bn_momentum=bn_momenta(model),
        log=warn,
    )


def _history(path: Path) -> dict[str, list[float]]:
    import csv

    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    keys = rows[0].keys() if rows else []
    return {k: [float(r[k]) for r in rows] for k in keys}


def train(
    recipe: Recipe | str | Path,
    runs_dir: Path | str = "runs",
    *,
    name: str | None = None,
    force: bool = False,
    extra_callbacks: list[Any] | None = None,
    dataset: Any = None,
) -> TrainResult:
    """Train a recipe (a Recipe, a built-in name or a YAML path) and write runs/<name>/;
    returns the test metrics and where it all went. A recipe's `optimize:` section runs from
    `pipeline.training.run_training` (what `keras-edge train` calls), not here. `dataset`: the
    recipe's data already loaded (the one-line start loads it once to choose the recipe)."""
    import keras
    import tensorflow as tf

    from toolkit.core.rundir import atomic_dir, atomic_write_text, check_run_dir
    from toolkit.core.tasks import evaluate_model, resolve_loss
    from toolkit.data import load_dataset
    from toolkit.data.pipelines import training_pipelines
    from toolkit.data.preprocess import build_input_spec, save_input_spec
    from toolkit.train.optim import make_loss, make_optimizer, make_schedule, metrics_for
    from toolkit.train.plots import plot_confusion, plot_history

    if not isinstance(recipe, Recipe):
        from toolkit.core.recipe import load_recipe

        recipe = load_recipe(str(recipe))
    from toolkit.train.distribute import make_plan

    plan = make_plan(recipe.distribute)  # first: collective ops start with TF's context
    final = Path(runs_dir) / (name or recipe.name)
    if plan.chief:  # other workers write nothing there
        check_run_dir(final, force)  # before any slow work
    cfg = recipe.train
    keras.utils.set_random_seed(cfg.seed)
    tf.config.experimental.enable_op_determinism()

    ds = dataset if dataset is not None else load_dataset(recipe.dataset.spec())
    for note in ds.notes:  # skipped files, mixed image sizes: worth a line before training
        warn(note)
    _check_training_options(recipe, ds.task)
    loss = resolve_loss(cfg.loss, ds.task, ds.num_classes)
    weights = class_weights(recipe, ds)
    steps = int(np.ceil(len(ds.train) / cfg.batch_size))
    total_steps = steps * (cfg.epochs + _fine_tune_epochs(recipe))
    with plan.scope():  # variables of a distributed run are created under its strategy
        model, record = build_for_data(recipe, ds, loss, total_steps)
    from toolkit.train.health import bn_momenta, input_size_warning

    builder = recipe.model.builder if recipe.transfer is None else recipe.transfer.backbone
    findings: list[dict[str, Any]] = []
    small = input_size_warning(model, Path(builder).name)
    if small:
        warn(small)
        findings.append({"kind": "input_size", "message": small})
    schedule = make_schedule(cfg.schedule, cfg.optimizer.learning_rate, steps, cfg.epochs)

    boxes = get_task(ds.task).labels == "boxes"  # detection: per-head losses and targets
    from toolkit.train import detection

    def compile_(target: Any) -> None:
        target.compile(
            optimizer=make_optimizer(cfg.optimizer, schedule),
            loss=detection.losses(target) if boxes else make_loss(loss, cfg.label_smoothing),
            metrics=[] if boxes else metrics_for(loss),
        )

    with plan.scope():
        compile_(model)
    if boxes:
        train_ds, val_ds = detection.pipelines(recipe, ds, model)
    else:
        train_ds, val_ds = training_pipelines(recipe, ds, loss)
    if plan.distributed:
        from toolkit.train.distribute import shard

        train_ds, val_ds = shard(train_ds), shard(val_ds)

    from toolkit.train.distribute import scratch_dir

    where = atomic_dir(final, force=force) if plan.chief else scratch_dir("keras-edge-worker-")
    with where as work:
        started = time.perf_counter()
        watch = _watch(model, ds, total_steps)
        callbacks = [*_callbacks(recipe, work, ds.task), watch, *(extra_callbacks or [])]
        backup = None
        if plan.distributed and plan.backup:
            from toolkit.train.distribute import backup_callback, backup_dir

            backup = backup_dir(final, plan, recipe.to_yaml())
            callbacks.append(backup_callback(backup))
        from toolkit.train.distribute import defer_keras_build, keras_multi_worker_logs

        if plan.distributed:
            defer_keras_build(model)
        with plan.scope(), keras_multi_worker_logs(plan):
            model.fit(
                train_ds,
                validation_data=val_ds,
                epochs=cfg.epochs,
                verbose=0,
                shuffle=False,  # the tf.data pipeline shuffles, seeded
                callbacks=callbacks,
                class_weight=weights,
            )
            if recipe.transfer is not None:  # phase 2: unfreeze the backbone's top layers
                from toolkit.train.transfer import fine_tune

                fine_tune(model, recipe, train_ds, val_ds, callbacks, loss, weights)
        seconds = time.perf_counter() - started
        if backup is not None:  # finished: nothing left to resume
            import shutil

            shutil.rmtree(backup, ignore_errors=True)
        if plan.distributed:  # evaluate and save as plain one-device Keras
            from toolkit.train.distribute import describe, plain_copy

            model = plain_copy(model)
            compile_(model)
            if not plan.chief:
                info = {"chief": False, "distribute": describe(plan), "worker": plan.index}
                return TrainResult(final, info, _history(work / "history.csv"), 0)
        best = work / "best.weights.h5"
        if best.exists():
            model.load_weights(str(best))
            best.unlink()
        metrics = evaluate_model(model, ds)
        history = _history(work / "history.csv")
        metrics.update(
            recipe=recipe.name,
            epochs_run=len(history.get("epoch", [])),
            train_seconds=round(seconds, 2),
            params=int(model.count_params()),
            loss=loss,
            skipped_files=ds.skipped,
            bn_momentum=bn_momenta(model),
            class_weight=(
                {ds.labels[c]: w for c, w in weights.items()} if weights and ds.labels else None
            ),
            warnings=findings + ([watch.finding] if watch.finding else []),
        )
        if plan.distributed:
            metrics["distribute"] = describe(plan)
        model.save(str(work / "model.keras"))
        save_input_spec(build_input_spec(ds, record, recipe.dataset.spec()), work)
        atomic_write_text(work / "recipe.yaml", recipe.to_yaml())
        atomic_write_text(work / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        plot_history(history, work / "plots")
        if "confusion_matrix" in metrics["test"]:
            cm = metrics["test"]["confusion_matrix"]
            plot_confusion(cm, metrics["test"]["labels"], work / "plots" / "confusion_matrix.png")
    return TrainResult(final, metrics, history, metrics["params"])

"""The optimize stage: RUN -> RUN/optimized/ (pruned / clustered / quantization-aware model).

Steps run in a fixed order, each followed by fine-tuning on the run's own training pipeline
(same data, split, augmentation and loss): prune -> strip -> cluster -> strip -> QAT.
Pruned or clustered models go back to Keras 3 (`model.keras`); a QAT model keeps tfmot's
fake-quant wrappers, so it is written as a SavedModel that export/validate load like any
model. The output directory is built under a temporary name and renamed at the end.
"""

from __future__ import annotations

import gzip
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.core.errors import UserError
from toolkit.core.optimize_config import OptimizeConfig

COPIED = ("input_spec.json", "recipe.yaml")
RANGE_SAMPLES = 512  # inputs that set QAT's starting fake-quant ranges


@dataclass
class OptimizeResult:
    out_dir: Path
    steps: list[str]
    metrics: dict[str, Any]  # the optimized model's test/val metrics (inference mode)
    reference: dict[str, Any]  # the dense run's test metrics
    layers: list[dict[str, Any]]  # per weight layer: sparsity, unique weights
    size: dict[str, Any]  # dense vs gzip bytes of the weights, before and after
    model_kind: str  # "keras" (model.keras) | "saved_model" (QAT)
    notes: list[str] = field(default_factory=list)

    @property
    def headline(self) -> tuple[str, float, float]:
        """(metric name, reference value, optimized value) on the test split."""
        from toolkit.core.tasks import get_task

        name = get_task(self.metrics["task"]).headline
        return name, float(self.reference[name]), float(self.metrics["test"][name])


def _load_run(run_dir: Path) -> tuple[Any, Any, dict[str, Any]]:
    from toolkit.core.modelio import load_model
    from toolkit.core.recipe import load_recipe
    from toolkit.optimize.prune import check_not_optimized

    if not run_dir.is_dir():
        raise UserError(f"run directory not found: {run_dir}")
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    if "optimize" in metrics:
        raise UserError(
            f"{run_dir} is already optimized ({'+'.join(metrics['optimize']['steps'])}, stripped); "
            f"optimize the original run {metrics['optimize'].get('source', '')} instead"
        )
    if (run_dir / "saved_model.pb").is_file():
        raise UserError(
            f"{run_dir} holds a SavedModel (e.g. a QAT result): it cannot be optimized again; "
            "optimize the original run instead"
        )
    if not (run_dir / "model.keras").is_file() or not (run_dir / "recipe.yaml").is_file():
        raise UserError(
            f"{run_dir} is not a run directory: optimize needs model.keras and recipe.yaml "
            "(what `keras-edge train` writes)"
        )
    loaded = load_model(run_dir)
    check_not_optimized(loaded.model)
    return loaded, load_recipe(str(run_dir / "recipe.yaml")), metrics


def _weights_size(model: Any) -> dict[str, int]:
    """Float32 bytes of every weight, raw and gzipped: what pruning and clustering buy."""
    blob = b"".join(np.asarray(w, dtype=np.float32).tobytes() for w in model.get_weights())
    return {"bytes": len(blob), "gzip_bytes": len(gzip.compress(blob, compresslevel=9))}


def _sample_inputs(train_ds: Any, count: int) -> np.ndarray:
    """Up to `count` inputs from the training pipeline (augmented, as the fine-tune sees them)."""
    batches, seen = [], 0
    for x, _ in train_ds:
        batches.append(np.asarray(x))
        seen += len(batches[-1])
        if seen >= count:
            break
    return np.concatenate(batches)[:count]


def _fine_tune(model: Any, train_ds: Any, loss: str, lr: float, epochs: int,
               callbacks: list[Any], label: str, log: Any) -> None:  # fmt: skip
    import tf_keras

    metrics = ["accuracy"] if "crossentropy" in loss else ["mae"]
    model.compile(optimizer=tf_keras.optimizers.Adam(lr), loss=loss, metrics=metrics)
    started = time.perf_counter()
    history = model.fit(train_ds, epochs=epochs, verbose=0, callbacks=callbacks)
    last = {k: round(float(v[-1]), 4) for k, v in history.history.items()}
    log(f"{label}: {epochs} epoch(s) in {time.perf_counter() - started:.0f}s {last}")


def optimize(
    run_dir: Path | str,
    config: OptimizeConfig,
    out: Path | str | None = None,
    force: bool = False,
    *,
    log: Any = None,
) -> OptimizeResult:
    """Prune / cluster / QAT a trained run; writes `out` (default RUN/optimized/)."""
    import tf_keras

    from toolkit.core.rundir import atomic_dir, atomic_write_text, check_run_dir
    from toolkit.core.tasks import evaluate_model, resolve_loss
    from toolkit.data import load_dataset
    from toolkit.data.evaldata import check_fits
    from toolkit.data.pipelines import training_pipelines
    from toolkit.optimize import cluster, prune, qat
    from toolkit.optimize.bridge import to_keras, to_tf_keras

    log = log or (lambda message: None)
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "optimized"
    check_run_dir(out, force)
    loaded, recipe, run_metrics = _load_run(run_dir)
    tfk = to_tf_keras(loaded.model)  # refuses unknown layers before any data is loaded
    if config.batch_size:
        recipe = recipe.with_overrides({"train.batch_size": config.batch_size})
    ds = load_dataset(recipe.dataset.spec())
    check_fits(ds, loaded.model)
    loss = run_metrics.get("loss") or resolve_loss(recipe.train.loss, ds.task, ds.num_classes)
    tf_keras.utils.set_random_seed(config.seed)
    train_ds, _ = training_pipelines(recipe, ds, loss)
    steps = int(np.ceil(len(ds.train) / recipe.train.batch_size))
    lr = config.learning_rate or recipe.train.optimizer.learning_rate / 10
    reference = run_metrics.get("test") or evaluate_model(loaded.model, ds)["test"]
    notes: list[str] = []

    model = tfk
    if config.prune is not None:
        wrapped, callbacks = prune.apply(model, config.prune, steps * config.epochs)
        freq = prune.frequency_for(config.prune, steps * config.epochs)
        notes.append(f"prune: {config.prune.schedule if not config.prune.structured else '2:4'} "
                     f"to {config.prune.target:.2f}, mask update every {freq} steps")  # fmt: skip
        _fine_tune(wrapped, train_ds, loss, lr, config.epochs, callbacks, "prune", log)
        model = prune.strip(wrapped)
    if config.cluster is not None:
        wrapped = cluster.apply(model, config.cluster, preserve_sparsity=config.prune is not None)
        _fine_tune(wrapped, train_ds, loss, lr, config.epochs, [], "cluster", log)
        model = cluster.strip(wrapped)
    if config.qat_enabled:
        preserve = config.qat_preserve
        wrapped = qat.apply(model, preserve)
        qat.init_ranges(wrapped, _sample_inputs(train_ds, RANGE_SAMPLES), recipe.train.batch_size)
        notes.append(f"qat: 8-bit fake quantization, preserving {preserve}; ranges "
                     f"initialized from {RANGE_SAMPLES} training inputs")  # fmt: skip
        _fine_tune(wrapped, train_ds, loss, lr, config.epochs, [], "qat", log)
        final, kind = wrapped, "saved_model"
    else:
        final, kind = to_keras(model), "keras"

    metrics = evaluate_model(final, ds)
    # QAT's float shadow weights drift; what it started from is what pruning/clustering made.
    layers = prune.layer_report(model)
    size = {"original": _weights_size(loaded.model), "optimized": _weights_size(model)}
    summary = {
        "source": str(run_dir),
        "steps": config.steps(),
        "config": config.model_dump(mode="json"),
        "reference_test": reference,
        "layers": layers,
        "qat_layers": prune.layer_report(final) if kind == "saved_model" else None,
        "weights_size": size,
        "model_kind": kind,
        "notes": notes,
    }
    metrics.update(recipe=recipe.name, loss=loss, optimize=summary)
    with atomic_dir(out, force=force) as work:
        if kind == "keras":
            final.save(str(work / "model.keras"))
        else:
            qat.save(final, work)
        for name in COPIED:
            if (run_dir / name).is_file():
                shutil.copy2(run_dir / name, work / name)
        atomic_write_text(
            work / "metrics.json", json.dumps(metrics, indent=2, default=float) + "\n"
        )
    return OptimizeResult(out, config.steps(), metrics, reference, layers, size, kind, notes)

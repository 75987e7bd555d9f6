"""Hyperparameter search over a recipe's declared space (`keras-edge tune`), with optuna.

The space lives in the recipe (`search.params`: dotted recipe keys -> choices or ranges), so a
tuned recipe is reproducible and reviewable. Each trial is an ordinary `train()` run; trials
are scored on the *validation* split (the test split stays untouched for the final number),
bad trials are pruned from their per-epoch validation curve, and an optional int8 size/latency
bound makes trials whose int8 TFLite artifact is too big or slow infeasible. The recipe's own
values are enqueued as the first trial, so "improves on the default" is measured, not assumed.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.core.errors import UserError
from toolkit.core.recipe import ParamRange, Recipe
from toolkit.pipeline.tune_report import best_recipe, trial_row, write_outputs
from toolkit.pipeline.tune_storage import (
    FINISHED_STATES,
    HEARTBEAT_S,
    Heartbeat,
    counts,
    fail_dead_trials,
    grace,
    mask,
    open_storage,
    open_study,
    run_worker,
    spawn_workers,
)

__all__ = ["SAMPLERS", "TuneResult", "best_recipe", "grid_values", "search_space", "tune"]

SAMPLERS = ("tpe", "random", "grid")


@dataclass
class TuneResult:
    out_dir: Path
    metric: str
    higher_is_better: bool
    trials: list[dict[str, Any]]
    best: dict[str, Any] | None
    default: dict[str, Any] | None
    best_recipe_path: Path | None
    seconds: float
    notes: list[str] = field(default_factory=list)
    study: str | None = None  # the shared study's name and (masked) storage, when shared
    storage: str | None = None
    counts: dict[str, int] = field(default_factory=dict)  # trial states in the whole study


def search_space(recipe: Recipe) -> dict[str, ParamRange]:
    """The checked search space; an empty or malformed one is a one-line UserError."""
    params = recipe.search.params if recipe.search is not None else {}
    if not params:
        raise UserError(
            f"recipe {recipe.name!r} declares no search space: add a `search: {{params: "
            "{train.optimizer.learning_rate: {low: 0.0001, high: 0.01, log: true}}}` section"
        )
    for key, spec in params.items():
        if spec.choices is not None:
            if not spec.choices:
                raise UserError(f"search.params.{key}: choices is empty")
            if spec.low is not None or spec.high is not None:
                raise UserError(f"search.params.{key}: give choices or low/high, not both")
            continue
        if spec.low is None or spec.high is None or not spec.low < spec.high:
            raise UserError(
                f"search.params.{key}: needs choices, or low < high (got {spec.low}, {spec.high})"
            )
        if spec.log and spec.low <= 0:
            raise UserError(f"search.params.{key}: log ranges need low > 0; got {spec.low}")
    return params


def _is_int(spec: ParamRange) -> bool:
    return all(float(v).is_integer() for v in (spec.low, spec.high)) and (
        spec.step is None or float(spec.step).is_integer()
    )


def _encode(value: Any) -> Any:
    """optuna's categorical values must be primitives: lists/dicts travel as JSON text."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def _decode(spec: ParamRange, value: Any) -> Any:
    if spec.choices is not None and isinstance(value, str):
        for choice in spec.choices:
            if _encode(choice) == value:
                return choice
    return value


def suggest(trial: Any, key: str, spec: ParamRange) -> Any:
    if spec.choices is not None:
        return _decode(spec, trial.suggest_categorical(key, [_encode(c) for c in spec.choices]))
    if _is_int(spec):
        step = int(spec.step or 1)
        return trial.suggest_int(key, int(spec.low), int(spec.high), step=step, log=spec.log)
    return trial.suggest_float(key, spec.low, spec.high, step=spec.step, log=spec.log)


def grid_values(spec: ParamRange, points: int) -> list[Any]:
    """The values a grid sampler tries for one parameter."""
    import numpy as np

    if spec.choices is not None:
        return [_encode(c) for c in spec.choices]
    lo, hi = float(spec.low), float(spec.high)
    if spec.step is not None:
        values = list(np.arange(lo, hi + spec.step / 2, spec.step))
    elif spec.log:
        values = list(np.geomspace(lo, hi, points))
    else:
        values = list(np.linspace(lo, hi, points))
    if _is_int(spec):
        return sorted({round(float(v)) for v in values})
    return [float(f"{v:.6g}") for v in values]


def _current(recipe: Recipe, key: str) -> Any:
    node: Any = recipe.model_dump(mode="json")
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _default_params(recipe: Recipe, space: dict[str, ParamRange]) -> dict[str, Any] | None:
    """The recipe's own values in optuna's encoding, or None when one lies outside the space."""
    out = {}
    for key, spec in space.items():
        value = _current(recipe, key)
        if spec.choices is not None:
            if value not in spec.choices:
                return None
            out[key] = _encode(value)
        elif value is None or not spec.low <= float(value) <= spec.high:
            return None
        else:
            out[key] = value
    return out


def pruning_callback(trial: Any, monitor: str, higher_is_better: bool) -> Any:
    """A Keras callback reporting the validation curve to optuna; stops a hopeless trial."""
    import keras

    class OptunaPruning(keras.callbacks.Callback):
        pruned = False

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            value = (logs or {}).get(monitor)
            if value is None or not math.isfinite(value):
                return
            trial.report(value if higher_is_better else -value, epoch)
            if trial.should_prune():
                self.pruned = True
                self.model.stop_training = True

    return OptunaPruning()


def int8_footprint(run_dir: Path, recipe: Recipe) -> tuple[float, float]:
    """(size in KiB, p50 latency in ms) of the run's model as int8 TFLite in LiteRT."""
    import tempfile

    import keras

    from toolkit.convert import convert
    from toolkit.data import load_dataset
    from toolkit.runtimes import open_runner

    model = keras.saving.load_model(run_dir / "model.keras", compile=False)
    calibration = load_dataset(recipe.dataset.spec()).train.take_x(128)
    with tempfile.TemporaryDirectory(prefix="keras-edge-tune-") as tmp:
        path = convert(model, "tflite-int8", tmp, calibration=calibration)
        latency = open_runner(path).latency_ms(calibration[0], runs=30)["p50"]
        return path.stat().st_size / 1024, float(latency)


def _sampler(
    name: str, space: dict[str, ParamRange], seed: int, points: int, constrained: bool,
    parallel: bool = False,
) -> Any:  # fmt: skip
    import optuna

    if name == "tpe":
        import warnings

        constraints = (lambda t: t.user_attrs.get("constraint", (0.0,))) if constrained else None
        with warnings.catch_warnings():  # optuna 5 deprecates constraints_func; 3.6/4 need it
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # constant_liar: parallel workers do not all sample next to the same running trial
            return optuna.samplers.TPESampler(
                seed=seed, constraints_func=constraints, constant_liar=parallel
            )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    grid = {key: grid_values(spec, points) for key, spec in space.items()}
    return optuna.samplers.GridSampler(grid, seed=seed)


def tune(
    recipe: Recipe,
    *,
    trials: int = 10,
    sampler: str = "tpe",
    out_dir: Path | str | None = None,
    seed: int = 0,
    timeout_s: float | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    workers: int = 1,
    resume: bool = False,
    heartbeat_s: float = HEARTBEAT_S,
    worker_index: int | None = None,
    log: Any = None,
) -> TuneResult:
    """Run the search; writes trials.csv, tune.json and best-recipe.yaml into `out_dir`.

    `storage` (an optuna URL or journal:PATH) makes the study shared: every process pointing
    at it splits the `trials` budget, which counts the whole study. `workers` > 1 starts that
    many worker processes here (default storage: out/study.journal) and waits for them;
    `resume` continues an existing study. `worker_index` marks a started worker: it runs
    trials and writes nothing into `out_dir` but its trial runs."""
    try:
        import optuna
    except ImportError:  # pragma: no cover - a declared dependency
        raise UserError("keras-edge tune needs optuna: pip install 'optuna>=3.6'") from None
    from toolkit.core.tasks import get_task, headline
    from toolkit.train.stage import train

    if sampler not in SAMPLERS:
        raise UserError(f"--sampler must be one of {', '.join(SAMPLERS)}; got {sampler!r}")
    if trials < 1:
        raise UserError(f"--trials must be >= 1; got {trials}")
    if workers < 1:
        raise UserError(f"--workers must be >= 1; got {workers}")
    space = search_space(recipe)
    cfg = recipe.search
    assert cfg is not None
    out = Path(out_dir or Path("runs") / f"{recipe.name}-tune")
    out.mkdir(parents=True, exist_ok=True)
    if storage is None and (workers > 1 or resume):
        journal = out / "study.journal"
        if not resume and journal.exists():
            journal.unlink()  # a fresh default study; --resume continues the old one
        storage = f"journal:{journal}"
    store = open_storage(storage, workers)
    name = study_name or f"{recipe.name}-tune"
    constrained = cfg.max_int8_kb is not None or cfg.max_int8_latency_ms is not None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)
        if cfg.prune
        else optuna.pruners.NopPruner()
    )
    chosen = _sampler(sampler, space, seed, cfg.grid_points, constrained, storage is not None)
    where = mask(storage) if storage else "memory"
    study, created = open_study(store, name, recipe, sampler=chosen, pruner=pruner,
                                resume=resume, where=where)  # fmt: skip
    default = _default_params(recipe, space)
    notes = []
    if sampler != "grid" and default is None:
        notes.append("the recipe's own values lie outside the search space: no default trial")
    if created and default is not None and sampler != "grid":
        study.enqueue_trial(default)
        study.set_user_attr("default_enqueued", True)
    state: dict[str, Any] = {}

    def objective(trial: Any) -> float:
        values = {key: suggest(trial, key, spec) for key, spec in space.items()}
        overrides = {**values, "name": f"{recipe.name}-trial{trial.number}",
                     "train.tensorboard": False, "train.epochs": cfg.trial_epochs}  # fmt: skip
        trial_recipe = recipe.with_overrides(overrides)
        if "task" not in state:
            from toolkit.data import load_dataset

            state["task"] = load_dataset(recipe.dataset.spec()).task
            state["metric"], state["higher"] = headline(state["task"])
            study.set_user_attr("metric", state["metric"])
            study.set_user_attr("higher_is_better", state["higher"])
        monitor = get_task(state["task"]).monitor
        callback = pruning_callback(trial, monitor, monitor != "val_loss")
        with Heartbeat(trial, heartbeat_s) if storage else contextlib.nullcontext():
            result = train(trial_recipe, out / "trials", force=True, extra_callbacks=[callback])
        trial.set_user_attr("values", values)
        trial.set_user_attr("test", result.metrics["test"][state["metric"]])
        trial.set_user_attr("seconds", result.metrics["train_seconds"])
        trial.set_user_attr("params", result.params)
        if callback.pruned:
            raise optuna.TrialPruned()
        value = float(result.metrics["val"][state["metric"]] or 0.0)
        if constrained:
            kb, ms = int8_footprint(result.run_dir, trial_recipe)
            trial.set_user_attr("int8_kb", round(kb, 1))
            trial.set_user_attr("int8_p50_ms", round(ms, 3))
            over = [kb - (cfg.max_int8_kb or math.inf), ms - (cfg.max_int8_latency_ms or math.inf)]
            trial.set_user_attr("constraint", tuple(float(v) for v in over))
        return value if state["higher"] else -value

    started = time.perf_counter()
    if workers > 1 and worker_index is None:
        recipe_path = out / "recipe.yaml"  # the resolved recipe: overrides already applied
        recipe_path.write_text(recipe.to_yaml(), encoding="utf-8")
        argv = [str(recipe_path), "--storage", storage, "--study", name, "--trials",
                str(trials), "--sampler", sampler, "--out", str(out), "--heartbeat",
                str(heartbeat_s)]  # fmt: skip
        argv += ["--timeout", str(timeout_s)] if timeout_s else []
        notes += spawn_workers(workers, argv, out, log, seed)
    else:
        run_worker(study, objective, trials, timeout_s=timeout_s, heartbeat_s=heartbeat_s)
    failed = fail_dead_trials(study, grace(heartbeat_s))
    notes += [f"trial {n}: its worker is gone; marked FAIL" for n in failed]
    attrs = study.user_attrs
    metric = state.get("metric", attrs.get("metric", "?"))
    higher = state.get("higher", attrs.get("higher_is_better", True))
    rows = [trial_row(t, higher) for t in study.trials]
    feasible = [r for r in rows if r["state"] == "COMPLETE" and r["feasible"]]
    better = (lambda r: r["value"]) if higher else (lambda r: -r["value"])
    best = max(feasible, key=better) if feasible else None
    first = rows[0] if rows and attrs.get("default_enqueued") else None
    summary = counts(study)
    finished = sum(summary.get(s, 0) for s in FINISHED_STATES)
    if storage and finished < trials:
        notes.append(f"{finished} of {trials} trials finished; run the same command with "
                     "--resume to finish the study")  # fmt: skip
    best_path = None
    if worker_index is None:
        best_path = write_outputs(out, recipe, space, rows, best, first, metric, name, where)
    return TuneResult(
        out_dir=out,
        metric=metric,
        higher_is_better=higher,
        trials=rows,
        best=best,
        default=first,
        best_recipe_path=best_path,
        seconds=round(time.perf_counter() - started, 1),
        notes=notes,
        study=name if storage else None,
        storage=where if storage else None,
        counts=summary,
    )

"""Hyperparameter search over a recipe's declared space (`keras-edge tune`), with optuna.

The space lives in the recipe (`search.params`: dotted recipe keys -> choices or ranges), so a
tuned recipe is reproducible and reviewable. Each trial is an ordinary `train()` run; trials
are scored on the *validation* split (the test split stays untouched for the final number),
bad trials are pruned from their per-epoch validation curve, and an optional int8 size/latency
bound makes trials whose int8 TFLite artifact is too big or slow infeasible. The recipe's own
values are enqueued as the first trial, so "improves on the default" is measured, not assumed.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.core.errors import UserError
from toolkit.core.recipe import ParamRange, Recipe

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


def _sampler(name: str, space: dict[str, ParamRange], seed: int, points: int, constrained: bool):
    import optuna

    if name == "tpe":
        import warnings

        constraints = (lambda t: t.user_attrs.get("constraint", (0.0,))) if constrained else None
        with warnings.catch_warnings():  # optuna 5 deprecates constraints_func; 3.6/4 need it
            warnings.simplefilter("ignore", FutureWarning)
            return optuna.samplers.TPESampler(seed=seed, constraints_func=constraints)
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
) -> TuneResult:
    """Run the search; writes trials.csv, tune.json and best-recipe.yaml into `out_dir`."""
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
    space = search_space(recipe)
    cfg = recipe.search
    assert cfg is not None
    out = Path(out_dir or Path("runs") / f"{recipe.name}-tune")
    out.mkdir(parents=True, exist_ok=True)
    constrained = cfg.max_int8_kb is not None or cfg.max_int8_latency_ms is not None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)
        if cfg.prune
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        direction="maximize",
        sampler=_sampler(sampler, space, seed, cfg.grid_points, constrained),
        pruner=pruner,
    )
    default = _default_params(recipe, space)
    notes = []
    if default is not None and sampler != "grid":
        study.enqueue_trial(default)
    elif sampler != "grid":
        notes.append("the recipe's own values lie outside the search space: no default trial")
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
        monitor = get_task(state["task"]).monitor
        callback = pruning_callback(trial, monitor, monitor != "val_loss")
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
    study.optimize(objective, n_trials=trials, timeout=timeout_s, catch=())
    rows = [_row(t, state.get("higher", True)) for t in study.trials]
    feasible = [r for r in rows if r["state"] == "COMPLETE" and r["feasible"]]
    better = (lambda r: r["value"]) if state.get("higher", True) else (lambda r: -r["value"])
    best = max(feasible, key=better) if feasible else None
    default_row = rows[0] if default is not None and sampler != "grid" and rows else None
    best_path = _write_outputs(out, recipe, space, rows, best, default_row, state)
    return TuneResult(
        out_dir=out,
        metric=state.get("metric", "?"),
        higher_is_better=state.get("higher", True),
        trials=rows,
        best=best,
        default=default_row,
        best_recipe_path=best_path,
        seconds=round(time.perf_counter() - started, 1),
        notes=notes,
    )


def _row(trial: Any, higher: bool) -> dict[str, Any]:
    attrs = trial.user_attrs
    constraint = attrs.get("constraint")
    value = trial.value if trial.value is None or higher else -trial.value
    return {
        "trial": trial.number,
        "state": trial.state.name,
        "value": value,
        "test": attrs.get("test"),
        "values": attrs.get("values", {}),
        "seconds": attrs.get("seconds"),
        "params": attrs.get("params"),
        "int8_kb": attrs.get("int8_kb"),
        "int8_p50_ms": attrs.get("int8_p50_ms"),
        "feasible": constraint is None or all(v <= 0 for v in constraint),
    }


def best_recipe(recipe: Recipe, values: dict[str, Any]) -> Recipe:
    """The original recipe with the best values (full epochs, no search section)."""
    tuned = recipe.with_overrides({**values, "name": f"{recipe.name}-tuned"})
    return tuned.model_copy(update={"search": None})


def _write_outputs(
    out: Path,
    recipe: Recipe,
    space: dict[str, ParamRange],
    rows: list[dict[str, Any]],
    best: dict[str, Any] | None,
    default: dict[str, Any] | None,
    state: dict[str, Any],
) -> Path | None:
    import csv

    from toolkit.core.rundir import atomic_write_text

    with (out / "trials.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["trial", "state", f"val_{state.get('metric', 'metric')}", "test",
                         *space, "int8_kb", "int8_p50_ms", "feasible", "seconds"])  # fmt: skip
        for r in rows:
            values = [json.dumps(r["values"].get(k)) for k in space]
            tail = [r["int8_kb"], r["int8_p50_ms"], r["feasible"], r["seconds"]]
            writer.writerow([r["trial"], r["state"], r["value"], r["test"], *values, *tail])
    summary = {"metric": state.get("metric"), "best": best, "default": default, "trials": rows}
    atomic_write_text(out / "tune.json", json.dumps(summary, indent=2, default=str) + "\n")
    if best is None:
        return None
    path = out / "best-recipe.yaml"
    atomic_write_text(path, best_recipe(recipe, best["values"]).to_yaml())
    return path

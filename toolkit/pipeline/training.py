"""Training a recipe, then its `optimize:` section (train -> optimize, in that order)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from toolkit.core.recipe import Recipe, load_recipe


def run_training(
    recipe: str | Recipe,
    overrides: dict[str, Any] | None = None,
    *,
    runs_dir: Path | str = "runs",
    name: str | None = None,
    force: bool = False,
    log: Any = None,
    dataset: Any = None,
) -> Any:
    """Load a recipe (name, path or a Recipe, e.g. from the one-line start), apply overrides,
    train it, then run its `optimize:` section into RUN/optimized/ if it has one. Returns a
    TrainResult (`.optimized` set). `dataset`: the recipe's data, already loaded."""
    from toolkit.train.stage import train

    loaded = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    if overrides:
        loaded = loaded.with_overrides(overrides)
        if any(k.startswith("dataset.") and v is not None for k, v in overrides.items()):
            dataset = None  # the data spec changed: load it afresh
    result = train(loaded, runs_dir, name=name, force=force, dataset=dataset)
    if result.metrics.get("chief") is False:  # another worker of a multi-worker run: no run dir
        return result
    if loaded.optimize is not None:
        from toolkit.optimize import optimize

        result.optimized = optimize(result.run_dir, loaded.optimize, force=force, log=log)
    return result

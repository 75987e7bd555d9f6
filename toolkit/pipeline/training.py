"""Training a recipe, then its `optimize:` section (train -> optimize, in that order)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from toolkit.core.recipe import load_recipe


def run_training(
    recipe: str,
    overrides: dict[str, Any] | None = None,
    *,
    runs_dir: Path | str = "runs",
    name: str | None = None,
    force: bool = False,
    log: Any = None,
) -> Any:
    """Load a recipe (name or path), apply overrides, train it, then run its `optimize:`
    section into RUN/optimized/ if it has one. Returns a TrainResult (`.optimized` set)."""
    from toolkit.train.stage import train

    loaded = load_recipe(recipe)
    if overrides:
        loaded = loaded.with_overrides(overrides)
    result = train(loaded, runs_dir, name=name, force=force)
    if loaded.optimize is not None:
        from toolkit.optimize import optimize

        result.optimized = optimize(result.run_dir, loaded.optimize, force=force, log=log)
    return result

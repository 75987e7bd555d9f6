"""Sequencing of the stages (train -> optimize -> export -> validate -> package).

The CLI and the Python API both call these; the stages themselves never call each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from toolkit.recipe import load_recipe


def run_training(
    recipe: str,
    overrides: dict[str, Any] | None = None,
    *,
    runs_dir: Path | str = "runs",
    name: str | None = None,
    force: bool = False,
) -> Any:
    """Load a recipe (name or path), apply overrides, train it. Returns a TrainResult."""
    from toolkit.train import train

    loaded = load_recipe(recipe)
    if overrides:
        loaded = loaded.with_overrides(overrides)
    return train(loaded, runs_dir, name=name, force=force)

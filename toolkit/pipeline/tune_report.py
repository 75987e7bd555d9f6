"""What a tune leaves behind: the trial rows of the (shared) study, trials.csv, tune.json and
best-recipe.yaml, all built from the study itself so every worker's trials are in them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from toolkit.core.recipe import ParamRange, Recipe


def trial_row(trial: Any, higher: bool) -> dict[str, Any]:
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


def write_outputs(
    out: Path,
    recipe: Recipe,
    space: dict[str, ParamRange],
    rows: list[dict[str, Any]],
    best: dict[str, Any] | None,
    default: dict[str, Any] | None,
    metric: str,
    study: str,
    where: str,
) -> Path | None:
    import csv

    from toolkit.core.rundir import atomic_write_text

    with (out / "trials.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["trial", "state", f"val_{metric}", "test",
                         *space, "int8_kb", "int8_p50_ms", "feasible", "seconds"])  # fmt: skip
        for r in rows:
            values = [json.dumps(r["values"].get(k)) for k in space]
            tail = [r["int8_kb"], r["int8_p50_ms"], r["feasible"], r["seconds"]]
            writer.writerow([r["trial"], r["state"], r["value"], r["test"], *values, *tail])
    summary = {"metric": metric, "study": study, "storage": where, "best": best,
               "default": default, "trials": rows}  # fmt: skip
    atomic_write_text(out / "tune.json", json.dumps(summary, indent=2, default=str) + "\n")
    if best is None:
        return None
    path = out / "best-recipe.yaml"
    atomic_write_text(path, best_recipe(recipe, best["values"]).to_yaml())
    return path

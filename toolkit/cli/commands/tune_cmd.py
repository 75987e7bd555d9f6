"""`keras-edge tune RECIPE`: optuna search over the recipe's `search:` space."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer


def tune_command(
    recipe: str = typer.Argument(..., help="Built-in recipe name or YAML path with `search:`."),
    trials: int = typer.Option(10, "--trials", min=1, help="Number of trials."),
    sampler: str = typer.Option("tpe", "--sampler", help="tpe (Bayesian) | random | grid."),
    out: Path | None = typer.Option(None, "--out", help="Default: runs/<recipe>-tune/."),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Epochs per trial."),
    seed: int = typer.Option(0, "--seed", help="Sampler seed."),
    timeout: float | None = typer.Option(None, "--timeout", min=1, help="Stop after N seconds."),
    sets: list[str] = typer.Option([], "--set", help="Override any recipe key: KEY=VALUE."),
) -> None:
    """Search hyperparameters; prints the trial table, writes best-recipe.yaml and trials.csv."""
    from toolkit.cli.commands.train_cmd import parse_sets
    from toolkit.core.recipe import load_recipe
    from toolkit.pipeline.tuning import tune

    loaded = load_recipe(recipe)
    overrides = {**parse_sets(sets), "search.trial_epochs": epochs}
    if any(v is not None for v in overrides.values()):
        loaded = loaded.with_overrides(overrides)
    result = tune(loaded, trials=trials, sampler=sampler, out_dir=out, seed=seed,
                  timeout_s=timeout)  # fmt: skip
    print_tune_table(result)


def print_tune_table(result: Any) -> None:
    from rich.table import Table

    from toolkit.core.progress import console

    keys = list(result.trials[0]["values"]) if result.trials else []
    table = Table(title=f"tune: validation {result.metric}", header_style="bold")
    for column in ("#", "state", "val", "test", *keys, "int8 KiB", "s"):
        short = column.rsplit(".", 1)[-1]  # train.optimizer.learning_rate -> learning_rate
        table.add_column(short, justify="left" if column in keys else "right", overflow="fold")
    best_id = result.best["trial"] if result.best else None
    for row in result.trials:
        mark = " *" if row["trial"] == best_id else ""
        table.add_row(
            f"{row['trial']}{mark}",
            {"COMPLETE": "ok"}.get(row["state"], row["state"].lower())
            + ("" if row["feasible"] else " over"),
            _fmt(row["value"]),
            _fmt(row["test"]),
            *(_fmt(row["values"].get(k)) for k in keys),
            _fmt(row["int8_kb"]),
            _fmt(row["seconds"]),
        )
    console.print(table)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False)
    if result.best is None:
        console.print("no trial completed within the bounds; nothing written", highlight=False)
        return
    if result.default is not None and result.default["value"] is not None:
        console.print(
            f"default (trial 0): val {result.metric} {_fmt(result.default['value'])} -> best "
            f"(trial {best_id}): {_fmt(result.best['value'])}", highlight=False,
        )  # fmt: skip
    console.print(
        f"{len(result.trials)} trials in {result.seconds:.0f} s; wrote "
        f"{result.best_recipe_path}, {result.out_dir}/trials.csv, tune.json "
        f"(train it: keras-edge train {result.best_recipe_path})",
        highlight=False,
    )


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def register(app: typer.Typer, guarded: Callable[..., Any]) -> None:
    app.command("tune")(guarded(tune_command))

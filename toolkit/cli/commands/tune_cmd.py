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
    storage: str | None = typer.Option(
        None,
        "--storage",
        help="Shared optuna storage: journal:PATH, sqlite:///F.db, "
        "postgresql://USER@HOST/DB, mysql://... Every process using it joins the study.",
    ),
    study: str | None = typer.Option(None, "--study", help="Study name (default: RECIPE-tune)."),
    workers: int = typer.Option(
        1,
        "--workers",
        min=1,
        help="Worker processes to start here (default storage: "
        "OUT/study.journal). --trials is the budget of the whole study.",
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue an existing study."),
    heartbeat: float = typer.Option(
        10.0,
        "--heartbeat",
        min=0.1,
        help="Seconds between a trial's heartbeats; a trial "
        "silent 3x as long, at least 30 s (or whose process died), is marked FAIL.",
    ),
    worker_index: int | None = typer.Option(None, "--worker-index", hidden=True),
    track: str | None = typer.Option(
        None, "--track", help="mlflow[:URI]: log the study as a parent run, a child per trial."
    ),
) -> None:
    """Search hyperparameters; prints the trial table, writes best-recipe.yaml and trials.csv.

    Several processes or machines share one search with `--storage URL --study NAME`: each
    runs the same command and joins the study; `--workers N` starts N processes here."""
    from toolkit.cli.commands.train_cmd import parse_sets
    from toolkit.core.recipe import load_recipe
    from toolkit.pipeline.tuning import tune

    if track is not None:  # a bad --track fails before the search, not after
        from toolkit.pipeline.tracking import check_track

        check_track(track, Path(out).parent if out else Path("runs"))
    loaded = load_recipe(recipe)
    overrides = {**parse_sets(sets), "search.trial_epochs": epochs}
    if any(v is not None for v in overrides.values()):
        loaded = loaded.with_overrides(overrides)
    from toolkit.core.progress import console

    result = tune(loaded, trials=trials, sampler=sampler, out_dir=out, seed=seed,
                  timeout_s=timeout, storage=storage, study_name=study, workers=workers,
                  resume=resume, heartbeat_s=heartbeat, worker_index=worker_index,
                  log=lambda m: console.print(m, highlight=False))  # fmt: skip
    if worker_index is not None:  # a started worker: the coordinator prints the table
        return
    print_tune_table(result)
    if track is not None:
        from toolkit.pipeline.tracking import track_tune

        console.print(track_tune(track, loaded, result), highlight=False)


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
    if result.study is not None:
        seen = ", ".join(f"{n} {s.lower()}" for s, n in sorted(result.counts.items()))
        console.print(f"study {result.study!r} in {result.storage}: {seen}", highlight=False)
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

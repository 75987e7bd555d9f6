"""`keras-edge train RECIPE`: train a recipe into runs/<name>/ and print a summary table."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from toolkit.core.errors import UserError


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """`--set train.optimizer.name=sgd` -> {"train.optimizer.name": "sgd"} (YAML-typed values)."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set expects KEY=VALUE (e.g. train.epochs=5), got {pair!r}")
        try:
            out[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def train_command(
    recipe: str = typer.Argument(..., help="Built-in recipe name (see models/) or a YAML path."),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Override train.epochs."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1),
    lr: float | None = typer.Option(None, "--lr", min=0.0, help="Learning rate."),
    seed: int | None = typer.Option(None, "--seed", help="Seed for training and the splits."),
    name: str | None = typer.Option(None, "--name", help="Run name (default: recipe name)."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where run dirs go."),
    force: bool = typer.Option(False, "--force", help="Replace an existing run dir."),
    sets: list[str] = typer.Option([], "--set", help="Override any recipe key: KEY=VALUE."),
    backbone: str | None = typer.Option(
        None, "--backbone", help="Transfer-learn from a Keras file or builder (transfer.backbone)."
    ),
) -> None:
    """Train a recipe; writes runs/<name>/ (model.keras, metrics.json, plots/, ...).

    A recipe with an `optimize:` section is then pruned/clustered/QAT-ed into
    runs/<name>/optimized/, which `keras-edge export runs/<name>` exports beside the plain model.
    """
    from toolkit.cli.views import print_train_summary
    from toolkit.core.progress import console
    from toolkit.pipeline.training import run_training

    overrides = {
        "train.epochs": epochs,
        "train.batch_size": batch_size,
        "train.optimizer.learning_rate": lr,
        "train.seed": seed,
        "dataset.seed": seed,
        "transfer.backbone": backbone,
        **parse_sets(sets),
    }
    result = run_training(recipe, overrides, runs_dir=runs_dir, name=name, force=force,
                          log=lambda m: console.print(m, highlight=False))  # fmt: skip
    print_train_summary(result)
    if result.optimized is not None:  # the recipe's optimize: section ran
        from toolkit.cli.commands.optimize_cmd import print_result

        print_result(result.optimized, console)


def register(app: typer.Typer, guarded: Callable[..., Any]) -> None:
    app.command("train")(guarded(train_command))

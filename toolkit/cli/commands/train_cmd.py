"""`keras-edge train RECIPE` or `keras-edge train --data KIND:PATH`: train into runs/<name>/.

Without a RECIPE, `--data` is a one-line start: the recipe is chosen from the data
(`toolkit.train.autorecipe`), printed, and saved with the run. With a RECIPE, `--data`,
`--builder` and `--image-size` override its dataset, builder and image size.
"""

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
    recipe: str | None = typer.Argument(
        None, help="Built-in recipe name (see models/) or a YAML path; omit it with --data."
    ),
    data: str | None = typer.Option(
        None, "--data", help="KIND:PATH (image-folder:, csv:, npz:, ...) or a dataset name."
    ),
    builder: str | None = typer.Option(None, "--builder", help="Model builder (see builders)."),
    image_size: int | None = typer.Option(
        None, "--image-size", help="Square image size N (NxN) for image data."
    ),
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
    distribute: str | None = typer.Option(
        None,
        "--distribute",
        help="mirrored (GPUs of this host) | multi-worker (several hosts, "
        "from TF_CONFIG or --workers) | none. Sets the recipe's distribute.strategy.",
    ),
    workers: str | None = typer.Option(
        None,
        "--workers",
        help="HOST:PORT of every worker, comma-separated, the same list and "
        "order on each host (implies --distribute multi-worker; written to TF_CONFIG).",
    ),
    worker_index: int | None = typer.Option(
        None,
        "--worker-index",
        min=0,
        help="This host's place in --workers (0: the chief, which alone writes the run dir).",
    ),
    track: str | None = typer.Option(
        None,
        "--track",
        help="mlflow[:URI]: log recipe, epochs, test metrics and files "
        "(default store: RUNS_DIR/mlflow.db).",
    ),
) -> None:
    """Train a recipe, or pick one from --data; writes runs/<name>/ (model.keras, recipe.yaml,
    metrics.json, plots/, ...).

    A recipe with an `optimize:` section is then pruned/clustered/QAT-ed into
    runs/<name>/optimized/, which `keras-edge export runs/<name>` exports beside the plain model.
    """
    from toolkit.cli.views import print_train_summary
    from toolkit.core.progress import console
    from toolkit.pipeline.training import run_training

    if track is not None:  # a bad --track fails before training, not after
        from toolkit.pipeline.tracking import check_track

        check_track(track, runs_dir)
    if distribute is not None and distribute not in ("none", "mirrored", "multi-worker"):
        raise UserError(f"--distribute must be mirrored, multi-worker or none; got {distribute!r}")
    if workers is not None:
        import os

        from toolkit.train.distribute import tf_config_from_flags

        os.environ["TF_CONFIG"] = tf_config_from_flags(workers, worker_index)
        distribute = distribute or "multi-worker"
    elif worker_index is not None:
        raise UserError("--worker-index needs --workers HOST:PORT,HOST:PORT,...")
    if image_size is not None and image_size < 1:
        raise UserError(f"--image-size must be a positive number of pixels; got {image_size}")
    chosen: Any = recipe
    dataset = None
    if recipe is None:
        if data is None:
            raise UserError(
                "give a RECIPE (a built-in name or a YAML file) or --data KIND:PATH "
                "(e.g. keras-edge train --data image-folder:photos)"
            )
        from toolkit.train.autorecipe import auto_recipe

        auto = auto_recipe(data, builder=builder, image_size=image_size, epochs=epochs, name=name)
        chosen, dataset, epochs = auto.recipe, auto.dataset, None
        data = builder = image_size = None  # already in the recipe
        for note in auto.notes:
            console.print(note, highlight=False, soft_wrap=True)
    overrides = {
        "dataset.name": data,
        "dataset.image_size": [image_size, image_size] if image_size else None,
        "model.builder": builder,
        "model.args": {} if builder else None,
        "train.epochs": epochs,
        "train.batch_size": batch_size,
        "train.optimizer.learning_rate": lr,
        "train.seed": seed,
        "dataset.seed": seed,
        "transfer.backbone": backbone,
        "distribute.strategy": distribute,
        **parse_sets(sets),
    }
    if recipe is None:  # show the recipe as it will run, overrides applied
        shown = chosen.with_overrides(overrides)
        where = Path(runs_dir) / (name or shown.name) / "recipe.yaml"
        console.print(f"recipe (saved as {where}):", highlight=False, soft_wrap=True)
        console.print(shown.to_yaml().rstrip(), highlight=False, markup=False, soft_wrap=True)
    result = run_training(chosen, overrides, runs_dir=runs_dir, name=name, force=force,
                          log=lambda m: console.print(m, highlight=False),
                          dataset=dataset)  # fmt: skip
    if result.metrics.get("chief") is False:  # a multi-worker run's other worker
        console.print(f"worker {result.metrics['worker']} finished; the chief (worker 0) "
                      f"wrote the run dir", highlight=False)  # fmt: skip
        return
    print_train_summary(result)
    if result.optimized is not None:  # the recipe's optimize: section ran
        from toolkit.cli.commands.optimize_cmd import print_result

        print_result(result.optimized, console)
    if track is not None and result.run_dir.is_dir():  # absent on a non-chief worker
        from toolkit.pipeline.tracking import track_optimize, track_train

        console.print(track_train(track, result.run_dir, runs_dir), highlight=False)
        if result.optimized is not None:
            line = track_optimize(track, result.optimized, result.run_dir, runs_dir)
            console.print(line, highlight=False)


def register(app: typer.Typer, guarded: Callable[..., Any]) -> None:
    app.command("train")(guarded(train_command))

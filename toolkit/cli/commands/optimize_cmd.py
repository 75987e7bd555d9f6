"""`keras-edge optimize RUN`: prune, cluster and/or quantization-aware-train a trained run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer


def optimize_command(
    run: Path = typer.Argument(..., help="A run directory (model.keras + recipe.yaml)."),
    prune: float | None = typer.Option(
        None, "--prune", help="Target sparsity, 0 < S < 1 (0.5 = half the weights zero)."
    ),
    structured: str | None = typer.Option(
        None, "--structured", help="Structured sparsity pattern: 2:4 (fixes sparsity at 0.5)."
    ),
    schedule: str = typer.Option("polynomial", "--schedule", help="polynomial | constant"),
    frequency: int | None = typer.Option(
        None, "--frequency", min=1, help="Steps between mask updates (default: ~10 per run)."
    ),
    skip: str | None = typer.Option(
        None, "--skip", help="Comma list of layers to leave dense/unclustered."
    ),
    cluster: int | None = typer.Option(
        None, "--cluster", help="Cluster every kernel to N shared values (e.g. 16)."
    ),
    cluster_init: str = typer.Option(
        "kmeans_plus_plus", "--cluster-init", help="kmeans_plus_plus | linear | density | random"
    ),
    qat: bool = typer.Option(False, "--qat", help="Quantization-aware training (8-bit)."),
    preserve: str | None = typer.Option(
        None, "--preserve", help="QAT keeps: none | sparsity | clusters (default: what ran)."
    ),
    epochs: int = typer.Option(3, "--epochs", help="Fine-tuning epochs after each step."),
    lr: float | None = typer.Option(None, "--lr", help="Fine-tuning rate (default: run's / 10)."),
    batch_size: int | None = typer.Option(None, "--batch-size"),
    out: Path | None = typer.Option(None, "--out", help="Output dir (default: RUN/optimized)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output dir."),
    track: str | None = typer.Option(
        None, "--track", help="mlflow[:URI]: log the result (default store: RUN/../mlflow.db)."
    ),
) -> None:
    """Prune / cluster / QAT a trained run; writes RUN/optimized/ for export and validate."""
    from toolkit.core.optimize_config import from_flags

    if track is not None:  # a bad --track fails before fine-tuning, not after
        from toolkit.pipeline.tracking import check_track

        check_track(track, run.parent)
    skips = [s.strip() for s in (skip or "").split(",") if s.strip()]
    config = from_flags(
        prune=prune, structured=structured, schedule=schedule, frequency=frequency, skip=skips,
        cluster=cluster, cluster_init=cluster_init, qat=qat, preserve=preserve, epochs=epochs,
        learning_rate=lr, batch_size=batch_size,
    )  # fmt: skip
    from toolkit.core.progress import console
    from toolkit.optimize.stage import optimize

    result = optimize(run, config, out, force, log=lambda m: console.print(m, highlight=False))
    print_result(result, console)
    if track is not None:
        from toolkit.pipeline.tracking import track_optimize

        console.print(track_optimize(track, result, run, run.parent), highlight=False)


def print_result(result: Any, console: Any) -> None:
    """Per-layer sparsity/unique weights, the accuracy change and what to run next."""
    from rich.table import Table

    table = Table(title=f"{' + '.join(result.steps)}: per-layer kernels")
    for column in ("layer", "class", "weights", "sparsity", "unique"):
        table.add_column(column, justify="left" if column in ("layer", "class") else "right")
    for row in result.layers:
        table.add_row(row["layer"], row["class"], str(row["weights"]),
                      f"{row['sparsity']:.1%}", str(row["unique_weights"]))  # fmt: skip
    console.print(table)
    name, before, after = result.headline
    size = result.size
    console.print(
        f"test {name}: {before:.4f} dense -> {after:.4f} optimized ({after - before:+.4f}); "
        f"weights gzip {size['original']['gzip_bytes']:,} -> {size['optimized']['gzip_bytes']:,}"
        f" bytes", highlight=False,
    )  # fmt: skip
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")
    what = "SavedModel (QAT)" if result.model_kind == "saved_model" else "model.keras"
    out = Path(result.out_dir)
    if out.name == "optimized":  # RUN/optimized: `export RUN` puts both side by side
        steps = "+".join(result.steps)
        hint = f"keras-edge export {out.parent} (plain and {steps} artifacts in one report)"
    else:
        hint = f"keras-edge export {out}"
    console.print(f"wrote {out}/ ({what}); next: {hint}", highlight=False)


def register(app: typer.Typer, guarded: Callable[..., Any]) -> None:
    app.command("optimize")(guarded(optimize_command))

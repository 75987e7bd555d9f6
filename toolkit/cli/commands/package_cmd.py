"""`keras-edge package RUN --target T` and `keras-edge targets`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer


def package_command(
    run: Path = typer.Argument(..., help="Run directory (exports when needed) or export dir."),
    target: str = typer.Option(
        ..., "--target", "-t", help="Built-in target name (see `keras-edge targets`) or a YAML."
    ),
    out: Path | None = typer.Option(None, "--out", help="Bundles dir (default: RUN/bundles)."),
    samples: int = typer.Option(16, "--samples", min=1, help="Self-test inputs to bundle."),
    force: bool = typer.Option(False, "--force", help="Replace an existing bundle."),
    ignore_budget: bool = typer.Option(
        False, "--ignore-budget", help="Package even when over the target's accuracy budget."
    ),
    task: str | None = typer.Option(
        None, "--task", help="How run.py post-processes outputs (default: the validated task)."
    ),
) -> None:
    """Build a device bundle (directory + deterministic .zip) for a target profile."""
    from toolkit.core.progress import console
    from toolkit.pipeline.packaging import run_package

    result = run_package(
        run, target, out=out, force=force, ignore_budget=ignore_budget, samples=samples, task=task
    )
    manifest = result.manifest
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    for model in manifest["models"]:
        v = model.get("validation") or {}
        metric = v.get("metric") or {}
        value = metric.get("value")
        shown = f"{metric.get('name')} {value:.4f}" if value is not None else (
            f"{metric.get('name')}: n/a" if metric else "not validated")  # fmt: skip
        role = "primary" if model["primary"] else "alternative"
        typer.echo(f"{model['name']} ({role}, {model['runtime']}): {model['file']}, {shown}")
    if "edgetpu" in manifest:
        check = manifest["edgetpu"]
        verdict = "passed" if check["ok"] else "FAILED: " + "; ".join(check["problems"])
        typer.echo(f"Edge TPU op check: {verdict}")
    if manifest.get("kind") == "tflm-firmware":  # a microcontroller: sources, not run.py
        flash, ram = manifest["flash"], manifest["ram"]
        typer.echo(
            f"flash {flash['total']:,} of {flash['budget'] or 0:,} bytes, RAM {ram['total']:,} "
            f"of {ram['budget'] or 0:,} (arena {manifest['arena']['constant_bytes']:,}); "
            f"ops: {', '.join(manifest['resolver'])}"
        )
    typer.echo(f"bundle: {result.bundle_dir}/ ({len(manifest['files']) + 1} files)")
    typer.echo(f"zip:    {result.zip_path}")
    if manifest.get("kind") == "tflm-firmware":
        typer.echo(f"check:  build {result.bundle_dir}/CMakeLists.txt; RunModelSelftest() says")
        return
    typer.echo(f"check:  python {result.bundle_dir}/run.py --selftest")


def targets_command(
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List device target profiles: artifact, runtime, threads, budget."""
    import json

    from rich.console import Console
    from rich.table import Table

    from toolkit.core.targets import list_targets

    targets = list_targets()
    if as_json:
        typer.echo(json.dumps([t.model_dump() for t in targets], indent=2))
        return
    table = Table(title="targets (export/*.yaml; a YAML path works too)", header_style="bold")
    for col in ("name", "artifact", "alternatives", "runtime", "threads", "max drop", "about"):
        table.add_column(col, overflow="fold")
    for t in targets:
        where = t.delegate if t.runtime == "litert" else (t.providers or ["CPU"])[0]
        if t.firmware:
            where = f"{t.flash_kb or '?'} KB flash, {t.ram_kb or '?'} KB RAM"
        table.add_row(
            t.name,
            t.artifact,
            ", ".join(t.alternatives) or "-",
            f"{t.runtime} ({where})",
            str(t.threads or "default"),
            "-" if t.max_drop is None else f"{t.max_drop:g}",
            t.description,
        )
    Console(width=None if Console().is_terminal else 160).print(table)


def register(app: typer.Typer, guarded: Callable[..., Any]) -> None:
    app.command("package")(guarded(package_command))
    app.command("targets")(guarded(targets_command, heavy=False))

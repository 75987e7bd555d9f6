"""`keras-edge check REPORT --baseline B`: the CI regression gate (exit 1 on any regression)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer


def check_command(
    report: Path = typer.Argument(..., help="A report.json, or an export dir holding one."),
    baseline: str = typer.Option(
        ...,
        "--baseline",
        "-b",
        help="Baseline JSON (or a built-in name such as digits-cnn, from models/baselines/).",
    ),
    tolerance: float | None = typer.Option(
        None,
        "--tolerance",
        min=0.0,
        help="How far the metric may fall (absolute, metric's units; also bounds drop and "
        "agreement). Default: the baseline file's, else 0.005.",
    ),
    size_growth: float | None = typer.Option(
        None,
        "--size-growth",
        min=0.0,
        help="Fraction an artifact may grow (0.05 = 5 percent). "
        "Default: the baseline file's, else 0.05.",
    ),
    per_artifact: list[str] | None = typer.Option(
        None,
        "--per-artifact",
        help="NAME=TOL tolerance for one artifact (NAME may be a glob: '*-int8=0.01'); repeatable.",
    ),
    junit: Path | None = typer.Option(None, "--junit", help="Write JUnit XML here."),
    markdown: Path | None = typer.Option(
        None, "--markdown", help="Write a markdown summary here (e.g. $GITHUB_STEP_SUMMARY)."
    ),
    update: bool = typer.Option(
        False,
        "--update",
        help="Write a new baseline from REPORT to --baseline (after showing the diff); exit 0.",
    ),
    task: str | None = typer.Option(
        None,
        "--task",
        help="The task REPORT must have been validated as (refuses a mis-scored report).",
    ),
) -> None:
    """Compare a report with a committed baseline; exit 1 when converted accuracy regressed."""
    from toolkit.check.baseline import Baseline, resolve_baseline
    from toolkit.check.stage import check, parse_per_artifact, update_baseline
    from toolkit.core.errors import GateFailed, UserError
    from toolkit.core.progress import console
    from toolkit.core.report import Report
    from toolkit.core.rundir import atomic_write_text

    overrides = parse_per_artifact(per_artifact)
    loaded = Report.load(report)
    report_path = report / "report.json" if report.is_dir() else report
    if task is not None:
        from toolkit.core.tasks import get_task

        got = loaded.data.get("task", "classification")
        if get_task(task).name != got:
            raise UserError(
                f"{report_path} was validated as {got} ({loaded.metric_name}), not {task}; "
                f"re-export with --task {task}"
            )
    if update:
        target = Path(baseline).expanduser()
        if target.suffix != ".json":
            raise UserError(
                f"--update writes a file: give a path ending in .json, got {baseline!r}"
            )
        old = None
        if target.exists():
            try:
                old = Baseline.load(target)
            except UserError as err:
                console.print(
                    f"[yellow]note:[/] replacing an unreadable baseline: {err}", soft_wrap=True
                )
        if old is not None and old.metric_name == loaded.metric_name:
            diff = check(loaded, old, tolerance, size_growth=size_growth, per_artifact=overrides)
            diff.report_path, diff.baseline_path = str(report_path), f"{target} (before update)"
            diff.print_table()
        base_tol = old.tolerances if old is not None else Baseline([], []).tolerances
        tol = base_tol.merged(tolerance, size_growth, overrides)
        written = update_baseline(loaded, target, tol)
        names = ", ".join(e.label for e in written.entries)
        console.print(
            f"wrote baseline {target}: {len(written.entries)} entries ({names}); "
            f"{written.metric_name} {written.reference['metric']['value']:.4f} for "
            f"{written.reference['name']}; tolerance {tol.metric:g}, size growth "
            f"{tol.size_growth:.0%}",
            highlight=False,
            soft_wrap=True,
        )
        skipped = [a.summary() for a in loaded.artifacts if a.error]
        for line in skipped:
            console.print(
                f"[yellow]note:[/] left out (failed to run): {line}",
                highlight=False,
                soft_wrap=True,
            )
        return

    result = check(
        loaded,
        Baseline.load(resolve_baseline(baseline)),
        tolerance,
        size_growth=size_growth,
        per_artifact=overrides,
    )
    result.report_path, result.baseline_path = str(report_path), str(resolve_baseline(baseline))
    result.print_table()
    if junit is not None:
        atomic_write_text(junit, result.to_junit())
        console.print(f"wrote {junit}", highlight=False, soft_wrap=True)
    if markdown is not None:
        atomic_write_text(markdown, result.to_markdown())
        console.print(f"wrote {markdown}", highlight=False, soft_wrap=True)
    if not result.passed:
        raise GateFailed(result.summary())
    console.print(f"[green]ok:[/] {result.summary()}", highlight=False, soft_wrap=True)


def register(app: typer.Typer, guarded: Callable[..., Any]) -> None:
    app.command("check")(guarded(check_command, heavy=False))

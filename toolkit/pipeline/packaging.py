"""Packaging a run: export the target's artifacts first when the run has none, then bundle.

The package stage itself only bundles an export dir; this is the sequencing `keras-edge package
RUN --target T` needs when RUN was never exported (or not in the target's format).
"""

from __future__ import annotations

from pathlib import Path

from toolkit.core.errors import UserError
from toolkit.core.targets import Target, load_target
from toolkit.package.stage import BundleResult, find_export_dir, package
from toolkit.pipeline.exporting import run_export


def run_package(
    run_or_export: str | Path,
    target: str | Path | Target,
    *,
    out: Path | None = None,
    force: bool = False,
    ignore_budget: bool = False,
    samples: int = 16,
    task: str | None = None,
) -> BundleResult:
    """Package a run or export dir, exporting the target's artifacts first when missing."""
    from toolkit.core.progress import console

    target = target if isinstance(target, Target) else load_target(target)
    path = Path(run_or_export)
    if not path.exists():
        raise UserError(f"run or export directory not found: {path}")
    export_dir = find_export_dir(path, target)
    exported = None
    if export_dir is None:
        if not (path / "model.keras").is_file():
            raise UserError(
                f"{path} has no {target.artifact} and no model.keras to export it from; give "
                f"the run directory or `keras-edge export MODEL -f {target.artifact}` first"
            )
        export_dir = path / (
            "export" if not (path / "export").exists() else f"export-{target.name}"
        )
        console.print(
            f"[yellow]note:[/] {path} has no {target.artifact}: exporting "
            f"{', '.join(target.artifacts)} to {export_dir}",
            highlight=False,
            soft_wrap=True,
        )
        exported = export_dir
        run_export(
            path,
            formats=target.artifacts,
            out=export_dir,
            force=True,
            max_drop=None if ignore_budget else target.max_drop,
            optimized=False,  # only the target's artifacts; package RUN/optimized for those
            task=task,
            granularity=target.granularity,  # (float artifacts take none)
        )
    result = package(
        export_dir,
        target,
        out=out,
        force=force,
        ignore_budget=ignore_budget,
        samples=samples,
        task=task,
    )
    result.exported = exported
    return result

"""Converting RUN/optimized/ beside the plain artifacts (naming rules: `core.artifacts`).

The optimized model is converted with the same formats and calibration as the plain one, into a
staging dir the export stage copies in, so one report holds both.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from toolkit.core.artifacts import Variant, optimized_dir
from toolkit.core.formats import Format


def build(
    opt_dir: Path,
    tag: str,
    formats: list[Format],
    staging: Path,
    *,
    calibration: Any = None,
    opset: int = 17,
    skipped: list[dict[str, str]] | None = None,
) -> list[Path]:
    """Convert the optimized model to every non-Keras format asked for, into `staging`.

    The optimized model is not the reference (the dense one is), so its Keras file is not
    exported. A format that cannot convert this variant (e.g. int16x8 of a QAT graph) is skipped
    with one line rather than sinking the plain export, and appended to `skipped` (the rows
    report.json lists, as the plain export's own skips are).
    """
    from toolkit.convert import convert
    from toolkit.convert.calibration import short_reason
    from toolkit.convert.stage import skip_row
    from toolkit.core.modelio import load_model
    from toolkit.core.progress import console

    model = load_model(opt_dir).model
    work = Path(tempfile.mkdtemp(prefix=".variant-", dir=staging))
    written: list[Path] = []
    try:
        for fmt in (f for f in formats if f.format != "keras"):
            variant = Variant(tag, fmt)
            opts: dict[str, Any] = {"opset": opset} if fmt.format == "onnx" else {}
            console.print(f"convert {variant.name}", highlight=False)
            try:
                path = convert(model, fmt, work, calibration=calibration, **opts)
            except Exception as exc:  # one variant failing must not sink the export
                row = skip_row(variant.name, getattr(exc, "reason", None) or short_reason(exc))
                if skipped is not None:
                    skipped.append(row)
                continue
            written.append(Path(shutil.move(str(path), staging / variant.filename)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return written


@contextmanager
def optimized_artifacts(
    loaded: Any,
    formats: list[Format],
    *,
    calibration: Any = None,
    opset: int = 17,
    enabled: bool = True,
    export_dir: Path | None = None,
    force: bool = False,
    skipped: list[dict[str, str]] | None = None,
) -> Iterator[list[Path]]:
    """The variant files of a loaded run's RUN/optimized/ (none if absent), in a temp dir that
    lives while the export copies them in. `export_dir`/`force` are checked first, so an
    export that would be refused fails before these conversions rather than after. Variants
    that cannot convert are appended to `skipped`."""
    from toolkit.core.rundir import check_run_dir

    found = optimized_dir(Path(loaded.path)) if enabled and loaded.kind == "run" else None
    if found is None:
        yield []
        return
    if export_dir is not None:
        check_run_dir(Path(export_dir), force)
    staging = Path(tempfile.mkdtemp(prefix="keras-edge-variants-"))
    try:
        yield build(*found, formats, staging, calibration=calibration, opset=opset, skipped=skipped)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

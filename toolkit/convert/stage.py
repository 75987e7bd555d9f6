"""The export stage: one Keras model -> the requested artifacts in an export directory.

It only converts (validation is `toolkit.validate.stage`), writing into a hidden temp directory that
is renamed into place when every artifact is written, so an interrupted export never leaves
a directory that looks complete. A caller's `finish` step (validation and its report) runs on
the staged artifacts before that rename: a published export dir always has its report. The
input spec travels with the artifacts.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.convert import Format, convert
from toolkit.convert.calibration import ConversionFailed
from toolkit.core.progress import StageBar, console

MIN_CALIBRATION = 100


@dataclass
class ExportResult:
    export_dir: Path
    artifacts: list[Path]
    notes: list[str] = field(default_factory=list)
    # Artifacts that cannot apply to this model: [{"name": "tflite-int16x8", "reason": ...}].
    skipped: list[dict[str, str]] = field(default_factory=list)


def skippable(
    chosen: list[Format], formats: list[str] | None, precisions: list[str] | None
) -> set[str]:
    """The artifacts a request may go without: those it did not name.

    `--precisions int16x8` or `--formats tflite-int16x8` names one, and its failure fails the
    export; the default "every precision" list does not, so a precision that cannot apply
    to this model (int16x8 of a fake-quant graph) is skipped and the rest is exported.
    """
    named = set(formats or []) | {
        f.name for f in chosen if precisions is not None and f.precision in precisions
    }
    return {f.name for f in chosen if f.name not in named}


def skip_row(name: str, reason: str) -> dict[str, str]:
    """One skipped artifact, printed as one line and kept for report.json's `skipped`."""
    console.print(f"[yellow]skipped[/] {name}: {reason}", highlight=False, soft_wrap=True)
    return {"name": name, "reason": reason}


def check_calibration(formats: list[Format], calibration: np.ndarray | None) -> list[str]:
    """Warnings about calibration size (too few samples give poor int8 ranges)."""
    if not any(f.needs_calibration for f in formats) or calibration is None:
        return []
    if len(calibration) < MIN_CALIBRATION:
        return [
            f"only {len(calibration)} calibration samples (fewer than {MIN_CALIBRATION}); "
            "int8 ranges may be poor: use --calib-samples 200 or more"
        ]
    return []


def quantization_options(
    formats: list[Format], granularity: str | None, ranges: str | None, equalize: bool = False,
    bias_correction: bool = False, ptq: str | None = None,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Per-artifact exporter options for `--granularity`, `--ranges`, `--equalize`,
    `--bias-correction`, or `--ptq METHOD` (a name for one of those, toolkit.convert.methods).

    Granularity goes to every quantized precision; ranges to the calibrated int8 artifacts
    (TFLite int8 / int8-float-io / uint8: minmax, percentile, mse; ONNX int8: ORT's minmax,
    percentile, entropy). A range method no chosen artifact supports is a UserError."""
    from toolkit.convert.methods import check_method, range_methods, takes_method
    from toolkit.core.errors import UserError

    check_granularity(granularity)
    if ptq is not None:
        if ranges or equalize or bias_correction:
            raise UserError("--ptq METHOD names one method: drop --ranges, --equalize and "
                            "--bias-correction, or drop --ptq")  # fmt: skip
        forced = check_method(ptq, formats).options
        ranges = forced.get("ranges")
        equalize = bool(forced.get("equalize"))
        bias_correction = bool(forced.get("bias_correction"))
        adaround = bool(forced.get("adaround"))
    else:
        adaround = False  # no flag of its own: `--ptq adaround` names it
    options: dict[str, dict[str, Any]] = {}
    supported = range_methods()
    for fmt in formats:
        opts: dict[str, Any] = {}
        if granularity and fmt.precision not in ("fp32", "fp16") and fmt.format != "keras":
            opts["granularity"] = granularity  # (ONNX per tensor: 8-bit weights, see onnx.py)
        if ranges and fmt.needs_calibration and fmt.precision != "int16x8":
            if ranges not in supported[fmt.format]:
                raise UserError(
                    f"--ranges {ranges} is not available for {fmt.name}; {fmt.format} takes "
                    f"{', '.join(supported[fmt.format])} (pick the formats with --formats)"
                )
            opts["ranges"] = ranges
        if equalize and fmt.format != "keras" and fmt.precision not in ("fp32", "fp16"):
            opts["equalize"] = True  # float files stay the original model, for comparison
        if adaround and takes_method(fmt):
            opts["adaround"] = True
        if bias_correction and fmt.needs_calibration and fmt.format != "keras":
            opts["bias_correction"] = True
        if opts:
            options[fmt.name] = opts
    return options


def check_granularity(granularity: str | None) -> None:
    from toolkit.core.errors import UserError

    if granularity not in (None, "per-channel", "per-tensor"):
        raise UserError(f"--granularity must be per-channel or per-tensor; got {granularity!r}")


def write_artifacts(
    model: Any,
    formats: list[Format],
    out_dir: Path,
    *,
    calibration: np.ndarray | None = None,
    options: dict[str, dict[str, Any]] | None = None,
    opset: int = 17,
    optional: Collection[str] = (),
    skipped: list[dict[str, str]] | None = None,
    seconds: dict[str, float] | None = None,
) -> list[Path]:
    """Convert `model` once per format into `out_dir` (which must exist); returns the paths.
    `seconds` gets each artifact's conversion wall time.

    `options` maps an artifact name to extra exporter options (e.g. the budget ladder's
    `denylisted_nodes` for tflite-int8). An artifact in `optional` whose conversion cannot
    apply to this model is left out and appended to `skipped`; fp32 is never left out (the
    format itself cannot take the model then), nor is anything not in `optional`.
    """
    options = options or {}
    written = []
    with StageBar("convert", len(formats)) as bar:
        for fmt in formats:
            bar.status(fmt.name)
            opts = dict(options.get(fmt.name, {}))
            if fmt.format == "onnx":
                opts.setdefault("opset", opset)
            start = time.perf_counter()
            try:
                written.append(convert(model, fmt, out_dir, calibration=calibration, **opts))
            except ConversionFailed as exc:
                if fmt.name not in optional or fmt.precision == "fp32":
                    raise
                row = skip_row(fmt.name, exc.reason)
                if skipped is not None:
                    skipped.append(row)
            if seconds is not None:
                seconds[fmt.name] = round(time.perf_counter() - start, 2)
            bar.advance()
    return written


def export(
    model: Any,
    formats: list[Format],
    export_dir: Path,
    *,
    calibration: np.ndarray | None = None,
    input_spec: Path | None = None,
    options: dict[str, dict[str, Any]] | None = None,
    opset: int = 17,
    force: bool = False,
    extra_files: list[Path] | None = None,
    finish: Callable[[Path, list[Path]], None] | None = None,
    optional: Collection[str] = (),
    skipped: list[dict[str, str]] | None = None,
    seconds: dict[str, float] | None = None,
) -> ExportResult:
    """Write every requested artifact into `export_dir` atomically (as one directory).

    `extra_files` are artifacts built elsewhere (the budget ladder's winners) to include.
    `finish(staging_dir, staged_artifacts)` runs before the directory is published, so what it
    writes there (the validation report) appears together with the artifacts or not at all;
    if it raises, nothing is published (an existing export dir is kept).
    `optional` names the artifacts that may be skipped when they cannot apply to the model
    (see `skippable`); each skip is appended to `skipped` (rows a caller may already hold,
    e.g. the optimized variants', so `finish` sees them all) and returned in the result.
    """
    from toolkit.core.rundir import atomic_dir

    notes = check_calibration(formats, calibration)
    for note in notes:
        console.print(f"[yellow]warning:[/] {note}")
    skipped = skipped if skipped is not None else []
    with atomic_dir(export_dir, force=force) as work:
        paths = write_artifacts(
            model, formats, work, calibration=calibration, options=options, opset=opset,
            optional=optional, skipped=skipped, seconds=seconds,
        )  # fmt: skip
        for extra in extra_files or []:
            paths.append(Path(shutil.copy2(extra, work / Path(extra).name)))
        if input_spec is not None and Path(input_spec).is_file():
            shutil.copy2(input_spec, work / "input_spec.json")
        if finish is not None:
            finish(work, paths)
    artifacts = [export_dir / p.name for p in paths]
    return ExportResult(export_dir, artifacts, notes, list(skipped))

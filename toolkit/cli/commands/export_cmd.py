"""`keras-edge export MODEL` and `keras-edge validate EXPORT_DIR`."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import typer

from toolkit.convert.methods import METHODS


def _split(value: str | None) -> list[str] | None:
    if not value:
        return None
    return [v.strip() for v in value.split(",") if v.strip()] or None


def _formats_help() -> str:
    from toolkit.core.formats import help_table

    return help_table()


def _task_option() -> Any:
    return typer.Option(
        None,
        "--task",
        help="What the model is for: classification, binary, multilabel, regression, anomaly, "
        "features (no labels, fidelity only). Default: the recipe's; else inferred and printed.",
    )


def _min_sqnr_option() -> Any:
    return typer.Option(
        None,
        "--min-sqnr",
        help="Label-free budget: every artifact's outputs must reach this SQNR (dB) against "
        "the Keras model's; usable with --precisions auto and with unlabelled data (npz x only).",
    )


def _allow_crash_option() -> Any:
    return typer.Option(
        False,
        "--allow-crash",
        help="Exit 0 even when a runtime crashed (its row says so): for a runtime you do not ship.",
    )


def _full_reference_option() -> Any:
    return typer.Option(
        False,
        "--full-reference",
        help="Run LiteRT's reference kernels on every sample (default: the first 256).",
    )


def _jobs_option() -> Any:
    return typer.Option(
        None,
        "--jobs",
        min=1,
        help="Worker processes for the accuracy pass (default: one per core); latency is "
        "measured afterwards, one artifact at a time.",
    )


def _target_option() -> Any:
    return typer.Option(
        None, "--target", help="csv: the target column(s), comma-separated (default: the last)."
    )


def export_command(
    model: Path = typer.Argument(
        ..., help="Run dir, Keras 3 .keras, Keras 2 .h5, or SavedModel directory."
    ),
    formats: str | None = typer.Option(
        None,
        "--formats",
        "-f",
        help="Comma list: tflite,onnx,keras or artifact names (tflite-int8). Default: all formats.",
    ),
    precisions: str | None = typer.Option(
        None,
        "--precisions",
        "--precision",
        "-p",
        help="Comma list (fp32,fp16,dynamic,int8,int8-float-io,uint8,int16x8) or 'auto' "
        "with --max-drop. Default: every precision of the chosen formats.",
    ),
    data: str | None = typer.Option(
        None, "--data", help="Dataset for calibration and validation (default: the run's recipe)."
    ),
    calib_samples: int = typer.Option(256, "--calib-samples", min=1),
    max_drop: float | None = typer.Option(
        None, "--max-drop", min=0.0, help="Accuracy budget in the metric's units (0.01 = 1 pp)."
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Export dir (default: RUN/export; a model file: RUNS_DIR/<stem>/export).",
    ),
    runs_dir: Path = typer.Option(
        Path("runs"), "--runs-dir", help="Where a model file's default export dir goes."
    ),
    opset: int = typer.Option(17, "--opset", min=13, max=21, help="ONNX opset."),
    max_eval_samples: int | None = typer.Option(None, "--max-eval-samples", min=1),
    latency_runs: int = typer.Option(50, "--latency-runs", min=0),
    force: bool = typer.Option(False, "--force", help="Replace an existing export dir."),
    unsafe: bool = typer.Option(
        False, "--unsafe", help="Allow Lambda layers with Python code (trusted files only)."
    ),
    input_range: str | None = typer.Option(
        None,
        "--input-range",
        help="LO,HI the model expects; the data's raw range is mapped "
        "onto it (e.g. 0,1 for a third-party model that takes [0, 1] images).",
    ),
    parity: bool = typer.Option(
        False,
        "--parity",
        help="Label the data with the reference model's own predictions: "
        "measure parity, not accuracy (for data with other classes than the model's).",
    ),
    runtimes: str | None = typer.Option(
        None,
        "--runtimes",
        help="Validate only on these, e.g. litert:xnnpack,onnxruntime:cpu "
        "(default: every available runtime, LiteRT reference kernels included).",
    ),
    optimized: bool = typer.Option(
        True,
        "--optimized/--no-optimized",
        help="For a run with RUN/optimized/ (keras-edge optimize): also export that model "
        "(prune-int8.tflite, ...) and validate it in the same report.",
    ),
    task: str | None = _task_option(),
    min_sqnr: float | None = _min_sqnr_option(),
    target: str | None = _target_option(),
    allow_crash: bool = _allow_crash_option(),
    full_reference: bool = _full_reference_option(),
    jobs: int | None = _jobs_option(),
    granularity: str | None = typer.Option(
        None,
        "--granularity",
        help="per-channel (default) or per-tensor weight scales for every quantized artifact "
        "(per-tensor: what many NPUs, DSPs and older accelerators take).",
    ),
    ranges: str | None = typer.Option(
        None,
        "--ranges",
        help="int8 activation ranges: minmax (default), percentile, mse (TFLite) or "
        "entropy (ONNX).",
    ),
    equalize: bool = typer.Option(
        False,
        "--equalize",
        help="Cross-layer equalization of the Keras weights before quantizing (ReLU6 becomes "
        "ReLU): for depthwise-separable nets, per-tensor above all.",
    ),
    bias_correction: bool = typer.Option(
        False,
        "--bias-correction",
        help="Move each layer's bias by the mean output shift its int8 weights cause, "
        "measured on the calibration samples (int8 precisions; after --equalize).",
    ),
    ptq: str | None = typer.Option(
        None,
        "--ptq",
        help="Force one PTQ method on the int8 artifacts (with --precisions auto: on every int8 "
        f"rung): {', '.join(METHODS)}. Default: the flags above; auto tries them in turn.",
    ),
    fits: str | None = typer.Option(
        None,
        "--fits",
        help="With --precisions auto: keep only artifacts that fit this firmware target's "
        "flash and RAM (mcu-cortex-m, esp32-s3 or a profile .yaml; TFLM arena measured).",
    ),
    list_formats: bool = typer.Option(False, "--list", help="List every artifact and exit."),
    track: str | None = typer.Option(
        None,
        "--track",
        help="mlflow[:URI]: log every report row and the artifacts "
        "(default store: mlflow.db beside the run dir, else in RUNS_DIR).",
    ),
) -> None:
    """Convert a model to TFLite/ONNX artifacts and validate each in its real runtime."""
    from toolkit.core.progress import console
    from toolkit.pipeline.exporting import run_export
    from toolkit.validate.render import print_table

    if list_formats:
        typer.echo(_formats_help())
        return
    if unsafe:
        console.print("[yellow]warning:[/] --unsafe: Python code inside the model file will run")
    # the default store of a run dir is its runs dir's, where `train --track` logged it
    track_root = model.parent if (model / "recipe.yaml").is_file() else runs_dir
    if track is not None:  # a bad --track fails before the export, not after
        from toolkit.pipeline.tracking import check_track

        check_track(track, track_root)
    options = {"model": model, "formats": formats, "precisions": precisions, "data": data,
               "max_drop": max_drop, "runtimes": runtimes, "task": task}  # fmt: skip
    with _tracked(track, model, out, track_root, options) as tracked:
        tracked["result"], tracked["report"] = run_export(
            model, formats=_split(formats), precisions=_split(precisions), data=data,
            calib_samples=calib_samples, max_drop=max_drop, out=out, runs_dir=runs_dir, opset=opset,
            force=force, safe_mode=not unsafe, latency_runs=latency_runs,
            max_eval_samples=max_eval_samples,
            input_range=input_range, parity=parity, runtimes=_split(runtimes), optimized=optimized,
            task=task, min_sqnr=min_sqnr, target=target, allow_crash=allow_crash,
            full_reference=full_reference, jobs=jobs, granularity=granularity, ranges=ranges,
            equalize=equalize, bias_correction=bias_correction, fits=fits, ptq=ptq,
        )  # fmt: skip
    result, report = tracked["result"], tracked["report"]
    if report is not None:
        print_table(report)
    else:
        console.print("[yellow]note:[/] not validated: no dataset known; pass --data DATASET")
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")
    console.print(f"wrote {result.export_dir}/: " + " ".join(p.name for p in result.artifacts)
                  + (" report.json report.md plots/report.png" if report else ""),
                  highlight=False)  # fmt: skip
    if "tracked" in tracked:
        console.print(tracked["tracked"], highlight=False)


@contextlib.contextmanager
def _tracked(
    track: str | None, model: Path, out: Path | None, runs_dir: Path, options: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    """`--track`: log the export once it returned, or its report when the gate failed."""
    from toolkit.core.errors import GateFailed

    box: dict[str, Any] = {}
    gate = "passed"
    try:
        yield box
    except GateFailed:
        gate = "failed"
        raise
    finally:
        if track is not None and (gate == "failed" or "result" in box):
            from toolkit.core.progress import console
            from toolkit.pipeline.tracking import track_export

            where = box["result"].export_dir if "result" in box else _export_dir(model, out)
            if where is not None and ("result" in box or (where / "report.json").is_file()):
                box["tracked"] = track_export(track, Path(where), runs_dir, options, gate=gate)
                if gate == "failed":  # the command ends here: say it now
                    console.print(box["tracked"], highlight=False)


def _export_dir(model: Path, out: Path | None) -> Path | None:
    if out is not None:
        return out
    return model / "export" if model.is_dir() and (model / "model.keras").is_file() else None


def validate_command(
    export_dir: Path = typer.Argument(..., help="A directory of exported artifacts."),
    data: str | None = typer.Option(None, "--data", help="Dataset (default: the run's recipe)."),
    reference: Path | None = typer.Option(
        None,
        "--reference",
        help="Reference Keras model (default: EXPORT_DIR/model.keras or the run's model.keras).",
    ),
    max_drop: float | None = typer.Option(None, "--max-drop", min=0.0),
    max_eval_samples: int | None = typer.Option(None, "--max-eval-samples", min=1),
    latency_runs: int = typer.Option(50, "--latency-runs", min=0),
    runtimes: str | None = typer.Option(
        None, "--runtimes", help="Comma list like litert:xnnpack,onnxruntime:CPUExecutionProvider"
    ),
    task: str | None = _task_option(),
    min_sqnr: float | None = _min_sqnr_option(),
    target: str | None = _target_option(),
    allow_crash: bool = _allow_crash_option(),
    full_reference: bool = _full_reference_option(),
    jobs: int | None = _jobs_option(),
) -> None:
    """Measure every artifact in EXPORT_DIR in every available runtime; write report.json."""
    from toolkit.pipeline.exporting import run_validate
    from toolkit.validate.render import print_table

    report = run_validate(
        export_dir, data=data, reference=reference, max_drop=max_drop,
        max_eval_samples=max_eval_samples, latency_runs=latency_runs, runtimes=_split(runtimes),
        task=task, min_sqnr=min_sqnr, target=target, allow_crash=allow_crash,
        full_reference=full_reference, jobs=jobs,
    )  # fmt: skip
    print_table(report)


def register(app: typer.Typer, guarded: Callable[..., Any]) -> None:
    app.command("export")(guarded(export_command))
    app.command("validate")(guarded(validate_command))

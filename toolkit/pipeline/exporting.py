"""Exporting: load -> (budget ladder) -> convert -> validate -> report, and re-validating.

The convert and validate stages never call each other; this module runs one after the other on
the same staged directory, so a published export dir always has its report.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any


def default_export_dir(loaded: Any, runs_dir: Path | str = "runs") -> Path:
    """RUN/export for a run (or SavedModel) dir; RUNS_DIR/<file stem>/export for a model file."""
    if loaded.kind in ("run", "saved_model") and Path(loaded.path).is_dir():
        return Path(loaded.path) / "export"
    return Path(runs_dir) / Path(loaded.path).stem / "export"


def run_export(
    model: str | Path,
    *,
    formats: list[str] | None = None,
    precisions: list[str] | None = None,
    data: str | None = None,
    calib_samples: int = 256,
    max_drop: float | None = None,
    out: Path | None = None,
    runs_dir: Path | str = "runs",
    opset: int = 17,
    force: bool = False,
    safe_mode: bool = True,
    seed: int = 0,
    latency_runs: int = 50,
    max_eval_samples: int | None = None,
    input_range: str | None = None,
    parity: bool = False,
    runtimes: list[str] | None = None,
    optimized: bool = True,
    task: str | None = None,
    min_sqnr: float | None = None,
    target: str | None = None,
    allow_crash: bool = False,
    full_reference: bool = False,
    jobs: int | None = None,
    granularity: str | None = None,
    ranges: str | None = None,
    equalize: bool = False,
    bias_correction: bool = False,
    fits: str | None = None,
    ptq: str | None = None,
) -> Any:
    """Load -> (budget ladder) -> convert -> validate on the test split -> report.json.

    `task` (a Task registry name) decides the metric, agreement and the ladder's criterion;
    default: the run's recipe task, else inferred from the model's output and the data.
    `min_sqnr` is a label-free budget (dB of output fidelity) beside or instead of `max_drop`.
    `fits` (a firmware target profile) makes `--precisions auto` keep only artifacts that fit
    that board's flash and RAM. `ptq` forces one PTQ method (toolkit.convert.methods) on the
    calibrated int8 artifacts, and on every int8 rung of the ladder; `granularity` (else the
    `fits` profile's) goes to every quantized artifact and rung.

    A run with RUN/optimized/ gets that model's artifacts too (`prune-int8.tflite`, ...),
    validated against the same dense reference; `optimized=False` leaves them out.

    Validation runs on the staged artifacts and the report is written beside them before the
    export dir is renamed into place, so a killed export never leaves artifacts without their
    report. Returns (ExportResult, Report or None when no data was known); raises GateFailed
    (after publishing the dir and its report, which says why) when a budget is not met.
    """
    from toolkit.convert import select
    from toolkit.convert.stage import export, skippable
    from toolkit.core.errors import GateFailed, UserError
    from toolkit.core.modelio import load_model
    from toolkit.core.progress import console
    from toolkit.core.tasks import get_task
    from toolkit.data.evaldata import (
        calibration_data,
        check_fits,
        dataset_for_model,
        eval_data,
        parse_range,
        range_adapter,
        task_for_model,
    )
    from toolkit.pipeline.budget import Budget
    from toolkit.validate.render import save_report
    from toolkit.validate.stage import validate

    if task is not None:
        get_task(task)  # an unknown name fails before the model loads, with the closest name
    loaded = load_model(model, safe_mode=safe_mode)
    auto = precisions == ["auto"]
    if auto and max_drop is None and min_sqnr is None:
        raise UserError(
            "--precisions auto needs --max-drop (the accuracy budget to stay inside) "
            "or --min-sqnr (a fidelity floor in dB, for unlabelled data)"
        )
    limits = Budget(max_drop, min_sqnr)
    if fits is not None and not auto:
        raise UserError(
            "--fits applies to --precisions auto (`package --target` checks a named artifact)"
        )
    from toolkit.pipeline.budget import device_fit

    device = device_fit(fits) if fits is not None else None
    if device is not None:  # TFLite Micro runs .tflite: that is the default format then
        formats = formats or ["tflite"]
        if other := [f for f in formats if not f.startswith("tflite")]:
            raise UserError(f"--fits {device.name} runs TFLite Micro (.tflite only); "
                            f"drop {', '.join(other)} from --formats")  # fmt: skip
    chosen_formats = select(formats, None if auto else precisions)
    if auto and (ranges or equalize or bias_correction):
        raise UserError("--ranges, --equalize and --bias-correction apply to named precisions; "
                        "with --precisions auto the ladder tries the methods (--ptq METHOD "
                        "forces one)")  # fmt: skip
    from toolkit.convert.stage import check_granularity, quantization_options

    if granularity is None and device is not None:
        granularity = device.granularity
    check_granularity(granularity)
    if auto and ptq is not None:
        from toolkit.convert.methods import check_method

        check_method(ptq, select(formats, ["int8"]))
    quant_opts = {} if auto else quantization_options(
        chosen_formats, granularity, ranges, equalize, bias_correction, ptq
    )  # fmt: skip
    ds = dataset_for_model(loaded, data, seed, task=task, target=target)
    needs_calib = auto or any(f.needs_calibration for f in chosen_formats)
    if ds is None and (needs_calib or max_drop is not None or min_sqnr is not None):
        raise UserError(
            f"{model}: no dataset to calibrate/validate with (no recipe beside the model); "
            "pass --data DATASET (e.g. image-folder:PATH, npz:PATH, digits)"
        )
    adapt = None
    if ds is not None:
        check_fits(ds, loaded.model)
        adapt = range_adapter(ds, parse_range(input_range))
        task, note = task_for_model(loaded, ds, task)
        if note and not parity:
            console.print(note, highlight=False, markup=False)
    calibration = calibration_data(ds, calib_samples, seed, adapt) if ds is not None else None
    reference = loaded.model if parity else None
    export_dir = Path(out) if out else default_export_dir(loaded, runs_dir)  # str paths too

    budget = None
    validated: list[Any] = []
    skipped: list[dict[str, str]] = []  # artifacts that cannot apply: report.json's `skipped`

    clock = {"start": time.perf_counter()}
    seconds: dict[str, float] = {}  # each artifact's conversion time

    def validate_staged(staging: Path, staged: list[Path]) -> None:
        """Measure the staged artifacts; the report names their final paths."""
        convert_s = time.perf_counter() - clock["start"]  # the ladder's search included
        test = eval_data(ds, "test", limit=max_eval_samples, seed=seed, adapt=adapt,
                         parity_model=reference, task=task)  # fmt: skip
        report = validate(staged, test, reference=loaded.model, latency_runs=latency_runs,
                          runtimes=runtimes,
                          reference_samples=_reference_samples(full_reference),
                          jobs=jobs)  # fmt: skip
        for row in report.artifacts:
            row.path = str(export_dir / Path(row.path).name)
            row.ptq = _ptq_of(row, quant_opts, loaded.model)
        if budget is not None:
            report.budget = budget
        report.skipped = list(skipped)
        report.timings = {"convert_s": round(convert_s, 2), **report.timings}
        if seconds:
            report.timings["convert"] = dict(seconds)
        report.apply_budget_flags(max_drop, min_sqnr)
        save_report(report, staging)
        validated.append(report)

    finish = validate_staged if ds is not None else None
    if auto:
        import tempfile

        from toolkit.pipeline.budget import Quant, choose

        plain = [f for f in chosen_formats if f.format == "keras"]
        fmts = list(dict.fromkeys(f.format for f in chosen_formats if f.format != "keras"))
        staging = Path(tempfile.mkdtemp(prefix="keras-edge-chosen-"))
        val = eval_data(ds, "val", limit=max_eval_samples, seed=seed, adapt=adapt,
                        parity_model=reference, task=task)  # fmt: skip
        try:
            picked, budget = choose(loaded.model, fmts, val, calibration, limits, staging,
                                    device, Quant(granularity, ptq))  # fmt: skip
            # the report's `ptq` names what the chosen rung did (validate_staged reads it)
            quant_opts.update({v["chosen"]: v["options"] for v in budget["formats"].values()
                               if v["chosen"]})  # fmt: skip
            if not picked and not plain:  # nothing to publish: the ladder is the answer
                raise GateFailed(_nothing_within(budget, max_drop, min_sqnr), details=budget)
            result = export(
                loaded.model, plain, export_dir, calibration=calibration,
                input_spec=loaded.input_spec_path, opset=opset, force=force, extra_files=picked,
                finish=finish,
            )  # fmt: skip
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    else:
        from toolkit.core.progress import overall
        from toolkit.pipeline.variants import optimized_artifacts

        # A run with RUN/optimized/: its twins go into the same dir and report. One bar for
        # conversion and validation: its count and ETA cover the whole export.
        with overall("export"), optimized_artifacts(
            loaded, chosen_formats, calibration=calibration, opset=opset, enabled=optimized,
            export_dir=export_dir, force=force, skipped=skipped,
        ) as variants:  # fmt: skip
            result = export(
                loaded.model, chosen_formats, export_dir, calibration=calibration,
                input_spec=loaded.input_spec_path, opset=opset, force=force, finish=finish,
                extra_files=variants, skipped=skipped, options=quant_opts, seconds=seconds,
                optional=skippable(chosen_formats, formats, precisions),
            )  # fmt: skip
    if ds is None:
        return result, None
    report = validated[0]
    if auto and any(v["chosen"] is None for v in budget["formats"].values()):
        missing = [k for k, v in budget["formats"].items() if v["chosen"] is None]
        raise GateFailed(
            f"no {'/'.join(missing)} artifact stays within {_limits_text(max_drop, min_sqnr)}; "
            f"see {export_dir}/report.md"
        )
    if not auto:
        gate(report, max_drop, export_dir, min_sqnr)
    crash_gate(report, export_dir, allow_crash)
    return result, report


def _nothing_within(budget: dict[str, Any], max_drop: float | None, min_sqnr: float | None) -> str:
    """One line: no format's ladder found a rung; each rung's reason, in ladder order."""
    fit = f" and fits {budget['fits']}" if budget.get("fits") else ""
    steps = [
        f"{s['name']}: {s.get('reason') or s.get('error', '')}"
        for v in budget["formats"].values()
        for s in v["ladder"]
    ]
    return (
        f"no {'/'.join(budget['formats'])} artifact stays within "
        f"{_limits_text(max_drop, min_sqnr)}{fit} (nothing exported); {'; '.join(steps)}"
    )


def crash_gate(report: Any, where: Path, allow_crash: bool) -> None:
    """A runtime that crashed (a signal, an abort) fails the command after the report is out,
    unless the user says they do not ship that runtime (`--allow-crash`)."""
    from toolkit.core.errors import GateFailed

    crashed = [a for a in report.artifacts if a.crash]
    if crashed and not allow_crash:
        rows = ", ".join(f"{a.name} on {a.where} ({a.crash})" for a in crashed)
        raise GateFailed(
            f"{len(crashed)} runtime row(s) crashed: {rows}; the rest is in {where}/report.md "
            "(--allow-crash accepts a runtime you do not ship)"
        )


def _ptq_of(row: Any, options: dict[str, dict[str, Any]], model: Any) -> dict[str, str] | None:
    """report.json's `ptq` of a quantized row: granularity and activation-range method."""
    if row.precision in ("fp32", "fp16") or row.format == "keras" or row.variant:
        return None
    opts = options.get(row.name, {})
    ptq = {"granularity": opts.get("granularity", "per-channel")}
    if row.precision not in ("dynamic", "int16x8"):
        from toolkit.convert.methods import method_of

        ptq["ranges"] = opts.get("ranges", "minmax")
        ptq["method"] = method_of(opts)
    if opts.get("equalize"):
        from toolkit.convert.equalize import cached

        ptq["equalize"] = cached(model).summary  # or "skipped: <why>"
    if opts.get("adaround"):
        from toolkit.convert.adaround import SUMMARY as ROUNDED

        ptq["adaround"] = ROUNDED.get(row.format, "not run")
    if opts.get("bias_correction"):
        from toolkit.convert.bias_correct import SUMMARY

        ptq["bias_correction"] = SUMMARY.get(row.format, "not run")
    return ptq


def _reference_samples(full: bool) -> int | None:
    from toolkit.validate.stage import REFERENCE_SAMPLES

    return None if full else REFERENCE_SAMPLES


def _limits_text(max_drop: float | None, min_sqnr: float | None) -> str:
    parts = [f"--max-drop {max_drop}"] if max_drop is not None else []
    parts += [f"--min-sqnr {min_sqnr}"] if min_sqnr is not None else []
    return " and ".join(parts)


def _is_model(path: Path) -> bool:
    return path.is_file() or (path / "model.keras").is_file()


def gate(
    report: Any, max_drop: float | None, export_dir: Path, min_sqnr: float | None = None
) -> None:
    """Fail (exit 1) when an artifact failed to run, lost more than the budget, or reproduces
    the reference below the SQNR floor."""
    from toolkit.core.errors import GateFailed

    if max_drop is None and min_sqnr is None:
        return
    over = report.over_budget(max_drop, min_sqnr)
    if over:

        def badness(a: Any) -> float:
            if a.error:
                return float("inf")
            sqnr = (a.fidelity or {}).get("sqnr_db")
            if min_sqnr is not None and (sqnr is None or sqnr < min_sqnr):
                return 1e6 + min_sqnr - (sqnr if sqnr is not None else -1e6)
            return a.drop or 0.0

        worst = max(over, key=badness)
        sqnr = (worst.fidelity or {}).get("sqnr_db")
        if worst.error:
            what = "failed to run"
        elif min_sqnr is not None and (sqnr is None or sqnr < min_sqnr):
            what = f"has SQNR {'n/a' if sqnr is None else format(sqnr, '.1f')} dB"
        else:
            what = f"drops {worst.drop:.4f}"
        raise GateFailed(
            f"{len(over)} artifact row(s) outside {_limits_text(max_drop, min_sqnr)}: worst "
            f"{worst.name} on {worst.runtime}/{worst.provider} {what}; see {export_dir}/report.md"
        )


def run_validate(
    export_dir: Path | str,
    *,
    data: str | None = None,
    reference: Path | None = None,
    max_drop: float | None = None,
    max_eval_samples: int | None = None,
    latency_runs: int = 50,
    runtimes: list[str] | None = None,
    seed: int = 0,
    task: str | None = None,
    min_sqnr: float | None = None,
    target: str | None = None,
    allow_crash: bool = False,
    full_reference: bool = False,
    jobs: int | None = None,
) -> Any:
    """Validate an existing export directory (re-runnable from disk); writes its report."""
    from toolkit.core.errors import UserError
    from toolkit.core.modelio import load_model
    from toolkit.core.progress import console
    from toolkit.data.evaldata import check_fits, dataset_for_model, eval_data, task_for_model
    from toolkit.validate.render import save_report
    from toolkit.validate.stage import discover_artifacts, validate

    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise UserError(f"export directory not found: {export_dir}")
    artifacts = discover_artifacts(export_dir)
    if not artifacts:
        raise UserError(f"{export_dir} holds no artifacts (model.keras, model-*.tflite/.onnx)")
    candidates = [reference] if reference else [export_dir / "model.keras", export_dir.parent]
    ref_path = next((c for c in candidates if _is_model(Path(c))), None)
    if ref_path is None:
        raise UserError(
            f"no reference model for {export_dir}: pass --reference MODEL.keras "
            "(or export with the keras format included)"
        )
    loaded = load_model(ref_path)
    if loaded.kind != "run" and (export_dir.parent / "recipe.yaml").is_file():
        loaded.recipe_path = export_dir.parent / "recipe.yaml"
    ds = dataset_for_model(loaded, data, seed, task=task, target=target)
    if ds is None:
        raise UserError(f"no dataset known for {export_dir}; pass --data DATASET")
    check_fits(ds, loaded.model)
    task, note = task_for_model(loaded, ds, task)
    if note:
        console.print(note, highlight=False, markup=False)
    test = eval_data(ds, "test", limit=max_eval_samples, seed=seed, task=task)
    report = validate(artifacts, test, reference=loaded.model, latency_runs=latency_runs,
                      runtimes=runtimes,
                      reference_samples=_reference_samples(full_reference),
                      jobs=jobs)  # fmt: skip
    report.apply_budget_flags(max_drop, min_sqnr)
    save_report(report, export_dir)
    gate(report, max_drop, export_dir, min_sqnr)
    crash_gate(report, export_dir, allow_crash)
    return report

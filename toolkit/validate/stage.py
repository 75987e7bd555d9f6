"""Validate: measure every converted artifact in the runtime that will really run it.

A converted model is only as good as what its runtime computes: int8 kernels, XNNPACK's fused
ops and ONNX Runtime's providers each round differently. So every artifact x (runtime, provider)
pair runs the same held-out inputs and is compared with the Keras reference on the task's
headline metric, top-1 agreement, output difference, size and batch-1 latency. This module only
measures; budgets and gates read the `Report` it returns.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.core import artifacts as variants
from toolkit.core.errors import UserError
from toolkit.core.formats import BY_NAME, FORMATS, Format
from toolkit.core.report import ArtifactResult, Report, collect_versions, now_iso
from toolkit.data.evaldata import EvalData, predict_batched
from toolkit.validate.scoring import drop_statistics, headline_value, metric_outputs, score

__all__ = [
    "EvalData",
    "agreement_of",
    "artifact_format",
    "discover_artifacts",
    "metric_drop",
    "runtimes_for",
    "validate",
]

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
LATENCY_WARMUP = 5
REFERENCE_SAMPLES = 256  # LiteRT reference kernels: a deterministic subset (`--full-reference`)


def artifact_format(path: Path) -> Format:
    """The format-table row an artifact file belongs to, from its file name.

    Export directories name files after the table (`model-int8.tflite`), which is what tells an
    int8 file from an fp32 one; any Keras file is the reference passthrough.
    """
    path = Path(path)
    by_file = {f.filename: f for f in FORMATS}
    if path.name in by_file:
        return by_file[path.name]
    if path.suffix.lower() in KERAS_SUFFIXES:
        return BY_NAME["keras-fp32"]
    variant = variants.parse(path.name)  # an optimized model's twin: prune-int8.tflite
    if variant is not None:
        return variant.fmt
    raise UserError(
        f"cannot tell which artifact {path.name!r} is: export directories name files after the "
        f"format table ({', '.join(by_file)})"
    )


def discover_artifacts(export_dir: Path) -> list[Path]:
    """Every file in `export_dir` the format table knows, in table order, then optimized
    variants (`prune-int8.tflite`)."""
    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise UserError(f"export directory not found: {export_dir}")
    found = [export_dir / f.filename for f in FORMATS if (export_dir / f.filename).is_file()]
    found += variants.discover(export_dir)
    if not found:
        expected = ", ".join(f.filename for f in FORMATS)
        raise UserError(f"no artifacts in {export_dir}; expected files named like {expected}")
    return found


def runtimes_for(fmt: Format) -> list[tuple[str, str]]:
    """The (runtime, provider) pairs this artifact runs on here, e.g. LiteRT XNNPACK + reference.

    TFLite runs on both XNNPACK (what ships) and the reference kernels (an independent
    cross-check); ONNX on every available execution provider.
    """
    from toolkit.runtimes import available_runtimes, runs_artifact

    return [
        (rt, provider)
        for rt, provider in available_runtimes()
        if runs_artifact(rt, fmt.format, fmt.precision, fmt.runtime)
    ]


def _parse_runtime_filter(requested: list[str]) -> list[tuple[str, str | None]]:
    """'litert:xnnpack' / 'onnxruntime:cpu' / 'litert' -> (runtime, provider or None); checked."""
    from toolkit.runtimes import available_runtimes
    from toolkit.runtimes.onnxrt import install_hint, resolve_provider

    available = available_runtimes()
    shown = ", ".join(f"{rt}:{p}" for rt, p in available)
    wanted: list[tuple[str, str | None]] = []
    for item in requested:
        runtime, _, provider = item.partition(":")
        runtime = runtime.strip()
        provider_name = provider.strip() or None
        if runtime == "onnxruntime" and provider_name:
            provider_name = resolve_provider(provider_name)
        if not any(rt == runtime and provider_name in (None, p) for rt, p in available):
            hint = install_hint(provider_name) if runtime == "onnxruntime" and provider_name else ""
            raise UserError(f"runtime {item!r} is not available here; available: {shown}{hint}")
        wanted.append((runtime, provider_name))
    return wanted


def metric_drop(reference: float, value: float, higher_is_better: bool) -> float:
    """How much worse an artifact is than the reference, in metric units (positive = worse)."""
    return float(reference - value) if higher_is_better else float(value - reference)


def agreement_of(outputs: np.ndarray, reference: np.ndarray, task: str) -> float:
    """Fraction of samples where the artifact says what the reference says (the task's rule)."""
    from toolkit.core.tasks import get_task

    return get_task(task).agreement(outputs, reference)


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = text if isinstance(exc, UserError) else f"{type(exc).__name__}: {text}".rstrip(": ")
    return text[:400]


def _run_combo(
    path: Path,
    runtime: str,
    provider: str,
    data: EvalData,
    latency_runs: int,
    staged_inputs: Path | None = None,
) -> tuple[np.ndarray, dict[str, float] | None]:
    """Outputs and latency; in a child process when inputs are staged (native crashes stay
    there), in this one for the Keras reference and when isolation is off."""
    from toolkit.runtimes import open_runner

    if staged_inputs is not None and runtime != "keras":
        from toolkit.validate.isolation import run_isolated

        return run_isolated(path, runtime, provider, staged_inputs, latency_runs, LATENCY_WARMUP,
                            limit=len(data.x))  # fmt: skip

    with open_runner(path, runtime=runtime, provider=provider) as runner:
        outputs = predict_batched(runner.predict, data.x)
        latency = (
            runner.latency_ms(data.x[0], warmup=LATENCY_WARMUP, runs=latency_runs)
            if latency_runs
            else None
        )
    return outputs, latency


def _measure(
    path: Path,
    fmt: Format,
    combo: tuple[str, str],
    data: EvalData,
    ref: dict[str, Any],
    sizes: tuple[int, int],
    latency_runs: int,
    staged_inputs: Path | None = None,
) -> ArtifactResult:
    """One artifact x runtime row; a load or run failure (or a crash) becomes the row's `error`."""
    runtime, provider = combo
    variant = variants.parse(path.name)
    result = ArtifactResult(
        name=variant.name if variant else fmt.name,
        format=fmt.format,
        precision=fmt.precision,
        path=str(path),
        size_bytes=sizes[0],
        gzip_bytes=sizes[1],
        runtime=runtime,
        provider=provider,
        metric={"name": ref["metric"], "value": None},
        variant=variant.tag if variant else None,
    )
    try:
        outputs, latency = _run_combo(path, runtime, provider, data, latency_runs, staged_inputs)
        outputs = outputs.reshape(len(outputs), -1)
        if outputs.shape != ref["outputs"].shape:
            raise UserError(
                f"outputs have shape {outputs.shape}; the reference's are {ref['outputs'].shape}"
            )
    except Exception as exc:  # any load/run failure is a finding about this artifact
        result.error = _error_text(exc)
        result.crash = getattr(exc, "how", None)  # a native crash: its signal or exit status
        return result
    result.outputs_ = outputs  # not serialized: lets a subset row be compared bit for bit
    scored = metric_outputs(data, outputs)  # once: an anomaly score reads every input again
    metrics, result.fidelity = score(data, outputs, ref["outputs"], scored)
    value = headline_value(metrics, ref["metric"])
    result.metric["value"] = value
    if "mae_per_output" in metrics:
        result.metric["per_output"] = metrics["mae_per_output"]
    if value is not None and ref["value"] is not None:
        result.drop = metric_drop(ref["value"], value, ref["higher_is_better"])
        stats = drop_statistics(data, outputs, ref["outputs"], ref["metric"],
                                ref["higher_is_better"], (ref["scores"], scored))  # fmt: skip
        result.drop_ci95, result.mcnemar_p = stats["drop_ci95"], stats["mcnemar_p"]
        result.significant = stats["significant"]
    # Agreement on what the task scores (an autoencoder's per-sample error, not each value).
    result.agreement = agreement_of(scored, ref["scores"], data.task)
    result.max_abs_diff = float(np.max(np.abs(outputs - ref["outputs"])))
    result.latency_ms = latency
    return result


def _reference(reference: Any, data: EvalData) -> dict[str, Any]:
    """The Keras model's outputs and headline metric on the held-out data."""
    from toolkit.core.tasks import headline
    from toolkit.runtimes import open_runner

    metric, higher_is_better = headline(data.metric_task)
    with open_runner(reference, runtime="keras") as runner:
        outputs = predict_batched(runner.predict, data.x)
        digest = weights_digest(runner.model)
    outputs = outputs.reshape(len(outputs), -1)
    scores = metric_outputs(data, outputs)  # what the task scores (the outputs themselves
    metrics, _ = score(data, outputs, outputs, scores)  # unless a score hook derives them)
    value = headline_value(metrics, metric)
    path = str(reference) if isinstance(reference, (str, Path)) else None
    return {
        "metric": metric,
        "value": value,
        "higher_is_better": higher_is_better,
        "outputs": outputs,
        "path": path,
        "weights_sha256": digest,
        "scores": scores,
    }


def _sampled(combo: tuple[str, str], data: EvalData, limit: int | None) -> EvalData | None:
    """The subset a slow runtime runs on, or None for the full data."""
    if combo != ("litert", "reference") or limit is None or len(data.x) <= limit:
        return None
    return data.head(limit)


def _head_reference(ref: dict[str, Any], data: EvalData) -> dict[str, Any]:
    """The reference's outputs and metric on the first samples only (like with like)."""
    n = len(data.x)
    outputs = ref["outputs"][:n]
    scores = ref["scores"][:n]
    metrics, _ = score(data, outputs, outputs, scores)
    return {
        **ref,
        "outputs": outputs,
        "scores": scores,
        "value": headline_value(metrics, ref["metric"]),
    }


def weights_digest(model: Any) -> str | None:
    """sha256 of the model's weights in order: the same trained model, whatever file holds it
    (a .keras zip carries a save date, so file hashes differ for identical models)."""
    import hashlib

    try:
        weights = model.get_weights()
    except Exception:  # a model object without Keras weights: nothing to fingerprint
        return None
    digest = hashlib.sha256()
    for w in weights:
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()


def _plan(
    paths: list[Path], runtimes: list[str] | None
) -> list[tuple[Path, Format, tuple[str, str]]]:
    wanted = _parse_runtime_filter(runtimes) if runtimes is not None else None
    plan = []
    for path in paths:
        fmt = artifact_format(path)
        for runtime, provider in runtimes_for(fmt):
            if wanted is None or any(runtime == rt and p in (None, provider) for rt, p in wanted):
                plan.append((path, fmt, (runtime, provider)))
    if not plan:
        raise UserError(
            f"none of the artifacts runs on the requested runtimes ({', '.join(runtimes or [])})"
        )
    return plan


def validate(
    artifacts: list[Path],
    data: EvalData,
    *,
    reference: Any,
    latency_runs: int = 50,
    runtimes: list[str] | None = None,
    progress: bool = True,
    isolate: bool = True,
    reference_samples: int | None = REFERENCE_SAMPLES,
) -> Report:
    """Run every artifact on every runtime/provider available for it; compare with `reference`.

    `reference` is the Keras model (object or `.keras` path) the artifacts were converted from.
    `runtimes` restricts the pairs ("litert:xnnpack", "onnxruntime:cpu", or a bare "litert").
    `latency_runs=0` skips latency. Failing artifacts get an `error` instead of aborting; with
    `isolate` (default) each LiteRT/ONNX Runtime session runs in a child process, so a native
    crash is a row with `crash` set (its signal), not the end of the validation.
    LiteRT's reference kernels prove the numerics independently of XNNPACK, not the accuracy
    again, and run ~30x slower: they see the first `reference_samples` samples (None: all); such
    a row's `samples` says how many, its drop is against the reference on the same samples, and
    `bit_exact` is the fraction of those whose outputs equal the XNNPACK row's exactly.
    """
    import tempfile

    from toolkit.core.progress import console, progress_bar

    if not artifacts:
        raise UserError("nothing to validate: no artifacts given")
    if latency_runs < 0:
        raise UserError(f"latency_runs must be >= 0; got {latency_runs}")
    paths = [Path(a) for a in artifacts]
    for path in paths:
        if not path.is_file():
            raise UserError(f"artifact not found: {path}")
    plan = _plan(paths, runtimes)
    ref = _reference(reference, data)
    sizes: dict[Path, tuple[int, int]] = {}
    results: list[ArtifactResult] = []
    bar = progress_bar() if progress else None
    task_id = bar.add_task("validate", total=len(plan), status="") if bar else None
    scratch = tempfile.TemporaryDirectory(prefix="keras-edge-inputs-") if isolate else None
    if bar:
        bar.start()
    try:
        staged = None
        if scratch is not None and any(rt != "keras" for _, _, (rt, _) in plan):
            from toolkit.validate.isolation import stage_inputs

            staged = stage_inputs(data.x, Path(scratch.name))
        for path, fmt, combo in plan:
            if bar:
                bar.update(task_id, status=f"{fmt.name} on {combo[0]}/{combo[1]}")
            if path not in sizes:
                content = path.read_bytes()
                sizes[path] = (len(content), len(gzip.compress(content, compresslevel=9)))
            sub = _sampled(combo, data, reference_samples)
            if sub is None:
                row = _measure(path, fmt, combo, data, ref, sizes[path], latency_runs, staged)
            else:
                sub_data, sub_ref = sub, _head_reference(ref, sub)
                row = _measure(path, fmt, combo, sub_data, sub_ref, sizes[path], latency_runs,
                               staged)  # fmt: skip
                row.samples = len(sub_data.x)
                twin = next((r for r in results if r.path == row.path and r.runtime == row.runtime
                             and getattr(r, "outputs_", None) is not None), None)  # fmt: skip
                mine = getattr(row, "outputs_", None)
                if twin is not None and mine is not None:
                    same = np.all(twin.outputs_[: len(mine)] == mine, axis=1)
                    row.bit_exact = float(np.mean(same))
                exact = "" if row.bit_exact is None else f", {row.bit_exact:.1%} bit-exact"
                row.notes.append(f"first {row.samples} samples (--full-reference: all){exact}")
            results.append(row)
            if bar:
                bar.advance(task_id)
                if bar.disable:
                    console.print(
                        f"validate {row.summary()}", highlight=False, markup=False, soft_wrap=True
                    )
    finally:
        if bar:
            bar.stop()
        if scratch is not None:
            scratch.cleanup()
    report = Report(
        reference={
            "name": "keras-fp32",
            "path": ref["path"],
            "weights_sha256": ref["weights_sha256"],
            "metric": {
                "name": ref["metric"],
                "value": ref["value"],
                "higher_is_better": ref["higher_is_better"],
            },
        },
        artifacts=results,
        versions=collect_versions(),
        data={
            "name": data.name,
            "samples": len(data.x),
            "task": data.task,
            "labelled": data.labelled,
        },
        created=now_iso(),
    )
    report.apply_budget_flags(None)
    return report

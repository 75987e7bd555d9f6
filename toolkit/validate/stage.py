"""Validate: measure every converted artifact in the runtime that will really run it.

A converted model is only as good as what its runtime computes: int8 kernels, XNNPACK's fused
ops and ONNX Runtime's providers each round differently. So every artifact x (runtime, provider)
pair runs the same held-out inputs and is compared with the Keras reference on the task's
headline metric, top-1 agreement, output difference, size and batch-1 latency. This module only
measures; budgets and gates read the `Report` it returns.
"""

from __future__ import annotations

import gzip
import time
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.core import artifacts as variants
from toolkit.core.errors import UserError
from toolkit.core.formats import Format
from toolkit.core.model_stats import weights_digest
from toolkit.core.report import ArtifactResult, Report, collect_versions, now_iso
from toolkit.data.evaldata import EvalData, predict_batched
from toolkit.validate.plan import (
    _plan,
    _sampled,
    artifact_format,
    artifact_macs,
    discover_artifacts,
    runtimes_for,
    sampled_reason,
)
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

LATENCY_WARMUP = 5
REFERENCE_SAMPLES = 256  # LiteRT reference kernels: a deterministic subset (`--full-reference`)


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


def _in_process(path: Path, combo: tuple[str, str], data: EvalData, latency_runs: int) -> Any:
    """The outcome of one row run in this process (the Keras reference, or isolation off)."""
    from toolkit.runtimes import open_runner

    try:
        with open_runner(path, runtime=combo[0], provider=combo[1]) as runner:
            outputs = predict_batched(runner.predict, data.x)
            latency = (
                runner.latency_ms(data.x[0], warmup=LATENCY_WARMUP, runs=latency_runs)
                if latency_runs
                else None
            )
            return {"outputs": outputs, "latency": latency, "batching": runner.batching}
    except Exception as exc:  # a load/run failure is this row's finding
        return exc


def _measure(
    path: Path,
    fmt: Format,
    combo: tuple[str, str],
    data: EvalData,
    ref: dict[str, Any],
    sizes: tuple[int, int],
    outcome: Any,
) -> ArtifactResult:
    """One artifact x runtime row from its outcome ({"outputs", "latency", "batching"}, or
    the exception it failed with: a load or run failure, or a crash, is the row's `error`)."""
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
        if isinstance(outcome, BaseException):
            raise outcome
        outputs, latency = outcome["outputs"], outcome.get("latency")
        if str(outcome.get("batching", "")).startswith("batch 1"):
            result.notes.append(outcome["batching"])
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


def _reference(reference: Any, data: EvalData, stage: Any = None) -> dict[str, Any]:
    """The Keras model's outputs and headline metric on the held-out data; `stage` (a
    StagedInputs) is written meanwhile: with the batches this pass decodes, or from a thread
    while Keras runs (the write then costs no wall time)."""
    import threading

    from toolkit.core.tasks import headline
    from toolkit.data.evaldata import StreamedInputs
    from toolkit.runtimes import open_runner

    metric, higher_is_better = headline(data.metric_task)
    with open_runner(reference, runtime="keras") as runner:
        if stage is not None and isinstance(data.x, StreamedInputs):
            parts = []
            for batch in data.x.batches():
                stage.write(batch)
                parts.append(np.asarray(runner.predict(batch)))
            outputs = np.concatenate(parts)
        else:
            writer = None if stage is None else threading.Thread(target=stage.write,
                                                                 args=(data.x,))  # fmt: skip
            if writer is not None:
                writer.start()
            try:
                outputs = predict_batched(runner.predict, data.x)
            finally:
                if writer is not None:
                    writer.join()
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


def _mark_bit_exact(results: list[ArtifactResult]) -> None:
    """A subset row's `bit_exact`: the fraction of its samples whose outputs equal, bit for
    bit, those of the same artifact's full row (XNNPACK for a .tflite), when it has one."""

    for row in results:
        if row.samples is None:
            continue
        mine = getattr(row, "outputs_", None)
        full = [r for r in results if r.path == row.path and r.samples is None
                and getattr(r, "outputs_", None) is not None]  # fmt: skip
        if full and mine is not None:
            same = np.all(full[0].outputs_[: len(mine)] == mine, axis=1)
            row.bit_exact = float(np.mean(same))
        exact = "" if row.bit_exact is None else f", {row.bit_exact:.1%} bit-exact"
        why = sampled_reason((row.runtime, row.provider), row.precision) or "slow"
        row.notes.append(f"first {row.samples} samples ({why}; --full-reference: all){exact}")


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
    jobs: int | None = None,
) -> Report:
    """Run every artifact on every runtime/provider available for it; compare with `reference`.

    `reference` is the Keras model (object or `.keras` path) the artifacts were converted from.
    `runtimes` restricts the pairs ("litert:xnnpack", "onnxruntime:cpu", or a bare "litert").
    `latency_runs=0` skips latency. Failing artifacts get an `error` instead of aborting; with
    `isolate` (default) each LiteRT/ONNX Runtime session runs in a child process, so a native
    crash is a row with `crash` set (its signal), not the end of the validation, and `jobs`
    such children (default: one per core) run the accuracy passes at once; latency is then
    measured one artifact at a time (`schedule`).
    LiteRT's reference kernels prove the numerics independently of XNNPACK, not the accuracy
    again, and run ~30x slower: they see the first `reference_samples` samples (None: all),
    fewer for a model over 100 M MACs per sample (`plan.subset_size`); such a row's `samples`
    says how many, its drop is against the reference on the same samples, and
    `bit_exact` is the fraction of those whose outputs equal the XNNPACK row's exactly.
    """
    import tempfile

    if not artifacts:
        raise UserError("nothing to validate: no artifacts given")
    if latency_runs < 0:
        raise UserError(f"latency_runs must be >= 0; got {latency_runs}")
    if jobs is not None and jobs < 1:
        raise UserError(f"jobs must be a positive integer; got {jobs}")
    paths = [Path(a) for a in artifacts]
    for path in paths:
        if not path.is_file():
            raise UserError(f"artifact not found: {path}")
    plan = _plan(paths, runtimes)
    scratch = None
    if isolate and any(combo[0] != "keras" for _, _, combo in plan):
        scratch = tempfile.TemporaryDirectory(prefix="keras-edge-inputs-")
    try:
        return _validate(plan, data, reference, scratch, latency_runs, progress,
                         reference_samples, jobs)  # fmt: skip
    finally:
        if scratch is not None:
            scratch.cleanup()


def _validate(
    plan: list[Any], data: EvalData, reference: Any, scratch: Any, latency_runs: int,
    progress: bool, reference_samples: int | None, jobs: int | None,
) -> Report:  # fmt: skip
    """`validate` after its checks; `scratch` (a temporary directory, or None to run every row
    in this process) receives the staged inputs."""
    from toolkit.core.progress import StageBar, console
    from toolkit.validate.isolation import StagedInputs
    from toolkit.validate.schedule import Job, default_jobs, run_jobs

    bar = StageBar("validate", len(plan)) if progress else None
    if bar:
        bar.status("Keras reference pass")
    clock = time.perf_counter()
    stage = None if scratch is None else StagedInputs(tuple(data.x.shape), Path(scratch.name))
    try:
        ref = _reference(reference, data, stage)
    except BaseException:
        if stage is not None:  # the pass's own error, not "staged N of M inputs"
            stage.abort()
        raise
    staged = None if stage is None else stage.close()
    timings: dict[str, Any] = {"reference_s": time.perf_counter() - clock}
    if stage is not None:
        timings["stage_s"] = stage.seconds  # inside reference_s, overlapped with Keras
    clock = time.perf_counter()
    sizes: dict[Path, tuple[int, int]] = {}
    for path, _, _ in plan:
        if path not in sizes:
            content = path.read_bytes()
            sizes[path] = (len(content), len(gzip.compress(content, compresslevel=9)))
    # Each row's data and reference: the full split, or a slow runtime's deterministic subset.
    rows_in, macs = [], {}
    for path, fmt, combo in plan:
        if sampled_reason(combo, fmt.precision) and path not in macs:
            macs[path] = artifact_macs(path)  # a big model's slow rows get fewer samples
        sub = _sampled(combo, fmt.precision, data, reference_samples, macs.get(path))
        rows_in.append((path, fmt, combo, sub or data, _head_reference(ref, sub) if sub else ref))
    rows: dict[int, ArtifactResult] = {}

    def done(key: int, outcome: Any) -> None:
        path, fmt, combo, row_data, row_ref = rows_in[key]
        rows[key] = row = _measure(path, fmt, combo, row_data, row_ref, sizes[path], outcome)
        if isinstance(outcome, dict) and outcome.get("accuracy_s") is not None:
            timings.setdefault("rows", {})[f"{fmt.name} {row.where}"] = round(
                outcome["accuracy_s"], 2
            )
        if row_data is not data:
            row.samples = len(row_data.x)
        if bar:
            bar.advance()
            if bar.disable:  # a log, not a terminal: one line per finished row
                console.print(
                    f"validate {row.summary()}", highlight=False, markup=False, soft_wrap=True
                )

    def started(job: Job) -> None:
        if bar:
            _, fmt, combo, _, _ = rows_in[job.key]
            bar.status(f"{fmt.name} on {combo[0]}/{combo[1]}")

    if bar:
        bar.start()
    try:
        isolated = [k for k, (_, _, combo, _, _) in enumerate(rows_in)
                    if staged is not None and combo[0] != "keras"]  # fmt: skip
        for key, (path, _, combo, row_data, _) in enumerate(rows_in):
            if key not in isolated:
                started(Job(key, path, *combo))
                done(key, _in_process(path, combo, row_data, latency_runs))
        if isolated:
            work = [Job(k, rows_in[k][0], *rows_in[k][2], limit=len(rows_in[k][3].x))
                    for k in isolated]  # fmt: skip
            timings["jobs"] = workers = min(jobs or default_jobs(), len(work))
            final = run_jobs(work, staged, workers=workers,
                             latency_runs=latency_runs, warmup=LATENCY_WARMUP,
                             on_start=started, on_done=lambda j, o: done(j.key, o),
                             timings=timings)  # fmt: skip
            for key in isolated:  # latency measured after the parallel accuracy pass
                outcome = final[key]
                if isinstance(outcome, BaseException) and rows[key].error is None:
                    path, fmt, combo, row_data, row_ref = rows_in[key]
                    rows[key] = _measure(path, fmt, combo, row_data, row_ref, sizes[path], outcome)
                    rows[key].samples = len(row_data.x) if row_data is not data else None
                elif not isinstance(outcome, BaseException):
                    rows[key].latency_ms = outcome.get("latency")
    finally:
        if bar:
            bar.stop()
    timings["accuracy_s"] = time.perf_counter() - clock - timings.get("latency_s", 0.0)
    results = [rows[k] for k in range(len(rows_in))]
    _mark_bit_exact(results)
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
        timings={k: round(v, 2) if isinstance(v, float) else v for k, v in timings.items()},
        # rows: each isolated row's accuracy pass inside its worker, seconds
    )
    report.apply_budget_flags(None)
    return report

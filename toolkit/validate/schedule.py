"""Spread a validation's artifact x runtime accuracy passes over worker processes.

Each pass already runs in a child process of its own (`isolation`), so running several at
once is a matter of starting them together. Workers share the cores (each gets
`cores // workers` threads), which is fine for accuracy but not for latency: with more than
one worker, latency is measured afterwards, one child at a time, on an idle machine, with the
runtime's default threads, exactly as `--jobs 1` measures it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

Outcome = dict[str, Any] | BaseException  # {"outputs", "latency", "batching"} or the failure


@dataclass(frozen=True)
class Job:
    """One artifact x runtime pass over the first `limit` staged inputs (all when None)."""

    key: int
    path: Path
    runtime: str
    provider: str
    limit: int | None = None


def cores() -> int:
    """The cores this process may run on (a container's CPU set, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def default_jobs() -> int:
    """`--jobs` default: one worker per core."""
    return cores()


# Per-sample cost relative to an XNNPACK row of the same file, measured on a MobileNetV2-224
# export (bench/RESULTS.md "Validation at real-model scale"): ORT's dynamic quantization runs
# batch 1 (its activation scale depends on the batch: see Runner._batched) at ~10x, ORT
# float16 batch 1 at ~2x, LiteRT reference kernels ~30x and TFLite Micro ~60x per sample.
# Starting the long rows first keeps the other workers busy meanwhile: onnx-dynamic alone was
# 234 s of a 505 s accuracy pass when it came last.
_COST = {("onnxruntime", "dynamic"): 10.0, ("onnxruntime", "fp16"): 2.0,
         ("litert", "reference"): 30.0, ("tflm", ""): 60.0}  # fmt: skip


def expected_cost(job: Job) -> float:
    """A rough relative cost of a job (samples x per-sample factor), to start long ones first."""
    factor = 1.0
    for (runtime, tag), cost in _COST.items():
        if job.runtime == runtime and (job.path.stem.endswith(tag) or job.provider == tag):
            factor = cost
    return factor * (job.limit or 1)


def run_jobs(
    jobs: list[Job],
    inputs: Path,
    *,
    workers: int,
    latency_runs: int,
    warmup: int,
    on_start: Callable[[Job], None] | None = None,
    on_done: Callable[[Job, Outcome], None] | None = None,
    timings: dict[str, Any] | None = None,
) -> dict[int, Outcome]:
    """Every job's outcome by key; a crash or error is that job's outcome, never raised.

    `on_done` is called as each accuracy pass ends (latency, with several workers, is filled
    in by the serial pass that follows, before this returns). `timings["latency_s"]` gets the
    wall time spent timing latency (inside the children with one worker)."""
    from toolkit.validate.isolation import Isolated

    workers = max(1, min(workers, len(jobs)))
    threads = max(1, cores() // workers) if workers > 1 else None
    inline_latency = latency_runs if workers == 1 else 0
    outcomes: dict[int, Outcome] = {}
    pending = sorted(jobs, key=expected_cost, reverse=True)  # longest first: no idle tail
    running: dict[int, tuple[Job, Any]] = {}
    while pending or running:
        while pending and len(running) < workers:
            job = pending.pop(0)
            if on_start:
                on_start(job)
            try:
                child = Isolated(job.path, job.runtime, job.provider, inputs,
                                 latency_runs=inline_latency, warmup=warmup, limit=job.limit,
                                 threads=threads)  # fmt: skip
            except Exception as exc:  # the process could not even start (fds, memory)
                _finish(outcomes, job, exc, on_done)
                continue
            running[child.sentinel] = (job, child)
        for sentinel in wait(list(running)):
            job, child = running.pop(sentinel)  # type: ignore[call-overload]
            _finish(outcomes, job, _collect(child), on_done)
    clock = time.perf_counter()
    if latency_runs and workers > 1:
        for job in jobs:
            outcome = outcomes[job.key]
            if isinstance(outcome, BaseException):
                continue
            timing = _collect(Isolated(job.path, job.runtime, job.provider, inputs,
                                       latency_runs=latency_runs, warmup=warmup, limit=1,
                                       accuracy=False))  # fmt: skip
            if isinstance(timing, BaseException):
                outcomes[job.key] = timing  # as in one worker: a crash while timing fails the row
            else:
                outcome["latency"] = timing.get("latency")
    if timings is not None:
        inline = [o.get("latency_s") or 0.0 for o in outcomes.values() if isinstance(o, dict)]
        timings["latency_s"] = time.perf_counter() - clock if workers > 1 else sum(inline)
    return outcomes


def _collect(child: Any) -> Outcome:
    try:
        return child.collect()
    except Exception as exc:  # RuntimeCrash or the child's UserError: this row's finding
        return exc


def _finish(
    outcomes: dict[int, Outcome],
    job: Job,
    outcome: Outcome,
    on_done: Callable[[Job, Outcome], None] | None,
) -> None:
    outcomes[job.key] = outcome
    if on_done:
        on_done(job, outcome)

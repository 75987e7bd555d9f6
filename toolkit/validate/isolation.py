"""Each LiteRT / ONNX Runtime session runs in a child process, so a native crash is a row.

A runtime can abort the whole process in C++ (LiteRT's reference kernels SIGABRT in
allocate_tensors on a full-int8 MobileNetV2, ai-edge-litert 2.3.0): in-process, that would end
the export after every other artifact was converted and measured. Here the child is forked from
a forkserver that never imported TensorFlow (fast, and safe to fork), reads the inputs from a
memory-mapped .npy written once per validation, and writes its outputs back to a file. A signal,
an abort or an out-of-memory kill becomes `RuntimeCrash("... killed by SIGABRT")` for that row.
"""

from __future__ import annotations

import json
import multiprocessing
import signal
import tempfile
import traceback
from pathlib import Path
from typing import Any

import numpy as np

BATCH = 256
_CONTEXT: Any = None


class RuntimeCrash(RuntimeError):
    """The runtime's process died (a signal or a non-zero exit) while running this artifact."""

    def __init__(self, message: str, how: str) -> None:
        super().__init__(message)
        self.how = how  # "SIGABRT", "exit 1": what report.json's `crash` says


def _context() -> Any:
    global _CONTEXT
    if _CONTEXT is None:
        ctx = multiprocessing.get_context("forkserver")
        # The server preloads what children need (numpy, the runtimes), never TensorFlow.
        ctx.set_forkserver_preload(["numpy", "toolkit.runtimes"])
        _CONTEXT = ctx
    return _CONTEXT


def stage_inputs(x: Any, directory: Path) -> Path:
    """Write the evaluation inputs once as a .npy the children memory-map (streamed splits
    are written batch by batch, never held whole)."""
    path = Path(directory) / "inputs.npy"
    if isinstance(x, np.ndarray):
        np.save(path, np.ascontiguousarray(x, dtype=np.float32))
        return path
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=tuple(x.shape))
    start = 0
    for batch in x.batches():
        out[start : start + len(batch)] = batch
        start += len(batch)
    out.flush()
    del out
    return path


def _child(
    artifact: str, runtime: str, provider: str, inputs: str, latency_runs: int, warmup: int,
    out_dir: str, limit: int | None = None,
) -> None:  # fmt: skip
    """Runs in the child: predict every input in batches, then batch-1 latency; write results."""
    result: dict[str, Any] = {}
    try:
        from toolkit.runtimes import open_runner

        x = np.load(inputs, mmap_mode="r")
        x = x[:limit] if limit is not None else x
        with open_runner(Path(artifact), runtime=runtime, provider=provider) as runner:
            batches = [np.asarray(x[i : i + BATCH]) for i in range(0, len(x), BATCH)]
            outputs = np.concatenate([np.asarray(runner.predict(b)) for b in batches])
            if latency_runs:
                result["latency"] = runner.latency_ms(
                    np.asarray(x[0]), warmup=warmup, runs=latency_runs
                )
        np.save(Path(out_dir) / "outputs.npy", outputs)
    except BaseException as exc:  # reported to the parent as this row's error
        from toolkit.core.errors import UserError

        result["error"] = str(exc) if isinstance(exc, UserError) else (
            f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        )  # fmt: skip
        result["traceback"] = traceback.format_exc()[-4000:]
    (Path(out_dir) / "result.json").write_text(json.dumps(result))


def run_isolated(
    artifact: Path,
    runtime: str,
    provider: str,
    inputs: Path,
    latency_runs: int,
    warmup: int,
    limit: int | None = None,
) -> tuple[np.ndarray, dict[str, float] | None]:
    """(outputs, latency) of one artifact x runtime on the first `limit` staged inputs (all
    when None), computed in a child process."""
    with tempfile.TemporaryDirectory(prefix="keras-edge-run-") as work:
        proc = _context().Process(
            target=_child,
            args=(str(artifact), runtime, provider, str(inputs), latency_runs, warmup, work, limit),
            daemon=True,
        )
        proc.start()
        proc.join()
        result_file = Path(work) / "result.json"
        if proc.exitcode != 0 or not result_file.is_file():
            code = proc.exitcode
            how = signal.Signals(-code).name if code is not None and code < 0 else f"exit {code}"
            raise RuntimeCrash(
                f"{runtime}/{provider} crashed on {Path(artifact).name} ({how}); the other "
                "artifacts were measured", how
            )  # fmt: skip
        result = json.loads(result_file.read_text())
        if "error" in result:
            from toolkit.core.errors import UserError

            raise UserError(result["error"])  # the child's own one-line account
        return np.load(Path(work) / "outputs.npy"), result.get("latency")

"""Each LiteRT / ONNX Runtime session runs in a child process, so a native crash is a row.

A runtime can abort the whole process in C++ (LiteRT's reference kernels SIGABRT in
allocate_tensors on a full-int8 MobileNetV2, ai-edge-litert 2.3.0): in-process, that would end
the export after every other artifact was converted and measured. Here the child is forked from
a forkserver that never imported TensorFlow (fast, and safe to fork), reads the inputs batch by
batch from a .npy written once per validation, and writes its outputs back to a file. A signal,
an abort or an out-of-memory kill becomes `RuntimeCrash("... killed by SIGABRT")` for that row.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

THREADED = ("litert", "onnxruntime")  # runtimes that take num_threads
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


@contextlib.contextmanager
def _main_not_rerun() -> Iterator[None]:
    """Start children without re-running the caller's script.

    multiprocessing re-imports a script's `__main__` in every child (to find functions defined
    there); a user's `toolkit.export(...)` in a script without an `if __name__ == "__main__"`
    guard would then train and export again in each child. The child runs a function of this
    module only, so the parent's main module is hidden while a child starts.
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__dict__.update(saved)


class StagedInputs:
    """The evaluation inputs as a .npy the children read batch by batch, written as batches
    arrive (the Keras reference pass feeds it the batches it decodes: an image folder is
    decoded once). Nothing is memory-mapped, so written pages are not counted in this process."""

    def __init__(self, shape: tuple[int, ...], directory: Path) -> None:
        self.path = Path(directory) / "inputs.npy"
        self.shape = tuple(int(d) for d in shape)
        self.seconds = 0.0  # time spent writing (overlapped with the reference pass or not)
        self._written = 0
        self._file = self.path.open("wb")
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                  "fortran_order": False, "shape": self.shape}  # fmt: skip
        np.lib.format.write_array_header_2_0(self._file, header)

    def write(self, batch: np.ndarray) -> None:
        start = time.perf_counter()
        for i in range(0, len(batch), 256):
            np.ascontiguousarray(batch[i : i + 256], dtype=np.float32).tofile(self._file)
        self._written += len(batch)
        self.seconds += time.perf_counter() - start

    def abort(self) -> None:
        """Close the file after a failed pass (its directory is removed by the caller)."""
        self._file.close()

    def close(self) -> Path:
        self._file.close()
        if self._written != self.shape[0]:
            raise RuntimeError(f"staged {self._written} inputs for a split of {self.shape[0]}")
        return self.path


class NpyRows:
    """Rows of a .npy read from the file on demand, one slice at a time.

    A memory map would do the same, but every page a worker has read stays mapped into it:
    two workers over 2,000 MobileNetV2-224 inputs hold 1.2 GB between them. Reading each batch
    into a fresh array keeps a worker at one batch (the page cache still serves repeats)."""

    def __init__(self, path: str | Path, limit: int | None = None) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close() / the child's exit
        version = np.lib.format.read_magic(self._file)
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)  # fmt: skip
        shape, _, self.dtype = read(self._file)
        self._offset = self._file.tell()
        self.shape = (shape[0] if limit is None else min(limit, shape[0]), *shape[1:])
        self._row = int(np.prod(self.shape[1:], dtype=np.int64))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int | slice) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return self[int(index) : int(index) + 1][0]
        start, stop, step = index.indices(len(self))
        if step != 1:
            raise IndexError("NpyRows takes contiguous slices")
        count = max(0, stop - start)
        self._file.seek(self._offset + start * self._row * self.dtype.itemsize)
        rows = np.fromfile(self._file, dtype=self.dtype, count=count * self._row)
        return rows.reshape(count, *self.shape[1:])

    def close(self) -> None:
        self._file.close()


def batch_size(sample_shape: tuple[int, ...]) -> int:
    """Samples per accuracy-pass batch (the runtimes' memory-bounded rule)."""
    from toolkit.core.batching import batch_size_for

    return batch_size_for(sample_shape)


def _child(
    artifact: str, runtime: str, provider: str, inputs: str, latency_runs: int, warmup: int,
    out_dir: str, limit: int | None = None, threads: int | None = None, accuracy: bool = True,
) -> None:  # fmt: skip
    """Runs in the child: predict every input in batches (unless only latency is asked for),
    then batch-1 latency; write the results."""
    result: dict[str, Any] = {}
    try:
        from toolkit.runtimes import open_runner

        x = NpyRows(inputs, limit)
        kw = {"num_threads": threads} if threads and runtime in THREADED else {}
        with open_runner(Path(artifact), runtime=runtime, provider=provider, **kw) as runner:
            if accuracy:
                start = time.perf_counter()
                step = batch_size(tuple(x.shape[1:]))
                parts = [np.asarray(runner.predict(x[i : i + step]))
                         for i in range(0, len(x), step)]  # fmt: skip
                np.save(Path(out_dir) / "outputs.npy", np.concatenate(parts))
                result["batching"] = runner.batching
                result["accuracy_s"] = time.perf_counter() - start
            if latency_runs:
                start = time.perf_counter()
                result["latency"] = runner.latency_ms(x[0], warmup=warmup, runs=latency_runs)
                result["latency_s"] = time.perf_counter() - start
    except BaseException as exc:  # reported to the parent as this row's error
        from toolkit.core.errors import UserError

        result["error"] = str(exc) if isinstance(exc, UserError) else (
            f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        )  # fmt: skip
        result["traceback"] = traceback.format_exc()[-4000:]
    (Path(out_dir) / "result.json").write_text(json.dumps(result))


class Isolated:
    """One child process running an artifact x runtime; `collect()` once it has ended."""

    def __init__(
        self, artifact: Path, runtime: str, provider: str, inputs: Path, *,
        latency_runs: int, warmup: int, limit: int | None = None, threads: int | None = None,
        accuracy: bool = True,
    ) -> None:  # fmt: skip
        self.artifact, self.runtime, self.provider = Path(artifact), runtime, provider
        self.accuracy = accuracy
        self._work = tempfile.TemporaryDirectory(prefix="keras-edge-run-")
        args = (str(artifact), runtime, provider, str(inputs), latency_runs, warmup,
                self._work.name, limit, threads, accuracy)  # fmt: skip
        self.proc = _context().Process(target=_child, args=args, daemon=True)
        with _main_not_rerun():
            self.proc.start()

    @property
    def sentinel(self) -> int:
        return self.proc.sentinel

    def collect(self) -> dict[str, Any]:
        """{"outputs", "latency", "batching"}; raises RuntimeCrash or the child's UserError."""
        try:
            self.proc.join()
            work = Path(self._work.name)
            result_file = work / "result.json"
            if self.proc.exitcode != 0 or not result_file.is_file():
                code = self.proc.exitcode
                signalled = code is not None and code < 0
                how = signal.Signals(-code).name if signalled else f"exit {code}"
                raise RuntimeCrash(
                    f"{self.runtime}/{self.provider} crashed on {self.artifact.name} ({how}); "
                    "the other artifacts were measured", how
                )  # fmt: skip
            result = json.loads(result_file.read_text())
            if "error" in result:
                from toolkit.core.errors import UserError

                raise UserError(result["error"])  # the child's own one-line account
            if self.accuracy:
                result["outputs"] = np.load(work / "outputs.npy")
            return result
        finally:
            self._work.cleanup()


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
    child = Isolated(artifact, runtime, provider, inputs, latency_runs=latency_runs,
                     warmup=warmup, limit=limit)  # fmt: skip
    result = child.collect()
    return result["outputs"], result.get("latency")

"""What a user would run without the toolkit, and the measurements the benchmark shares.

Baselines: `tf.lite.TFLiteConverter.from_keras_model` with its defaults (fp32) and with
`Optimize.DEFAULT` + a representative dataset (the documented int8 route, float I/O), and Keras'
own `model.export(path, format="onnx")`. Every artifact, ours or a baseline, is measured here the
same way: headline metric, agreement and max abs diff against the same Keras outputs, size,
gzip size, and batch-1 latency with one thread.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.core.rundir import atomic_write_bytes
from toolkit.core.tasks import headline, task_metrics
from toolkit.validate.stage import EvalData, agreement_of, metric_drop


@dataclass
class Reference:
    """The Keras model's outputs and headline metric on the test split."""

    metric: str
    value: float
    higher_is_better: bool
    outputs: np.ndarray


@dataclass
class Measured:
    """One artifact in one runtime: accuracy against the reference, size, latency."""

    label: str  # "tflite-int8" or "baseline: from_keras_model int8"
    path: Path | None
    runtime: str
    provider: str
    fp32_of: str  # the label of the fp32 row of the same format, for latency ratios
    value: float | None = None
    drop: float | None = None
    agreement: float | None = None
    max_abs_diff: float | None = None
    size: int | None = None
    gzip: int | None = None
    p50: float | None = None  # median of repeated 1-thread batch-1 p50s, ms
    p50s: list[float] = field(default_factory=list)
    invoke_p50: float | None = None  # the same, runtime call only (no Python I/O conversion)
    invoke_p50s: list[float] = field(default_factory=list)
    error: str | None = None
    note: str | None = None
    baseline: bool = False


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:limit]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """from_keras_model and model.export print whole function signatures on stdout."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def reference_of(model: Any, data: EvalData) -> Reference:
    from toolkit.runtimes import open_runner

    metric, higher = headline(data.task)
    with open_runner(model, runtime="keras") as runner:
        outputs = runner.predict(data.x).reshape(len(data.x), -1)
    value = float(task_metrics(data.task, data.y, outputs, data.labels)[metric])
    return Reference(metric, value, higher, outputs)


def sizes(path: Path) -> tuple[int, int]:
    content = Path(path).read_bytes()
    return len(content), len(gzip.compress(content, compresslevel=9))


def _representative(calibration: np.ndarray) -> Any:
    data = np.asarray(calibration, dtype=np.float32)

    def gen() -> Iterator[list[np.ndarray]]:
        for i in range(len(data)):
            yield [data[i : i + 1]]

    return gen


def _plain_converter(model: Any, route: str) -> Any:
    import tensorflow as tf

    if route == "from_keras_model":
        return tf.lite.TFLiteConverter.from_keras_model(model)
    # The documented fallback: a tf.function of the model with its own (dynamic-batch) input.
    spec = tf.TensorSpec(model.inputs[0].shape, tf.float32)
    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    return tf.lite.TFLiteConverter.from_concrete_functions([fn])


def plain_tflite(
    model: Any, precision: str, calibration: np.ndarray, out: Path
) -> tuple[Path | None, str, str | None]:
    """Convert the plain way; returns (path or None, route used, note on what went wrong).

    int8 here is the route the TFLite docs show first: `optimizations=[Optimize.DEFAULT]` and a
    representative dataset, nothing else (float input/output, float fallback allowed).
    """
    import tensorflow as tf

    notes: list[str] = []
    for route in ("from_keras_model", "from_concrete_functions"):
        try:
            with _quiet():
                converter = _plain_converter(model, route)
                if precision == "int8":
                    converter.optimizations = [tf.lite.Optimize.DEFAULT]
                    converter.representative_dataset = _representative(calibration)
                content = converter.convert()
        except Exception as exc:  # a failure of the plain route is a finding, not a crash
            notes.append(f"{route} failed: {_one_line(exc)}")
            continue
        atomic_write_bytes(out, content)
        return out, route, "; ".join(notes) or None
    return None, "none", "; ".join(notes)


def _extra_onnx_inputs(path: Path) -> list[str]:
    """Graph inputs beyond the first that have no initializer: values a caller must feed."""
    import onnx

    graph = onnx.load(str(path)).graph
    initialized = {i.name for i in graph.initializer}
    return [i.name for i in graph.input[1:] if i.name not in initialized]


def keras_onnx(model: Any, out: Path) -> tuple[Path | None, str | None]:
    """Keras 3's own ONNX export (fp32), as the Keras docs show it.

    Returns (path, None) when the file runs from the image alone; otherwise (None, why).
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _quiet():
            model.export(str(out), format="onnx")
    except Exception as exc:
        return None, f"model.export(format='onnx') failed: {_one_line(exc)}"
    extra = _extra_onnx_inputs(out)
    if extra:
        return None, (
            f"model.export(format='onnx') wrote a file with {len(extra)} extra required "
            f"input(s) beyond the image ({', '.join(extra)}): constants of the model became "
            "graph inputs, so ONNX Runtime refuses to run it on the image alone"
        )
    return out, None


def tf2onnx_plain(model: Any, out: Path) -> tuple[Path | None, str | None]:
    """The other route the docs show: `tf2onnx.convert.from_keras(model)` with its defaults."""
    import tf2onnx

    try:
        with _quiet():
            tf2onnx.convert.from_keras(model, output_path=str(out))
    except Exception as exc:
        return None, f"tf2onnx.convert.from_keras failed: {_one_line(exc)}"
    return out, None


def open_one_thread(path: Path, runtime: str) -> Any:
    """A batch-1 runner pinned to one thread: XNNPACK for .tflite, the CPU EP for .onnx."""
    from toolkit.runtimes import open_runner

    if runtime == "litert":
        return open_runner(path, runtime="litert", provider="xnnpack", num_threads=1)
    return open_runner(path, runtime="onnxruntime", provider="cpu", num_threads=1)


def measure_accuracy(row: Measured, data: EvalData, ref: Reference) -> None:
    """Fill the row's accuracy columns (in a 1-thread runner) or its `error`."""
    if row.path is None:
        return
    row.size, row.gzip = sizes(row.path)
    try:
        with open_one_thread(row.path, row.runtime) as runner:
            outputs = runner.predict(data.x).reshape(len(data.x), -1)
    except Exception as exc:
        row.error = _one_line(exc)
        return
    value = float(task_metrics(data.task, data.y, outputs, data.labels)[ref.metric])
    if not np.all(np.isfinite(outputs)):
        row.note = ((row.note or "") + " outputs contain NaN/inf").strip()
    row.value = value
    row.drop = metric_drop(ref.value, value, ref.higher_is_better)
    row.agreement = agreement_of(outputs, ref.outputs, data.task)
    row.max_abs_diff = float(np.max(np.abs(outputs - ref.outputs)))


def _invoke_p50(runner: Any, x_one: np.ndarray, warmup: int, runs: int) -> float:
    """p50 of the runtime call alone, on input already in the tensor's dtype.

    `Runner.latency_ms` times `predict`, which also checks the shape and (for int8 I/O)
    quantizes and dequantizes in NumPy; on a model that runs in ~0.1 ms that overhead is
    visible, so the runtime's own time is reported beside it.
    """
    from toolkit.runtimes import quantize

    x = quantize(np.asarray(x_one, dtype=np.float32)[None], runner.inputs[0])
    for _ in range(warmup):
        runner._run(x)
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        runner._run(x)
        times[i] = (time.perf_counter() - start) * 1000.0
    return float(np.percentile(times, 50))


def measure_latency(rows: list[Measured], x_one: np.ndarray, reps: int, runs: int) -> None:
    """Median over `reps` of each row's p50 over `runs` batch-1 calls, one thread.

    Repetitions are interleaved across rows (rep 1 of every row, then rep 2, ...) so a change
    in background load shifts every row alike instead of biasing one ratio.
    """
    timed = [r for r in rows if r.path is not None and r.error is None]
    runners: list[Any] = []
    try:
        for row in timed:
            runners.append(open_one_thread(row.path, row.runtime))
        for _ in range(reps):
            for row, runner in zip(timed, runners, strict=True):
                row.p50s.append(runner.latency_ms(x_one, warmup=10, runs=runs)["p50"])
                row.invoke_p50s.append(_invoke_p50(runner, x_one, 10, runs))
    finally:
        for runner in runners:
            runner.close()
    for row in timed:
        row.p50 = float(np.median(row.p50s))
        row.invoke_p50 = float(np.median(row.invoke_p50s))


def baseline_rows(
    model: Any, calibration: np.ndarray, work: Path
) -> tuple[list[Measured], list[str]]:
    """Produce the three plain artifacts; return their rows and findings worth reporting."""
    work.mkdir(parents=True, exist_ok=True)
    findings: list[str] = []
    rows: list[Measured] = []
    fp32_label = ""
    for precision in ("fp32", "int8"):
        path, route, note = plain_tflite(
            model, precision, calibration, work / f"{precision}.tflite"
        )
        kind = "defaults" if precision == "fp32" else "Optimize.DEFAULT + representative_dataset"
        label = f"baseline: TFLiteConverter.{route} {precision} ({kind})"
        if precision == "fp32":
            fp32_label = label
        row = Measured(label, path, "litert", "xnnpack", fp32_label, baseline=True, note=note)
        if path is None:
            row.error = note
        if note:
            findings.append(f"plain TFLite {precision}: {note}")
        rows.append(row)
    path, note = keras_onnx(model, work / "keras-export.onnx")
    label = "baseline: keras model.export(format='onnx') fp32"
    row = Measured(label, path, "onnxruntime", "CPUExecutionProvider", label, baseline=True)
    rows.append(row)
    if note:
        row.error = note
        findings.append(f"{note}; fell back to tf2onnx.convert.from_keras(model) (defaults)")
        path, note = tf2onnx_plain(model, work / "tf2onnx.onnx")
        label = "baseline: tf2onnx.convert.from_keras fp32 (defaults; fallback)"
        row = Measured(label, path, "onnxruntime", "CPUExecutionProvider", label, baseline=True)
        row.error = note
        rows.append(row)
    return rows, findings

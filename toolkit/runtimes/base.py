"""One Runner interface over Keras, LiteRT and ONNX Runtime.

Validation measures every artifact through the same three calls (`predict`, `latency_ms`,
`close`), so the runtime-specific details live here: quantized I/O, fixed batch sizes and
provider names never leak into the code that compares accuracy.
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from toolkit.core.errors import UserError

_INT_DTYPES = ("int8", "uint8", "int16")
# Latency: the requested runs, or fewer once this many seconds are spent (never under the min).
LATENCY_MAX_S = 5.0
LATENCY_MIN_RUNS = 10
PROBE_SAMPLES = 8  # batched vs batch-1 check on the first batch of a resized artifact


@dataclass(frozen=True)
class TensorSpec:
    """An input or output tensor as the artifact declares it.

    `shape` uses -1 for a dynamic dimension; `quantization` is `(scale, zero_point)` for a
    quantized tensor and None for a float one.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    quantization: tuple[float, int] | None = None

    @property
    def fixed_batch(self) -> int | None:
        """The batch size baked into the artifact, or None when the batch dim is dynamic."""
        if not self.shape or self.shape[0] in (-1, None):
            return None
        return int(self.shape[0])


def quantize(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Float input -> the integer dtype the tensor wants (round, then clip to the dtype range)."""
    if spec.dtype not in _INT_DTYPES:
        return np.asarray(x, dtype=spec.dtype)
    if spec.quantization is None:
        raise ValueError(f"tensor {spec.name!r} is {spec.dtype} but carries no scale/zero point")
    scale, zero_point = spec.quantization
    info = np.iinfo(spec.dtype)
    q = np.round(np.asarray(x, np.float32) / np.float32(scale)) + zero_point
    return np.clip(q, info.min, info.max).astype(spec.dtype)


def dequantize(q: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Integer output -> float32 using the tensor's scale and zero point."""
    if spec.dtype not in _INT_DTYPES or spec.quantization is None:
        return np.asarray(q, dtype=np.float32)
    scale, zero_point = spec.quantization
    return ((q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(np.float32)


class Runner(abc.ABC):
    """A loaded artifact that turns a float32 batch into float32 outputs.

    Subclasses implement `_run` for a batch the artifact accepts; this base class handles
    batching (sample by sample when the batch is fixed at 1) and quantized I/O.
    """

    name: str = ""
    provider: str = ""
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Run a float32 batch of raw inputs; return float32 outputs of the output tensor.

        An artifact with several output tensors (a detector's boxes and scores) returns them
        flattened per sample and concatenated in name order (`outputs` is in that order), each
        dequantized with its own scale and zero point."""
        x = np.asarray(x, dtype=np.float32)
        spec = self.inputs[0]
        if spec.shape and x.ndim == len(spec.shape) - 1:
            x = x[None]  # a single sample without its batch dim
        expected = tuple(d if d is not None and d > 0 else None for d in spec.shape[1:])
        if spec.shape and (
            x.ndim != len(spec.shape)
            or any(e is not None and e != got for e, got in zip(expected, x.shape[1:], strict=True))
        ):
            shown = ", ".join("?" if e is None else str(e) for e in expected)
            raise UserError(
                f"{self.name} model expects inputs of shape (batch, {shown}); got {x.shape}"
            )
        if len(x) == 0:
            raise UserError("predict() got an empty batch")
        fixed = spec.fixed_batch
        if len(x) == 1 or (fixed is not None and fixed == len(x) and fixed != 1):
            return self._predict_batch(x)
        if fixed is not None and fixed != 1:
            raise UserError(f"artifact has a fixed batch of {fixed}; got a batch of {len(x)}")
        can_batch = fixed is None or self.resizable  # batch 1 baked in: only if resizable
        if can_batch and not self.probe_batches:
            return self._predict_batch(x)
        if can_batch and self._batch_ok is not False:
            batched = self._batched(x)
            if batched is not None:
                return batched
        return np.concatenate([self._predict_batch(x[i : i + 1]) for i in range(len(x))])

    # A runtime that can resize a batch-1 artifact's input (LiteRT) says so. Whether batched
    # outputs equal batch-1 outputs for this artifact is probed on the first batch, never
    # assumed (`probe_batches`; the Keras reference is float math and is not probed).
    resizable: bool = False
    probe_batches: bool = True
    _batch_ok: bool | None = None
    batching: str = ""  # how batched predicts run, for the report's notes

    def _batched(self, x: np.ndarray) -> np.ndarray | None:
        """`x` in one batched run, or None when that is not exact for this artifact.

        The first call checks the batched outputs against batch-1 runs on its first
        PROBE_SAMPLES samples, bit for bit. A kernel whose result depends on the batch (ORT's
        dynamic quantization takes one activation scale over the whole batch; float16 GEMMs
        tile by batch), a graph with the batch baked into a reshape, or fused-LSTM state sized
        for one sequence falls back to batch 1 for good, and `batching` says why.
        """
        try:
            out = self._predict_batch(x)
            if len(out) != len(x):
                raise ValueError(f"outputs have batch {len(out)}")
        except (UserError, RuntimeError, ValueError) as exc:
            self._batch_ok = False
            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc)
            self.batching = f"batch 1 (a batch of {len(x)} fails: {first})"
            return None
        if self._batch_ok is None:
            k = min(len(x), PROBE_SAMPLES)
            single = np.concatenate([self._predict_batch(x[i : i + 1]) for i in range(k)])
            if not np.array_equal(out[:k], single, equal_nan=True):
                diff = float(np.nanmax(np.abs(out[:k].astype(np.float64) - single)))
                self._batch_ok = False
                self.batching = f"batch 1 (batched outputs differ from batch 1 by up to {diff:.3g})"
                return None
            self._batch_ok = True
            self.batching = f"batched (equal to batch 1 on {k} samples)"
        return out

    def _predict_batch(self, x: np.ndarray) -> np.ndarray:
        out = self._run(quantize(x, self.inputs[0]))
        if isinstance(out, list):  # one raw array per output tensor, in `outputs` order
            parts = [
                dequantize(o, s).reshape(len(o), -1) for o, s in zip(out, self.outputs, strict=True)
            ]
            return np.concatenate(parts, axis=1)
        return dequantize(out, self.outputs[0])

    @abc.abstractmethod
    def _run(self, x: Any) -> np.ndarray | list[np.ndarray]:
        """Run one batch already in the input tensor's dtype; return the raw output (a list,
        in `outputs` order, when the artifact has several)."""

    def latency_ms(
        self, x_one: np.ndarray, warmup: int = 5, runs: int = 50, max_s: float = LATENCY_MAX_S
    ) -> dict[str, float]:
        """Median and p90 wall time of one batch-1 inference (I/O conversion included).

        `runs` timed runs, or fewer once `max_s` seconds are spent (but at least
        LATENCY_MIN_RUNS): a 300 ms reference-kernel row need not take 15 s to time."""
        x_one = np.asarray(x_one, dtype=np.float32)
        if x_one.ndim == len(self.inputs[0].shape) - 1:
            x_one = x_one[None]
        x_one = x_one[:1]
        if runs < 1 or warmup < 0:
            raise UserError(f"latency needs runs >= 1 and warmup >= 0; got {runs}, {warmup}")
        for _ in range(warmup):
            self.predict(x_one)
        times: list[float] = []
        began = time.perf_counter()
        while len(times) < runs:
            start = time.perf_counter()
            self.predict(x_one)
            times.append((time.perf_counter() - start) * 1000.0)
            if len(times) >= LATENCY_MIN_RUNS and time.perf_counter() - began > max_s:
                break
        return {"p50": float(np.percentile(times, 50)), "p90": float(np.percentile(times, 90))}

    def close(self) -> None:  # noqa: B027 - optional hook; most runtimes free on GC
        """Release the runtime's resources."""

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        shapes = ", ".join(f"{t.name}{list(t.shape)}:{t.dtype}" for t in self.inputs)
        return f"<{type(self).__name__} {self.name}/{self.provider} inputs=[{shapes}]>"


def by_name(specs: list[TensorSpec]) -> list[int]:
    """Indices of `specs` in name order: how a multi-output artifact's outputs are read, so
    Keras, LiteRT, ONNX Runtime and TFLM concatenate them alike (one output: [0])."""
    return sorted(range(len(specs)), key=lambda i: specs[i].name) if len(specs) > 1 else [0]

"""Runtimes: load any artifact behind the one `Runner` interface.

Importing this package is cheap: TensorFlow, LiteRT and ONNX Runtime load only when a runner
for them is opened.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from toolkit.core.errors import UserError, unknown
from toolkit.runtimes.base import Runner, TensorSpec, dequantize, quantize

__all__ = [
    "RUNTIMES",
    "Runner",
    "TensorSpec",
    "available_runtimes",
    "dequantize",
    "open_runner",
    "quantize",
    "runs_artifact",
    "runtime_for",
]

# Artifact suffix -> the runtime that runs it.
SUFFIX_RUNTIME = {".keras": "keras", ".h5": "keras", ".hdf5": "keras",
                  ".tflite": "litert", ".onnx": "onnxruntime"}  # fmt: skip


def _open_keras(path: Any, provider: str | None = None, **kw: Any) -> Runner:
    from toolkit.runtimes.keras_runner import KerasRunner

    runner = KerasRunner(path, **kw)
    if provider not in (None, runner.provider):
        raise UserError(
            f"the keras runtime has no provider {provider!r}; it runs on {runner.provider}"
        )
    return runner


def _open_litert(path: Any, provider: str | None = None, **kw: Any) -> Runner:
    from toolkit.runtimes.litert import LiteRTRunner

    return LiteRTRunner(path, delegate=provider or kw.pop("delegate", "xnnpack"), **kw)


def _open_onnx(path: Any, provider: str | None = None, **kw: Any) -> Runner:
    from toolkit.runtimes.onnxrt import OnnxRunner

    return OnnxRunner(path, provider=provider or "CPUExecutionProvider", **kw)


def _open_tflm(path: Any, provider: str | None = None, **kw: Any) -> Runner:
    from toolkit.runtimes.tflm import TFLMRunner

    return TFLMRunner(path, provider=provider, **kw)


RUNTIMES: dict[str, Callable[..., Runner]] = {
    "keras": _open_keras,
    "litert": _open_litert,
    "onnxruntime": _open_onnx,
    "tflm": _open_tflm,
}


# Runtimes that run an artifact format other than their own, and at which precisions only
# (e.g. a microcontroller runtime that runs the full-integer .tflite files): format -> precisions.
# TFLite Micro: the integer .tflite files a microcontroller runs. Compared op by op with
# LiteRT's reference kernels (tests/test_tflm.py, docs/mcu.md): identical but for int8
# FULLY_CONNECTED (one step on a few values) and int16x8 FULLY_CONNECTED/MUL. Float files run
# in TFLM too but are not what a board ships.
EXTRA_FORMATS: dict[str, dict[str, tuple[str, ...]]] = {
    "tflm": {"tflite": ("int8", "int8-float-io", "uint8", "int16x8")},
}


def runs_artifact(runtime: str, fmt_format: str, precision: str, default_runtime: str) -> bool:
    """Whether `runtime` runs an artifact of this format and precision (validation rows)."""
    if runtime == default_runtime:
        return True
    return precision in EXTRA_FORMATS.get(runtime, {}).get(fmt_format, ())


def runtime_for(path: str | Path) -> str:
    """The runtime that runs an artifact, chosen by file suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIX_RUNTIME:
        raise UserError(
            f"cannot tell which runtime runs {Path(path).name!r}: expected one of "
            f"{', '.join(sorted(SUFFIX_RUNTIME))}; got {suffix or 'no suffix'!r}"
        )
    return SUFFIX_RUNTIME[suffix]


def open_runner(
    path: str | Path | Any, runtime: str | None = None, provider: str | None = None, **kw: Any
) -> Runner:
    """Open an artifact in its runtime (by suffix unless `runtime` is given).

    `path` may also be an in-memory Keras model. `provider` is a LiteRT delegate
    ("xnnpack"/"reference") or an ORT execution provider ("CPUExecutionProvider", "openvino").
    """
    if not isinstance(path, (str, Path)):
        runtime = runtime or "keras"
    elif runtime is None:
        runtime = runtime_for(path)
    if runtime not in RUNTIMES:
        raise unknown("runtime", runtime, RUNTIMES)
    return RUNTIMES[runtime](path, provider=provider, **kw)


def available_runtimes() -> list[tuple[str, str]]:
    """Every (runtime, provider) pair that can run on this machine, for validation tables."""
    from toolkit.runtimes.litert import DELEGATES
    from toolkit.runtimes.onnxrt import KNOWN_PROVIDERS

    pairs = [("keras", os.environ.get("KERAS_BACKEND", "tensorflow"))]
    pairs += [("litert", d) for d in DELEGATES]
    from toolkit.runtimes.tflm import PROVIDERS as TFLM_PROVIDERS
    from toolkit.runtimes.tflm import tflm_available

    if tflm_available():
        pairs += [("tflm", p) for p in TFLM_PROVIDERS]
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - onnxruntime is a hard dependency
        return pairs
    available = set(ort.get_available_providers())
    pairs += [("onnxruntime", p) for p in KNOWN_PROVIDERS if p in available]
    return pairs

"""ONNX Runtime with a chosen execution provider (CPU, OpenVINO, CUDA, TensorRT)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from toolkit.core.errors import UserError
from toolkit.runtimes.base import Runner, TensorSpec, by_name

# Short names users type on the command line -> ORT's provider names.
PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
KNOWN_PROVIDERS = tuple(PROVIDER_ALIASES.values())

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
}


def resolve_provider(provider: str | None) -> str:
    """Accept 'cpu'/'openvino'/... or a full provider name; return ORT's name."""
    if provider is None:
        return "CPUExecutionProvider"
    return PROVIDER_ALIASES.get(provider.lower(), provider)


def install_hint(provider: str) -> str:
    """How to get a missing provider, for the one-line error; empty when we have no advice.

    The OpenVINO EP comes in `onnxruntime-openvino`, whose `onnxruntime` module the plain wheel
    overwrites when both are installed, so "installed but not available" is the usual case.
    """
    if provider != "OpenVINOExecutionProvider":
        return ""
    from importlib.metadata import PackageNotFoundError, version

    fix = (
        "`pip uninstall onnxruntime` then `pip install --force-reinstall --no-deps "
        "onnxruntime-openvino`, or `make openvino` in a checkout"
    )
    try:
        version("onnxruntime-openvino")
    except PackageNotFoundError:
        return (
            f" (OpenVINO comes in onnxruntime-openvino: `pip install onnxruntime-openvino`, {fix})"
        )
    return f" (onnxruntime-openvino is installed, but the plain onnxruntime wheel is on top: {fix})"


def _spec(arg: Any) -> TensorSpec:
    # Symbolic dims ("N", "unk__12") and missing ones are dynamic.
    shape = tuple(d if isinstance(d, int) and d > 0 else -1 for d in (arg.shape or ()))
    return TensorSpec(name=arg.name, shape=shape, dtype=_ORT_TYPES.get(arg.type, arg.type))


class OnnxRunner(Runner):
    """An `.onnx` file in an `onnxruntime.InferenceSession` on one execution provider.

    The model is checked with `onnx.checker` first so a corrupt file becomes a readable
    UserError, and an unavailable provider is refused up front (ORT would otherwise fall back
    to CPU silently and the report would name the wrong provider).
    """

    name = "onnxruntime"

    def __init__(
        self,
        path: str | Path,
        provider: str = "CPUExecutionProvider",
        num_threads: int | None = None,
    ) -> None:
        """`num_threads` pins intra-op threads (and inter-op to 1); None keeps ORT's default."""
        import onnx
        import onnxruntime as ort

        if num_threads is not None and (isinstance(num_threads, bool) or num_threads < 1):
            raise UserError(f"num_threads must be a positive integer; got {num_threads}")
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"ONNX model not found: {self.path}")
        from toolkit.core.modelio import check_model_size

        check_model_size(self.path)  # before onnx.checker parses the whole protobuf
        provider = resolve_provider(provider)
        available = ort.get_available_providers()
        if provider not in available:
            raise UserError(
                f"ONNX Runtime execution provider {provider!r} is not available here; "
                f"available: {', '.join(available)}{install_hint(provider)}"
            )
        try:
            onnx.checker.check_model(str(self.path))
        except Exception as exc:  # ValidationError, or a protobuf DecodeError on random bytes
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc)
            raise UserError(f"{self.path} is not a valid ONNX model: {first_line}") from exc
        # CPU stays as the fallback for nodes another provider cannot place, as ORT intends.
        providers: list[Any] = list(dict.fromkeys([provider, "CPUExecutionProvider"]))
        if provider == "OpenVINOExecutionProvider" and num_threads is not None:
            # OpenVINO runs its own thread pool; ORT's intra-op setting does not reach it.
            providers[0] = (provider, {"num_of_threads": str(int(num_threads))})
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if num_threads is not None:
            options.intra_op_num_threads = int(num_threads)
            options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(
                str(self.path), sess_options=options, providers=providers
            )
        except Exception as exc:  # e.g. an op the provider cannot place, or a bad opset
            raise UserError(f"ONNX Runtime cannot load {self.path}: {exc}") from exc
        if self._session.get_providers()[0] != provider:
            # Listed as available but unusable at run time (e.g. CUDA without a GPU).
            raise UserError(
                f"ONNX Runtime could not start {provider!r} here (session uses "
                f"{', '.join(self._session.get_providers())})"
            )
        self.provider = provider
        in_args = self._session.get_inputs()
        if len(in_args) != 1:
            raise UserError(
                f"expected a single-input ONNX model; {self.path} has {len(in_args)} inputs"
            )
        self.inputs = [_spec(a) for a in in_args]
        outputs = [_spec(a) for a in self._session.get_outputs()]
        self.outputs = [outputs[i] for i in by_name(outputs)]
        self._in_name = in_args[0].name
        self._out_name = self.outputs[0].name

    def _run(self, x: np.ndarray) -> np.ndarray | list[np.ndarray]:
        try:
            if len(self.outputs) > 1:
                names = [spec.name for spec in self.outputs]
                return [np.asarray(o) for o in self._session.run(names, {self._in_name: x})]
            return np.asarray(self._session.run([self._out_name], {self._in_name: x})[0])
        except Exception as exc:  # ORT's Fail/RuntimeException: a model that loads but can't run
            raise UserError(f"ONNX Runtime failed to run {self.path}: {exc}") from exc

    def close(self) -> None:
        self._session = None

"""LiteRT (ai-edge-litert): the runtime a phone or a Raspberry Pi really uses for `.tflite`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from toolkit.core.errors import UserError
from toolkit.runtimes.base import Runner, TensorSpec, by_name

DELEGATES = ("xnnpack", "reference")
SIGNATURE_KEY = "serving_default"  # what TFLiteConverter writes and signature runners ask for


def check_tflite_bytes(path: Path) -> None:
    """Fail with a UserError unless `path` is a TFLite flatbuffer (file identifier 'TFL3').

    The interpreter aborts or gives an obscure message on foreign bytes; checking the 4-byte
    identifier first gives the user a sentence instead.
    """
    if not path.is_file():
        raise UserError(f"TFLite model not found: {path}")
    with path.open("rb") as fh:
        head = fh.read(8)
    if len(head) < 8 or head[4:8] != b"TFL3":
        raise UserError(
            f"{path} is not a TFLite flatbuffer (expected identifier b'TFL3' at bytes 4..8, "
            f"got {head[4:8]!r})"
        )


def _spec(detail: dict[str, Any]) -> TensorSpec:
    dtype = np.dtype(detail["dtype"]).name
    scale, zero_point = detail.get("quantization", (0.0, 0))
    quant = (float(scale), int(zero_point)) if scale else None
    shape = detail.get("shape_signature")
    if shape is None or len(shape) == 0:
        shape = detail["shape"]
    return TensorSpec(
        name=detail["name"],
        shape=tuple(int(d) for d in shape),
        dtype=dtype,
        quantization=quant,
    )


class LiteRTRunner(Runner):
    """A `.tflite` file in `ai_edge_litert`'s interpreter.

    `delegate="xnnpack"` is what ships on devices (the default CPU delegate); "reference" uses
    the builtin reference kernels without any delegate, a slow but independent cross-check.
    """

    name = "litert"
    resizable = True  # a batch-1 file runs batched where that is exact (Runner._batched)

    def __init__(
        self, path: str | Path, delegate: str = "xnnpack", num_threads: int | None = None
    ) -> None:
        from ai_edge_litert import interpreter as litert

        if delegate not in DELEGATES:
            raise UserError(f"unknown LiteRT delegate {delegate!r}; choose one of {DELEGATES}")
        if num_threads is not None and num_threads < 1:
            raise UserError(f"num_threads must be a positive integer; got {num_threads}")
        self.path = Path(path)
        check_tflite_bytes(self.path)
        from toolkit.core.modelio import check_model_size

        check_model_size(self.path)  # LiteRT reads the whole file into memory
        kwargs: dict[str, Any] = {"model_path": str(self.path), "num_threads": num_threads}
        if delegate == "reference":
            kwargs["experimental_op_resolver_type"] = litert.OpResolverType.BUILTIN_REF
        from toolkit.core.quiet import muted_stderr

        try:
            with muted_stderr():  # "INFO: Created TensorFlow Lite XNNPACK delegate" banner
                self._interp = litert.Interpreter(**kwargs)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise UserError(f"LiteRT cannot load {self.path}: {exc}") from exc
        self.provider = delegate
        self._signature = self._signature_runner()
        if self._signature is not None:  # named like the Keras model: {"input": ...}
            in_named = self._signature.get_input_details()
            out_named = self._signature.get_output_details()
            in_details = [{**d, "name": k} for k, d in in_named.items()]
            out_details = [{**d, "name": k} for k, d in out_named.items()]
        else:  # a foreign file without a SignatureDef: the subgraph's tensors, by index
            in_details = self._interp.get_input_details()
            out_details = self._interp.get_output_details()
        if len(in_details) != 1:
            raise UserError(
                f"expected a single-input TFLite model; {self.path} has {len(in_details)} inputs"
            )
        self._in_index = in_details[0]["index"]
        specs = [_spec(d) for d in out_details]
        out_details = [out_details[i] for i in by_name(specs)] if len(specs) > 1 else out_details
        self._out_index = out_details[0]["index"]
        self._out_indices = [d["index"] for d in out_details]
        self.inputs = [_spec(d) for d in in_details]
        self.outputs = [_spec(d) for d in out_details]
        self._batch: int | None = int(in_details[0]["shape"][0]) if self.inputs[0].shape else None

    def _signature_runner(self) -> Any:
        """The `serving_default` signature runner (what Android's `runSignature` uses), else
        the only signature a file has, else None; only single-subgraph signatures, so the
        tensor details and the variable reset below refer to the same graph."""
        keys = list(self._interp.get_signature_list())
        key = SIGNATURE_KEY if SIGNATURE_KEY in keys else (keys[0] if len(keys) == 1 else None)
        if key is None:
            return None
        try:
            runner = self._interp.get_signature_runner(key)
        except ValueError:
            return None
        return runner if getattr(runner, "_subgraph_index", 0) == 0 else None

    def _run(self, x: np.ndarray) -> np.ndarray | list[np.ndarray]:
        # Fused LSTM ops keep their state in variable tensors across invokes; every call here
        # is an independent sequence, so start from zero state (a no-op for other models).
        self._interp.reset_all_variables()
        if self._signature is not None:
            try:  # it resizes a dynamic batch to each call's batch itself
                out = self._signature(**{self.inputs[0].name: x})
            except (RuntimeError, ValueError) as exc:
                raise UserError(f"LiteRT failed to run {self.path}: {exc}") from exc
            if len(self.outputs) > 1:
                return [np.array(out[spec.name]) for spec in self.outputs]
            return np.array(out[self.outputs[0].name])
        # The input is resized to each call's batch (a fixed batch-1 file only when the base
        # class found that exact for it: see Runner._batched).
        if self._batch != len(x):
            try:
                self._interp.resize_tensor_input(self._in_index, list(x.shape))
                self._interp.allocate_tensors()
            except (RuntimeError, ValueError) as exc:
                self._batch = None  # re-resized on the next call, whatever its size
                raise UserError(f"LiteRT cannot run {self.path} at batch {len(x)}: {exc}") from exc
            self._batch = len(x)
        self._interp.set_tensor(self._in_index, x)
        try:
            self._interp.invoke()
        except RuntimeError as exc:  # a model that loads but cannot run (corrupt op data)
            raise UserError(f"LiteRT failed to run {self.path}: {exc}") from exc
        if len(self._out_indices) > 1:
            return [self._interp.get_tensor(i).copy() for i in self._out_indices]
        return self._interp.get_tensor(self._out_index).copy()

    def close(self) -> None:
        self._signature = None
        self._interp = None

"""TFLite Micro (the `tflite-micro` wheel): a `.tflite` run by the kernels a microcontroller runs.

TFLM is its own interpreter with its own kernels, not LiteRT on a small CPU: an int8 model can
give other integers in it, and it only runs the ops it has. Running it on the host beside
LiteRT catches both before a board is flashed. The interpreter has no tensor names, fixed
shapes (batch 1) and a fixed arena; names come from the file's signature, like LiteRT's.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.core.errors import UserError
from toolkit.runtimes.base import Runner, TensorSpec

PROVIDERS = ("host",)  # TFLM's reference kernels compiled for this CPU
DEFAULT_ARENA_MIN = 1 << 20  # bytes; a run that is not measuring the arena can afford plenty
ARENA_MAX = 1 << 30
_MISSING_OP = re.compile(r"Didn't find op for builtin opcode '([A-Z0-9_]+)'")
_MISSING_CUSTOM = re.compile(r"Didn't find op for custom opcode '([^']+)'")


def tflm_available() -> bool:
    """Whether the tflite-micro wheel imports here (its x86-64 wheel is Linux-only)."""
    try:
        from tflite_micro import runtime  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def captured_fd2() -> Iterator[list[str]]:
    """Capture what C++ writes to file descriptor 2 (TFLM prints its errors and its allocation
    record there, not to Python); the text lands in the yielded list on exit."""
    import sys

    sys.stderr.flush()
    lines: list[str] = []
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines.append(tmp.read().decode(errors="replace"))


class MissingOp(UserError):
    """The model uses an op that TFLM has no kernel for: no board would run it."""

    def __init__(self, path: Path, op: str) -> None:
        self.op = op
        super().__init__(
            f"{path.name} uses {op}, which TFLite Micro has no kernel for: no microcontroller "
            f"build runs it; replace the layer that makes {op} (or run it on the host)"
        )


def missing_op_in(text: str) -> str | None:
    """The op named in TFLM's "Didn't find op" message, if the text holds one."""
    match = _MISSING_OP.search(text) or _MISSING_CUSTOM.search(text)
    return match.group(1) if match else None


def open_interpreter(content: bytes, arena_size: int, path: Path) -> tuple[Any, str]:
    """A TFLM interpreter over `content` with an arena of `arena_size` bytes, plus what TFLM
    printed. Raises MissingOp for an unknown op, RuntimeError when the arena is too small."""
    from tflite_micro import runtime

    with captured_fd2() as printed:
        try:
            interp = runtime.Interpreter.from_bytes(content, arena_size=int(arena_size))
        except RuntimeError:
            interp = None
    text = "".join(printed)
    if interp is None:
        op = missing_op_in(text)
        if op is not None:
            raise MissingOp(path, op)
        raise RuntimeError(text.strip() or "TFLM failed to allocate tensors")
    return interp, text


def _signature_names(content: bytes) -> tuple[dict[int, str], dict[int, str]]:
    """Input and output names by subgraph tensor index, from the `serving_default` signature
    (what LiteRT's runner uses), so both runtimes name tensors alike."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(bytearray(content), 0)
    for i in range(model.SignatureDefsLength()):
        sig = model.SignatureDefs(i)
        if sig.SubgraphIndex() != 0:
            continue
        ins = {sig.Inputs(j).TensorIndex(): sig.Inputs(j).Name().decode()
               for j in range(sig.InputsLength())}  # fmt: skip
        outs = {sig.Outputs(j).TensorIndex(): sig.Outputs(j).Name().decode()
                for j in range(sig.OutputsLength())}  # fmt: skip
        return ins, outs
    return {}, {}


def _graph_io(content: bytes) -> tuple[list[int], list[int], list[str]]:
    from ai_edge_litert import schema_py_generated as schema

    graph = schema.Model.GetRootAsModel(bytearray(content), 0).Subgraphs(0)
    names = [(graph.Tensors(i).Name() or b"").decode() for i in range(graph.TensorsLength())]
    return list(graph.InputsAsNumpy()), list(graph.OutputsAsNumpy()), names


def _spec(detail: dict[str, Any], name: str) -> TensorSpec:
    """A TensorSpec from TFLM's details; `name` from the signature or tensor (may be empty
    in a stripped firmware model)."""
    q = detail.get("quantization_parameters") or {}
    scales, zeros = q.get("scales", []), q.get("zero_points", [])
    quant = (float(scales[0]), int(zeros[0])) if len(scales) else None
    dtype = np.dtype(detail["dtype"]).name
    return TensorSpec(name, tuple(int(d) for d in detail["shape"]), dtype, quant)


class TFLMRunner(Runner):
    """A `.tflite` file in TFLite Micro's interpreter, one sample per invoke.

    `arena_size` defaults to a generous fixed arena (10x the model, at least 1 MiB, doubled
    until it allocates); `toolkit.runtimes.tflm_arena.measure_arena` finds the smallest one.
    """

    name = "tflm"

    def __init__(
        self, path: str | Path, provider: str | None = None, arena_size: int | None = None
    ) -> None:
        from toolkit.runtimes.litert import check_tflite_bytes

        if not tflm_available():
            raise UserError(
                "the tflm runtime needs the tflite-micro package: pip install tflite-micro"
            )
        provider = provider or PROVIDERS[0]
        if provider not in PROVIDERS:
            raise UserError(f"the tflm runtime has no provider {provider!r}; choose {PROVIDERS}")
        if arena_size is not None and arena_size < 1:
            raise UserError(f"arena_size must be a positive number of bytes; got {arena_size}")
        self.path = Path(path)
        check_tflite_bytes(self.path)
        self.provider = provider
        content = self.path.read_bytes()
        self._interp, self.arena_size = self._open(content, arena_size)
        in_idx, out_idx, tensor_names = _graph_io(content)
        if len(in_idx) != 1:
            raise UserError(
                f"expected a single-input TFLite model; {self.path} has {len(in_idx)} inputs"
            )
        sig_in, sig_out = _signature_names(content)
        self.inputs = [
            _spec(self._interp.get_input_details(i), sig_in.get(t, tensor_names[t]) or f"input_{i}")
            for i, t in enumerate(in_idx)
        ]
        outputs = [
            _spec(
                self._interp.get_output_details(i),
                sig_out.get(t, tensor_names[t]) or f"output_{i}",
            )
            for i, t in enumerate(out_idx)
        ]
        # LiteRT's signature runner lists outputs in signature order; follow it so "the first
        # output" is the same tensor in both runtimes.
        order = [out_idx.index(t) for t in sig_out if t in out_idx] or list(range(len(outputs)))
        self._out_order = order + [i for i in range(len(outputs)) if i not in order]
        if len(outputs) > 1:  # several heads: read in name order, like the other runtimes
            self._out_order = sorted(self._out_order, key=lambda i: outputs[i].name)
        self.outputs = [outputs[i] for i in self._out_order]

    def _open(self, content: bytes, arena_size: int | None) -> tuple[Any, int]:
        if arena_size is not None:
            try:
                return open_interpreter(content, arena_size, self.path)[0], arena_size
            except RuntimeError as exc:
                raise UserError(
                    f"TFLM cannot allocate {self.path.name} in an arena of {arena_size:,} "
                    f"bytes: {str(exc).splitlines()[-1]}"
                ) from exc
        size = max(10 * len(content), DEFAULT_ARENA_MIN)
        while True:
            try:
                return open_interpreter(content, size, self.path)[0], size
            except RuntimeError as exc:
                if size >= ARENA_MAX:
                    raise UserError(f"TFLM cannot load {self.path}: {exc}") from exc
                size *= 2

    def _run(self, x: np.ndarray) -> np.ndarray | list[np.ndarray]:
        # TFLM keeps variable tensors (LSTM state) across invokes; each call here is an
        # independent sample, like LiteRT's reset_all_variables.
        self._interp.reset()
        try:
            self._interp.set_input(np.ascontiguousarray(x), 0)
            self._interp.invoke()
        except (RuntimeError, ValueError) as exc:
            raise UserError(f"TFLM failed to run {self.path}: {exc}") from exc
        if len(self._out_order) > 1:
            return [np.array(self._interp.get_output(i)) for i in self._out_order]
        return np.array(self._interp.get_output(self._out_order[0]))

    def close(self) -> None:
        self._interp = None

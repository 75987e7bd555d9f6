"""Will the Edge TPU compiler take this .tflite? A check against Coral's documented op list.

`edgetpu_compiler` only runs on x86-64 Debian/Ubuntu from Coral's apt repository, so it is not
installable here. What it requires is documented (coral.ai/docs/edgetpu/models-intro, "Supported
operations" and "Model requirements"): every tensor 8-bit quantized (int32 biases), constant
tensor sizes, at most 3 dimensions larger than 1, and only the operations below. An op outside
the list is not an error for the compiler: it cuts the graph there and runs the rest on the CPU,
which is what this check warns about. The compiler has the final word on per-op limits.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SOURCE = "https://coral.ai/docs/edgetpu/models-intro/#supported-operations (compiler 16)"

# TFLite builtin op name -> the documented known limitation ("" when none is documented).
SUPPORTED_OPS: dict[str, str] = {
    "ADD": "",
    "AVERAGE_POOL_2D": "no fused activation function",
    "CONCATENATION": "no fused activation; a constant input must be all zeros (padding)",
    "CONV_2D": "same dilation in x and y",
    "DEPTHWISE_CONV_2D": "same dilation in x and y",
    "EXPAND_DIMS": "",
    "FULLY_CONNECTED": "default weights format only; one-dimensional output",
    "L2_NORMALIZATION": "",
    "LOGISTIC": "",
    "LSTM": "unidirectional only",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "unidirectional only",
    "MAXIMUM": "",
    "MAX_POOL_2D": "no fused activation function",
    "MEAN": "no reduction in the batch dimension; a z-reduction needs depth % 4 == 0",
    "MINIMUM": "",
    "MUL": "",
    "PACK": "no packing in the batch dimension",
    "PAD": "no padding in the batch dimension",
    "PRELU": "alpha must be 1-dimensional",
    "QUANTIZE": "",
    "REDUCE_MAX": "not on the batch dimension",
    "REDUCE_MIN": "not on the batch dimension",
    "RELU": "",
    "RELU6": "",
    "RELU_N1_TO_1": "",
    "RESHAPE": "some reshapes of large tensors are not mapped",
    "RESIZE_BILINEAR": "3-D input/output; may stay on the CPU to keep precision",
    "RESIZE_NEAREST_NEIGHBOR": "3-D input/output; may stay on the CPU to keep precision",
    "RSQRT": "",
    "SLICE": "",
    "SOFTMAX": "1-D input of at most 16,000 elements",
    "SPACE_TO_DEPTH": "",
    "SPLIT": "no splitting in the batch dimension",
    "SQUEEZE": "",
    "STRIDED_SLICE": "",
    "SUB": "",
    "SUM": "not on the batch dimension",
    "SQUARED_DIFFERENCE": "",
    "TANH": "",
    "TRANSPOSE": "",
    "TRANSPOSE_CONV": "",
}
_EIGHT_BIT = ("int8", "uint8")
_SOFTMAX_MAX = 16_000


@dataclass
class EdgeTPUCheck:
    """The verdict for one .tflite: `ok` means full-integer with only supported ops."""

    ok: bool
    full_integer: bool
    io_dtypes: dict[str, list[str]]  # {"inputs": [...], "outputs": [...]}
    ops: dict[str, int]  # op name -> count, every op in the graph
    unsupported_ops: list[str]
    problems: list[str] = field(default_factory=list)
    limitations: dict[str, str] = field(default_factory=dict)  # documented, for the ops used
    source: str = SOURCE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        ops = ", ".join(f"{k} x{v}" for k, v in sorted(self.ops.items()))
        if self.ok:
            return f"Edge TPU check passed: full-integer, every op documented as supported ({ops})"
        return "Edge TPU check FAILED: " + "; ".join(self.problems)


def _has_scale(details: dict[str, Any]) -> bool:
    """Per-tensor scale, or per-channel scales (conv filters: `quantization` is then (0, 0))."""
    scales = (details.get("quantization_parameters") or {}).get("scales")
    return bool(details.get("quantization", (0.0, 0))[0]) or (scales is not None and len(scales))


def _tensor_problems(details: dict[str, Any], constant: bool) -> list[str]:
    """Activations must be 8-bit with fixed, at most 3-D-like shapes; constants may also be
    int32 (biases, shapes, axes) and have any rank (4-D conv filters are fine)."""
    dtype = np.dtype(details["dtype"]).name
    name = details["name"]
    problems = []
    allowed = (*_EIGHT_BIT, "int32") if constant else _EIGHT_BIT
    if dtype not in allowed:
        problems.append(f"tensor {name!r} is {dtype}, not 8-bit quantized")
    elif dtype in _EIGHT_BIT and not _has_scale(details):
        problems.append(f"tensor {name!r} is {dtype} without a quantization scale")
    if constant:
        return problems
    signature = details.get("shape_signature")
    shape = list(signature) if signature is not None and len(signature) else list(details["shape"])
    if any(int(d) < 0 for d in shape):
        problems.append(f"tensor {name!r} has a dynamic shape {shape}")
    elif any(int(d) > 1 for d in shape[:-3]):
        problems.append(f"tensor {name!r} {shape}: only the 3 innermost dims may exceed 1")
    return problems


def check_edgetpu(path: str | Path) -> EdgeTPUCheck:
    """Check a .tflite against the Edge TPU's documented requirements (see the module doc)."""
    from ai_edge_litert.interpreter import Interpreter

    from toolkit.core.quiet import muted_stderr
    from toolkit.runtimes.litert import check_tflite_bytes

    path = Path(path)
    check_tflite_bytes(path)
    with muted_stderr():
        interp = Interpreter(model_path=str(path))
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()  # no public op-list API in LiteRT
    counts = Counter(op["op_name"] for op in ops)
    unsupported = sorted(name for name in counts if name not in SUPPORTED_OPS)
    problems = [f"op {name} is not supported by the Edge TPU" for name in unsupported]
    # Activations are what some op produces or the graph takes in; the rest are constants.
    activations = {i for op in ops for i in op["outputs"]}
    activations |= {d["index"] for d in interp.get_input_details()}
    seen: set[str] = set()
    for op in ops:
        for index in [*op["inputs"], *op["outputs"]]:
            if index < 0 or index not in tensors:
                continue  # an optional input left out
            for problem in _tensor_problems(tensors[index], index not in activations):
                if problem not in seen:
                    seen.add(problem)
                    problems.append(problem)
        if op["op_name"] == "SOFTMAX":
            size = int(np.prod(tensors[op["inputs"][0]]["shape"]))
            if size > _SOFTMAX_MAX:
                problems.append(f"SOFTMAX over {size} elements (> {_SOFTMAX_MAX})")
    io = {
        "inputs": [np.dtype(d["dtype"]).name for d in interp.get_input_details()],
        "outputs": [np.dtype(d["dtype"]).name for d in interp.get_output_details()],
    }
    full_integer = not any("not 8-bit" in p or "without a quantization" in p for p in problems)
    full_integer = full_integer and all(d in _EIGHT_BIT for d in io["inputs"] + io["outputs"])
    if not all(d in _EIGHT_BIT for d in io["inputs"] + io["outputs"]):
        problems.append(f"model I/O is {io}, the Edge TPU wants int8/uint8 input and output")
    return EdgeTPUCheck(
        ok=not problems,
        full_integer=full_integer,
        io_dtypes=io,
        ops=dict(sorted(counts.items())),
        unsupported_ops=unsupported,
        problems=problems,
        limitations={k: SUPPORTED_OPS[k] for k in sorted(counts) if SUPPORTED_OPS.get(k)},
    )

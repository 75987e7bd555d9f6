"""Which nodes of a static int8 ONNX model lose the most to quantization, measured.

The `--precisions auto` ladder keeps the worst nodes float (`nodes_to_exclude`). It used to
guess "the last nodes"; this measures each node with onnxruntime's own debugging tools
(`onnxruntime.quantization.qdq_loss_debug`): the SQNR of its int8 weights against the float
ones, and of its output activation before vs after its QuantizeLinear/DequantizeLinear pair,
on calibration samples. Both are local (the noise this node adds, not what it inherits), as
LiteRT's quantization debugger ranks TFLite layers (`tflite.layer_sensitivity`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.convert.onnx_prep import calibration_reader

QUANTIZABLE = ("Conv", "ConvTranspose", "MatMul", "Gemm")
SAMPLES = 32  # activations of every tensor are kept in memory: a few batches are enough
_WALK = ("Relu", "Clip", "LeakyRelu", "HardSigmoid", "Sigmoid", "Add", "BatchNormalization")


def _graph_maps(model: Any) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    producers = {out: n for n in model.graph.node for out in n.output}
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return producers, consumers


def _output_match(node: Any, consumers: dict[str, list[Any]], errors: dict[str, float]) -> str:
    """The node's output, or the first tensor after it (through a fused activation) that has
    its own QDQ pair: where its output is really rounded."""
    name = node.output[0]
    for _ in range(3):
        if name in errors:
            return name
        after = [c for c in consumers.get(name, []) if c.op_type in _WALK]
        if len(consumers.get(name, [])) != 1 or not after:
            break
        name = after[0].output[0]
    return name


def _weight_sqnr(
    node: Any, producers: dict[str, Any], consts: dict[str, np.ndarray]
) -> float | None:
    """SQNR of the node's int8 weights, from the file alone: rounding to a step `s` adds
    noise of variance s^2/12 per weight (per-channel: each channel's own step). Name-free, so
    it holds for weights the quantizer's pre-processing folded and renamed."""
    dq = producers.get(node.input[1]) if len(node.input) > 1 else None
    if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in consts:
        return None
    q, scale = consts[dq.input[0]].astype(np.float64), consts.get(dq.input[1])
    if scale is None:
        return None
    zp = consts.get(dq.input[2]) if len(dq.input) > 2 else None
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    shape = [1] * q.ndim
    if scale.size > 1:
        shape[axis] = scale.size
    step = scale.astype(np.float64).reshape(shape)
    weights = (q - (0 if zp is None else zp.astype(np.float64).reshape(shape))) * step
    noise = float(np.mean(np.broadcast_to(step, q.shape) ** 2) / 12)
    signal = float(np.mean(weights**2))
    return 10 * float(np.log10(max(signal, 1e-30) / max(noise, 1e-30)))


def _relu_floors(qdq: Any, consts: dict[str, np.ndarray]) -> set[str]:
    """Tensors whose QuantizeLinear range starts at 0: the quantizer dropped the ReLU/Clip that
    followed them and lets the Q node clamp. Their 'pre' values are compared after ReLU, or
    the negative half would count as quantization noise."""
    floors = set()
    for node in qdq.graph.node:
        if node.op_type != "QuantizeLinear" or len(node.input) < 3:
            continue
        zp = consts.get(node.input[2])
        if zp is not None and zp.size == 1 and int(zp.reshape(())) == np.iinfo(zp.dtype).min:
            floors.add(node.input[0])
    return floors


def _snr(left: Any, right: Any) -> float:
    from onnxruntime.quantization.qdq_loss_debug import (
        compute_signal_to_quantization_noice_ratio as snr,
    )

    return float(snr(left, right))


def node_sensitivity(
    int8_path: Path, calibration: np.ndarray, samples: int = SAMPLES
) -> list[dict[str, Any]]:
    """One row per quantized Conv/MatMul/Gemm node of the QDQ model `int8_path`, most
    sensitive first: `node`, `weight_sqnr_db`, `output_sqnr_db` and `sqnr_db` (both noises
    together; the lower, the more keeping the node float helps)."""
    import onnx
    from onnx import numpy_helper
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    qdq = onnx.load(str(int8_path))
    consts = {i.name: numpy_helper.to_array(i) for i in qdq.graph.initializer}
    with tempfile.TemporaryDirectory(prefix="keras-edge-onnx-sens-") as tmp:
        augmented = Path(tmp) / "augmented.onnx"
        modify_model_output_intermediate_tensors(str(int8_path), str(augmented))
        data = np.asarray(calibration[:samples], np.float32)
        activations = collect_activations(
            str(augmented), calibration_reader(qdq.graph.input[0].name, data)
        )
    floors = _relu_floors(qdq, consts)
    act_err = {k: _snr([np.maximum(t, 0) if k in floors else t for t in v["pre_qdq"]],
                       v["post_qdq"])
               for k, v in create_activation_matching(activations).items()}  # fmt: skip
    producers, consumers = _graph_maps(qdq)
    rows = []
    for node in qdq.graph.node:
        if node.op_type not in QUANTIZABLE or not node.name:
            continue
        w = _weight_sqnr(node, producers, consts)
        a = act_err.get(_output_match(node, consumers, act_err))
        if w is None and a is None:
            continue  # not quantized (excluded, or an op the quantizer skipped)
        noise = sum(10 ** (-db / 10) for db in (w, a) if db is not None)
        rows.append({"node": node.name, "weight_sqnr_db": w, "output_sqnr_db": a,
                     "sqnr_db": -10 * float(np.log10(max(noise, 1e-30)))})  # fmt: skip
    rows.sort(key=lambda r: r["sqnr_db"])
    return rows

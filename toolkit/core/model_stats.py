"""Static facts about a converted model file: op histogram, parameters, estimated MACs, bytes.

Read from the file itself (the TFLite flatbuffer through LiteRT's generated schema, the ONNX
graph through onnx's shape inference), so it works on foreign files and needs no runtime.
MACs count the multiply-accumulates of the convolution and matrix ops, which dominate on
CNNs and MLPs; other ops (pooling, activations, recurrent cells) are left out, so the figure
is an estimate and says so. For TFLite the file's bytes are split into weights, quantization
parameters (per-channel scales and int64 zero points), tensor names and graph structure:
on small int8 models the quantization parameters are a visible share of the file.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

# Per op, which input holds the weights; MACs = output elements x reduced size of the weights.
_TFLITE_MAC_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"}
_ONNX_MAC_OPS = {"Conv", "ConvInteger", "QLinearConv", "Gemm", "MatMul", "MatMulInteger"}
_ONNX_QUANT_PARAMS = {  # op -> input positions that are scales / zero points, not weights
    "QuantizeLinear": (1, 2),
    "DequantizeLinear": (1, 2),
    "QLinearConv": (1, 2, 4, 5, 6, 7),
    "QLinearMatMul": (1, 2, 4, 5, 6, 7),
}


def _prod(shape: Any) -> int:
    return int(np.prod([max(int(d), 1) for d in shape])) if len(shape) else 1


def _builtin_names() -> dict[int, str]:
    from ai_edge_litert import schema_py_generated as schema

    ops = schema.BuiltinOperator
    return {v: k for k, v in vars(ops).items() if not k.startswith("_") and isinstance(v, int)}


def tflite_stats(path: Path) -> dict[str, Any]:
    """Ops, params (elements of constant tensors), estimated MACs and a byte breakdown."""
    from ai_edge_litert import schema_py_generated as schema

    content = bytearray(Path(path).read_bytes())
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(content, 0))
    names = _builtin_names()
    buffers = model.buffers or []

    def const_bytes(tensor: Any) -> int:
        if tensor.buffer >= len(buffers):
            return 0
        buf = buffers[tensor.buffer]
        return len(buf.data) if buf.data is not None else int(buf.size or 0)

    floats = {schema.TensorType.FLOAT32, schema.TensorType.FLOAT16}
    ops: Counter[str] = Counter()
    scales: Counter[str] = Counter()  # int8 constant weights by number of scales
    params = macs = weight_bytes = quant_bytes = name_bytes = 0
    for graph in model.subgraphs or []:
        tensors = graph.tensors or []
        for tensor in tensors:
            name_bytes += len(tensor.name or b"")
            q = tensor.quantization
            if q is not None and tensor.type == schema.TensorType.INT8 and const_bytes(tensor):
                scales[_per(len(q.scale) if q.scale is not None else 0)] += 1
            if q is not None:
                quant_bytes += 4 * len(q.scale if q.scale is not None else [])
                quant_bytes += 8 * len(q.zeroPoint if q.zeroPoint is not None else [])
                quant_bytes += 4 * len(q.min if q.min is not None else [])
                quant_bytes += 4 * len(q.max if q.max is not None else [])
            weight_bytes += const_bytes(tensor)
        # Parameters: constant weights/biases of the MAC ops plus other float constants (shape
        # and index constants are not parameters); each tensor counted once.
        counted: set[int] = set()
        for op in graph.operators or []:
            code = model.operatorCodes[op.opcodeIndex]
            builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
            name = names.get(builtin, str(builtin))
            if name == "CUSTOM":
                name = f"CUSTOM:{(code.customCode or b'').decode(errors='replace')}"
            ops[name] += 1
            inputs = [int(i) for i in (op.inputs if op.inputs is not None else []) if i >= 0]
            mac_op = name in _TFLITE_MAC_OPS and len(inputs) > 1
            if mac_op:
                macs += _tflite_macs(name, tensors, op)
            counted.update(
                i
                for i in inputs
                if const_bytes(tensors[i])
                and ((mac_op and i != inputs[0]) or tensors[i].type in floats)
            )
        params += sum(
            _prod(tensors[i].shape if tensors[i].shape is not None else []) for i in counted
        )
    return {
        "ops": dict(ops),
        "params": params,
        "macs": macs,
        "weight_scales": dict(scales),
        "bytes": {
            "weights": weight_bytes,
            "quantization_params": quant_bytes,
            "tensor_names": name_bytes,
            "graph_and_other": max(len(content) - weight_bytes - quant_bytes - name_bytes, 0),
        },
    }


def _tflite_macs(name: str, tensors: list[Any], op: Any) -> int:
    weights = tensors[op.inputs[1]].shape
    if name == "TRANSPOSE_CONV":  # inputs: output_shape, weights [Co,kh,kw,Ci], input
        source = tensors[op.inputs[2]].shape
        return _prod(source) * _prod(weights[:3]) if weights is not None else 0
    out = tensors[op.outputs[0]].shape
    if weights is None or out is None:
        return 0
    if name == "CONV_2D":  # weights [Co, kh, kw, Ci]
        return _prod(out) * _prod(weights[1:])
    if name == "DEPTHWISE_CONV_2D":  # weights [1, kh, kw, C*M]
        return _prod(out) * _prod(weights[1:3])
    return _prod(out) * int(weights[-1])  # FULLY_CONNECTED: weights [units, in]


def onnx_stats(path: Path) -> dict[str, Any]:
    """Ops, opset, params (initializer elements, not quantization scales/zero points) and MACs."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference is best effort on foreign graphs
        inferred = model
    graph = inferred.graph
    shapes: dict[str, list[int]] = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.dim_value > 0 else 1 for d in dims]
    for init in graph.initializer:
        shapes[init.name] = list(init.dims)
    quant_inputs = {
        node.input[i]
        for node in graph.node
        for i in _ONNX_QUANT_PARAMS.get(node.op_type, ())
        if i < len(node.input)
    }
    weights = {n for node in graph.node if node.op_type in _ONNX_MAC_OPS for n in node.input[1:]}
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}
    params = sum(  # weights/biases of the MAC ops, other float constants; no shapes or scales
        _prod(i.dims)
        for i in graph.initializer
        if i.name not in quant_inputs and (i.name in weights or i.data_type in floats)
    )
    macs = sum(_onnx_macs(node, shapes) for node in graph.node if node.op_type in _ONNX_MAC_OPS)
    inits = {i.name: i for i in graph.initializer}
    int8 = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}
    scales = Counter(  # int8 weights dequantized by DequantizeLinear, by number of scales
        _per(_prod(inits[node.input[1]].dims))
        for node in graph.node
        if node.op_type == "DequantizeLinear" and len(node.input) > 1
        and node.input[0] in inits and inits[node.input[0]].data_type in int8
        and node.input[1] in inits
    )  # fmt: skip
    return {
        "ops": dict(Counter(node.op_type for node in graph.node)),
        "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import},
        "producer": model.producer_name,
        "params": int(params),
        "macs": int(macs),
        "weight_scales": dict(scales),
    }


def _onnx_macs(node: Any, shapes: dict[str, list[int]]) -> int:
    weight_at = 3 if node.op_type == "QLinearConv" else 1
    if len(node.input) <= weight_at or not node.output:
        return 0
    weights, out = shapes.get(node.input[weight_at]), shapes.get(node.output[0])
    if not weights or not out:
        return 0
    if node.op_type in ("Conv", "ConvInteger", "QLinearConv"):  # W [Co, Ci/group, kh, kw]
        return _prod(out) * _prod(weights[1:])
    if node.op_type == "Gemm":
        trans_b = any(a.name == "transB" and a.i for a in node.attribute)
        return _prod(out) * int(weights[1] if trans_b else weights[0])
    return _prod(out) * int(weights[-2]) if len(weights) >= 2 else 0  # MatMul: B [..., K, N]


def _per(n_scales: int) -> str:
    return "per-channel" if n_scales > 1 else "per-tensor"


def weight_granularity(path: Path) -> str | None:
    """ "per-channel" when any int8 weight of the file has one scale per channel, "per-tensor"
    when all have one, None when it has no int8 weights (float, int16x8): read from the file,
    so a device that takes per-tensor only is checked against what will really run."""
    stats = artifact_stats(path)
    scales = (stats or {}).get("weight_scales") or {}
    return "per-channel" if scales.get("per-channel") else ("per-tensor" if scales else None)


def artifact_stats(path: Path) -> dict[str, Any] | None:
    """`tflite_stats` or `onnx_stats` by the file's suffix; None for any other file."""
    read = {".tflite": tflite_stats, ".onnx": onnx_stats}.get(Path(path).suffix.lower())
    return read(path) if read is not None else None


def weights_digest(model: Any) -> str | None:
    """sha256 of the model's weights in order: the same trained model, whatever file holds it
    (a .keras zip carries a save date, so file hashes differ for identical models)."""
    import hashlib

    try:
        weights = model.get_weights()
    except Exception:  # a model object without Keras weights: nothing to fingerprint
        return None
    digest = hashlib.sha256()
    for w in weights:
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()

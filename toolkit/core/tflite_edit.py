"""Edits of a converted `.tflite` flatbuffer: move a classifier's trailing SOFTMAX to the host.

Why: LiteRT's optimized int8 SOFTMAX builds its lookup table in float when the model loads, and
that table rounds differently on x86 and Arm (tests/test_pi.py pins it: 1 step on 4 of 5,000
values; every other int8 kernel, XNNPACK's included, is bit-identical across the two). A model
that ends at its int8 logits gives the same integers on every CPU; the softmax, applied by the
bundle's run.py in float, also keeps more resolution than int8 probabilities (1/256 steps).
The edit goes through LiteRT's generated flatbuffer schema (object API) and `flatbuffers`.
"""

from __future__ import annotations

from typing import Any

TFLITE_IDENTIFIER = b"TFL3"


def _load(content: bytes) -> Any:
    from ai_edge_litert import schema_py_generated as schema

    buf = bytearray(content)
    return schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(buf, 0))


def _pack(model: Any) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
    return bytes(builder.Output())


def split_trailing_softmax(content: bytes) -> bytes | None:
    """The model without its final SOFTMAX (beta 1), ending at the logits; None when it has none.

    Only single-subgraph models whose one output is produced by a SOFTMAX are edited; the
    signature's output keeps its name and points at the logits tensor.
    """
    from ai_edge_litert import schema_py_generated as schema

    model = _load(content)
    if len(model.subgraphs or []) != 1:
        return None
    graph = model.subgraphs[0]
    outputs = list(graph.outputs if graph.outputs is not None else [])
    if len(outputs) != 1:
        return None
    producers = [i for i, op in enumerate(graph.operators or []) if outputs[0] in list(op.outputs)]
    if len(producers) != 1:
        return None
    op = graph.operators[producers[0]]
    code = model.operatorCodes[op.opcodeIndex]
    builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
    options = op.builtinOptions
    if builtin != schema.BuiltinOperator.SOFTMAX or getattr(options, "beta", 1.0) != 1.0:
        return None
    logits = int(op.inputs[0])
    if any(outputs[0] in list(other.inputs) for other in graph.operators if other is not op):
        return None  # the probabilities feed something else too
    graph.operators.pop(producers[0])
    graph.outputs = [logits]
    for signature in model.signatureDefs or []:
        for tensor_map in signature.outputs or []:
            if tensor_map.tensorIndex == outputs[0]:
                tensor_map.tensorIndex = logits
    return _pack(model)

"""Which op makes TFLM's integers differ from LiteRT's reference kernels, and by how much.

The model is cut after each op in turn (that op's output becomes the graph's output) and both
runtimes run the cut model on the same quantized inputs. Ops run in order, so the first cut
whose output differs names the op whose kernel rounds differently: every tensor it reads was
identical in both runtimes one cut earlier.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def _cut_after(content: bytes, index: int) -> bytes:
    """The model with ops 0..index only, ending at op `index`'s first output."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    from toolkit.core.tflite_edit import TFLITE_IDENTIFIER

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(content), 0))
    graph = model.subgraphs[0]
    graph.operators = graph.operators[: index + 1]
    graph.outputs = [int(graph.operators[index].outputs[0])]
    model.signatureDefs = None
    builder = flatbuffers.Builder(len(content) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
    return bytes(builder.Output())


def _op_names(content: bytes) -> list[str]:
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.Model.GetRootAsModel(bytearray(content), 0)
    graph = model.Subgraphs(0)
    out = []
    for i in range(graph.OperatorsLength()):
        code = model.OperatorCodes(graph.Operators(i).OpcodeIndex())
        out.append(names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?"))
    return out


def _raw(runner: Any, q: np.ndarray) -> np.ndarray:
    return np.stack([np.asarray(runner._run(q[i : i + 1])) for i in range(len(q))])


def op_divergence(path: str | Path, x: np.ndarray, stop_at_first: bool = True) -> list[dict]:
    """Per op (in execution order): how many samples and values differ between TFLM and
    LiteRT's reference kernels at that op's output, and the largest difference in steps."""
    from toolkit.runtimes import open_runner, quantize

    content = Path(path).read_bytes()
    names = _op_names(content)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="keras-edge-tflm-diff-") as work:
        for index, op in enumerate(names):
            cut = Path(work) / f"cut{index}.tflite"
            cut.write_bytes(_cut_after(content, index))
            with open_runner(cut, runtime="tflm") as tflm:
                q = quantize(np.asarray(x, np.float32), tflm.inputs[0])
                a = _raw(tflm, q).reshape(len(q), -1).astype(np.float64)
            with open_runner(cut, runtime="litert", provider="reference") as ref:
                b = _raw(ref, q).reshape(len(q), -1).astype(np.float64)
            diff = np.abs(a - b)
            rows.append(
                {
                    "index": index,
                    "op": op,
                    "samples_differ": int((diff > 0).any(axis=1).sum()),
                    "values_differ": int((diff > 0).sum()),
                    "values": int(diff.size),
                    "max_diff": float(diff.max()) if diff.size else 0.0,
                    "samples": len(q),
                }
            )
            if stop_at_first and rows[-1]["values_differ"]:
                break
    return rows


def first_divergent_op(path: str | Path, x: np.ndarray) -> dict | None:
    """The first op whose output differs (its inputs were identical), or None: bit-exact."""
    rows = op_divergence(path, x, stop_at_first=True)
    return rows[-1] if rows and rows[-1]["values_differ"] else None

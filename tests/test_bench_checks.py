"""bench/checks.py: the benchmark's verdicts decide on the right numbers.

The size floor is computed from real TFLite files, and the latency verdict follows the runtime
call, not the Python runner's I/O conversion.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import _badinput
from baselines import Measured
from checks import checks, size_floor

tiny_models = _badinput.tiny_models  # the session fixture: a tiny CNN as fp32 and int8 .tflite


def test_size_floor_is_between_the_weights_and_the_real_file(tiny_models):
    from toolkit.core.model_stats import tflite_stats

    int8, fp32 = tiny_models["tflite_int8"], tiny_models["tflite"]
    text = size_floor(int8, fp32)
    floor = int(text.split("schema: ")[1].split(" bytes")[0].replace(",", ""))
    parts = tflite_stats(int8)["bytes"]
    assert parts["weights"] + parts["quantization_params"] < floor < int8.stat().st_size
    assert f"= {floor / fp32.stat().st_size:.3f}" in text
    assert size_floor(int8, None) == "" and size_floor(int8, fp32.parent / "absent") == ""


def _timed(label: str, fmt_name: str, p50: float, invoke: float) -> Measured:
    runtime, provider = (
        ("litert", "xnnpack") if fmt_name == "tflite" else ("onnxruntime", "CPUExecutionProvider")
    )
    row = Measured(label, None, runtime, provider, f"{fmt_name}-fp32")
    row.p50, row.invoke_p50 = p50, invoke
    return row


def test_latency_verdict_follows_the_runtime_call():
    rows = [
        _timed("tflite-fp32", "tflite", 0.060, 0.057),
        _timed("tflite-int8", "tflite", 0.031, 0.018),  # runner 0.52x, runtime call 0.32x
        _timed("onnx-fp32", "onnx", 0.060, 0.055),
        _timed("onnx-int8", "onnx", 0.020, 0.042),  # runner 0.33x, runtime call 0.76x
    ]
    verdicts = {
        line.split("** ")[1].split(" p50")[0]: line for line in checks(rows) if " p50 ≤" in line
    }
    assert verdicts["tflite-int8"].startswith("- **PASS**")
    assert "= 0.32 (through the Python runner" in verdicts["tflite-int8"]
    assert verdicts["onnx-int8"].startswith("- **FAIL**")

"""The issue's acceptance checks for bench/run.py, each PASS/FAIL with the numbers behind it.

Latency is judged on the runtime call (set input, invoke, read output): that is what the
artifact costs on a device, where an int8-I/O app feeds int8 directly. The Python runner's
p50, which also quantizes the float input in numpy, is shown beside it.
"""

from __future__ import annotations

from pathlib import Path

from baselines import Measured

MAX_INT8_DROP = 0.005  # 0.5 pp
MAX_INT8_SIZE_RATIO = 0.27
MAX_FP32_DIFF = 1e-5
MAX_INT8_LATENCY_RATIO = 0.5
TIMED = {("litert", "xnnpack"), ("onnxruntime", "CPUExecutionProvider")}


def fmt(value: float | None, spec: str, scale: float = 1.0) -> str:
    return "—" if value is None else format(value * scale, spec)


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def timed_row(rows: list[Measured], label: str) -> Measured | None:
    return next((r for r in rows if r.label == label and (r.runtime, r.provider) in TIMED), None)


def size_floor(int8: Path | None, fp32: Path | None) -> str:
    """The smallest int8 file the TFLite schema allows for this model, as a sentence.

    Its int8 weights (int32 biases), the per-channel scales and zero points the schema stores
    for every weight and bias channel (float32 + int64 each, however small the model), and a
    graph no bigger than the fp32 file's, with no tensor names at all. When that floor is over
    the bound, no converter setting that keeps per-channel int8 can meet it.
    """
    if int8 is None or fp32 is None or not (int8.is_file() and fp32.is_file()):
        return ""
    from toolkit.core.model_stats import tflite_stats

    q, f = tflite_stats(int8)["bytes"], tflite_stats(fp32)["bytes"]
    least = q["weights"] + q["quantization_params"] + f["graph_and_other"]
    return (
        f". Floor for per-channel int8 in the TFLite schema: {least:,} bytes = "
        f"{least / fp32.stat().st_size:.3f} (int8 weights and int32 biases {q['weights']:,} + "
        f"per-channel scales and zero points {q['quantization_params']:,} + the fp32 file's own "
        f"graph {f['graph_and_other']:,}, every tensor name stripped)"
    )


def checks(rows: list[Measured]) -> list[str]:
    """The issue's acceptance checks, each PASS/FAIL with the numbers that decided it."""
    by = {(r.label, r.runtime, r.provider): r for r in rows}
    ours = [r for r in rows if not r.baseline]
    lines = []

    def add(ok: bool, text: str) -> None:
        lines.append(f"- **{'PASS' if ok else 'FAIL'}** {text}")

    for name in ("tflite-int8", "onnx-int8"):
        got = [r for r in ours if r.label == name]
        ok = bool(got) and all(r.drop is not None and r.drop <= MAX_INT8_DROP + 1e-12 for r in got)
        shown = ", ".join(f"{r.runtime}/{r.provider} {fmt(r.drop, '+.2f', 100)} pp" for r in got)
        add(ok, f"{name} drop ≤ {MAX_INT8_DROP * 100:.1f} pp: {shown or 'missing'}")
    sizes = {r.label: r.size for r in ours if r.size}
    size_ratio = ratio(sizes.get("tflite-int8"), sizes.get("tflite-fp32"))
    paths = {r.label: r.path for r in ours if r.path}
    add(size_ratio is not None and size_ratio <= MAX_INT8_SIZE_RATIO,
        f"tflite-int8 size ≤ {MAX_INT8_SIZE_RATIO} × tflite-fp32: {sizes.get('tflite-int8')} / "
        f"{sizes.get('tflite-fp32')} bytes = {fmt(size_ratio, '.3f')}"
        + size_floor(paths.get("tflite-int8"), paths.get("tflite-fp32")))  # fmt: skip
    floats = [r for r in ours if r.label in ("tflite-fp32", "onnx-fp32", "keras-fp32")]
    ok = bool(floats) and all(
        r.max_abs_diff is not None and r.max_abs_diff <= MAX_FP32_DIFF for r in floats
    )
    shown = ", ".join(
        f"{r.label} {r.runtime}/{r.provider} {fmt(r.max_abs_diff, '.1e')}" for r in floats
    )
    add(ok, f"float32 artifacts max abs diff ≤ {MAX_FP32_DIFF:.0e}: {shown}")
    missing = Measured("missing", None, "", "", "")
    for fmt_name, where in (("tflite", "LiteRT XNNPACK"), ("onnx", "ORT CPU")):
        q = timed_row(ours, f"{fmt_name}-int8") or missing
        f = timed_row(ours, f"{fmt_name}-fp32") or missing
        r, r_invoke = ratio(q.p50, f.p50), ratio(q.invoke_p50, f.invoke_p50)
        add(r_invoke is not None and r_invoke <= MAX_INT8_LATENCY_RATIO,
            f"{fmt_name}-int8 p50 ≤ {MAX_INT8_LATENCY_RATIO} × {fmt_name}-fp32 p50 ({where}, "
            f"1 thread, batch 1, the runtime call): {fmt(q.invoke_p50, '.3f')} / "
            f"{fmt(f.invoke_p50, '.3f')} ms = {fmt(r_invoke, '.2f')} (through the Python "
            f"runner, float input quantized in numpy: {fmt(q.p50, '.3f')} / "
            f"{fmt(f.p50, '.3f')} ms = {fmt(r, '.2f')})")  # fmt: skip
    plain = next((r for r in rows if r.baseline and " int8 " in r.label), None)
    mine = by.get(("tflite-int8", "litert", "xnnpack"))
    ok = bool(plain and mine and mine.value is not None
              and (plain.value is None or mine.value >= plain.value))  # fmt: skip
    add(ok, f"our tflite-int8 accuracy ≥ plain converter int8 (LiteRT XNNPACK): "
            f"{fmt(mine.value if mine else None, '.4f')} vs "
            f"{fmt(plain.value if plain else None, '.4f')}"
            + (f" ({plain.error})" if plain and plain.error else ""))  # fmt: skip
    return lines

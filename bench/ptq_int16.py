"""Per-layer int16 activations (integer mixed precision, issue #15) on the hard models.

    .venv/bin/python bench/ptq_int16.py --models mobilenet_v2_035 vww_transfer_full \
        --results bench/RESULTS.md

The issue asks for per-layer mixed precision picked by measured sensitivity, int16x8 among
the choices. TFLiteConverter's int16x8 is all or nothing; ai-edge-quantizer takes a recipe per
op, so this measures int8 with the 1 / 3 / 6 layers the quantization debugger ranks most
sensitive (toolkit.convert.tflite.layer_sensitivity, the ladder's ranking; the layer that
produces the model output left out, int16 there would make the output int16) at 16-bit
activations, 8-bit weights. Beside it, per (model, granularity): plain TFLiteConverter int8;
ai-edge-quantizer static_wi8_ai8 with its default calibration (a moving average of each
sample's min/max) and with the true min/max (the base of the int16 rows); ours equalized +
bias-corrected int8; int8 with the same 3 layers kept float; the converter's full int16x8.
Every row: the test split's headline metric and drop vs float Keras (paired-bootstrap 95 %
interval), SQNR of the outputs, file size, TFLM arena (what an MCU's RAM must hold) and LiteRT
XNNPACK latency at batch 1. Models and calibration are bench/ptq.py's (same cache).
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ptq
import ptq_anchors
import ptq_auto
import ptq_models  # prepare: the model cache, data and splits
from ptq_render import _row, base_parser, commit, emit, uptime, versions

TITLE = "## PTQ: per-layer int16 activations (integer mixed precision)"


def _arena_kb(path: Path) -> float | None:
    from toolkit.runtimes.tflm_arena import measure_arena_isolated

    got = measure_arena_isolated(path)
    return None if "error" in got else got["arena_bytes"] / 1024


def _interior(float_file: Path, ranked: list[str]) -> list[str]:
    from ai_edge_litert.interpreter import Interpreter

    outputs = {d["name"] for d in Interpreter(model_path=str(float_file)).get_output_details()}
    return [name for name in ranked if name not in outputs]


def _plans(m: dict, gran: str, out: Path) -> list[tuple[str, Any]]:
    """(label, build(dir) -> path) per row; the layers are ranked once, at `gran`."""
    from toolkit.convert import convert
    from toolkit.convert.tflite import layer_sensitivity

    model, calib, pt = m["model"], m["calib"], gran == "per-tensor"
    out.mkdir(parents=True, exist_ok=True)
    float_file = convert(model, "tflite-fp32", out)
    ranked = [r["tensor_name"] for r in layer_sensitivity(model, calib, granularity=gran)]
    inner = _interior(float_file, ranked)

    def aeq(true_min_max: bool, k: int = 0) -> Any:
        return lambda d: ptq_anchors.aeq(float_file, d, calib, pt, "min_max",
                                         true_min_max=true_min_max,
                                         int16_layers=tuple(inner[:k]))  # fmt: skip

    def ours(name: str, **options: Any) -> Any:
        return lambda d: convert(model, name, d, calibration=calib, granularity=gran, **options)

    return [
        ("TFLiteConverter int8", lambda d: ptq_anchors.tflite_plain(model, d, calib, pt)),
        ("ai-edge-quantizer static_wi8_ai8 (its default calibration)", aeq(False)),
        ("ai-edge-quantizer static_wi8_ai8, true min/max", aeq(True)),
        *[(f"int8, {k} layer(s) int16 activations (ai-edge-quantizer, true min/max)", aeq(True, k))
          for k in (1, 3, 6) if k <= len(inner)],
        ("ours int8, equalize + bias_correction", ours("tflite-int8", equalize=True,
                                                     bias_correction=True)),
        ("ours int8, 3 layers kept float (float I/O)",
         ours("tflite-int8-float-io", denylisted_nodes=ranked[:3])),
        ("TFLiteConverter int16x8 (every activation)", ours("tflite-int16x8")),
    ], inner[:6]  # fmt: skip


def rows_for(m: dict, gran: str, work: Path) -> tuple[list[dict[str, Any]], list[str]]:
    ref_out, _ = ptq.measure(m["model"], m["x"])
    plans, layers = _plans(m, gran, work / f"{m['key']}-{gran}")
    rows = []
    for i, (label, build) in enumerate(plans):
        out = work / f"{m['key']}-{gran}" / f"r{i}"
        out.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        try:
            path = build(out)
            seconds = time.perf_counter() - start
            row = ptq_auto.artifact_row(label, path, m, ref_out)
            row.update(method=label, convert_s=f"{seconds:.1f}", size_kb=path.stat().st_size / 1024,
                       arena_kb=None if "float" in label else _arena_kb(path))  # fmt: skip
        except Exception as err:  # a row that cannot be built is a failed row, not a dead run
            row = {"method": label, "error": str(err)[:300]}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows, layers


def _cell(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def _summary(cases: list[dict]) -> list[str]:
    """Per case: what the int16 layers gained over their own int8 base, against the best full
    int8 (the converter's or ours equalized + bias-corrected, by SQNR)."""
    lines = ["| case | int8 base SQNR | best int16-layers row | SQNR gain | best full int8 | "
             "int16 layers better |", "|---|---|---|---|---|---|"]  # fmt: skip
    for case in cases:
        ok = {r["method"]: r for r in case["rows"] if "error" not in r}
        base = ok.get("ai-edge-quantizer static_wi8_ai8, true min/max")
        mixed = [r for m, r in ok.items() if "int16 activations" in m]
        full = [ok[m] for m in ("TFLiteConverter int8", "ours int8, equalize + bias_correction")
                if m in ok]  # fmt: skip
        if not (base and mixed and full):
            continue
        best, rival = (max(rows, key=lambda r: r["sqnr_db"]) for rows in (mixed, full))
        better = best["sqnr_db"] > rival["sqnr_db"] and best["drop_pp"] < rival["drop_pp"]
        lines.append(f"| {case['key']}, {case['granularity']} | {base['sqnr_db']:.1f} dB | "
                     f"{best['method'].split(' (')[0]}: {best['sqnr_db']:.1f} dB, "
                     f"{best['drop_pp']:+.2f} pp | {best['sqnr_db'] - base['sqnr_db']:+.1f} dB | "
                     f"{rival['method']}: {rival['sqnr_db']:.1f} dB, {rival['drop_pp']:+.2f} pp "
                     f"| {'yes' if better else 'no'} |")  # fmt: skip
    return lines


def section(data: dict) -> list[str]:
    lines = [TITLE, "", f"Generated by `{data['command']}` at commit `{data['commit']}` on 2 "
             f"cores, x86_64, {data['date']} ({data['minutes']:.1f} min wall). Load before: "
             f"`{data['uptime'][0]}`; after: `{data['uptime'][1]}`. Versions: "
             + ", ".join(f"{k} {v}" for k, v in data["versions"].items()) + ".", "",
             "Calibration and test split as in the first PTQ section (bench/ptq.py's models, "
             "retrained where the cache was empty: compare rows within this section). 'arena "
             "KB': the smallest TFLite Micro arena that runs the file (— for float I/O, or "
             "where TFLite Micro could not run it); latency: LiteRT XNNPACK, batch 1, p50 of "
             "50 runs. The layers are "
             "the ones the quantization debugger ranks most sensitive at the row's "
             "granularity, without the layer that produces the model output (int16 there "
             "would change the int8 output).", ""]  # fmt: skip
    lines += [*_summary(data["cases"]), ""]
    for case in data["cases"]:
        lines += [f"### {case['key']}, {case['granularity']}", "", case["what"], ""]
        head = f"| method | {case['metric']} | drop pp (95 % CI) | top-1 = float | SQNR dB "
        lines += [head + "| size KB | arena KB | latency ms |", "|---|---|---|---|---|---|---|---|"]
        for r in case["rows"]:
            if "error" in r:
                lines.append(f"| {r['method']} | failed: {r['error'][:120]} | | | | | | |")
                continue
            base = _row(r, case["metric"]).rsplit("|", 3)[0]  # method .. SQNR
            lines.append(f"{base}| {r['size_kb']:.0f} | {_cell(r['arena_kb'], '.0f')} | "
                         f"{r['latency_ms']:.2f} |")  # fmt: skip
        if case["layers"]:
            lines += ["", "- int16 layers, most sensitive first: " + "; ".join(
                f"`{n[-50:]}`" for n in case["layers"])]  # fmt: skip
        lines.append("")
    return lines


def main() -> int:
    parser = base_parser(__doc__)
    parser.add_argument("--models", nargs="+", default=["mobilenet_v2_035", "vww_transfer_full"])
    parser.add_argument("--granularity", nargs="+", default=["per-channel", "per-tensor"])
    parser.add_argument("--calib", type=int, default=256)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--render", type=Path, help="write the section from this run's JSON")
    args = parser.parse_args()
    if args.render:
        return _write(json.loads(args.render.read_text()), args)
    start, before = time.perf_counter(), uptime()
    cases = []
    for key in args.models:
        m = ptq_models.prepare(args.work, key, args.calib, args.limit)
        for gran in args.granularity:
            rows, layers = rows_for(m, gran, args.work / "int16")
            cases.append({"key": key, "granularity": gran, "metric": m["metric"], "rows": rows,
                          "layers": layers, "what": m["what"]})  # fmt: skip
    data = {"command": shlex.join([".venv/bin/python", "bench/ptq_int16.py", *sys.argv[1:]]),
            "commit": commit(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "minutes": (time.perf_counter() - start) / 60, "uptime": [before, uptime()],
            "versions": versions(), "cases": cases}  # fmt: skip
    (args.work / "ptq_int16.json").write_text(json.dumps(data, indent=1, default=str))
    return _write(data, args)


def _write(data: dict, args: Any) -> int:
    return emit(section(data), args, TITLE)


if __name__ == "__main__":
    raise SystemExit(main())

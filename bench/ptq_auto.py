"""`--precisions auto --max-drop 0.003` on the hard PTQ cases (issue #15): what the ladder
returns where no full-int8 method keeps float's accuracy, with size and latency next to the
full int8 of the same format and granularity.

    .venv/bin/python bench/ptq_auto.py --results bench/RESULTS.md     # after bench/ptq.py

The cases default to those in WORK/ptq.json (written by bench/ptq.py) where neither our best
TFLite nor our best ONNX full-int8 row is within 0.3 pp of float on the test split. The ladder
is toolkit.pipeline.budget.choose, exactly what `keras-edge export --precisions auto` runs: it
chooses on the validation split; the rows here are scored on the test split, like bench/ptq.py.
Latency: batch-1 median over 50 runs in the artifact's runtime (LiteRT XNNPACK, ORT CPU).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ptq  # bench/ptq.py: measure, score
import ptq_models  # prepare: the model cache, data and splits
import ptq_render

TITLE = "## PTQ: --precisions auto on the hard cases"
GOAL_PP = ptq_render.GOAL_PP


def hard_cases(ptq_json: Path) -> list[tuple[str, str]]:
    """(model, granularity) where no 'ours' full-int8 row of either format kept float within
    GOAL_PP on the test split of bench/ptq.py's last run."""
    data = json.loads(ptq_json.read_text())
    cases = []
    for model in data["models"]:
        for gran, rows in model["cases"].items():
            best = {}
            for fmt in ("tflite", "onnx"):
                drops = [r["drop_pp"] for r in rows[1:] if "error" not in r
                         and r["method"].startswith(f"ours {fmt}")]  # fmt: skip
                best[fmt] = min(drops) if drops else None
            if any(d is None or d > GOAL_PP for d in best.values()):
                cases.append((model["key"], gran))
    return cases


def latency_ms(path: Path, x_one: Any) -> float:
    from toolkit.runtimes import open_runner

    runner = open_runner(path)
    try:
        return float(runner.latency_ms(x_one, warmup=5, runs=50)["p50"])
    finally:
        runner.close()


def artifact_row(label: str, path: Path, m: dict, ref_out: Any) -> dict[str, Any]:
    out, _ = ptq.measure(path, m["x"])
    row = {"artifact": label, "file": path.name, "size_bytes": path.stat().st_size}
    row.update(ptq.score(out, ref_out, m["test"]))
    row["latency_ms"] = latency_ms(path, m["x"][:1])
    return row


def run_case(m: dict, gran: str, work: Path, max_drop: float) -> list[dict[str, Any]]:
    from toolkit.convert import convert
    from toolkit.pipeline.budget import Budget, Quant, choose

    out = work / "auto" / m["key"] / gran
    out.mkdir(parents=True, exist_ok=True)
    ref_out, _ = ptq.measure(m["model"], m["x"])
    rows = []
    for fmt in ("tflite", "onnx"):
        full = convert(m["model"], f"{fmt}-int8", out / f"full-{fmt}", m["calib"],
                       granularity=gran)  # fmt: skip
        rows.append({"format": fmt, **artifact_row(f"{fmt}-int8 (full int8)", full, m, ref_out)})
        (out / f"auto-{fmt}").mkdir(exist_ok=True)
        start = time.perf_counter()
        picked, budget = choose(m["model"], [fmt], m["val"], m["calib"], Budget(max_drop=max_drop),
                                out / f"auto-{fmt}", quant=Quant(granularity=gran))  # fmt: skip
        seconds = time.perf_counter() - start
        info = budget["formats"][fmt]
        ladder = info["ladder"]
        step = next((s for s in ladder if s.get("chosen")), None)
        auto: dict[str, Any] = {"format": fmt, "ladder_s": round(seconds, 1),
                                "rungs": len(ladder), "rung": step["rung"] if step else None,
                                "val_drop_pp": 100 * step["drop"] if step else None}  # fmt: skip
        if picked:
            auto.update(artifact_row(f"auto: {info['chosen']}", picked[0], m, ref_out))
        else:
            auto.update({"artifact": "auto: nothing within budget", "error": "no rung"})
        rows.append(auto)
    return rows


def _cell(r: dict, metric: str) -> str:
    if r.get("error"):
        return f"| {r['artifact']} | — | — | — | — | — | — | — |"
    ci = f" ({r['ci95_pp'][0]:+.2f}..{r['ci95_pp'][1]:+.2f})" if r.get("ci95_pp") else ""
    val = f"{r['val_drop_pp']:+.2f}" if r.get("val_drop_pp") is not None else "—"
    rung = r.get("rung") or "—"
    if r.get("ladder_s") is not None:
        rung = f"{rung} (rung {r['rungs']}, {r['ladder_s']:.0f} s)"
    within = "yes" if r["drop_pp"] <= GOAL_PP else "no"
    return (f"| {r['artifact']} | {rung} | {val} | {ptq_render.metric_text(metric, r['metric'])} "
            f"| {r['drop_pp']:+.2f}{ci} | {within} | {r['size_bytes'] / 1024:.0f} "
            f"| {r['latency_ms']:.2f} |")  # fmt: skip


def section(data: dict) -> list[str]:
    lines = [
        data.get("title", TITLE),
        "",
        ptq_render.provenance(data),
        "",
        *([data["note"], ""] if data.get("note") else []),
        f"The ladder of `keras-edge export --precisions auto --max-drop {data['max_drop']}` "
        "(toolkit.pipeline.budget.choose, cheapest rung first, measured on the validation "
        "split) on "
        + (
            f"the (model, granularity) cases named by `--cases` ({data['cases_arg']})"
            if data.get("cases_arg")
            else "each (model, granularity) where no full-int8 row "
            f"of bench/ptq.py kept float within {GOAL_PP:.1f} pp on the test split"
        )
        + ". Rows are scored on the test split; 'val drop' "
        "is what the ladder saw when it chose. Latency: batch-1 median of 50 runs (LiteRT "
        "XNNPACK, ORT CPU) on the shared 2-core machine. Full int8 = the same format and "
        "granularity without the ladder.",
        "",
    ]
    for case in data["cases"]:
        lines += [
            f"### {case['key']}, {case['gran']}",
            "",
            "| artifact | rung chosen (position, ladder time) | val drop pp | "
            f"{case['metric']} | test drop pp (95 % CI) | within {GOAL_PP:.1f} | size KB "
            "| latency ms |",
            "|---|---|---|---|---|---|---|---|",
            *[_cell(r, case["metric"]) for r in case["rows"]],
            "",
        ]
    return lines


def main() -> int:
    parser = ptq_render.base_parser(__doc__)
    parser.add_argument("--cases", help="model:granularity,... (default: the hard cases)")
    parser.add_argument("--max-drop", type=float, default=0.003)
    parser.add_argument("--calib", type=int, default=256)
    parser.add_argument("--title", default=TITLE, help="the RESULTS.md section to (re)write")
    parser.add_argument("--note", help="a paragraph for the section: why this run")
    parser.add_argument(
        "--section-only", action="store_true", help="rewrite the section from WORK/ptq_auto.json"
    )
    args = parser.parse_args()
    if args.section_only:
        return write_section(json.loads((args.work / "ptq_auto.json").read_text()), args)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    work = args.work.resolve()
    if args.cases:
        cases = [tuple(c.split(":")) for c in args.cases.split(",")]
    else:
        cases = hard_cases(work / "ptq.json")
    data: dict[str, Any] = {"command": "python bench/ptq_auto.py " + shlex.join(sys.argv[1:]),
                            "machine": f"{os.cpu_count()} cores, {os.uname().machine}",
                            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                            "load_before": ptq_render.uptime(), "max_drop": args.max_drop,
                            "cases_arg": args.cases, "commit": ptq_render.commit(),
                            "title": args.title, "note": args.note,
                            "cases": []}  # fmt: skip
    start, prepared = time.perf_counter(), {}
    for key, gran in cases:
        if key not in prepared:
            prepared = {key: ptq_models.prepare(work, key, args.calib, None, val=True)}
        m = prepared[key]
        print(f"{key} {gran}: the --precisions auto ladder", flush=True)
        rows = run_case(m, gran, work, args.max_drop)
        data["cases"].append({"key": key, "gran": gran, "metric": m["metric"], "rows": rows})
        (work / "ptq_auto.json").write_text(json.dumps(data, indent=1, default=str))
    data["load_after"], data["wall_min"] = ptq_render.uptime(), (time.perf_counter() - start) / 60
    (work / "ptq_auto.json").write_text(json.dumps(data, indent=1, default=str))
    return write_section(data, args)


def write_section(data: dict, args: Any) -> int:
    return ptq_render.emit(section(data), args, data.get("title", TITLE))


if __name__ == "__main__":
    sys.exit(main())

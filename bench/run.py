"""The export benchmark (issue #3): our pipeline vs the plain converters -> bench/RESULTS.md.

For each recipe: train it (or reuse the run), export every TFLite/ONNX precision with
`keras-edge export` in a child process (wall time and that process's peak RSS), read the rows
its validation wrote to report.json, build the plain baselines from the same model and the same
calibration samples, measure 1-thread batch-1 latency of every artifact, and write the tables
and the checks computed from them. No number in RESULTS.md is typed by hand.

    .venv/bin/python bench/run.py --out bench/RESULTS.md          # what `make bench` runs
    .venv/bin/python bench/run.py --quick --recipes digits-cnn    # smoke run (3 epochs)

Then pruning/clustering/QAT on the mnist-full-cnn run (bench/optimize_bench.py;
`--skip-optimize`), the transfer-learning sample (bench/transfer_section.py: vww_96.h5 ->
CIFAR-10 vs from scratch; needs ../shared; `--skip-transfer`) and, last, the peak RSS of
exporting a 50,000-image folder vs a 5,000-image one (bench/rss_folder.py; `--skip-rss-folder`),
then training on your own data: the one-line start on CIFAR-10 and the BatchNorm momentum
comparison (bench/own_data.py; `--skip-own-data`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import Measured, baseline_rows, measure_accuracy, measure_latency, reference_of  # noqa: E402
from checks import TIMED, checks, fmt, ratio, timed_row  # noqa: E402

DEFAULT_RECIPES = ("digits-cnn", "mnist-full-cnn")
NEEDS_SHARED = {"mnist-full-cnn": REPO.parent / "shared" / "data" / "mnist-test"}
CALIB_SAMPLES = 256  # run_export's default; the baselines get the very same samples


def machine() -> list[str]:
    def first(path: str, key: str) -> str:
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(key):
                    return line.split(":" if ":" in line else "=", 1)[1].strip().strip('"')
        except OSError:
            pass
        return "unknown"

    mem_kib = first("/proc/meminfo", "MemTotal").split()[0]
    ram = f"{int(mem_kib) / 1024**2:.1f} GiB" if mem_kib.isdigit() else "unknown"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [
        f"CPU: {first('/proc/cpuinfo', 'model name')}; {os.cpu_count()} logical cores "
        f"({usable} usable by this process)",
        f"RAM: {ram}",
        f"OS: {first('/etc/os-release', 'PRETTY_NAME')}; {platform.platform()}",
        f"Python: {platform.python_version()} ({sys.executable})",
    ]


def export_child(run_dir: Path, out: Path, latency_runs: int, log: Path) -> tuple[float, int, int]:
    """`keras-edge export` (= pipeline.run_export) in a child; (wall s, peak RSS KiB, rc).

    Peak RSS is the child's own ru_maxrss, read with os.wait4 on its pid (Linux: KiB).
    """
    cmd = [sys.executable, "-m", "toolkit", "export", str(run_dir), "--formats",
           "tflite,onnx,keras", "--out", str(out), "--force", "--latency-runs", str(latency_runs),
           "--calib-samples", str(CALIB_SAMPLES)]  # fmt: skip
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh:
        fh.write(shlex.join(cmd) + "\n")
        fh.flush()
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, int(usage.ru_maxrss), proc.returncode


def rows_from_report(report: object) -> list[Measured]:
    rows = []
    for a in report.artifacts:  # type: ignore[attr-defined]
        row = Measured(a.name, Path(a.path), a.runtime, a.provider, f"{a.format}-fp32")
        row.value, row.drop, row.agreement = a.metric["value"], a.drop, a.agreement
        row.max_abs_diff, row.size, row.gzip, row.error = (
            a.max_abs_diff,
            a.size_bytes,
            a.gzip_bytes,
            a.error,
        )
        rows.append(row)
    return rows


def table(rows: list[Measured], metric: str) -> list[str]:
    fp32_size = next((r.size for r in rows if r.label == "tflite-fp32"), None)
    out = [
        f"| artifact | runtime | {metric} | drop (pp) | agreement | max abs diff | size (KiB) | "
        "gzip (KiB) | size / tflite-fp32 | p50 ms (1 thread) | p50 / fp32 same format | "
        "invoke-only p50 ms | invoke-only / fp32 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.error:
            out.append(f"| {r.label} | {r.runtime}/{r.provider} | error: {r.error} |" + " |" * 10)
            continue
        fp32 = timed_row(rows, r.fp32_of)
        fp32_p50 = fp32.p50 if fp32 else None
        f32_inv = fp32.invoke_p50 if fp32 else None
        cells = [r.label + (f" ({r.note})" if r.note else ""), f"{r.runtime}/{r.provider}",
                 fmt(r.value, ".4f"), fmt(r.drop, "+.2f", 100), fmt(r.agreement, ".4f"),
                 fmt(r.max_abs_diff, ".1e"), fmt(r.size, ",.1f", 1 / 1024),
                 fmt(r.gzip, ",.1f", 1 / 1024), fmt(ratio(r.size, fp32_size), ".3f"),
                 fmt(r.p50, ".3f"), fmt(ratio(r.p50, fp32_p50), ".2f"),
                 fmt(r.invoke_p50, ".3f"), fmt(ratio(r.invoke_p50, f32_inv), ".2f")]  # fmt: skip
        out.append("| " + " | ".join(cells) + " |")
    return out


def validation_cost(report: object, top: int = 3) -> str:
    """Inference seconds validation spent per row, estimated as report p50 x test samples."""
    n = int(report.data.get("samples", 0))  # type: ignore[attr-defined]
    cost = [(a.latency_ms["p50"] * n / 1000, f"{a.name} {a.runtime}/{a.provider}")
            for a in report.artifacts if a.latency_ms]  # type: ignore[attr-defined]  # fmt: skip
    cost.sort(reverse=True)
    shown = ", ".join(f"{what} {sec:.0f} s" for sec, what in cost[:top])
    return f"≈ {sum(c for c, _ in cost):.0f} s (Σ report p50 × {n} samples); largest: {shown}"


def bench_recipe(name: str, args: argparse.Namespace) -> tuple[list[str], list[str]]:
    from toolkit.core.modelio import load_model
    from toolkit.core.report import Report
    from toolkit.data.evaldata import calibration_data, dataset_for_model, eval_data
    from toolkit.pipeline.training import run_training

    lines = [f"## {name}", ""]
    needed = NEEDS_SHARED.get(name)
    if needed is not None and not needed.is_dir():
        return [*lines, f"Skipped: {needed} is absent (the shared MNIST data).", ""], []
    runs = args.work / "runs"
    run_dir = runs / name
    reused = args.reuse and (run_dir / "model.keras").is_file()
    clock = time.perf_counter()
    if not reused:
        overrides = {"train.epochs": 3} if args.quick else None
        run_dir = Path(run_training(name, overrides, runs_dir=runs, force=True).run_dir)
    train_s = time.perf_counter() - clock
    import json

    metrics = json.loads((run_dir / "metrics.json").read_text())
    export_dir = args.work / "export" / name
    wall, rss, rc = export_child(
        run_dir, export_dir, args.export_latency_runs, args.work / f"{name}-export.log"
    )
    if rc != 0:
        tail = (args.work / f"{name}-export.log").read_text().strip().splitlines()[-3:]
        return [*lines, f"`keras-edge export` failed (exit {rc}): " + " / ".join(tail), ""], []
    report = Report.load(export_dir)
    rows = rows_from_report(report)

    clock = time.perf_counter()
    loaded = load_model(run_dir)
    ds = dataset_for_model(loaded, None, 0)
    calibration = calibration_data(ds, CALIB_SAMPLES, 0, lambda x: x)  # as run_export picks
    test = eval_data(ds, "test", seed=0)
    ref = reference_of(loaded.model, test)
    base, findings = baseline_rows(loaded.model, calibration, args.work / "baselines" / name)
    for row in base:
        measure_accuracy(row, test, ref)
    rows += base
    baselines_s, clock, load = time.perf_counter() - clock, time.perf_counter(), os.getloadavg()
    measure_latency(
        [r for r in rows if (r.runtime, r.provider) in TIMED],
        test.x[0],
        args.latency_reps,
        args.latency_runs,
    )

    latency_s = time.perf_counter() - clock
    metric = report.metric_name
    verdicts = checks(rows)
    lines += [
        f"Data: {report.data.get('name')}; calibration: the same {CALIB_SAMPLES} training "
        "samples for our int8 artifacts and the plain int8 baseline.",
        f"Training: {'reused ' + str(run_dir) if reused else 'trained now'}; "
        f"{metrics.get('epochs_run')} epochs, {metrics.get('train_seconds')} s, "
        f"{metrics.get('params'):,} params.",
        f"Keras test {metric}: {metrics['test'][metric]:.4f} (metrics.json); re-measured by "
        f"validation: {report.reference['metric']['value']:.4f}; by this script: {ref.value:.4f}.",
        f"Export (`keras-edge export RUN --formats tflite,onnx,keras`, all precisions, validated "
        f"on every runtime): wall {wall:.1f} s, peak RSS {rss / 1024:,.0f} MiB (exit {rc}); its "
        f"validation inference {validation_cost(report)}.",
        f"This script's phases: {'train' if not reused else 'load run'} {train_s:.0f} s, export "
        f"{wall:.0f} s, baselines + their accuracy {baselines_s:.0f} s, 1-thread latency "
        f"{latency_s:.0f} s (1-min load average when latency started: {load[0]:.2f}).",
        "",
        "### Checks",
        "",
        *verdicts,
        "",
        "### Artifacts",
        "",
        *table(rows, metric),
        "",
    ]
    if findings:
        lines += ["Findings from the plain routes:", "", *[f"- {f}" for f in findings], ""]
    return lines, verdicts


def rss_folder_section(args: argparse.Namespace) -> list[str]:
    """bench/rss_folder.py's section: peak RSS of exporting a 50k-image folder (issue #8).

    A child process of its own, so its exports' memory is measured apart from this script's.
    """
    if args.skip_rss_folder:
        return []
    out = args.work / "rss_folder.md"
    out.unlink(missing_ok=True)
    script = Path(__file__).resolve().parent / "rss_folder.py"
    cmd = [sys.executable, str(script), "--images", str(args.rss_images), "--out", str(out)]
    print("bench: rss_folder", flush=True)
    rc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL).returncode
    if not out.is_file():
        return ["## Peak RSS: exporting an image folder", "", f"`{shlex.join(cmd)}` failed "
                f"(exit {rc}).", ""]  # fmt: skip
    return [out.read_text().rstrip("\n"), ""]


def optimize_section(args: argparse.Namespace) -> list[str]:
    """bench/optimize_bench.py on the mnist-full-cnn run trained above (about 14 min)."""
    run = args.work / "runs" / "mnist-full-cnn"
    if args.skip_optimize or not (run / "metrics.json").is_file():
        return []
    out = args.work / "optimize.md"
    out.unlink(missing_ok=True)
    script = Path(__file__).resolve().parent / "optimize_bench.py"
    cmd = [sys.executable, str(script), str(run), "--results", str(out)]
    print("bench: optimize", flush=True)
    rc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL).returncode
    if not out.is_file():
        return ["## Optimize benchmark", "", f"`{shlex.join(cmd)}` failed (exit {rc}).", ""]
    return [out.read_text().strip("\n"), ""]


def transfer_section(args: argparse.Namespace) -> list[str]:
    """samples/transfer_vww_cifar10.py run now (about 5 min), rendered by transfer_section.py."""
    if args.skip_transfer:
        return []
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import transfer_section as transfer

    out = args.work / "transfer_vww_cifar10.json"
    out.unlink(missing_ok=True)
    print("bench: transfer sample", flush=True)
    try:
        transfer.run_sample(out)
    except subprocess.CalledProcessError as err:
        return ["## Transfer learning", "", f"the sample failed (exit {err.returncode}).", ""]
    data = json.loads(out.read_text()) if out.is_file() else {}
    if "transfer" not in data:  # the sample skips without ../shared
        return ["## Transfer learning", "", "skipped: ../shared (vww_96.h5, CIFAR-10) absent.", ""]
    return transfer.section(data)


def own_data_section(args: argparse.Namespace) -> list[str]:
    """bench/own_data.py (issue #21): the one-line start on CIFAR-10 and the BatchNorm
    momentum comparison, in a child process (about 30-45 min on 2 cores)."""
    if args.skip_own_data:
        return []
    out = args.work / "own_data.md"
    out.unlink(missing_ok=True)
    script = Path(__file__).resolve().parent / "own_data.py"
    cmd = [sys.executable, str(script), "--out", str(out), "--with-old"]
    print("bench: own_data", flush=True)
    rc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL).returncode
    if not out.is_file():
        return ["## Training on your own data", "", f"`{shlex.join(cmd)}` failed (exit {rc}).", ""]
    return [out.read_text().rstrip("\n"), ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "RESULTS.md")
    parser.add_argument("--recipes", default=",".join(DEFAULT_RECIPES), help="comma list")
    parser.add_argument("--quick", action="store_true", help="train 3 epochs (smoke run)")
    parser.add_argument("--reuse", action="store_true", help="reuse bench/.work/runs/<recipe>")
    parser.add_argument("--work", type=Path, default=REPO / "bench" / ".work")
    parser.add_argument("--latency-reps", type=int, default=5)
    parser.add_argument("--latency-runs", type=int, default=100)
    parser.add_argument("--export-latency-runs", type=int, default=50)
    parser.add_argument("--rss-images", type=int, default=50_000, help="rss_folder's big folder")
    parser.add_argument("--skip-rss-folder", action="store_true", help="no peak-RSS section")
    parser.add_argument("--skip-transfer", action="store_true", help="no transfer section")
    parser.add_argument("--skip-optimize", action="store_true", help="no optimize section")
    parser.add_argument("--skip-own-data", action="store_true", help="no own-data section")
    args = parser.parse_args(argv)
    args.out, args.work = args.out.resolve(), args.work.resolve()
    command = shlex.join([os.path.relpath(sys.executable, Path.cwd()), *sys.argv])
    os.chdir(REPO)  # recipes name data relative to the repository root
    from toolkit.core.report import collect_versions
    from toolkit.core.rundir import atomic_write_text

    start, load_start = time.perf_counter(), os.getloadavg()
    sections, summary = [], []
    for name in [r.strip() for r in args.recipes.split(",") if r.strip()]:
        print(f"bench: {name}", flush=True)
        lines, verdicts = bench_recipe(name, args)
        sections += lines
        passed = sum("**PASS**" in v for v in verdicts)
        summary.append(f"{name} {passed}/{len(verdicts)} PASS" if verdicts else f"{name} skipped")
    sections += optimize_section(args)
    sections += transfer_section(args)
    sections += rss_folder_section(args)
    sections += own_data_section(args)
    minutes = (time.perf_counter() - start) / 60
    versions = ", ".join(f"{k} {v}" for k, v in collect_versions().items())
    head = [
        "# Export benchmark: keras-edge vs the plain converters"
        + (" (smoke run: --quick, 3 epochs)" if args.quick else ""),
        "",
        f"Generated {datetime.now(timezone.utc).isoformat(timespec='seconds')} by `{command}` "
        f"(run from the repository root; `make bench` runs the same) in {minutes:.1f} min. "
        "Every number below is computed by that run.",
        "",
        f"Checks: {'; '.join(summary)} (each recipe's list below says which and by how much).",
        "",
        *[f"- {line}" for line in machine()],
        f"- Load average (1 min) at start / end: {load_start[0]:.2f} / {os.getloadavg()[0]:.2f}",
        f"- Versions: {versions}",
        "",
        "How to read it: accuracy, drop (Keras minus artifact, percentage points), agreement "
        "(top-1 same as Keras) and max abs diff (vs Keras outputs) are on the full test split. "
        "Our rows come from the export's own report.json (every runtime it validates on); "
        "baseline rows are measured by this script the same way. p50 is batch 1, one thread "
        f"(LiteRT XNNPACK num_threads=1; ORT CPU intra-op 1, inter-op 1): the median over "
        f"{args.latency_reps} interleaved repetitions of the median of {args.latency_runs} calls. "
        "Two numbers each: through the toolkit's Python runner (float input quantized in numpy "
        "included) and the runtime call alone (set input, invoke, read output); the latency "
        "checks judge the latter, what the artifact costs on a device. Run this on an otherwise "
        "idle machine: other load swamps sub-0.1 ms timings. `—`: not timed (reference kernels, "
        "Keras).",
        "",
    ]
    atomic_write_text(args.out, "\n".join(head + sections))
    print(f"bench: wrote {args.out} in {minutes:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

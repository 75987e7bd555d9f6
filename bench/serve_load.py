"""Serving under load (issue #17): `keras-edge serve` on loopback vs the in-process runner.

    .venv/bin/python bench/serve_load.py --results bench/RESULTS.md             # ~5 min
    .venv/bin/python bench/serve_load.py --run RUN_DIR --seconds 20 --results bench/RESULTS.md
    .venv/bin/python bench/serve_load.py --render WORK/serve_load.json --results bench/RESULTS.md

1. Without `--run`, trains digits-cnn briefly (3 epochs) and exports tflite int8 from it;
   with `--run`, exports that run (or uses `--export DIR` as is).
2. Writes the digits test split's raw inputs to inputs.npy.
3. Starts `keras-edge serve EXPORT --port P` on a free loopback port, waits for /readyz, and
   runs `python -m toolkit.serve.loadtest` (32 closed-loop clients, `--seconds`, plus the
   in-process runner on the same artifact) against it; then again with dynamic batching
   (`--max-batch 8 --max-wait-ms 5`). Every number in the section comes from this run.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TITLE = "## Serving under load"
MODES = {"no batching": [], "dynamic batching": ["--max-batch", "8", "--max-wait-ms", "5"]}


def prepare(work: Path, run: Path | None, export: Path | None) -> Path:
    """An export dir with a tflite int8 artifact: given, exported from `run`, or trained here."""
    if export is not None:
        return export
    if run is None:
        from toolkit.pipeline.training import run_training

        overrides = {"train.epochs": 3, "train.tensorboard": False}
        run = run_training("digits-cnn", overrides, runs_dir=work, name="digits").run_dir
    from toolkit.pipeline.exporting import run_export

    out = work / "export"
    run_export(run, formats=["tflite"], precisions=["int8"], out=out, latency_runs=5, force=True)
    return out


def write_inputs(path: Path) -> int:
    from toolkit.data import DataSpec, load_dataset

    spec = DataSpec(name="digits", image_size=(16, 16), val_fraction=0.1, test_fraction=0.2)
    x = load_dataset(spec).test.take_x(None).astype(np.float32)
    np.save(path, x)
    return len(x)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(proc: subprocess.Popen, url: str, log: Path, timeout: float = 180) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"server not ready in {timeout}s: {log.read_text()[-2000:]}")


def one_mode(work: Path, export: Path, artifact: Path, inputs: Path, flags: list[str],
             clients: int, seconds: float, tag: str) -> dict:  # fmt: skip
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = work / f"serve-{tag}.log"
    cmd = [str(REPO / ".venv/bin/keras-edge"), "serve", str(export), "--port", str(port), *flags]
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT)
    try:
        _wait_ready(proc, url, log)
        client = [sys.executable, "-m", "toolkit.serve.loadtest", url, "--inputs", str(inputs),
                  "--clients", str(clients), "--seconds", str(seconds),
                  "--inproc", str(artifact)]  # fmt: skip
        done = subprocess.run(client, cwd=REPO, capture_output=True, text=True)
        if not done.stdout.strip():
            raise RuntimeError(f"load client failed ({done.returncode}): {done.stderr[-2000:]}")
        result = json.loads(done.stdout)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    result["flags"] = flags
    return result


def section(data: dict) -> list[str]:
    before, after = data["load_before"], data["load_after"]
    lines = [
        TITLE,
        "",
        f"`{data['command']}` on {data['machine']}, {data['date']} (load average "
        f"{before[0]:.2f} / {before[1]:.2f} / {before[2]:.2f} before, "
        f"{after[0]:.2f} / {after[1]:.2f} / {after[2]:.2f} after; the machine is shared).",
        f"Artifact `{data['artifact']}` served by `keras-edge serve` on loopback; clients are "
        "closed-loop (`toolkit.serve.loadtest`, bounded asyncio httpx, one JSON sample per "
        f"request, {data['samples']} digits test inputs). In-process: the same artifact's "
        "Runner, batch 1, one thread, same samples. Ratio = in-process samples/s / server req/s "
        "(the server's overhead); the load client and the server share the machine's cores.",
        "",
        "| mode | clients | seconds | requests | errors | req/s | p50 ms | p99 ms "
        "| in-process samples/s | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, r in data["modes"].items():
        s = r["server"]
        flags = " ".join(r["flags"]) or "(defaults)"
        lines.append(
            f"| {mode} `{flags}` | {s['clients']} | {s['seconds']} | {s['requests']} | "
            f"{s['errors']} | {s['throughput_rps']} | {s['p50_ms']} | {s['p99_ms']} | "
            f"{r['inproc']['throughput_sps']} | {r['overhead_ratio']} |"
        )
    kinds = {
        m: r["server"]["error_kinds"] for m, r in data["modes"].items() if r["server"]["errors"]
    }
    if kinds:
        lines += ["", f"Errors by kind: {kinds}."]
    return [*lines, ""]


def replace_section(results: Path, lines: list[str]) -> None:
    from sections import replace_section as replace  # bench/sections.py (this script's dir)

    replace(results, TITLE, lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a trained run to export (default: train one)")
    parser.add_argument("--export", type=Path, help="an export dir to serve as is")
    parser.add_argument("--seconds", type=float, default=60.0, help="load per mode")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--work", type=Path, default=None, help="keep the work here")
    parser.add_argument("--results", type=Path, help="replace the section in this RESULTS.md")
    parser.add_argument("--render", type=Path, help="re-render the section from a serve_load.json")
    args = parser.parse_args()
    if args.render:
        lines = section(json.loads(args.render.read_text()))
        print("\n".join(lines))
        if args.results:
            replace_section(args.results, lines)
        return 0
    work = args.work or Path(tempfile.mkdtemp(prefix="keras-edge-serve-load-"))
    work.mkdir(parents=True, exist_ok=True)
    export = prepare(work, args.run, args.export)
    artifact = sorted(export.glob("*int8*.tflite"))[0]
    inputs = work / "inputs.npy"
    samples = write_inputs(inputs)
    load_before = os.getloadavg()
    modes = {
        mode: one_mode(work, export, artifact, inputs, flags, args.clients, args.seconds, str(i))
        for i, (mode, flags) in enumerate(MODES.items())
    }
    argv = " ".join(a if a != str(work) else "WORK" for a in sys.argv[1:])
    data = {"command": f"python bench/serve_load.py {argv}".strip(),
            "machine": f"{os.cpu_count()} cores, {os.uname().machine}",
            "date": time.strftime("%Y-%m-%d"), "load_before": load_before,
            "load_after": os.getloadavg(), "artifact": artifact.name, "samples": samples,
            "modes": modes}  # fmt: skip
    (work / "serve_load.json").write_text(json.dumps(data, indent=1))
    lines = section(data)
    print("\n".join(lines))
    if args.results:
        replace_section(args.results, lines)
    return 0 if all(r["server"]["errors"] == 0 for r in modes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

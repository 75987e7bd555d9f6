"""Prove a bundle on the emulated Raspberry Pi: same predictions as x86 LiteRT, same int8 bits.

    python pi/compare.py BUNDLE_DIR [--run RUN_DIR] [--limit N] [--json OUT.json]

Runs the bundle's own run.py twice on the whole test split of the run's dataset: here (x86-64)
and under qemu-aarch64 in the Debian bookworm arm64 sysroot (pi/run_in_pi.sh), for every model
and every kernel set its self-test checks (LiteRT: XNNPACK and the reference kernels), then
compares raw outputs and top-1 classes, and runs `run.py --selftest` on the emulated Pi.
Passing means: top-1 equal on 100 % of inputs and raw outputs within the self-test tolerance
(int8: bit-identical, XNNPACK and reference kernels alike, once the bundle runs the softmax on
the host as the raspberry-pi profile does; otherwise XNNPACK-path int8 within one step).
Exit 0 when everything matched, 1 otherwise, 75 when the sysroot cannot be built here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

PI_DIR = Path(__file__).resolve().parent


def build_sysroot(python: str = sys.executable) -> subprocess.CompletedProcess:
    """pi/build_sysroot.sh (cached); stdout's last line is the sysroot dir."""
    env = {**os.environ, "PYTHON": python}
    return subprocess.run(
        ["bash", str(PI_DIR / "build_sysroot.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )


def run_pi(bundle: Path, *args: str, sysroot: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PI_SYSROOT": str(sysroot)}
    return subprocess.run(
        ["bash", str(PI_DIR / "run_in_pi.sh"), str(bundle), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )


def run_here(bundle: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(bundle / "run.py"), *args],
        capture_output=True,
        text=True,
        timeout=1800,
    )


def test_split(run_dir: Path, limit: int | None) -> tuple[np.ndarray, np.ndarray, str]:
    """The raw test inputs and labels of the dataset the run was trained on."""
    from toolkit.data import DataSpec, load_dataset
    from toolkit.data.preprocess import load_input_spec

    spec = load_input_spec(run_dir) or load_input_spec(run_dir / "export")
    if not spec or not spec.get("dataset"):
        raise SystemExit(f"no input_spec.json with a dataset in {run_dir}; pass --run RUN_DIR")
    data = dict(spec["dataset"])
    if data.get("image_size") is not None:
        data["image_size"] = tuple(data["image_size"])
    test = load_dataset(DataSpec(**data)).test
    x = test.take_x(limit, seed=0).astype(np.float32)
    y = np.asarray(test.y)
    if limit is not None and limit < len(y):
        y = y[np.sort(np.random.default_rng(0).choice(len(y), size=limit, replace=False))]
    return x, y, f"{data['name']} test split ({len(x)} samples)"


def _check(proc: subprocess.CompletedProcess, what: str) -> None:
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def _row(name: str, delegate: str | None, a: np.ndarray, b: np.ndarray, y: np.ndarray) -> dict:
    top_a, top_b = a.reshape(len(a), -1).argmax(1), b.reshape(len(b), -1).argmax(1)
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return {
        "model": name,
        "kernels": delegate or "cpu",
        "dtype": str(a.dtype),
        "samples": len(a),
        "top1_equal": float(np.mean(top_a == top_b)),
        "bit_identical": bool(a.dtype == b.dtype and np.array_equal(a, b)),
        "values_differing": int((diff > 0).sum()),
        "values": int(diff.size),
        "max_abs_diff": float(diff.max()),
        "accuracy_x86": float(np.mean(top_a == y)),
        "accuracy_arm64": float(np.mean(top_b == y)),
    }


def compare(
    bundle: Path,
    run_dir: Path,
    sysroot: Path,
    limit: int | None = None,
    models: list[str] | None = None,
    reference_limit: int | None = None,
) -> dict[str, Any]:
    """Each model (and each LiteRT kernel set its self-test checks) on the test split, x86 vs
    emulated arm64, plus the emulated self-test. `reference_limit` caps the inputs given to
    LiteRT's slow reference kernels."""
    bundle = bundle.resolve()
    manifest = json.loads((bundle / "manifest.json").read_text())
    x, y, data_name = test_split(run_dir, limit)
    result: dict[str, Any] = {"bundle": str(bundle), "data": data_name, "models": []}
    with tempfile.TemporaryDirectory(prefix="keras-edge-pi-") as tmp:
        start = time.perf_counter()
        selftest = run_pi(bundle, "--selftest", sysroot=sysroot)
        result["selftest_s"] = round(time.perf_counter() - start, 1)
        result["selftest_output"] = selftest.stdout.strip()
        result["selftest_ok"] = selftest.returncode == 0
        for model in manifest["models"]:
            if models and model["name"] not in models:
                continue
            for check in model["selftest"]["checks"]:
                delegate = check.get("delegate")
                n = reference_limit if delegate == "reference" and reference_limit else len(x)
                inputs = Path(tmp) / f"inputs-{n}.npy"
                np.save(inputs, x[:n])
                args = ["--model", model["name"], *(["--delegate", delegate] if delegate else [])]
                here, pi = Path(tmp) / "x86.npy", Path(tmp) / "pi.npy"
                _check(run_here(bundle, *args, "--save-raw", str(here), str(inputs)), "x86 run")
                start = time.perf_counter()
                proc = run_pi(bundle, *args, "--save-raw", str(pi), str(inputs), sysroot=sysroot)
                seconds = time.perf_counter() - start
                _check(proc, f"emulated arm64 run of {model['name']}")
                row = _row(model["name"], delegate, np.load(here), np.load(pi), y[:n])
                row["arm64_wall_s"] = round(seconds, 1)
                row["ok"] = row["top1_equal"] == 1.0 and row["max_abs_diff"] <= check["atol"]
                result["models"].append(row)
    result["ok"] = result["selftest_ok"] and all(m["ok"] for m in result["models"])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--run", type=Path, help="run dir (default: BUNDLE/../..)")
    parser.add_argument("--limit", type=int, help="test inputs to use (default: all)")
    parser.add_argument("--reference-limit", type=int, help="inputs for the reference kernels")
    parser.add_argument("--json", type=Path, help="also write the result as JSON")
    args = parser.parse_args()
    built = build_sysroot()
    if built.returncode != 0:
        sys.stderr.write(built.stderr[-2000:])
        return built.returncode
    sysroot = Path(built.stdout.strip().splitlines()[-1])
    run_dir = args.run or args.bundle.resolve().parents[1]
    result = compare(args.bundle, run_dir, sysroot, args.limit, None, args.reference_limit)
    print(result["selftest_output"])
    for m in result["models"]:
        differ = f"{m['values_differing']} of {m['values']} values differ"
        same = "bit-identical" if m["bit_identical"] else f"{differ} (max {m['max_abs_diff']:.3g})"
        print(
            f"{m['model']} [{m['kernels']}]: {m['samples']} inputs of {result['data']}, "
            f"top-1 equal {m['top1_equal']:.1%}, {m['dtype']} outputs {same}, accuracy "
            f"x86 {m['accuracy_x86']:.4f} / arm64 {m['accuracy_arm64']:.4f}, "
            f"emulated run {m['arm64_wall_s']} s"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print("emulated Raspberry Pi: " + ("MATCH" if result["ok"] else "MISMATCH"))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

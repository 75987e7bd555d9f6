"""The emulated Raspberry Pi proof: raspberry-pi bundles on Debian bookworm arm64 under qemu.

Each bundle's own run.py runs on the whole test split here (x86-64) and on the emulated Pi:
top-1 must agree on 100 % of inputs and the int8 outputs must be bit-identical, with XNNPACK
(what ships) and with LiteRT's reference kernels. The raspberry-pi profile bundles the int8
model without its softmax (run.py applies it): the last test shows why. The
sysroot is built once and cached (~/.cache/keras-edge/pi-sysroot, see pi/build_sysroot.sh);
the tests skip only when it cannot be built here (no Debian archive or PyPI).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _compare_module():
    spec = importlib.util.spec_from_file_location("pi_compare", REPO / "pi" / "compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


compare = _compare_module()


@pytest.fixture(scope="module")
def sysroot() -> Path:
    built = compare.build_sysroot(sys.executable)
    if built.returncode == 75:
        reason = (built.stderr.strip().splitlines() or ["unknown"])[-1]
        pytest.skip(f"emulated Raspberry Pi sysroot cannot be built here: {reason}")
    assert built.returncode == 0, built.stderr[-3000:]
    return Path(built.stdout.strip().splitlines()[-1])


def _bundle(recipe: str, overrides: dict, runs: Path) -> tuple[Path, Path]:
    from toolkit.pipeline.packaging import run_package
    from toolkit.pipeline.training import run_training

    run_dir = run_training(recipe, overrides, runs_dir=runs).run_dir
    # the proof is parity between x86 and arm64, not the budget of a short training run
    result = run_package(run_dir, "raspberry-pi", ignore_budget=True)
    return run_dir, result.bundle_dir


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> tuple[Path, Path]:
    return _bundle("digits-cnn", {"train.epochs": 8}, tmp_path_factory.mktemp("runs"))


def _assert_parity(result: dict, min_samples: int) -> None:
    """Top-1 equal on every input; int8 outputs bit-identical with XNNPACK and reference kernels."""
    print(json.dumps(result, indent=2))  # shown with -s: the numbers for the notes
    assert result["selftest_ok"], result["selftest_output"]
    assert "aarch64, Python 3.11" in result["selftest_output"]
    rows = {(m["model"], m["kernels"]): m for m in result["models"]}
    xnnpack, reference = rows["tflite-int8", "xnnpack"], rows["tflite-int8", "reference"]
    assert xnnpack["samples"] >= min_samples and xnnpack["dtype"] == "int8"
    assert xnnpack["top1_equal"] == 1.0 and xnnpack["bit_identical"], xnnpack
    assert xnnpack["accuracy_x86"] == xnnpack["accuracy_arm64"]
    assert reference["bit_identical"] and reference["top1_equal"] == 1.0, reference
    if ("onnx-int8", "cpu") in rows:
        assert rows["onnx-int8", "cpu"]["top1_equal"] == 1.0, rows["onnx-int8", "cpu"]
    assert result["ok"]


def test_digits_bundle_matches_x86_on_emulated_arm64(sysroot, digits) -> None:
    run_dir, bundle = digits
    _assert_parity(compare.compare(bundle, run_dir, sysroot), min_samples=350)


def test_images_predict_the_same_on_emulated_arm64(sysroot, digits) -> None:
    _, bundle = digits
    images = [str(p) for p in sorted((REPO / "samples" / "digits").glob("*.png"))]
    here = compare.run_here(bundle, *images, "--json")
    pi = compare.run_pi(bundle, *images, "--json", sysroot=sysroot)
    assert here.returncode == 0 and pi.returncode == 0, pi.stderr[-2000:]
    assert json.loads(pi.stdout) == json.loads(here.stdout)
    assert "converted L 64x64 -> L 16x16" in pi.stderr


def test_tampered_bundle_is_refused_on_emulated_arm64(sysroot, digits, tmp_path) -> None:
    import shutil

    _, bundle = digits
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    model = copy / "model-int8.tflite"
    data = bytearray(model.read_bytes())
    data[-100] ^= 0xFF
    model.write_bytes(bytes(data))
    proc = compare.run_pi(copy, "--selftest", sysroot=sysroot)
    assert proc.returncode == 1 and "does not match its sha256" in proc.stderr, proc.stderr


def test_mnist_full_bundle_matches_x86_on_emulated_arm64(sysroot, tmp_path_factory) -> None:
    data = REPO.parent / "shared" / "data" / "mnist-test"
    if not data.is_dir():
        pytest.skip(f"{data} is absent (the 10k MNIST IDX files)")
    overrides = {"dataset.name": f"mnist-idx:{data}", "train.epochs": 2}
    run_dir, bundle = _bundle("mnist-full-cnn", overrides, tmp_path_factory.mktemp("mnist"))
    # CI budget: the shipped path (XNNPACK) on the first 1,000 of the 2,000 test inputs, the
    # slow reference kernels on 100; the ONNX alternative on the digits bundle only (the
    # digits bundle runs its whole split; pi/compare.py runs everything).
    result = compare.compare(bundle, run_dir, sysroot, models=["tflite-int8"], limit=1000,
                             reference_limit=100)  # fmt: skip
    _assert_parity(result, min_samples=1000)


def test_run_in_pi_script_needs_a_bundle() -> None:
    proc = subprocess.run(
        ["bash", str(REPO / "pi" / "run_in_pi.sh"), "/nonexistent"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "usage" in proc.stderr


def test_which_int8_kernels_round_the_same_on_arm64(sysroot, tmp_path) -> None:
    """The one known x86/arm64 difference is LiteRT's optimized int8 SOFTMAX (a float LUT);
    XNNPACK's int8 conv, dense, mean and max-pool kernels are bit-identical across the two."""
    import shutil

    import keras
    import numpy as np

    from toolkit.convert.tflite import export_tflite

    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    ops = {
        "conv": ((8, 8, 16), keras.layers.Conv2D(32, 3, padding="same", activation="relu")),
        "dense": ((64,), keras.layers.Dense(64, activation="relu")),
        "mean": ((4, 4, 64), keras.layers.GlobalAveragePooling2D()),
        "maxpool": ((8, 8, 16), keras.layers.MaxPooling2D()),
        "softmax": ((10,), keras.layers.Softmax()),
    }
    for name, (shape, layer) in ops.items():
        model = keras.Sequential([keras.Input(shape), layer])
        calib = 2 * rng.normal(size=(64, *shape)).astype(np.float32)
        export_tflite(model, tmp_path / f"{name}.tflite", "int8", calibration=calib)
        np.save(tmp_path / f"{name}-x.npy", 2 * rng.normal(size=(500, *shape)).astype(np.float32))
    shutil.copy(REPO / "pi" / "op_parity.py", tmp_path / "run.py")
    names = ",".join(ops)
    here = subprocess.run([sys.executable, str(tmp_path / "run.py"), str(tmp_path), names],
                          capture_output=True, text=True)  # fmt: skip
    pi = compare.run_pi(tmp_path, str(tmp_path), names, sysroot=sysroot)
    assert here.returncode == 0 and pi.returncode == 0, pi.stderr[-2000:]
    diffs = {}
    for name in ops:
        for kind in ("default", "reference"):
            x86 = np.load(tmp_path / f"{name}-{kind}-x86_64.npy").astype(np.int32)
            arm = np.load(tmp_path / f"{name}-{kind}-aarch64.npy").astype(np.int32)
            diffs[name, kind] = int(np.abs(x86 - arm).max())
    print(diffs)
    assert all(diffs[name, "reference"] == 0 for name in ops), diffs
    assert all(diffs[name, "default"] == 0 for name in ops if name != "softmax"), diffs
    assert diffs["softmax", "default"] <= 1, diffs

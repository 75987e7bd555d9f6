"""The package stage: every target bundles a real trained model; bundles check themselves."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from toolkit.core.errors import GateFailed, UserError

TINY = {
    "name": "tiny",
    "dataset": {"name": "digits", "image_size": [8, 8], "max_samples": 700},
    "model": {"builder": "cnn", "args": {"filters": [8, 16], "dense": 16}},
    "train": {"epochs": 5, "batch_size": 32, "tensorboard": False},
}
TARGETS = ("raspberry-pi", "android", "coral-edgetpu", "jetson", "linux-x86")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from toolkit.core.recipe import parse_recipe
    from toolkit.train.stage import train

    return train(parse_recipe(TINY), tmp_path_factory.mktemp("runs")).run_dir


@pytest.fixture(scope="module")
def export_dir(run_dir, tmp_path_factory) -> Path:
    """One export holding every artifact any built-in target asks for."""
    from toolkit.core.targets import list_targets
    from toolkit.pipeline.exporting import run_export

    wanted = sorted({a for t in list_targets() for a in t.artifacts})
    out = tmp_path_factory.mktemp("exp") / "export"
    run_export(run_dir, formats=wanted, out=out, latency_runs=2)
    return out


@pytest.fixture(scope="module")
def bundles(export_dir, tmp_path_factory) -> dict:
    from toolkit.package.stage import package

    out = tmp_path_factory.mktemp("bundles")
    return {t: package(export_dir, t, out=out, ignore_budget=True) for t in TARGETS}


def run_py(bundle: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(bundle / "run.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_targets_are_listed_and_validated(cli, tmp_path) -> None:
    from toolkit.core.targets import list_targets, load_target

    firmware = {"mcu-cortex-m", "esp32-s3"}  # microcontroller targets: tests/test_tflm.py
    assert [t.name for t in list_targets()] == sorted(set(TARGETS) | firmware)
    listed = cli("targets", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {t["name"] for t in json.loads(listed.stdout)} == set(TARGETS) | firmware
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndescription: d\nplatform: p\nartifact: tflite-int8\nio_dtype: uint8\n")
    with pytest.raises(UserError, match="io_dtype uint8 but tflite-int8 has int8 I/O"):
        load_target(bad)
    bad.write_text("name: x\ndescription: d\nplatform: p\nartifact: tflite-int9\nio_dtype: int8\n")
    with pytest.raises(UserError, match="unknown artifact 'tflite-int9'"):
        load_target(bad)
    unknown = cli("package", str(tmp_path), "--target", "rasberry-pi")
    assert unknown.returncode == 2 and "did you mean 'raspberry-pi'" in unknown.stderr


@pytest.mark.parametrize("target", TARGETS)
def test_every_target_builds_a_bundle_that_passes_its_selftest(bundles, target) -> None:
    result = bundles[target]
    bundle, manifest = result.bundle_dir, result.manifest
    for name in ("run.py", "manifest.json", "labels.txt", "requirements.txt", "README.md"):
        assert (bundle / name).is_file(), name
    assert manifest["schema"] == 1 and manifest["target"]["name"] == target
    assert manifest["labels"] == [str(i) for i in range(10)]
    assert (bundle / "labels.txt").read_text().split() == manifest["labels"]
    primary = manifest["models"][0]
    assert primary["primary"] and primary["validation"]["metric"]["name"] == "accuracy"
    assert manifest["input"]["value_range"] == [0.0, 16.0]
    assert manifest["input"]["color_mode"] == "grayscale"
    assert set(manifest["versions"]) >= {"tensorflow", "ai_edge_litert", "packaged_with"}
    files = manifest["files"]
    assert set(files) == {
        p.relative_to(bundle).as_posix()
        for p in bundle.rglob("*")
        if p.is_file() and p.name != "manifest.json"
    }
    assert all(not Path(rel).is_absolute() and ".." not in rel for rel in files)
    if primary["precision"] in ("int8", "uint8"):
        q = primary["inputs"][0]["quantization"]
        assert q["scale"] > 0 and primary["inputs"][0]["dtype"] == primary["precision"]
    with zipfile.ZipFile(result.zip_path) as zf:
        assert sorted(zf.namelist()) == [
            f"{manifest['name']}-{target}/{r}" for r in sorted([*files, "manifest.json"])
        ]
    check = run_py(bundle, "--selftest")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "sha256 OK" in check.stdout and "selftest passed" in check.stdout
    if primary["outputs"][0]["dtype"] in ("int8", "uint8"):
        assert "bit-identical" in check.stdout


def test_raspberry_pi_bundle_runs_softmax_on_the_host(bundles, export_dir) -> None:
    """The Pi's int8 model ends at its logits (the same integers on every CPU) and run.py
    applies the softmax: same top-1 as the validated artifact, probabilities that sum to 1."""
    from toolkit.core.model_stats import tflite_stats
    from toolkit.runtimes import open_runner

    bundle, manifest = bundles["raspberry-pi"].bundle_dir, bundles["raspberry-pi"].manifest
    primary = manifest["models"][0]
    assert (
        primary["postprocess"] == "softmax"
        and "without its final SOFTMAX" in primary["derived_from"]
    )
    assert "SOFTMAX" not in tflite_stats(bundle / primary["file"])["ops"]
    assert "SOFTMAX" in tflite_stats(export_dir / "model-int8.tflite")["ops"]
    assert all(c["atol"] == 0 for c in primary["selftest"]["checks"])  # XNNPACK too
    android = bundles["android"].manifest["models"][0]
    assert "postprocess" not in android  # the profile did not ask for it

    x = np.load(bundle / "selftest" / "inputs.npy")
    raw = bundle / "raw.npy"
    inputs = []
    for i, sample in enumerate(x[:8]):
        np.save(bundle.parent / f"s{i}.npy", sample)
        inputs.append(str(bundle.parent / f"s{i}.npy"))
    out = run_py(bundle, *inputs, "--json", "--top-k", "10", "--save-raw", str(raw))
    assert out.returncode == 0, out.stderr
    top = json.loads(out.stdout)
    validated = open_runner(export_dir / "model-int8.tflite")
    try:
        probs = validated.predict(x[:8])
    finally:
        validated.close()
    for row, p in zip(top, probs, strict=True):
        assert abs(sum(t["score"] for t in row["top"]) - 1.0) < 1e-4
        assert row["top"][0]["index"] == int(np.argmax(p))
        assert max(abs(t["score"] - float(p[t["index"]])) for t in row["top"]) < 0.02


def test_coral_bundle_is_full_integer_with_only_edgetpu_ops(bundles, export_dir) -> None:
    from toolkit.package.edgetpu_ops import SUPPORTED_OPS, check_edgetpu

    result = bundles["coral-edgetpu"]
    check = check_edgetpu(result.bundle_dir / "model-uint8.tflite")
    assert check.ok and check.full_integer, check.problems
    assert check.io_dtypes == {"inputs": ["uint8"], "outputs": ["uint8"]}
    assert set(check.ops) <= set(SUPPORTED_OPS) and "CONV_2D" in check.ops
    assert result.manifest["edgetpu"]["ok"] is True
    assert "Edge TPU check" in (result.bundle_dir / "README.md").read_text()
    # negative controls: a float model and a float-I/O model are refused with reasons
    fp16 = check_edgetpu(export_dir / "model-fp16.tflite")
    assert not fp16.ok and not fp16.full_integer
    assert any("not 8-bit" in p for p in fp16.problems)


def test_tampered_model_is_refused(bundles, tmp_path) -> None:
    bundle = tmp_path / "b"
    shutil.copytree(bundles["raspberry-pi"].bundle_dir, bundle)
    model = bundle / "model-int8.tflite"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    for args in (["--selftest"], ["selftest/inputs.npy"], ["--bench"]):
        proc = run_py(bundle, *args)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "model-int8.tflite does not match its sha256" in proc.stderr
        assert "refusing to run" in proc.stderr and "Traceback" not in proc.stderr


def test_manifest_paths_cannot_leave_the_bundle(bundles, tmp_path) -> None:
    from toolkit.package.bundle import safe_relpath

    bundle = tmp_path / "b"
    shutil.copytree(bundles["raspberry-pi"].bundle_dir, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["models"][0]["file"] = "../../etc/passwd"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    proc = run_py(bundle, "selftest/inputs.npy")
    assert proc.returncode == 1 and "leaves the bundle" in proc.stderr, proc.stderr
    for bad in ("../x", "/etc/passwd", "a/../../x", ""):
        with pytest.raises(UserError):
            safe_relpath(tmp_path, bad)
    assert safe_relpath(tmp_path, "selftest/inputs.npy") == "selftest/inputs.npy"


def test_images_of_any_size_and_mode_are_converted(bundles, tmp_path) -> None:
    from PIL import Image, ImageDraw

    bundle = bundles["raspberry-pi"].bundle_dir
    big = Image.new("RGBA", (40, 30), (0, 0, 0, 0))
    ImageDraw.Draw(big).ellipse((8, 4, 32, 26), outline=(0, 0, 0, 255), width=4)
    big.save(tmp_path / "rgba.png")
    small = Image.new("L", (8, 8), 255)
    ImageDraw.Draw(small).ellipse((1, 1, 6, 6), outline=0)
    small.save(tmp_path / "gray.png")
    wide = (np.asarray(small, np.uint16) * 257).astype(np.uint16)
    Image.fromarray(wide).save(tmp_path / "gray16.png")  # 16-bit: 65535 -> 255
    images = [str(tmp_path / n) for n in ("rgba.png", "gray.png", "gray16.png")]
    proc = run_py(bundle, *images, "--json", "--top-k", "2")
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert [r["input"] for r in results] == ["rgba.png", "gray.png", "gray16.png"]
    assert all(len(r["top"]) == 2 and r["top"][0]["label"] in "0123456789" for r in results)
    assert "rgba.png: converted RGBA 40x30 -> L 8x8" in proc.stderr
    assert "gray.png: converted" not in proc.stderr  # already the model's size and mode
    assert results[1]["top"] == results[2]["top"]  # the 16-bit copy reads as the same image
    spec = bundles["raspberry-pi"].manifest["input"]
    from toolkit.package.bundle import load_run_module

    x, _ = load_run_module().load_image(tmp_path / "gray.png", spec)
    assert x.shape == (8, 8, 1) and x.dtype == np.float32 and 0.0 <= x.min() <= x.max() <= 16.0


def test_missing_runtime_names_the_pip_package(bundles, tmp_path) -> None:
    for module in ("ai_edge_litert", "tflite_runtime", "onnxruntime"):
        (tmp_path / module).mkdir()
        (tmp_path / module / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = run_py(bundles["raspberry-pi"].bundle_dir, "selftest/inputs.npy", env=env)
    assert proc.returncode == 2, proc.stderr
    assert "pip install ai-edge-litert" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_py(bundles["jetson"].bundle_dir, "selftest/inputs.npy", env=env)
    assert proc.returncode == 2 and "pip install onnxruntime-gpu" in proc.stderr, proc.stderr


def test_same_inputs_give_a_byte_identical_zip(export_dir, bundles, tmp_path) -> None:
    from toolkit.package.stage import package

    again = package(export_dir, "raspberry-pi", out=tmp_path, ignore_budget=True)
    first = bundles["raspberry-pi"].zip_path
    assert again.zip_path.read_bytes() == first.read_bytes()
    with zipfile.ZipFile(first) as zf:
        infos = zf.infolist()
    assert [i.filename for i in infos] == sorted(i.filename for i in infos)
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    modes = {i.filename.split("/", 1)[1]: i.external_attr >> 16 for i in infos}
    assert modes.pop("run.py") == 0o100755 and set(modes.values()) == {0o100644}
    with pytest.raises(UserError, match="already exists"):
        package(export_dir, "raspberry-pi", out=tmp_path)


def test_budget_gate_refuses_an_artifact_over_budget(export_dir, tmp_path) -> None:
    from toolkit.core.targets import load_target
    from toolkit.package.stage import package

    copy = tmp_path / "export"
    shutil.copytree(export_dir, copy)
    report = json.loads((copy / "report.json").read_text())
    for row in report["artifacts"]:
        if row["name"] == "tflite-int8":
            row["drop"] = 0.3
    (copy / "report.json").write_text(json.dumps(report))
    pi = load_target("raspberry-pi")
    with pytest.raises(GateFailed, match=r"over the raspberry-pi budget 0\.02"):
        package(copy, pi, out=tmp_path / "b")
    assert package(copy, pi, out=tmp_path / "c", ignore_budget=True).zip_path.is_file()


def test_package_cli_exports_the_targets_artifact_when_the_run_lacks_it(run_dir, cli, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    proc = cli("package", str(run), "--target", "coral-edgetpu")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "has no tflite-uint8: exporting tflite-uint8" in proc.stderr
    assert (run / "export" / "model-uint8.tflite").is_file()
    assert (run / "bundles" / "coral-edgetpu.zip").is_file()
    assert "Edge TPU op check: passed" in proc.stdout
    check = run_py(run / "bundles" / "coral-edgetpu", "--selftest")
    assert check.returncode == 0 and "bit-identical" in check.stdout, check.stdout


def test_profile_drift_limits_reach_the_manifest(export_dir, tmp_path) -> None:
    from toolkit.core.targets import load_target, parse_target
    from toolkit.package.stage import package

    pi = load_target("raspberry-pi").model_dump()
    with pytest.raises(UserError, match="drift_psi"):
        parse_target({**pi, "drift_psi": 0})
    target = parse_target({**pi, "drift_psi": 0.35}, "custom.yaml")
    manifest = package(export_dir, target, out=tmp_path, ignore_budget=True).manifest
    assert manifest["drift"]["threshold"] == {"psi": 0.35, "ks": 0.1}


def test_a_per_tensor_profile_refuses_per_channel_weights_and_gets_them(
    export_dir, run_dir, tmp_path
) -> None:
    """`granularity: per-tensor` in a profile is checked on the file: the per-channel export is
    refused with the flag to use, and packaging a run exports per tensor for it."""
    from toolkit.core.model_stats import weight_granularity
    from toolkit.core.targets import load_target, parse_target
    from toolkit.package.stage import package
    from toolkit.pipeline.packaging import run_package

    base = load_target("linux-x86").model_dump()
    npu = parse_target({**base, "name": "npu", "granularity": "per-tensor"}, "npu.yaml")
    assert weight_granularity(export_dir / "model-int8.tflite") == "per-channel"
    with pytest.raises(
        UserError,
        match="per-channel weight scales; npu takes per-tensor: "
        "re-export with --granularity per-tensor",
    ):
        package(export_dir, npu, out=tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    result = run_package(run, npu, out=tmp_path / "ok", ignore_budget=True)
    assert weight_granularity(run / "export" / "model-int8.tflite") == "per-tensor"
    assert result.zip_path.is_file()

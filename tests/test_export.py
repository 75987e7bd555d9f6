"""The export stage end to end: real conversions, real runtimes, report.json, gates, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from _badinput import one_error_line

from toolkit.core.errors import UserError

DESIGN_ARTIFACT_KEYS = {
    "name", "format", "precision", "path", "size_bytes", "gzip_bytes", "runtime", "provider",
    "metric", "drop", "agreement", "max_abs_diff", "latency_ms",
}  # fmt: skip
TINY = {
    "name": "tiny",
    "dataset": {"name": "digits", "image_size": [8, 8], "max_samples": 700},
    "model": {"builder": "cnn", "args": {"filters": [8, 16], "dense": 16}},
    "train": {"epochs": 4, "batch_size": 32, "tensorboard": False},
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from toolkit.core.recipe import parse_recipe
    from toolkit.train.stage import train

    return train(parse_recipe(TINY), tmp_path_factory.mktemp("runs")).run_dir


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    from toolkit.pipeline.exporting import run_export

    out = tmp_path_factory.mktemp("exp") / "export"
    result, report = run_export(
        run_dir, formats=["keras", "tflite", "onnx"], precisions=["fp32", "int8"], out=out,
        latency_runs=5,
    )  # fmt: skip
    return out, result, report


def test_report_has_the_design_keys_for_every_artifact(exported) -> None:
    out, _, _ = exported
    data = json.loads((out / "report.json").read_text())
    assert data["reference"]["name"] == "keras-fp32"
    assert data["reference"]["metric"]["name"] == "accuracy"
    names = {(a["name"], a["runtime"], a["provider"]) for a in data["artifacts"]}
    assert ("tflite-int8", "litert", "xnnpack") in names
    assert ("tflite-int8", "litert", "reference") in names
    assert ("onnx-int8", "onnxruntime", "CPUExecutionProvider") in names
    for art in data["artifacts"]:
        assert set(art) >= DESIGN_ARTIFACT_KEYS, art
        assert art["latency_ms"]["p50"] <= art["latency_ms"]["p90"]
    assert set(data["versions"]) >= {"tensorflow", "keras", "onnxruntime", "ai_edge_litert"}
    assert (out / "report.md").is_file() and (out / "plots" / "report.png").stat().st_size > 0
    assert (out / "input_spec.json").is_file()  # the spec travels with the artifacts
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no partial dirs


def test_float_artifacts_match_and_int8_keeps_accuracy(exported) -> None:
    _, _, report = exported
    for art in report.artifacts:
        if art.precision == "fp32":
            assert art.max_abs_diff <= 1e-5, art
        if art.precision == "int8":
            assert art.drop <= 0.02 and art.agreement >= 0.95, art
    tfl = {a.precision: a.size_bytes for a in report.artifacts if a.format == "tflite"}
    assert tfl["int8"] < 0.6 * tfl["fp32"]  # tiny model: flatbuffer overhead keeps it above 1/4


def test_validate_re_runs_from_disk_and_gates_on_a_broken_artifact(exported, cli, tmp_path):
    out, _, _ = exported
    copy = tmp_path / "run" / "export"
    shutil.copytree(out, copy)
    shutil.copy(out / "model.keras", copy / "model.keras")
    ok = cli("validate", str(copy), "--data", "digits", "--latency-runs", "2", "--max-drop", "0.5")
    assert ok.returncode == 0, ok.stderr[-1500:]
    # a changed byte in the middle of the int8 model: it fails to load or to score -> exit 1
    int8 = copy / "model-int8.tflite"
    data = bytearray(int8.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64
    int8.write_bytes(bytes(data))
    failed = cli("validate", str(copy), "--data", "digits", "--latency-runs", "2",
                 "--max-drop", "0.01")  # fmt: skip
    assert failed.returncode == 1, failed.stderr[-1500:]
    assert "outside --max-drop 0.01" in failed.stderr


def test_budget_ladder_walks_every_rung_cheapest_first(run_dir, tmp_path) -> None:
    from toolkit.core.modelio import load_model
    from toolkit.data.evaldata import calibration_data, eval_data
    from toolkit.pipeline.budget import choose

    loaded = load_model(run_dir)
    from toolkit.core.recipe import load_recipe
    from toolkit.data import load_dataset

    ds = load_dataset(load_recipe(str(run_dir / "recipe.yaml")).dataset.spec())
    calib = calibration_data(ds, 64, 0, lambda x: x)
    val = eval_data(ds, "val")
    # an impossible budget: no rung fits, and each was built and measured in its runtime
    picked, budget = choose(loaded.model, ["tflite", "onnx"], val, calib, -1.0, tmp_path)
    assert picked == []
    ladder = budget["formats"]["tflite"]["ladder"]
    assert [r["name"] for r in ladder][:8] == ["tflite-int8"] * 7 + ["tflite-int8-float-io"]
    assert "bias-corrected" in ladder[1]["rung"] and "equalized weights" in ladder[2]["rung"]
    assert "equalized + bias-corrected" in ladder[3]["rung"]
    assert "percentile" in ladder[4]["rung"] and "clipping error" in ladder[5]["rung"]
    assert "AdaRound" in ladder[6]["rung"]
    onnx_ladder = budget["formats"]["onnx"]["ladder"]
    assert "bias-corrected" in onnx_ladder[1]["rung"] and "percentile" in onnx_ladder[4]["rung"]
    assert not any("entropy" in r["rung"].lower() for r in onnx_ladder)  # --ptq only: slow
    assert [r["name"] for r in ladder][-4:] == [
        "tflite-int16x8", "tflite-dynamic", "tflite-fp16", "tflite-fp32",
    ]  # fmt: skip
    assert any("sensitive" in r["rung"] for r in ladder)
    assert all("error" not in r for r in ladder), ladder
    onnx = [r["name"] for r in budget["formats"]["onnx"]["ladder"]]
    assert onnx[0] == "onnx-int8" and onnx[-1] == "onnx-fp32"
    # a generous budget: the cheapest rung wins
    picked, budget = choose(loaded.model, ["tflite"], val, calib, 1.0, tmp_path)
    assert [p.name for p in picked] == ["model-int8.tflite"]
    assert budget["formats"]["tflite"]["chosen"] == "tflite-int8"


def test_auto_precision_via_cli(run_dir, cli, tmp_path) -> None:
    out = tmp_path / "auto"
    proc = cli("export", str(run_dir), "--formats", "tflite", "--precisions", "auto",
               "--max-drop", "0.05", "--out", str(out), "--latency-runs", "2")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-1500:]
    report = json.loads((out / "report.json").read_text())
    chosen = report["budget"]["formats"]["tflite"]["chosen"]
    assert chosen and (out / f"model-{chosen.removeprefix('tflite-')}.tflite").is_file()
    # report.md shows the ladder the real search walked (it used to render an empty section)
    md = (out / "report.md").read_text()
    assert f"### tflite: chosen **{chosen}**" in md
    first = report["budget"]["formats"]["tflite"]["ladder"][0]
    assert f"| {first['rung']} | {first['name']} |" in md


def test_same_model_gives_byte_identical_tflite(run_dir, tmp_path) -> None:
    from toolkit.convert import convert
    from toolkit.core.modelio import load_model

    model = load_model(run_dir).model
    calib = np.random.default_rng(0).uniform(0, 16, (32, 8, 8, 1)).astype("float32")
    a = convert(model, "tflite-int8", tmp_path / "a", calibration=calib).read_bytes()
    b = convert(model, "tflite-int8", tmp_path / "b", calibration=calib).read_bytes()
    assert a == b


@pytest.mark.parametrize(
    ("content", "name", "needle"),
    [
        (b"PK\x03\x04 truncated zip", "model.keras", "model.keras"),
        (b"\x89HDF\r\n\x1a\n" + b"\x00" * 40, "model.h5", "model.h5"),
        (b"hello, I am a text file", "notes.txt", "notes.txt"),
    ],
)
def test_corrupt_or_foreign_model_files(cli, tmp_path, content, name, needle) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    proc = cli("export", str(path), "--out", str(tmp_path / "out"))
    one_error_line(proc, needle)
    assert not (tmp_path / "out").exists()


def test_truncated_real_model(run_dir, cli, tmp_path) -> None:
    data = (run_dir / "model.keras").read_bytes()
    bad = tmp_path / "cut.keras"
    bad.write_bytes(data[: len(data) // 2])
    one_error_line(cli("export", str(bad), "--out", str(tmp_path / "out")), "cut.keras")
    assert not (tmp_path / "out").exists()


def test_int8_without_calibration_data(run_dir, cli, tmp_path) -> None:
    lone = tmp_path / "lone" / "model.keras"
    lone.parent.mkdir()
    shutil.copy(run_dir / "model.keras", lone)  # no recipe, no input spec beside it
    proc = cli("export", str(lone), "--formats", "tflite", "--precisions", "int8",
               "--out", str(tmp_path / "out"))  # fmt: skip
    one_error_line(proc, "--data")
    assert not (tmp_path / "out").exists()


def test_calibration_data_of_the_wrong_shape(run_dir, cli, tmp_path) -> None:
    proc = cli("export", str(run_dir), "--data", "wine", "--out", str(tmp_path / "out"))
    one_error_line(proc, "the model takes (8, 8, 1)")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--formats", "tflit"], "did you mean 'tflite'"),
        (["--formats", "onnx", "--precisions", "int16x8"], "onnx has no int16x8"),
        (["--precisions", "auto"], "needs --max-drop"),
    ],
)
def test_bad_format_requests(run_dir, cli, tmp_path, args, needle) -> None:
    one_error_line(cli("export", str(run_dir), *args, "--out", str(tmp_path / "out")), needle)
    assert not (tmp_path / "out").exists()


def test_unavailable_provider(exported, cli) -> None:
    out, _, _ = exported
    proc = cli("validate", str(out), "--data", "digits", "--runtimes",
               "onnxruntime:CUDAExecutionProvider")  # fmt: skip
    one_error_line(proc, "CPUExecutionProvider")


def test_export_refuses_existing_dir_without_force(exported, run_dir) -> None:
    from toolkit.pipeline.exporting import run_export

    out, _, _ = exported
    with pytest.raises(UserError, match="--force"):
        run_export(run_dir, formats=["tflite"], precisions=["fp32"], out=out)


@pytest.mark.slow
def test_vww_h5_exports_to_int8_and_validates_parity(shared_dir, tmp_path) -> None:
    """A real Keras 2 .h5 (MobileNetV1 0.25, 96x96, inputs in [0, 1]) with CIFAR-10 images
    resized to 96x96 as calibration/parity data: int8 TFLite and ONNX must agree with Keras."""
    from toolkit.pipeline.exporting import run_export

    out = tmp_path / "vww"
    _, report = run_export(
        shared_dir / "models" / "vww_96.h5",
        formats=["keras", "tflite", "onnx"], precisions=["fp32", "int8"],
        data=f"image-folder:{shared_dir / 'data' / 'cifar10-test'}", input_range="0,1",
        parity=True, max_eval_samples=300, calib_samples=200, out=out, latency_runs=5,
    )  # fmt: skip
    rows = {(a.name, a.provider): a for a in report.artifacts}
    assert rows[("tflite-fp32", "xnnpack")].max_abs_diff <= 1e-5
    assert rows[("onnx-fp32", "CPUExecutionProvider")].max_abs_diff <= 1e-5
    assert rows[("tflite-int8", "xnnpack")].agreement >= 0.97
    assert rows[("onnx-int8", "CPUExecutionProvider")].agreement >= 0.97
    assert "parity" in report.data["name"]

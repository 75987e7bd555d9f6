"""validate(): real artifacts, measured in LiteRT (XNNPACK and reference) and ONNX Runtime."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from toolkit.core.errors import UserError
from toolkit.core.formats import BY_NAME
from toolkit.core.report import ARTIFACT_KEYS, Report
from toolkit.runtimes.onnxrt import KNOWN_PROVIDERS
from toolkit.validate.render import save_report, to_markdown
from toolkit.validate.stage import (
    EvalData,
    agreement_of,
    artifact_format,
    discover_artifacts,
    metric_drop,
    runtimes_for,
    validate,
)

keras = pytest.importorskip("keras")

N_CLASSES = 3
ARTIFACTS = ("keras-fp32", "tflite-fp32", "tflite-int8", "tflite-fp16", "onnx-fp32", "onnx-int8")
OPTIONAL_KEYS = {
    "error",
    "flags",
    "notes",
    "fidelity",
    "drop_ci95",
    "mcnemar_p",
    "significant",
    "samples",
    "bit_exact",
    "crash",
}


def stripes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Vertical stripes, horizontal stripes, noise: raw 0..255 pixels a tiny CNN separates."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_CLASSES, n)
    x = rng.uniform(0, 60, (n, 12, 12, 1))
    pattern = (np.arange(12) // 2 % 2) * 150.0
    x[y == 0] += pattern[None, None, :, None]
    x[y == 1] += pattern[None, :, None, None]
    return x.astype(np.float32), y


def _onnx_providers() -> list[str]:
    """ONNX runs on every provider this venv has: CPU everywhere, OpenVINO in .venv-openvino."""
    import onnxruntime as ort

    providers = [p for p in ort.get_available_providers() if p in KNOWN_PROVIDERS]
    assert "CPUExecutionProvider" in providers
    return providers


@pytest.fixture(scope="module")
def cnn() -> tuple[object, np.ndarray, EvalData]:
    keras.utils.set_random_seed(0)
    inp = keras.Input((12, 12, 1), name="image")
    h = keras.layers.Rescaling(1 / 255.0)(inp)
    h = keras.layers.Conv2D(4, 3, padding="same")(h)
    h = keras.layers.BatchNormalization(momentum=0.9)(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    out = keras.layers.Dense(N_CLASSES, activation="softmax")(h)
    model = keras.Model(inp, out)
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    x, y = stripes(384, seed=0)
    model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    x_test, y_test = stripes(100, seed=1)
    data = EvalData(x_test, y_test, "classification", name="stripes (100 samples)")
    return model, x, data


@pytest.fixture(scope="module")
def export_dir(cnn, tmp_path_factory) -> Path:
    from toolkit.convert import convert

    model, x, _ = cnn
    out = tmp_path_factory.mktemp("export")
    for name in ARTIFACTS:
        convert(model, name, out, calibration=x[:64])
    return out


@pytest.fixture(scope="module")
def report(cnn, export_dir) -> Report:
    model, _, data = cnn
    return validate(discover_artifacts(export_dir), data, reference=model, latency_runs=5)


def test_one_entry_per_artifact_and_runtime(report):
    got = sorted((a.name, a.runtime, a.provider) for a in report.artifacts)
    expected = [("keras-fp32", "keras", "tensorflow")]
    expected += [
        (f"tflite-{p}", "litert", d)
        for p in ("fp32", "int8", "fp16")
        for d in ("xnnpack", "reference")
    ]
    expected += [
        (f"onnx-{p}", "onnxruntime", pr) for p in ("fp32", "int8") for pr in _onnx_providers()
    ]
    from toolkit.runtimes import available_runtimes

    # TFLite Micro, where its wheel is installed, runs the full-integer file (not the float ones).
    expected += [("tflite-int8", rt, p) for rt, p in available_runtimes() if rt == "tflm"]
    assert got == sorted(expected)
    assert report.artifacts[0].name == "keras-fp32"  # table order


def test_entries_have_exactly_the_design_keys(report):
    for entry in json.loads(report.to_json())["artifacts"]:
        assert set(ARTIFACT_KEYS) <= set(entry) <= set(ARTIFACT_KEYS) | OPTIONAL_KEYS
        assert "error" not in entry
        assert {"sqnr_db", "cosine", "relative_rmse", "top5_agreement"} <= set(entry["fidelity"])
        assert set(entry["metric"]) == {"name", "value"} and set(entry["latency_ms"]) == {
            "p50",
            "p90",
        }


def test_measurements_are_sane(report, export_dir):
    ref = report.reference["metric"]
    assert ref["name"] == "accuracy" and ref["higher_is_better"] and ref["value"] >= 0.9
    for row in report.artifacts:
        print(row.summary())
        assert row.error is None
        assert row.size_bytes == (export_dir / Path(row.path).name).stat().st_size
        assert isinstance(row.gzip_bytes, int) and row.gzip_bytes > 0
        assert 0 < row.latency_ms["p50"] <= row.latency_ms["p90"]
        assert row.metric["name"] == "accuracy"
        assert row.drop == pytest.approx(ref["value"] - row.metric["value"])
        if row.precision == "fp32":
            assert row.drop == pytest.approx(0.0, abs=1e-9)
            assert row.agreement == 1.0 and row.max_abs_diff < 1e-4
        else:
            assert row.agreement >= 0.9 and row.max_abs_diff < 0.2
    assert report.artifact("keras-fp32").drop == 0.0
    assert report.data == {
        "name": "stripes (100 samples)",
        "samples": 100,
        "task": "classification",
        "labelled": True,
    }
    assert {"toolkit", "tensorflow", "onnxruntime", "ai_edge_litert", "python"} <= set(
        report.versions
    )


def test_corrupted_artifact_gets_an_error_and_the_rest_still_run(cnn, export_dir, tmp_path):
    model, _, data = cnn
    shutil.copy(export_dir / "model-fp32.onnx", tmp_path)
    (tmp_path / "model-int8.tflite").write_bytes(b"\x00garbage, not a flatbuffer" * 8)
    (tmp_path / "model-int8.onnx").write_bytes((export_dir / "model-int8.onnx").read_bytes()[:50])
    result = validate(discover_artifacts(tmp_path), data, reference=model, latency_runs=1)
    by_name = {(a.name, a.provider): a for a in result.artifacts}
    onnx_providers = _onnx_providers()
    assert {p for name, p in by_name if name.startswith("onnx-")} == set(onnx_providers)
    from toolkit.runtimes import available_runtimes

    tflm = sum(1 for rt, _ in available_runtimes() if rt == "tflm")  # runs the int8 file too
    assert len(by_name) == 2 + tflm + 2 * len(onnx_providers)  # LiteRT x2; ONNX on each EP
    for key in [
        ("tflite-int8", "xnnpack"),
        ("tflite-int8", "reference"),
        ("onnx-int8", "CPUExecutionProvider"),
    ]:
        bad = by_name[key]
        assert bad.error and bad.metric["value"] is None and bad.drop is None
        assert any(f.startswith("failed in") for f in bad.flags)
        assert bad.size_bytes > 0
    good = by_name[("onnx-fp32", "CPUExecutionProvider")]
    assert good.error is None and good.agreement == 1.0
    assert "## Failures" in to_markdown(result)
    saved = Report.load(save_report(result, tmp_path / "out"))
    assert saved.artifact("onnx-int8").error == by_name[("onnx-int8", "CPUExecutionProvider")].error
    assert "not a TFLite flatbuffer" in saved.artifact("tflite-int8", "litert:xnnpack").error


def test_runtimes_filter(cnn, export_dir):
    model, _, data = cnn
    result = validate(
        [export_dir / "model-int8.tflite", export_dir / "model-fp32.onnx"],
        data,
        reference=model,
        latency_runs=0,
        runtimes=["litert:xnnpack"],
    )
    assert [(a.name, a.provider) for a in result.artifacts] == [("tflite-int8", "xnnpack")]
    assert result.artifacts[0].latency_ms is None
    with pytest.raises(UserError, match=r"available: .*litert:xnnpack"):
        validate([export_dir / "model-int8.tflite"], data, reference=model, runtimes=["tvm:gpu"])
    with pytest.raises(UserError, match="not available"):
        validate(
            [export_dir / "model-fp32.onnx"],
            data,
            reference=model,
            runtimes=["onnxruntime:NoSuchExecutionProvider"],
        )


def test_regression_reports_mae_and_worse_is_a_positive_drop(tmp_path):
    keras.utils.set_random_seed(5)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.3).astype(np.float32)
    inp = keras.Input((4,))
    out = keras.layers.Dense(1)(keras.layers.Dense(8, activation="relu")(inp))
    model = keras.Model(inp, out)
    model.compile(keras.optimizers.Adam(0.05), "mse")
    model.fit(x, y, epochs=5, batch_size=32, verbose=0)
    worse = keras.models.clone_model(model)
    weights = model.get_weights()
    worse.set_weights([*weights[:-1], weights[-1] + 1.0])  # every prediction off by +1
    model.save(tmp_path / "model.keras")
    worse.save(tmp_path / "worse.keras")
    data = EvalData(x[:60], y[:60], "regression")
    result = validate(
        [tmp_path / "model.keras", tmp_path / "worse.keras"],
        data,
        reference=tmp_path / "model.keras",
        latency_runs=2,
        progress=False,
    )
    same, off = result.artifacts
    assert result.reference["metric"]["name"] == "mae"
    assert result.reference["metric"]["higher_is_better"] is False
    assert same.drop == 0.0 and same.agreement == 1.0
    assert off.metric["value"] > result.reference["metric"]["value"]
    assert off.drop == pytest.approx(off.metric["value"] - result.reference["metric"]["value"])
    assert off.drop > 0 and off.agreement == 0.0
    assert off.max_abs_diff == pytest.approx(1.0, abs=1e-4)
    assert any("drop" in f for f in off.flags)  # > 1 % of the reference MAE: a warning


def test_metric_drop_sign():
    assert metric_drop(0.95, 0.90, higher_is_better=True) == pytest.approx(0.05)
    assert metric_drop(0.95, 0.97, higher_is_better=True) == pytest.approx(-0.02)
    assert metric_drop(0.10, 0.15, higher_is_better=False) == pytest.approx(0.05)
    assert metric_drop(0.10, 0.08, higher_is_better=False) == pytest.approx(-0.02)


def test_agreement_of():
    ref = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    out = np.array([[0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.1, 0.9]])
    assert agreement_of(out, ref, "classification") == 0.75
    reg_ref = np.array([[0.0], [5.0], [10.0]])  # range 10: tolerance 0.1
    shifted = reg_ref + np.array([[0.05], [0.2], [-0.1]])  # 2 of 3 within 0.1
    assert agreement_of(shifted, reg_ref, "regression") == pytest.approx(2 / 3)


def test_artifact_names_and_discovery(tmp_path):
    assert artifact_format(Path("x/model-int8.tflite")) is BY_NAME["tflite-int8"]
    assert artifact_format(Path("model-fp32.onnx")) is BY_NAME["onnx-fp32"]
    assert artifact_format(Path("whatever.keras")) is BY_NAME["keras-fp32"]
    with pytest.raises(UserError, match=r"model-int8\.tflite"):
        artifact_format(Path("mystery.tflite"))
    with pytest.raises(UserError, match="not found"):
        discover_artifacts(tmp_path / "absent")
    with pytest.raises(UserError, match="no artifacts"):
        discover_artifacts(tmp_path)
    for name in ("model-int8.onnx", "model-fp32.tflite", "notes.txt", "model.keras"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in discover_artifacts(tmp_path)] == [
        "model.keras",
        "model-fp32.tflite",
        "model-int8.onnx",
    ]
    litert = [("litert", "xnnpack"), ("litert", "reference")]
    assert runtimes_for(BY_NAME["tflite-int8"])[:2] == litert
    assert runtimes_for(BY_NAME["tflite-fp32"]) == litert  # TFLM, if present, runs integer files
    assert ("onnxruntime", "CPUExecutionProvider") in runtimes_for(BY_NAME["onnx-int8"])
    assert [rt for rt, _ in runtimes_for(BY_NAME["keras-fp32"])] == ["keras"]


def test_bad_inputs_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="task"):
        EvalData(np.zeros((2, 3)), np.zeros(2), "segmentation")
    with pytest.raises(UserError, match="differ in length"):
        EvalData(np.zeros((2, 3)), np.zeros(3), "classification")
    data = EvalData(np.zeros((2, 3)), np.zeros(2), "classification")
    with pytest.raises(UserError, match="artifact not found"):
        validate([tmp_path / "model-fp32.tflite"], data, reference=None)
    with pytest.raises(UserError, match="nothing to validate"):
        validate([], data, reference=None)


def test_one_bar_spans_the_stages_inside_overall() -> None:
    """An export's conversion and validation share one bar: each stage adds its steps to
    the total (so the count and the ETA cover both), and the status names the stage."""
    from toolkit.core.progress import StageBar, overall

    with overall("export"):
        convert = StageBar("convert", 3)
        shared = next(t for t in convert.bar.tasks if t.id == convert.task)
        for _ in range(3):
            convert.advance()
        validate = StageBar("validate", 5)
        validate.status("tflite-int8 on litert/xnnpack")
        assert validate.bar is convert.bar and validate.task == convert.task
        assert (shared.total, shared.completed) == (8, 3)
        assert shared.fields["status"] == "validate: tflite-int8 on litert/xnnpack"
    alone = StageBar("validate", 2)  # outside an export: a bar of its own
    assert alone.bar is not convert.bar and alone.status("x") is None

"""Bring any model: the task decides the metric, agreement and ladder; unlabelled data is judged
on label-free fidelity (SQNR, cosine). Real third-party files (tf_keras .h5), real conversions,
real LiteRT / ONNX Runtime sessions, the CLI as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _badinput import one_error_line

FAST = ("--latency-runs", "0", "--calib-samples", "64")
WIDTH = 640


def _windows(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sensor windows: phase-shifted sines plus noise; anomalies carry extra noise, some of it
    faint, so the reconstruction-error AUC is high but not trivially 1."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 8 * np.pi, WIDTH)
    x = np.sin(t[None] + rng.uniform(0, 2 * np.pi, (n, 1))) + 0.1 * rng.normal(size=(n, WIDTH))
    y = (rng.uniform(size=n) < 0.25).astype(np.int64)
    scale = rng.uniform(0.02, 0.3, (int(y.sum()), 1))
    x[y == 1] += scale * rng.normal(size=(int(y.sum()), WIDTH))
    return x.astype(np.float32), y


@pytest.fixture(scope="module")
def autoencoder(tmp_path_factory) -> Path:
    """A dense autoencoder saved by tf_keras as .h5 (Keras 2), 640 inputs -> 640 outputs,
    trained on the normal windows only, plus labelled and x-only .npz files beside it."""
    import tf_keras

    work = tmp_path_factory.mktemp("ae")
    x, y = _windows()
    np.savez(work / "windows.npz", x=x, y=y)
    np.savez(work / "windows-x.npz", x=x)
    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential([
        tf_keras.layers.Input((WIDTH,)),
        tf_keras.layers.Dense(32, activation="relu"),
        tf_keras.layers.Dense(WIDTH),
    ])  # fmt: skip
    model.compile("adam", "mse")
    model.fit(x[y == 0], x[y == 0], epochs=25, batch_size=32, verbose=0)
    model.save(work / "ae.h5")
    return work


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module")
def labelled(autoencoder) -> tuple[Path, object]:
    from conftest import run_cli

    out = autoencoder / "labelled"
    proc = run_cli("export", str(autoencoder / "ae.h5"),
                   "--data", f"npz:{autoencoder / 'windows.npz'}", "--formats", "tflite,onnx",
                   "--precisions", "fp32,fp16,int8", "--out", str(out), *FAST)  # fmt: skip
    return out, proc


def test_labelled_autoencoder_is_scored_by_auc_everywhere(labelled) -> None:
    out, proc = labelled
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "task: anomaly, inferred: output shape equals input shape" in proc.stderr
    report = _report(out)
    assert report["data"]["task"] == "anomaly"
    assert report["reference"]["metric"]["name"] == "roc_auc"
    assert 0.8 < report["reference"]["metric"]["value"] <= 1.0
    rows = [r for r in report["artifacts"] if "error" not in r]
    assert rows and all(r["metric"]["name"] == "roc_auc" for r in rows)
    assert all(0.5 < r["metric"]["value"] <= 1.0 for r in rows)
    # every row carries label-free fidelity too; float artifacts reproduce the reference
    assert all({"sqnr_db", "cosine", "relative_rmse"} <= set(r["fidelity"]) for r in rows)
    fp32 = next(r for r in rows if r["name"] == "tflite-fp32")
    assert fp32["fidelity"]["sqnr_db"] > 60 and fp32["fidelity"]["cosine"] > 0.9999


def test_auto_ladder_chooses_by_auc(cli, autoencoder) -> None:
    out = autoencoder / "auto"
    proc = cli("export", str(autoencoder / "ae.h5"), "--data", f"npz:{autoencoder / 'windows.npz'}",
               "--formats", "tflite", "--precisions", "auto", "--max-drop", "0.005",
               "--out", str(out), *FAST)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    budget = _report(out)["budget"]["formats"]["tflite"]
    steps = [s for s in budget["ladder"] if "error" not in s]
    assert steps and all("drop" in s for s in steps)
    chosen = budget["chosen"]
    picked = next(s for s in steps if s["within"])
    assert picked["name"] == chosen and picked["drop"] <= 0.005
    # the rungs before it were over budget by AUC (or could not be built)
    assert all(not s["within"] for s in budget["ladder"][: budget["ladder"].index(picked)])
    assert "roc_auc" in (out / "report.md").read_text()


def test_unlabelled_data_gets_fidelity_and_min_sqnr_selects(cli, autoencoder) -> None:
    out = autoencoder / "fidelity"
    proc = cli("export", str(autoencoder / "ae.h5"),
               "--data", f"npz:{autoencoder / 'windows-x.npz'}", "--formats", "tflite",
               "--precisions", "auto", "--min-sqnr", "30", "--out", str(out), *FAST)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = _report(out)
    assert report["data"]["labelled"] is False
    assert report["reference"]["metric"]["name"] == "cosine"
    for row in report["artifacts"]:
        assert {"sqnr_db", "cosine"} <= set(row["fidelity"]), row
        assert row["fidelity"]["sqnr_db"] >= 30
    ladder = report["budget"]["formats"]["tflite"]["ladder"]
    picked = next(s for s in ladder if s.get("within"))
    assert picked["sqnr_db"] >= 30
    assert all((s.get("sqnr_db") or -1e9) < 30 for s in ladder[: ladder.index(picked)])


def test_unmeetable_min_sqnr_fails_the_gate_with_the_report_written(cli, autoencoder) -> None:
    out = autoencoder / "too-strict"
    proc = cli("export", str(autoencoder / "ae.h5"),
               "--data", f"npz:{autoencoder / 'windows-x.npz'}", "--formats", "tflite",
               "--precisions", "int8", "--min-sqnr", "150", "--out", str(out), *FAST)  # fmt: skip
    one_error_line(proc, "--min-sqnr 150", code=1)
    rows = _report(out)["artifacts"]
    assert rows and all(any("SQNR" in f for f in r["flags"]) for r in rows)


def test_three_output_regression_reports_mae_per_output(cli, tmp_path) -> None:
    import keras

    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 6)).astype(np.float32)
    y = np.stack([x[:, 0] + x[:, 1], 2 * x[:, 2], x[:, 3] - x[:, 4] + 0.5 * x[:, 5]], 1)
    np.savez(tmp_path / "reg.npz", x=x, y=y.astype(np.float32))
    inputs = keras.Input((6,), name="features")
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="targets")(hidden))
    model.compile("adam", "mse")
    model.fit(x, y, epochs=30, verbose=0)
    model.save(tmp_path / "reg.keras")
    out = tmp_path / "out"
    proc = cli("export", str(tmp_path / "reg.keras"), "--data", f"npz:{tmp_path / 'reg.npz'}",
               "--formats", "tflite", "--precisions", "fp32,int8", "--out", str(out),
               *FAST)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = _report(out)
    assert report["data"]["task"] == "regression"
    assert report["reference"]["metric"]["name"] == "mae"
    for row in report["artifacts"]:
        per = row["metric"]["per_output"]
        assert len(per) == 3
        assert row["metric"]["value"] == pytest.approx(float(np.mean(per)))


def test_headless_feature_extractor_validates_on_fidelity(cli, tmp_path) -> None:
    import keras

    model = keras.applications.MobileNetV2(
        alpha=0.35, input_shape=(32, 32, 3), include_top=False, pooling="avg", weights=None
    )
    model.save(tmp_path / "features.keras")
    rng = np.random.default_rng(2)
    np.savez(tmp_path / "images.npz", x=rng.uniform(0, 255, (80, 32, 32, 3)).astype(np.uint8))
    out = tmp_path / "out"
    proc = cli("export", str(tmp_path / "features.keras"),
               "--data", f"npz:{tmp_path / 'images.npz'}", "--input-range", "-1,1",
               "--formats", "tflite", "--precisions", "fp32,int8", "--out", str(out),
               *FAST)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "task: features" in proc.stderr
    report = _report(out)
    assert report["data"]["task"] == "features" and report["data"]["labelled"] is False
    assert report["reference"]["metric"] == {"name": "cosine", "value": 1.0,
                                             "higher_is_better": True}  # fmt: skip
    fp32 = next(r for r in report["artifacts"] if r["name"] == "tflite-fp32")
    assert fp32["metric"]["value"] > 0.9999 and fp32["fidelity"]["sqnr_db"] > 40


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--task", "anomoly"], "unknown task 'anomoly' (did you mean 'anomaly'?)"),
        (["--task", "anomaly"], "--task anomaly needs a reconstruction"),
    ],
)
def test_bad_task_is_one_line(cli, tmp_path, args, needle) -> None:
    import keras

    inputs = keras.Input((6,))
    keras.Model(inputs, keras.layers.Dense(3)(inputs)).save(tmp_path / "m.keras")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(60, 6)).astype(np.float32),
             y=rng.integers(0, 2, 60))  # fmt: skip
    proc = cli("export", str(tmp_path / "m.keras"), "--data", f"npz:{tmp_path / 'd.npz'}",
               "--formats", "tflite", "--precisions", "fp32", "--out", str(tmp_path / "o"),
               *args, *FAST)  # fmt: skip
    one_error_line(proc, needle)
    assert not (tmp_path / "o").exists()


def test_check_and_package_follow_the_validated_task(cli, labelled, tmp_path) -> None:
    out, _ = labelled
    proc = cli("check", str(out), "--baseline", "digits-cnn", "--task", "classification")
    one_error_line(proc, "was validated as anomaly (roc_auc), not classification")
    proc = cli("package", str(out), "--target", "raspberry-pi", "--out", str(tmp_path / "b"),
               "--ignore-budget")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((tmp_path / "b" / "raspberry-pi" / "manifest.json").read_text())
    assert manifest["output"]["task"] == "anomaly"
    assert manifest["output"]["postprocess"] == "score"

"""ONNX Runtime's OpenVINO execution provider, proven on real exports (`make test-openvino`).

The main venv has no OpenVINO EP (onnxruntime-openvino replaces the `onnxruntime` module, so it
lives in .venv-openvino), and there these tests skip; `make test-openvino` runs them where the
EP exists. What they show: export validates every ONNX artifact on OpenVINO by itself, the
numbers match the CPU provider's, and the CLI's OpenVINO paths (validate filter, predict) work.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
OPENVINO = "OpenVINOExecutionProvider"
if OPENVINO not in ort.get_available_providers():
    pytest.skip(
        "no OpenVINO execution provider in this venv (`make test-openvino` runs these)",
        allow_module_level=True,
    )

pytestmark = [pytest.mark.openvino, pytest.mark.slow]

ONNX_PRECISIONS = ("fp32", "fp16", "int8", "dynamic")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, dict]:
    """digits-cnn trained briefly, exported to every ONNX precision, validated by export."""
    from conftest import run_cli

    runs = tmp_path_factory.mktemp("runs")
    done = run_cli("train", "digits-cnn", "--runs-dir", str(runs), "--epochs", "8")
    assert done.returncode == 0, done.stderr
    run = runs / "digits-cnn"
    done = run_cli(
        "export", str(run), "--formats", "onnx", "--precisions", ",".join(ONNX_PRECISIONS),
        "--latency-runs", "20",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return run / "export", json.loads((run / "export" / "report.json").read_text())


def _rows(report: dict, provider: str) -> dict[str, dict]:
    return {a["name"]: a for a in report["artifacts"] if a["provider"] == provider}


def test_export_validates_every_onnx_artifact_on_openvino(exported):
    _, report = exported
    ov = _rows(report, OPENVINO)
    assert sorted(ov) == sorted(f"onnx-{p}" for p in ONNX_PRECISIONS)
    for name, row in ov.items():
        assert "error" not in row, (name, row.get("error"))
        assert row["runtime"] == "onnxruntime"
        assert row["latency_ms"]["p50"] > 0
    # Float artifacts stay at float rounding from Keras on OpenVINO's CPU plugin as well.
    assert ov["onnx-fp32"]["max_abs_diff"] <= 1e-4
    assert ov["onnx-fp16"]["max_abs_diff"] <= 5e-3
    # int8 keeps its accuracy on the EP that will run it.
    keras_acc = report["reference"]["metric"]["value"]
    assert keras_acc >= 0.9
    assert ov["onnx-int8"]["drop"] <= 0.005
    assert ov["onnx-int8"]["agreement"] >= 0.99


def test_openvino_matches_the_cpu_provider(exported):
    _, report = exported
    ov, cpu = _rows(report, OPENVINO), _rows(report, "CPUExecutionProvider")
    for name in ov:
        assert abs(ov[name]["metric"]["value"] - cpu[name]["metric"]["value"]) <= 0.01, name


def test_validate_and_predict_on_openvino_from_the_cli(exported, tmp_path, cli):
    export_dir, _ = exported
    done = cli("validate", str(export_dir), "--runtimes", "onnxruntime:openvino")
    assert done.returncode == 0, done.stderr
    report = json.loads((export_dir / "report.json").read_text())
    assert {a["provider"] for a in report["artifacts"] if a["runtime"] == "onnxruntime"} == {
        OPENVINO
    }
    image = tmp_path / "x.npy"
    np.save(image, np.full((1, 16, 16, 1), 8.0, np.float32))
    done = cli("predict", str(export_dir / "model-int8.onnx"), str(image), "--provider", "openvino")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()


def test_one_thread_reaches_openvino(exported):
    from toolkit.runtimes import open_runner

    export_dir, _ = exported
    x = np.full((3, 16, 16, 1), 8.0, np.float32)
    # The EP reports no options back, but it refuses to start on an unknown key or a bad value
    # (ORT then falls back to CPU, which the runner turns into an error), so opening on
    # OpenVINO with num_threads proves the option reached it.
    with open_runner(export_dir / "model-fp32.onnx", provider="openvino", num_threads=1) as one:
        assert one._session.get_providers()[0] == OPENVINO
        with open_runner(export_dir / "model-fp32.onnx", provider="cpu") as cpu:
            np.testing.assert_allclose(one.predict(x), cpu.predict(x), atol=1e-5)

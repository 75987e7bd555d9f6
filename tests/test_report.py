"""report.json round trip, its key contract, flags, and the markdown / table / plot views."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from toolkit.core.errors import UserError
from toolkit.core.report import (
    ARTIFACT_KEYS,
    DROP_MEANS,
    ArtifactResult,
    Report,
    collect_versions,
    human_bytes,
)
from toolkit.validate.render import plot, print_table, save_report, to_markdown


def row(
    name: str,
    value: float | None,
    drop: float | None,
    agreement: float | None,
    provider: str = "xnnpack",
    error: str | None = None,
) -> ArtifactResult:
    fmt, precision = name.split("-", 1)
    runtime = {"tflite": "litert", "onnx": "onnxruntime", "keras": "keras"}[fmt]
    return ArtifactResult(
        name=name,
        format=fmt,
        precision=precision,
        path=f"export/model-{precision}.{fmt}",
        size_bytes=120_000 if precision == "fp32" else 34_000,
        gzip_bytes=100_000 if precision == "fp32" else 30_000,
        runtime=runtime,
        provider=provider,
        metric={"name": "accuracy", "value": value},
        drop=drop,
        agreement=agreement,
        max_abs_diff=None if error else 0.01,
        latency_ms=None if error else {"p50": 0.5, "p90": 0.7},
        error=error,
    )


@pytest.fixture
def report() -> Report:
    rows = [
        row("keras-fp32", 0.95, 0.0, 1.0, provider="tensorflow"),
        row("tflite-fp32", 0.95, 0.0, 1.0),
        row("tflite-int8", 0.919, 0.031, 0.96),
        row("tflite-int8", 0.919, 0.031, 0.96, provider="reference"),
        row("onnx-int8", 0.945, 0.005, 0.99, provider="CPUExecutionProvider"),
        row("onnx-fp16", None, None, None, "CPUExecutionProvider", error="cannot load: bad op"),
    ]
    return Report(
        reference={
            "name": "keras-fp32",
            "metric": {"name": "accuracy", "value": 0.95, "higher_is_better": True},
        },
        artifacts=rows,
        versions=collect_versions(),
        data={"name": "digits test split (360 samples)", "samples": 360, "task": "classification"},
    )


def test_json_has_the_design_keys_and_round_trips(report, tmp_path):
    data = json.loads(report.to_json())
    assert {"reference", "artifacts", "versions", "data", "created"} <= set(data)
    assert data["drop_means"] == DROP_MEANS
    assert set(data["artifacts"][0]) == {*ARTIFACT_KEYS, "flags", "notes"}
    assert data["artifacts"][-1]["error"] == "cannot load: bad op"
    assert set(data["versions"]) == {
        "toolkit",
        "tensorflow",
        "keras",
        "onnx",
        "onnxruntime",
        "ai_edge_litert",
        "numpy",
        "python",
        "platform",
    }
    report.budget = {  # the shape pipeline.budget.choose writes
        "max_drop": 0.01,
        "split": "validation",
        "formats": {
            "tflite": {
                "chosen": None,
                "options": {},
                "ladder": [
                    {
                        "rung": "full int8",
                        "name": "tflite-int8",
                        "metric": 0.9,
                        "drop": 0.031,
                        "within": False,
                        "reason": "drop 0.0310 > budget 0.0100",
                    }
                ],
            }
        },
    }
    path = save_report(report, tmp_path / "run")
    assert path == tmp_path / "run" / "report.json"
    loaded = Report.load(path)
    assert loaded.to_dict() == report.to_dict()
    assert Report.load(tmp_path / "run").to_dict() == report.to_dict()  # a directory works too
    assert not list((tmp_path / "run").glob(".*"))  # no temp files left behind


def test_save_writes_markdown_and_plot(report, tmp_path):
    save_report(report, tmp_path)
    md = (tmp_path / "report.md").read_text()
    for a in report.artifacts:
        assert a.name in md
    assert md.index("keras-fp32") < md.index("tflite-fp32")  # the reference first
    assert "117.2 KiB" in md and "## Failures" in md and "cannot load: bad op" in md
    png = (tmp_path / "plots" / "report.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5_000


def test_markdown_without_keras_row_still_leads_with_the_reference(report):
    report.artifacts = report.artifacts[1:]
    lines = [line for line in to_markdown(report).splitlines() if line.startswith("| ")]
    assert lines[1].startswith("| keras-fp32 (reference)")


def test_print_table_and_plot_of_failures_only(report, tmp_path, capsys):
    print_table(report)
    assert "tflite-int8" in capsys.readouterr().err
    report.artifacts = [a for a in report.artifacts if a.error]
    assert plot(report, tmp_path / "p.png").stat().st_size > 0


def test_budget_flags(report):
    report.apply_budget_flags(0.01)
    flags = {(a.name, a.provider): a.flags for a in report.artifacts}
    assert flags[("tflite-int8", "xnnpack")] == [
        "drop 0.031 > budget 0.01",
        "agreement 0.960 < 0.98",
    ]
    assert flags[("onnx-int8", "CPUExecutionProvider")] == []
    assert flags[("keras-fp32", "tensorflow")] == []
    assert flags[("onnx-fp16", "CPUExecutionProvider")] == [
        "failed in onnxruntime/CPUExecutionProvider"
    ]
    assert [a.name for a in report.over_budget(0.01)] == ["tflite-int8", "tflite-int8", "onnx-fp16"]
    report.apply_budget_flags(0.05)  # flags are recomputed, not appended
    assert report.artifact("tflite-int8").flags == ["agreement 0.960 < 0.98"]


def test_no_budget_only_warns(report):
    report.apply_budget_flags(None)
    assert report.artifact("tflite-int8").flags[0].startswith("warning: drop 0.031 > 0.01")
    assert report.artifact("onnx-int8").flags == []


def test_lower_is_better_warning_is_relative():
    mae = row("tflite-int8", 2.1, 0.1, 0.5)
    mae.metric = {"name": "mae", "value": 2.1}
    report = Report(
        reference={
            "name": "keras-fp32",
            "metric": {"name": "mae", "value": 2.0, "higher_is_better": False},
        },
        artifacts=[mae],
        versions={},
    )
    report.apply_budget_flags(None)
    assert mae.flags[0].startswith("warning: drop 0.1 > 0.02")
    assert "(lower is better)" in to_markdown(report)


def test_artifact_lookup(report):
    assert report.artifact("tflite-int8").provider == "xnnpack"
    assert report.artifact("tflite-int8", "litert:reference").provider == "reference"
    assert report.artifact("onnx-int8", "onnxruntime").name == "onnx-int8"
    with pytest.raises(UserError, match=r"no artifact 'tflite-fp16'.*tflite-int8 \(litert"):
        report.artifact("tflite-fp16")


def test_load_errors(tmp_path, report):
    with pytest.raises(UserError, match="report not found"):
        Report.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        Report.load(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(UserError, match="not a JSON object"):
        Report.load(bad)
    data = report.to_dict()
    del data["versions"]
    bad.write_text(json.dumps(data))
    with pytest.raises(UserError, match="lacks versions"):
        Report.load(bad)
    data = report.to_dict()
    del data["artifacts"][1]["gzip_bytes"]
    bad.write_text(json.dumps(data))
    with pytest.raises(UserError, match=r"artifacts\[1\] lacks gzip_bytes"):
        Report.load(bad)
    data = report.to_dict()
    data["artifacts"][0]["metric"] = 0.9
    bad.write_text(json.dumps(data))
    with pytest.raises(UserError, match=r"artifacts\[0\]\.metric is not a JSON object"):
        Report.load(bad)


def test_human_bytes():
    assert human_bytes(512) == "512 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(5 * 1024**2) == "5.0 MiB"
    assert human_bytes(None) == "n/a"


def test_importing_validate_and_report_stays_light():
    code = (
        "import sys, toolkit.validate.stage, toolkit.core.report, toolkit.validate.render\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'onnxruntime', 'onnx', 'matplotlib',"
        " 'ai_edge_litert') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr

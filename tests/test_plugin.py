"""The pytest plugin as a user meets it: installed entry point, fixtures used from a separate test
file outside the package (run with pytester), readable budget failures."""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from test_check import report_dict  # tests/ is on sys.path (no __init__.py)

pytest_plugins = ["pytester"]

USER_TESTS = """
import pytest

def test_int8_within_budget(edge_report):
    art = edge_report.artifact("tflite-int8")
    art.assert_drop_at_most(0.02).assert_agreement_at_least(0.98)
    art.assert_size_at_most(100_000)
    edge_report.artifact("tflite-int8", runtime="litert:xnnpack").assert_max_abs_diff_at_most(0.05)

def test_fp32_parity(edge_report):
    edge_report.artifact("tflite-fp32").assert_max_abs_diff_at_most(1e-5)
"""


@pytest.fixture
def user_report(pytester: pytest.Pytester) -> Path:
    """A report.json in the user's project directory (what `keras-edge export` writes)."""
    export = pytester.path / "runs" / "export"
    export.mkdir(parents=True)
    (export / "report.json").write_text(json.dumps(report_dict()))
    return export


def test_plugin_is_registered_as_a_pytest11_entry_point() -> None:
    found = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert found.get("keras_edge") == "toolkit.pipeline.pytest_plugin", (
        "pytest11 entry point missing: run `pip install -e .` after editing pyproject.toml"
    )


def test_budgets_pass_from_a_separate_test_file(pytester, user_report) -> None:
    pytester.makepyfile(test_budgets=USER_TESTS)
    result = pytester.runpytest("--edge-report", str(user_report))
    result.assert_outcomes(passed=2)


def test_failing_budget_reports_a_readable_failure(pytester, user_report) -> None:
    pytester.makepyfile(
        test_tight="""
def test_int8_tight(edge_report):
    edge_report.artifact("tflite-int8").assert_drop_at_most(0.005)

def test_int8_small(edge_report):
    edge_report.artifact("tflite-int8", runtime="litert:reference").assert_size_at_most(50_000)

def test_typo(edge_report):
    edge_report.artifact("tflite-int4")
"""
    )
    result = pytester.runpytest("--edge-report", "runs/export")  # relative to the invocation dir
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(
        [
            "*tflite-int8 on litert/xnnpack: drop 0.0100 exceeds the budget 0.0050 (accuracy 0.94*",
            "*tflite-int8 on litert/reference: drop 0.0100 exceeds the budget 0.0050*",
            "*tflite-int8 on litert/reference: size 90,000 exceeds the budget 50,000*",
            "*no artifact 'tflite-int4' in *; it has: tflite-fp32 (litert:xnnpack)*",
        ]
    )
    assert "pytest_plugin.py" not in result.stdout.str()  # the plugin's frames are hidden


def test_report_from_ini_or_marker_and_missing_config(pytester, user_report) -> None:
    pytester.makeini("[pytest]\nedge_report = runs/export/report.json\n")
    pytester.makepyfile(test_budgets=USER_TESTS)
    pytester.mkdir("sub")
    (pytester.path / "sub" / "test_marked.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.edge_report('../runs/export')\n"
        "def test_marked(edge_report):\n"
        "    assert edge_report.names == ['tflite-fp32', 'tflite-int8', 'onnx-int8']\n"
    )
    pytester.runpytest().assert_outcomes(passed=3)

    (pytester.path / "tox.ini").unlink()  # makeini writes tox.ini
    result = pytester.runpytest("test_budgets.py")
    result.assert_outcomes(errors=2)  # a fixture that cannot set up: an error, not a failure
    result.stdout.fnmatch_lines(["*edge_report: no report given; pass --edge-report PATH*"])
    bad = pytester.runpytest("test_budgets.py", "--edge-report", "nowhere")
    assert "During handling" not in bad.stdout.str()
    bad.stdout.fnmatch_lines(["*edge_report: report not found: *nowhere"])


def test_edge_export_runs_once_per_session_and_measures(pytester) -> None:
    pytester.makepyfile(
        test_user_export="""
import keras
import pytest

MODEL = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                          keras.layers.Dense(10, activation="softmax")])
ARGS = dict(data="digits", formats=["tflite"], precisions=["fp32"], latency_runs=2,
            max_eval_samples=64)

@pytest.fixture(scope="module")
def first(edge_export):
    return edge_export(MODEL, **ARGS)

def test_measured(first):
    first.artifact("tflite-fp32").assert_max_abs_diff_at_most(1e-4).assert_drop_at_most(0.0)
    assert (first.export.export_dir / "model-fp32.tflite").is_file()

def test_cached(first, edge_export):
    assert edge_export(MODEL, **ARGS) is first
"""
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)

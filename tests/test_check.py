"""The regression gate on synthetic reports: each check, tolerances, JUnit/markdown, CLI exit codes.

No TensorFlow here: reports are written as JSON, so the whole file runs in seconds.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from _badinput import one_error_line

from toolkit.check.baseline import Baseline, Tolerances
from toolkit.check.stage import CHECKS, check, parse_per_artifact, update_baseline
from toolkit.core.errors import UserError
from toolkit.core.report import Report


def _row(name: str, provider: str, value: float, size: int, diff: float, **extra: Any) -> dict:
    fmt, precision = name.split("-", 1)
    runtime = {"tflite": "litert", "onnx": "onnxruntime"}[fmt]
    return {
        "name": name, "format": fmt, "precision": precision, "path": f"model-{precision}.{fmt}",
        "size_bytes": size, "gzip_bytes": size // 2, "runtime": runtime, "provider": provider,
        "metric": {"name": "accuracy", "value": value}, "drop": round(0.95 - value, 6),
        "agreement": 0.99 if precision == "int8" else 1.0, "max_abs_diff": diff,
        "latency_ms": {"p50": 0.1, "p90": 0.2}, "flags": [], "notes": [], **extra,
    }  # fmt: skip


def report_dict(metric: str = "accuracy", higher: bool = True) -> dict:
    rows = [
        _row("tflite-fp32", "xnnpack", 0.95, 300_000, 5e-7),
        _row("tflite-int8", "xnnpack", 0.94, 90_000, 0.04),
        _row("tflite-int8", "reference", 0.94, 90_000, 0.07),
        _row("onnx-int8", "CPUExecutionProvider", 0.945, 100_000, 0.03),
    ]
    for row in rows:
        row["metric"]["name"] = metric
    return {
        "schema": 1,
        "reference": {"name": "keras-fp32", "metric": {"name": metric, "value": 0.95,
                                                       "higher_is_better": higher},
                      "weights_sha256": "a" * 64},
        "artifacts": rows,
        "versions": {"tensorflow": "2.21.0", "onnxruntime": "1.32.0"},
        "data": {"name": "digits test split", "samples": 300, "task": "classification"},
    }  # fmt: skip


def write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    """A report in an export dir and a baseline made from that same report."""
    export = tmp_path / "export"
    export.mkdir()
    report = write(export / "report.json", report_dict())
    baseline = tmp_path / "baseline.json"
    update_baseline(report, baseline, Tolerances(metric=0.01, size_growth=0.1))
    return report, baseline


def mutated(files: tuple[Path, Path], change) -> Report:
    data = json.loads(files[0].read_text())
    change(data)
    return Report.from_dict(data)


def statuses(result) -> dict[tuple[str, str], str]:
    return {(r.subject, r.check): r.status for r in result.rows}


def test_same_report_passes_every_check(files) -> None:
    result = check(*files)
    assert result.passed, result.summary()
    assert len(result.gated) == 1 + 4 * len(CHECKS)
    assert {r.status for r in result.rows} == {"pass"}


@pytest.mark.parametrize(
    ("change", "failing_check"),
    [
        (lambda d: d["artifacts"][1]["metric"].update(value=0.92), "metric"),
        (lambda d: d["artifacts"][1].update(drop=0.03), "drop"),
        (lambda d: d["artifacts"][1].update(agreement=0.97), "agreement"),
        (lambda d: d["artifacts"][1].update(max_abs_diff=0.09), "max_abs_diff"),
        (lambda d: d["artifacts"][1].update(size_bytes=100_000), "size"),
        (lambda d: d["artifacts"][1].update(error="cannot load: bad op"), "present"),
    ],
)
def test_each_regression_fails_only_its_check(files, change, failing_check) -> None:
    result = check(mutated(files, change), files[1])
    failed = [(r.subject, r.check) for r in result.regressions]
    assert failed == [("tflite-int8 litert/xnnpack", failing_check)], result.rows
    assert result.regressions[0].message


def test_changes_inside_tolerance_pass(files) -> None:
    def small(d: dict) -> None:
        d["artifacts"][1]["metric"]["value"] = 0.931  # -0.009 with tolerance 0.01
        d["artifacts"][1]["size_bytes"] = 98_000  # +8.9 % with 10 % allowed
        d["artifacts"][1]["max_abs_diff"] = 0.079  # bound 2 x 0.04
        d["artifacts"][0]["metric"]["value"] = 0.99  # better is never a regression
        d["artifacts"][0]["size_bytes"] = 1_000

    assert check(mutated(files, small), files[1]).passed


def test_missing_and_new_artifacts(files) -> None:
    def swap(d: dict) -> None:
        d["artifacts"][3] = _row("onnx-fp32", "CPUExecutionProvider", 0.95, 300_000, 1e-6)

    result = check(mutated(files, swap), files[1])
    found = statuses(result)
    assert found[("onnx-int8 onnxruntime/CPUExecutionProvider", "present")] == "fail"
    assert found[("onnx-int8 onnxruntime/CPUExecutionProvider", "metric")] == "skip"
    assert found[("onnx-fp32 onnxruntime/CPUExecutionProvider", "present")] == "new"
    assert len(result.regressions) == 1
    assert "missing from the report" in result.summary()


def test_lower_is_better_metric_rising_is_a_regression(tmp_path) -> None:
    data = report_dict("mae", higher=False)
    base = update_baseline(Report.from_dict(data), tmp_path / "b.json", Tolerances(metric=0.01))
    worse, better = copy.deepcopy(data), copy.deepcopy(data)
    worse["artifacts"][1]["metric"]["value"] += 0.05
    better["artifacts"][1]["metric"]["value"] -= 0.05
    failed = check(Report.from_dict(worse), base).regressions
    assert [(r.check, r.limit_op) for r in failed] == [("metric", "<=")]
    assert "mae rose from" in failed[0].message
    assert check(Report.from_dict(better), base).passed


def test_tolerance_precedence_flag_over_file_and_globs(files) -> None:
    lowered = mutated(files, lambda d: d["artifacts"][1]["metric"].update(value=0.925))
    assert not check(lowered, files[1]).passed  # -0.015 > file's 0.01
    assert check(lowered, files[1], 0.02).passed  # flag wins
    assert check(lowered, files[1], per_artifact={"*-int8": 0.02}).passed  # glob
    assert not check(lowered, files[1], per_artifact={"onnx-int8": 0.02}).passed
    assert parse_per_artifact(["tflite-int8=0.01", "*-fp32=0"]) == {
        "tflite-int8": 0.01, "*-fp32": 0.0,
    }  # fmt: skip
    for bad in ("tflite-int8", "=0.1", "x=abc", "x=-1"):
        with pytest.raises(UserError, match="NAME=TOLERANCE"):
            parse_per_artifact([bad])


def test_metric_mismatch_and_bad_baselines_are_user_errors(files, tmp_path) -> None:
    with pytest.raises(UserError, match="measures accuracy but the report measures mae"):
        check(Report.from_dict(report_dict("mae", higher=False)), files[1])
    with pytest.raises(UserError, match=r"that is a report\.json"):
        Baseline.load(files[0])
    good = json.loads(files[1].read_text())
    for change, needle in [
        (lambda d: d.update(schema=99), "schema 99 is not supported"),
        (lambda d: d.update(entries="x"), "entries must be a list"),
        (lambda d: d["entries"][0].update(metric="high"), "entries[0].metric must be a number"),
        (lambda d: d["entries"][0].pop("runtime"), "entries[0] lacks runtime"),
    ]:
        data = copy.deepcopy(good)
        change(data)
        with pytest.raises(UserError, match=re.escape(needle)):
            Baseline.load(write(tmp_path / "bad.json", data))


def test_junit_has_one_testcase_per_artifact_and_check(files) -> None:
    def lower(d: dict) -> None:
        d["artifacts"][2]["metric"]["value"], d["artifacts"][2]["drop"] = 0.5, 0.45

    result = check(mutated(files, lower), files[1])
    root = ET.fromstring(result.to_junit())
    cases = root.findall("./testsuite/testcase")
    assert len(cases) == 1 + 4 * len(CHECKS) == int(root.get("tests"))
    failures = [c for c in cases if c.find("failure") is not None]
    assert [(c.get("classname"), c.get("name")) for c in failures] == [
        ("tflite-int8 litert/reference", "metric"), ("tflite-int8 litert/reference", "drop"),
    ]  # fmt: skip
    assert root.get("failures") == "2"
    assert "accuracy fell from 0.9400 to 0.5000" in failures[0].find("failure").get("message")
    markdown = result.to_markdown()
    assert markdown.startswith("### keras-edge check: 2 regression(s) in 25 checks")
    assert "| tflite-int8 litert/reference | accuracy | 0.9400 | 0.5000 | -0.4400 |" in markdown


# ---- the command, as CI runs it -----------------------------------------------------------


def test_cli_impossible_accuracy_exits_1_with_a_readable_diff(cli, files, tmp_path) -> None:
    data = json.loads(files[1].read_text())
    data["entries"][1]["metric"] = 1.5  # tflite-int8 on xnnpack: no model reaches 150 %
    impossible = write(tmp_path / "impossible.json", data)
    junit, md = tmp_path / "out" / "check.xml", tmp_path / "out" / "summary.md"
    proc = cli("check", str(files[0].parent), "--baseline", str(impossible), "--junit", str(junit),
               "--markdown", str(md))  # fmt: skip
    one_error_line(proc, "1 regression(s) in 25 checks", code=1)
    assert "regression: tflite-int8 litert/xnnpack: accuracy fell from 1.5000 to 0.9400" in (
        proc.stderr
    )
    table_line = next(ln for ln in proc.stderr.splitlines() if "FAIL" in ln)
    assert "1.5000" in table_line and "0.9400" in table_line and "-0.5600" in table_line
    assert ET.parse(junit).getroot().get("failures") == "1"
    assert "accuracy fell from 1.5000" in md.read_text()


def test_cli_unchanged_report_exits_0(cli, files, tmp_path) -> None:
    junit = tmp_path / "check.xml"
    proc = cli("check", str(files[0]), "--baseline", str(files[1]), "--junit", str(junit))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ok: no regressions: 25 checks passed" in proc.stderr
    assert len(ET.parse(junit).getroot().findall(".//testcase")) == 25


def test_cli_update_writes_explicitly_and_keeps_tolerances(cli, files, tmp_path) -> None:
    lowered = json.loads(files[0].read_text())
    lowered["artifacts"][1]["metric"]["value"] = 0.5
    new_report = write(tmp_path / "new-report.json", lowered)
    proc = cli("check", str(new_report), "--baseline", str(files[1]), "--update",
               "--size-growth", "0.2")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "FAIL" in proc.stderr  # the diff being accepted is shown before writing
    assert f"wrote baseline {files[1]}: 4 entries" in proc.stderr
    written = Baseline.load(files[1])
    assert written.entries[1].metric == 0.5
    assert (written.tolerances.metric, written.tolerances.size_growth) == (0.01, 0.2)
    fresh = tmp_path / "sub" / "fresh.json"
    proc = cli("check", str(new_report), "--baseline", str(fresh), "--update")
    assert proc.returncode == 0 and fresh.is_file(), proc.stderr[-2000:]
    assert cli("check", str(new_report), "--baseline", str(fresh)).returncode == 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["missing-dir"], "report not found"),
        (["{bad}"], "is not valid JSON"),
        (["{report}", "--baseline", "nope.json"], "baseline not found"),
        (["{report}", "--baseline", "{report}"], "is not a keras-edge baseline"),
        (["{report}", "--per-artifact", "tflite-int8:0.1"], "NAME=TOLERANCE"),
        (["{report}", "--baseline", "digits-cnn", "--update"], "path ending in .json"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(cli, files, tmp_path, args, needle) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    subs = {"{report}": str(files[0]), "{bad}": str(bad)}
    args = [subs.get(a, a) for a in args]
    if "--baseline" not in args:
        args += ["--baseline", str(files[1])]
    one_error_line(cli("check", *args, cwd=tmp_path), needle)


def test_check_command_does_not_import_tensorflow(files) -> None:
    import sys

    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom toolkit.cli.app import app\n"
        f"r = CliRunner().invoke(app, ['check', {str(files[0])!r}, '--baseline', "
        f"{str(files[1])!r}])\nassert r.exit_code == 0, r.output\n"
        "assert 'tensorflow' not in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


# ---- what a baseline promises across machines (docs/check.md) -----------------------------


def _retrained(data: dict) -> None:
    data["reference"]["weights_sha256"] = "b" * 64  # another CPU family trained other weights


def test_same_weights_gate_int8_parity(files) -> None:
    """Same model (weights digest equal): an int8 artifact's max abs diff is a conversion
    property, and growing it past the bound is a regression."""

    def worse(data: dict) -> None:
        data["artifacts"][1]["max_abs_diff"] = 0.5

    result = check(mutated(files, worse), files[1])
    assert statuses(result)[("tflite-int8 litert/xnnpack", "max_abs_diff")] == "fail"


def test_retrained_model_skips_int8_parity_but_not_float(files) -> None:
    """A retrained model quantizes to other int8 outputs: that diff is not comparable (skip,
    with the reason); a float artifact's diff is rounding and stays gated."""

    def retrained_and_worse(data: dict) -> None:
        _retrained(data)
        data["artifacts"][1]["max_abs_diff"] = 0.5  # int8: not comparable
        data["artifacts"][0]["max_abs_diff"] = 0.5  # fp32: a real parity break

    result = check(mutated(files, retrained_and_worse), files[1])
    got = statuses(result)
    assert got[("tflite-int8 litert/xnnpack", "max_abs_diff")] == "skip"
    assert got[("tflite-fp32 litert/xnnpack", "max_abs_diff")] == "fail"
    skip = next(r for r in result.rows if r.subject == "tflite-int8 litert/xnnpack"
                and r.check == "max_abs_diff")  # fmt: skip
    assert "retrained" in skip.message


def test_retrained_model_tolerance_follows_sample_size(files) -> None:
    """At 300 samples one sample is 0.0033: a retrained model's accuracy moving 0.02 is inside
    the 95 % noise floor (1.96 * sqrt(2 p (1-p) / n) = 0.035 at p = 0.95), while the same
    weights moving 0.02 is a regression at the file's 0.01 tolerance; 0.06 fails either way."""
    from toolkit.check.stage import noise_floor

    assert noise_floor(0.95, 300) == pytest.approx(1.96 * (2 * 0.95 * 0.05 / 300) ** 0.5)
    assert noise_floor(0.01, 300, paired=True) == pytest.approx(1.96 * (0.01 / 300) ** 0.5)

    def lower(by: float, retrain: bool):
        def change(data: dict) -> None:
            if retrain:
                _retrained(data)
            data["artifacts"][0]["metric"]["value"] -= by

        return change

    key = ("tflite-fp32 litert/xnnpack", "metric")
    assert statuses(check(mutated(files, lower(0.02, True)), files[1]))[key] == "pass"
    assert statuses(check(mutated(files, lower(0.02, False)), files[1]))[key] == "fail"
    failed = check(mutated(files, lower(0.06, True)), files[1])
    row = next(r for r in failed.rows if (r.subject, r.check) == key)
    assert row.status == "fail" and "noise floor" in row.message


def test_a_failing_drop_says_whether_it_is_significant(files) -> None:
    def worse(data: dict) -> None:
        row = data["artifacts"][1]
        row["metric"]["value"] -= 0.05
        row["drop"] += 0.05
        row.update(drop_ci95=[0.03, 0.07], mcnemar_p=0.001, significant=True)

    result = check(mutated(files, worse), files[1])
    row = next(r for r in result.rows if (r.subject, r.check) == ("tflite-int8 litert/xnnpack",
                                                                   "drop"))  # fmt: skip
    assert row.status == "fail" and "significant (McNemar p 0.001)" in row.message


def test_a_subset_row_is_as_noisy_as_its_own_sample_count(files) -> None:
    """LiteRT reference kernels score a subset: a retrained model's int8 row 0.04 lower is outside
    the noise floor at the report's 300 samples (0.038 at p = 0.94) but inside it at 64 (0.082)."""

    def subset(n: int | None):
        def change(data: dict) -> None:
            _retrained(data)
            row = data["artifacts"][2]  # tflite-int8 litert/reference
            row["metric"]["value"] -= 0.04
            row["samples"] = n

        return change

    key = ("tflite-int8 litert/reference", "metric")
    assert statuses(check(mutated(files, subset(None)), files[1]))[key] == "fail"
    assert statuses(check(mutated(files, subset(64)), files[1]))[key] == "pass"

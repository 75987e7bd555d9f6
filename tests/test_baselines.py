"""The project's own regression gate: retrain the built-in recipes on fast settings, export, and
compare with the committed baselines in models/baselines/. A change that lowers converted
accuracy (or bloats an artifact, or breaks parity) fails here, in CI.

Regenerate a baseline deliberately, after reviewing why it moved:
    .venv/bin/python tests/test_baselines.py            # rewrites models/baselines/digits-cnn.json
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
BASELINES = REPO / "models" / "baselines"
# Fast, seeded settings (training uses op determinism): ~10 s of training, ~15 s of export.
FAST: dict[str, dict[str, Any]] = {
    "digits-cnn": {
        "train": {"train.epochs": 3, "train.tensorboard": False},
        "export": {
            "formats": ["tflite", "onnx"],
            "precisions": ["fp32", "int8"],
            "max_eval_samples": 300,
            "latency_runs": 5,
            "seed": 0,
        },
        "tolerance": 0.02,  # accuracy, drop, agreement: 6 of 300 samples
        "size_growth": 0.10,
    },
}

pytestmark = pytest.mark.slow


def fast_export(recipe: str, work: Path) -> Path:
    """Train `recipe` on its fast settings and export + validate it; return the export dir."""
    from toolkit.pipeline.exporting import run_export
    from toolkit.pipeline.training import run_training

    settings = FAST[recipe]
    run = run_training(recipe, settings["train"], runs_dir=work, name=recipe, force=True)
    out = work / recipe / "export"
    run_export(run.run_dir, out=out, force=True, **settings["export"])
    return out


def regenerate(recipe: str) -> Path:
    """Write models/baselines/RECIPE.json from a fresh fast run (the explicit update path)."""
    import tempfile

    from toolkit.check.baseline import Baseline, Tolerances
    from toolkit.core.report import Report

    settings = FAST[recipe]
    with tempfile.TemporaryDirectory() as work:
        report = Report.load(fast_export(recipe, Path(work)))
    tolerances = Tolerances(metric=settings["tolerance"], size_growth=settings["size_growth"])
    source = f"tests/test_baselines.py fast settings for {recipe}: {json.dumps(settings)}"
    baseline = Baseline.from_report(report, tolerances, source=source)
    path = baseline.save(BASELINES / f"{recipe}.json")
    print(f"wrote {path}: {len(baseline.entries)} entries")
    return path


@pytest.fixture(scope="module")
def digits_export(tmp_path_factory) -> Path:
    return fast_export("digits-cnn", tmp_path_factory.mktemp("baselines"))


def test_every_built_in_baseline_has_fast_settings() -> None:
    assert sorted(p.stem for p in BASELINES.glob("*.json")) == sorted(FAST)


def test_fresh_run_passes_the_committed_baseline(cli, digits_export, tmp_path) -> None:
    from toolkit.check.baseline import Baseline
    from toolkit.check.stage import CHECKS

    baseline = Baseline.load(BASELINES / "digits-cnn.json")
    # tflite/onnx x fp32/int8, LiteRT on xnnpack + reference, int8 on TFLM (host)
    assert len(baseline.entries) == 7
    junit = tmp_path / "check.xml"
    # The built-in name resolves to models/baselines/digits-cnn.json; tolerances come from it.
    proc = cli("check", str(digits_export), "--baseline", "digits-cnn", "--junit", str(junit))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ok: no regressions" in proc.stderr
    cases = ET.parse(junit).getroot().findall(".//testcase")
    assert len(cases) == 1 + len(baseline.entries) * len(CHECKS)


def test_impossible_accuracy_fails_the_gate(cli, digits_export, tmp_path) -> None:
    data = json.loads((BASELINES / "digits-cnn.json").read_text())
    int8 = next(e for e in data["entries"] if e["artifact"] == "tflite-int8")
    int8["metric"] = 1.5  # 150 %: no run can reach it
    impossible = tmp_path / "impossible.json"
    impossible.write_text(json.dumps(data))
    proc = cli("check", str(digits_export), "--baseline", str(impossible))
    assert proc.returncode == 1, proc.stderr[-3000:]
    label = f"tflite-int8 {int8['runtime']}/{int8['provider']}"
    assert f"regression: {label}: accuracy fell from 1.5000 to " in proc.stderr
    assert "Traceback" not in proc.stderr


def test_lowered_converted_accuracy_is_caught(digits_export) -> None:
    """What the gate is for: an int8 model that lost 3 points fails while fp32 stays green."""
    from toolkit.check.stage import check
    from toolkit.core.report import Report

    report = Report.load(digits_export)
    for row in report.artifacts:
        if row.name == "onnx-int8":
            row.metric["value"] -= 0.03
            row.drop = (row.drop or 0.0) + 0.03
    result = check(report, BASELINES / "digits-cnn.json")
    failed = {(r.artifact, r.check) for r in result.regressions}
    assert failed == {("onnx-int8", "metric"), ("onnx-int8", "drop")}, result.summary()


if __name__ == "__main__":
    for name in sys.argv[1:] or sorted(FAST):
        regenerate(name)

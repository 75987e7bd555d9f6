"""Precisions that cannot apply to a model are skipped, one line each, and listed in report.json.

Only an explicit request for that artifact (named in --precisions or --formats) fails: exit 2,
one `error:` line. The default "every precision" export succeeds with the rest.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _badinput import one_error_line

from toolkit.convert import select
from toolkit.convert.calibration import ConversionFailed, short_reason
from toolkit.convert.stage import skippable
from toolkit.core.errors import UserError

keras = pytest.importorskip("keras")

TINY = {
    "name": "tiny",
    "dataset": {"name": "digits", "image_size": [8, 8], "max_samples": 400},
    "model": {"builder": "cnn", "args": {"filters": [8, 16], "dense": 16}},
    "train": {"epochs": 2, "batch_size": 32, "tensorboard": False},
}


def test_only_artifacts_the_request_did_not_name_may_be_skipped():
    everything = select(None, None)
    assert skippable(everything, None, None) == {f.name for f in everything}
    assert skippable(select(["tflite"], None), ["tflite"], None) >= {"tflite-int16x8"}
    named = select(["tflite-int16x8", "tflite-int8"], None)
    assert skippable(named, ["tflite-int16x8", "tflite-int8"], None) == set()
    chosen = select(None, ["int8", "int16x8"])
    assert skippable(chosen, None, ["int8", "int16x8"]) == {"keras-fp32"}


def test_short_reason_is_the_converters_error_sentence():
    mlir = (
        '<unknown>:0: error: loc(fused["a", "b"]): Quantization to 16x8-bit not yet '
        "supported for op: 'DEQUANTIZE'\n<unknown>:0: note: see current operation: ..."
    )
    assert short_reason(RuntimeError(mlir)) == (
        "Quantization to 16x8-bit not yet supported for op: 'DEQUANTIZE'"
    )
    assert short_reason(ValueError("")) == "ValueError"


@pytest.fixture
def failing_int8(monkeypatch):
    """tflite-int8 cannot apply (as for a model whose ops have no int8 kernel)."""
    from toolkit import convert as convert_pkg

    real = convert_pkg.EXPORTERS["tflite"]

    def exporter(model, filepath, precision="fp32", **kw):
        if precision == "int8":
            cause = RuntimeError("<unknown>:0: error: 'tf.Erf' op has no int8 kernel\nnote: x")
            raise ConversionFailed("tflite-int8", "TFLite conversion", cause)
        return real(model, filepath, precision, **kw)

    monkeypatch.setitem(convert_pkg.EXPORTERS, "tflite", exporter)


def _tiny_model():
    inp = keras.Input((4,), name="input")
    return keras.Model(inp, keras.layers.Dense(2, name="out")(inp))


def test_stage_skips_an_optional_artifact_and_fails_a_named_one(failing_int8, tmp_path, capsys):
    from toolkit.convert.stage import export

    model = _tiny_model()
    calibration = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    formats = select(["tflite"], ["fp32", "int8", "dynamic"])
    result = export(model, formats, tmp_path / "a", calibration=calibration,
                    optional={"tflite-int8", "tflite-dynamic"})  # fmt: skip
    assert result.skipped == [{"name": "tflite-int8", "reason": "'tf.Erf' op has no int8 kernel"}]
    assert sorted(p.name for p in result.artifacts) == ["model-dynamic.tflite", "model-fp32.tflite"]
    lines = [line for line in capsys.readouterr().err.splitlines() if "skipped" in line]
    assert lines == ["skipped tflite-int8: 'tf.Erf' op has no int8 kernel"]
    with pytest.raises(UserError, match=r"tf\.Erf"):  # named: not optional, the export fails
        export(model, formats, tmp_path / "b", calibration=calibration)
    assert not (tmp_path / "b").exists()


def test_report_carries_skipped_rows(tmp_path):
    from toolkit.core.report import Report

    report = Report(reference={"name": "keras-fp32", "metric": {"name": "accuracy", "value": 1}},
                    artifacts=[], versions={},
                    skipped=[{"name": "tflite-int16x8", "reason": "no 16x8 kernel"}])  # fmt: skip
    report.write_json(tmp_path)
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["skipped"] == [{"name": "tflite-int16x8", "reason": "no 16x8 kernel"}]
    assert Report.load(tmp_path).skipped == data["skipped"]
    del data["skipped"]  # an older report without the key still loads
    assert Report.from_dict(data).skipped == []


@pytest.fixture(scope="module")
def qat_run(tmp_path_factory) -> Path:
    """A tiny digits run pruned to 50 % and QAT fine-tuned: RUN/optimized is a fake-quant graph."""
    from toolkit.core.optimize_config import from_flags
    from toolkit.core.recipe import parse_recipe
    from toolkit.optimize.stage import optimize
    from toolkit.train.stage import train

    run = train(parse_recipe(TINY), tmp_path_factory.mktemp("runs")).run_dir
    optimize(run, from_flags(prune=0.5, qat=True, epochs=1), run / "optimized")
    return run


@pytest.mark.slow
def test_qat_export_skips_int16x8_and_lists_it_in_the_report(cli, qat_run):
    optimized = qat_run / "optimized"
    proc = cli("export", str(optimized), "--max-eval-samples", "40", "--latency-runs", "1",
               "--runtimes", "litert:xnnpack,onnxruntime:cpu")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    skip_lines = [line for line in proc.stderr.splitlines() if line.startswith("skipped ")]
    assert any(line.startswith("skipped tflite-int16x8: ") for line in skip_lines), proc.stderr
    data = json.loads((optimized / "export" / "report.json").read_text())
    names = {row["name"]: row["reason"] for row in data["skipped"]}
    assert names.get("tflite-int16x8")
    assert "\n" not in names["tflite-int16x8"]
    assert len(skip_lines) == len(data["skipped"])  # one console line per skipped artifact
    exported = {row["name"] for row in data["artifacts"]}
    assert {"tflite-fp32", "tflite-int8", "onnx-int8"} <= exported
    assert not exported & set(names)
    assert not (optimized / "export" / "model-int16x8.tflite").exists()
    from toolkit.convert.tflite_signature import signature_keys

    for tflite in (optimized / "export").glob("*.tflite"):  # the QAT graph's files too
        assert signature_keys(tflite.read_bytes()) == ["serving_default"], tflite.name

    asked = cli("export", str(optimized), "--formats", "tflite-int16x8", "--out",
                str(qat_run / "only16"), "--latency-runs", "0")  # fmt: skip
    one_error_line(asked, "tflite-int16x8")
    assert not (qat_run / "only16").exists()


@pytest.mark.slow
def test_optimized_variants_record_their_skips_too(qat_run, tmp_path):
    from toolkit.pipeline.exporting import run_export

    _, report = run_export(qat_run, formats=["tflite"], precisions=["fp32", "int16x8"],
                           out=tmp_path / "export", latency_runs=0, max_eval_samples=40,
                           runtimes=["litert:xnnpack"])  # fmt: skip
    skipped = {row["name"] for row in report.skipped}
    assert "prune+qat-tflite-int16x8" in skipped  # the plain int16x8 converts; the QAT twin not
    assert "tflite-int16x8" in {a.name for a in report.artifacts}
    data = json.loads((tmp_path / "export" / "report.json").read_text())
    assert {row["name"] for row in data["skipped"]} == skipped

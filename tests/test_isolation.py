"""A native crash in one runtime is a failed row, not a dead validation (issue: LiteRT's reference
SOFTMAX kernel aborts in Prepare when the int8 softmax input scale is tiny, e.g. the nearly
constant logits of a random-weight MobileNetV2; docs/export.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def aborting(tmp_path_factory) -> tuple[Path, Path]:
    """An int8 .tflite whose softmax input range is ~1e-7: XNNPACK runs it, LiteRT's reference
    kernels SIGABRT in allocate_tensors (PreprocessSoftmaxScaling's multiplier check)."""
    import keras

    from toolkit.convert import convert

    work = tmp_path_factory.mktemp("abort")
    inputs = keras.Input((10,), name="input")
    tiny = keras.layers.Rescaling(1e-7)(inputs)
    model = keras.Model(inputs, keras.layers.Softmax(name="output")(tiny))
    model.save(work / "model.keras")
    calibration = np.random.default_rng(0).uniform(-1, 1, (32, 10)).astype(np.float32)
    return work / "model.keras", convert(
        model, "tflite-int8", work / "out", calibration=calibration
    )


def test_a_crashing_runtime_is_a_row_and_the_rest_is_measured(aborting) -> None:
    from toolkit.data.evaldata import EvalData
    from toolkit.validate.stage import validate

    keras_path, tflite = aborting
    x = np.random.default_rng(1).uniform(-1, 1, (40, 10)).astype(np.float32)
    data = EvalData(x, np.zeros(40, dtype=np.int64), "classification")
    report = validate([tflite], data, reference=keras_path, latency_runs=0, progress=False)
    rows = {r.provider: r for r in report.artifacts}
    assert rows["reference"].crash == "SIGABRT"
    assert "crashed" in rows["reference"].error and "SIGABRT" in rows["reference"].error
    assert rows["xnnpack"].error is None and rows["xnnpack"].agreement is not None
    assert json.loads(report.to_json())["artifacts"][1]["crash"] == "SIGABRT"


def test_export_publishes_then_fails_unless_the_crash_is_allowed(cli, aborting, tmp_path) -> None:
    from _badinput import one_error_line

    keras_path, _ = aborting
    rng = np.random.default_rng(2)
    np.savez(tmp_path / "d.npz", x=rng.uniform(-1, 1, (200, 10)).astype(np.float32),
             y=np.arange(200) % 10)  # fmt: skip
    args = ["export", str(keras_path), "--data", f"npz:{tmp_path / 'd.npz'}", "--formats",
            "tflite", "--precisions", "fp32,int8", "--latency-runs", "0", "--calib-samples", "32",
            "--task", "classification", "--runtimes", "litert"]  # fmt: skip
    proc = cli(*args, "--out", str(tmp_path / "a"))
    one_error_line(proc, "1 runtime row(s) crashed: tflite-int8 on litert/reference (SIGABRT)",
                   code=1)  # fmt: skip
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert sum(1 for r in report["artifacts"] if r.get("crash")) == 1
    assert not list(tmp_path.glob(".*partial*"))
    allowed = cli(*args, "--out", str(tmp_path / "b"), "--allow-crash")
    assert allowed.returncode == 0, allowed.stderr[-2000:]


def test_slow_rows_run_on_a_subset_and_say_how_bit_exact(tmp_path) -> None:
    """The slow rows (reference kernels, TFLite Micro, int16x8 on XNNPACK) see the first N
    samples; their drop is against the Keras model on those same samples, and `bit_exact`
    compares them with the artifact's full row (XNNPACK) where it has one."""
    import keras

    from toolkit.convert import convert
    from toolkit.data.evaldata import EvalData
    from toolkit.validate.plan import sampled_reason
    from toolkit.validate.stage import validate

    inputs = keras.Input((12,), name="input")
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(hidden))
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 12)).astype(np.float32)
    artifacts = [convert(model, name, tmp_path / name, calibration=x[:64])
                 for name in ("tflite-fp32", "tflite-int8", "tflite-int16x8")]  # fmt: skip
    data = EvalData(x, np.argmax(model.predict(x, verbose=0), 1), "classification")
    report = validate(artifacts, data, reference=model, latency_runs=0, progress=False,
                      reference_samples=50)  # fmt: skip
    for row in report.artifacts:
        slow = sampled_reason((row.runtime, row.provider), row.precision)
        assert (row.samples == 50) == (slow is not None), row
        if slow is None:
            assert row.bit_exact is None
        elif row.precision != "int16x8":  # int16x8 has no full row to compare with
            assert 0.0 <= row.bit_exact <= 1.0 and slow in row.notes[-1]
    int16 = next(r for r in report.artifacts if (r.name, r.provider) == ("tflite-int16x8",
                                                                         "xnnpack"))  # fmt: skip
    assert int16.samples == 50 and "not delegated to XNNPACK" in int16.notes[-1]
    int8_ref = next(r for r in report.artifacts if r.name == "tflite-int8" and
                    r.provider == "reference")  # fmt: skip
    assert int8_ref.bit_exact >= 0.95  # integer kernels: XNNPACK and reference agree (nearly) all
    full = validate(artifacts[:1], data, reference=model, latency_runs=0, progress=False,
                    reference_samples=None)  # fmt: skip
    assert all(r.samples is None for r in full.artifacts)


def test_a_big_models_slow_rows_get_fewer_samples_by_its_macs(tmp_path) -> None:
    """The subset shrinks with the model's MACs per sample (MobileNetV2-224: 85), never below
    the floor, never above the limit; the MACs are read from the artifact itself."""
    import keras

    from toolkit.convert import convert
    from toolkit.validate.plan import SUBSET_FLOOR, artifact_macs, subset_size

    assert subset_size(256, 300_000_000) == 85
    assert subset_size(256, 10_000_000) == 256  # a small model keeps the whole limit
    assert subset_size(256, 10**12) == SUBSET_FLOOR
    assert subset_size(40, 10**12) == 40  # the floor never raises an explicit limit
    assert subset_size(None, 300_000_000) is None  # --full-reference: every sample
    assert subset_size(256, None) == 256
    inputs = keras.Input((12,), name="input")
    model = keras.Model(inputs, keras.layers.Dense(4)(keras.layers.Dense(16)(inputs)))
    path = convert(model, "tflite-fp32", tmp_path)
    assert artifact_macs(path) == 12 * 16 + 16 * 4
    assert artifact_macs(tmp_path / "missing.tflite") is None


def test_a_failing_reference_pass_raises_its_own_error(tmp_path) -> None:
    """The inputs are staged during the Keras pass; when that pass fails, its error is what
    the caller sees (not the staging's "staged 0 inputs" check), and nothing is left over."""
    import keras

    from toolkit.convert import convert
    from toolkit.core.errors import UserError
    from toolkit.data.evaldata import EvalData
    from toolkit.validate.stage import validate

    inputs = keras.Input((4,), name="input")
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    artifact = convert(model, "tflite-fp32", tmp_path)
    wide = keras.Input((5,))
    other = keras.Model(wide, keras.layers.Dense(2)(wide))  # takes 5 features, gets 4
    from toolkit.data.evaldata import StreamedInputs

    class Split:  # an image folder's split in miniature: decoded batch by batch
        y = np.zeros(8, int)
        sample_shape = (4,)

        def x_batches(self, limit, seed, batch_size):
            for i in range(0, 8, batch_size):
                yield np.zeros((min(batch_size, 8 - i), 4), np.float32)

    streamed = StreamedInputs(Split(), None, 0, lambda x: x, batch_size=4)
    data = EvalData(streamed, Split.y, "classification")
    with pytest.raises((UserError, ValueError)) as err:
        validate([artifact], data, reference=other, latency_runs=0, progress=False)
    assert "staged" not in str(err.value)

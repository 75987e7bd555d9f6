"""Bias correction (issue #15): biases absorb the mean shift int8 weight rounding causes."""

from __future__ import annotations

import numpy as np
from _models import separable

from toolkit.convert import convert


def _data() -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, (400, 12, 12, 3)).astype(np.float32)


def _kernels(model) -> list[np.ndarray]:
    from toolkit.convert.bias_correct import WEIGHTED, _walk

    return [np.asarray(layer.get_weights()[0]) for layer in _walk(model)
            if type(layer).__name__ in WEIGHTED]  # fmt: skip


def test_only_biases_move_and_the_int8_files_mean_error_shrinks(tmp_path) -> None:
    """Per tensor, the depthwise kernel's narrow channels round to a few levels: their mean
    output shifts. Corrected, the kernels are untouched, the float model barely moves, and
    the converted int8 file's outputs are closer to float on average and in SQNR."""
    from toolkit.convert.bias_correct import bias_correct
    from toolkit.runtimes import open_runner

    model, x = separable(relu6=False), _data()
    ref = np.asarray(model(x[200:], training=False))
    result = bias_correct(model, x[:200], per_tensor=True)
    assert result.skipped is None and "dw" in result.layers, result
    for before, after in zip(_kernels(model), _kernels(result.model), strict=True):
        np.testing.assert_array_equal(before, after)
    moved = np.asarray(result.model.get_layer("dw_bn").moving_mean)
    assert not np.allclose(moved, np.asarray(model.get_layer("dw_bn").moving_mean))

    def errors(**opts) -> tuple[float, float]:
        out = tmp_path / "_".join(f"{k}{v}" for k, v in opts.items())
        path = convert(model, "tflite-int8-float-io", out, calibration=x[:200],
                       granularity="per-tensor", **opts)  # fmt: skip
        with open_runner(path) as runner:
            err = runner.predict(x[200:]) - ref
        bias = float(np.abs(err.mean(axis=0)).mean())
        return bias, float(10 * np.log10(np.sum(ref**2) / np.sum(err**2)))

    (plain_bias, plain_sqnr), (bc_bias, bc_sqnr) = errors(), errors(bias_correction=True)
    assert bc_bias < 0.5 * plain_bias, (plain_bias, bc_bias)  # measured 0.018 -> 0.003
    assert bc_sqnr > plain_sqnr + 3.0, (plain_sqnr, bc_sqnr)  # measured 2.8 -> 15.2 dB
    # After equalization (the ranges fixed), correction still removes the residual shift.
    _, eq_sqnr = errors(equalize=True)
    _, both_sqnr = errors(equalize=True, bias_correction=True)
    assert both_sqnr > eq_sqnr + 1.0, (eq_sqnr, both_sqnr)  # measured 36.7 -> 41.3 dB


def test_onnx_int8_with_correction_loads_and_differs(tmp_path) -> None:
    import onnx

    from toolkit.runtimes import open_runner

    model, x = separable(relu6=False), _data()
    plain = convert(model, "onnx-int8", tmp_path / "a", calibration=x[:200],
                    granularity="per-tensor")  # fmt: skip
    fixed = convert(model, "onnx-int8", tmp_path / "b", calibration=x[:200],
                    granularity="per-tensor", bias_correction=True)  # fmt: skip
    onnx.checker.check_model(str(fixed))
    assert plain.read_bytes() != fixed.read_bytes()
    ref = np.asarray(model(x[200:], training=False))
    with open_runner(plain) as a, open_runner(fixed) as b:
        err_a, err_b = a.predict(x[200:]) - ref, b.predict(x[200:]) - ref
    assert np.abs(err_b.mean(axis=0)).mean() < np.abs(err_a.mean(axis=0)).mean()


def test_a_model_without_biases_is_skipped_with_a_reason(tmp_path) -> None:
    import keras

    from toolkit.convert.bias_correct import bias_correct

    inputs = keras.Input((6,), name="input")
    hidden = keras.layers.Dense(8, activation="relu", use_bias=False)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, use_bias=False)(hidden))
    x = np.random.default_rng(1).normal(size=(64, 6)).astype(np.float32)
    result = bias_correct(model, x)
    assert result.model is model and result.skipped.startswith("no conv/depthwise/dense")
    path = convert(model, "tflite-int8", tmp_path, calibration=x, bias_correction=True)
    assert path.stat().st_size > 0  # the method cannot apply: the plain file, not a failure


def test_cli_flag_lands_in_the_report_and_auto_refuses_it(cli, tmp_path) -> None:
    import json

    from _badinput import one_error_line

    model, x = separable(relu6=False), _data()
    path = tmp_path / "m.keras"
    model.save(path)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(len(x)) % 5)
    base = ["export", str(path), "--data", f"npz:{tmp_path / 'd.npz'}", "--task",
            "classification", "--latency-runs", "0", "--runtimes", "litert:xnnpack"]  # fmt: skip
    proc = cli(*base, "--formats", "tflite", "--precisions", "fp32,int8", "--bias-correction",
               "--out", str(tmp_path / "e"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((tmp_path / "e" / "report.json").read_text())["artifacts"]
    ptq = {r["name"]: r.get("ptq") for r in rows}
    assert ptq["tflite-int8"]["bias_correction"].startswith("4 layers"), ptq
    assert ptq["tflite-fp32"] is None
    bad = cli(*base, "--precisions", "auto", "--max-drop", "0.01", "--bias-correction",
              "--out", str(tmp_path / "f"))  # fmt: skip
    one_error_line(bad, "apply to named precisions")


def test_a_model_with_baked_in_standardization_keeps_its_outputs() -> None:
    """An adapted Normalization layer keeps its statistics in state that `set_weights` alone
    does not apply: the corrected and the equalized copies must compute like the original."""
    import keras

    from toolkit.convert.bias_correct import bias_correct
    from toolkit.convert.equalize import equalize

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(1).normal(5.0, 3.0, (300, 8, 8, 3)).astype(np.float32)
    norm = keras.layers.Normalization(axis=-1, name="normalize")
    norm.adapt(x)
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(8, 3, activation="relu", name="c1")(norm(inputs))
    h = keras.layers.Conv2D(8, 3, activation="relu", name="c2")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(h))
    ref = np.asarray(model(x, training=False))
    same = equalize(model)
    assert same.skipped is None, same
    np.testing.assert_allclose(np.asarray(same.model(x, training=False)), ref, atol=1e-5)
    moved = bias_correct(model, x[:128], per_tensor=True)
    assert moved.skipped is None, moved
    out = np.asarray(moved.model(x, training=False))
    assert np.max(np.abs(out - ref)) <= 0.05 * np.max(np.abs(ref)), np.max(np.abs(out - ref))

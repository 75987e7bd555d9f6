"""AdaRound on the Keras weights (toolkit.convert.adaround): learned rounding that the
converters reproduce exactly, in real LiteRT and onnxruntime sessions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from toolkit.convert import convert


@pytest.fixture(scope="module")
def convnet():
    """Conv -> BN -> ReLU -> depthwise -> BN -> ReLU -> GAP -> Dense: folded BatchNorms, a
    depthwise kernel and a dense head, the layer kinds AdaRound rounds; the depthwise and dense
    kernels have an outlier weight, so per tensor their other weights get few levels."""
    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((10, 10, 3), name="input")
    h = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    h = keras.layers.ReLU()(keras.layers.BatchNormalization()(h))
    h = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(h)
    h = keras.layers.ReLU()(keras.layers.BatchNormalization(name="dw_bn")(h))
    out = keras.layers.Dense(5, name="head")(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inputs, out)
    rng = np.random.default_rng(0)
    for layer in model.layers:  # BatchNorm statistics that are not the identity
        if type(layer).__name__ == "BatchNormalization":
            gamma, beta, _, _ = layer.get_weights()
            n = gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 2, n), beta + rng.normal(0, 0.1, n),
                               rng.normal(0, 0.2, n), rng.uniform(0.5, 2, n)])  # fmt: skip
    for name in ("dw", "head"):  # one outlier weight each: per tensor, the rest round coarsely
        layer = model.get_layer(name)
        kernel = layer.get_weights()[0]
        kernel.flat[0] = 12 * np.abs(kernel).max()
        layer.set_weights([kernel, *layer.get_weights()[1:]])
    x = rng.uniform(-1, 1, (192, 10, 10, 3)).astype(np.float32)
    return model, x


def _sqnr(path, model, x) -> float:
    from toolkit.core.metrics import fidelity
    from toolkit.runtimes import open_runner

    with open_runner(path) as runner:
        out = runner.predict(x)
    return fidelity(out, np.asarray(model(x, training=False)), classes=False)["sqnr_db"]


def _int8_weights(path) -> dict[tuple[int, ...], np.ndarray]:
    """The int8 constant tensors of a .tflite file, by shape."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    out = {}
    for d in interp.get_tensor_details():
        if d["dtype"] == np.int8 and len(d["shape"]) >= 2:
            try:
                out[tuple(d["shape"])] = interp.get_tensor(d["index"])
            except ValueError:
                continue  # an activation buffer, not a constant
    return out


def test_learned_levels_sit_on_the_grid_and_reach_the_file_exactly(convnet, tmp_path):
    from toolkit.convert.adaround import adaround

    model, x = convnet
    result = adaround(model, x[:128], per_tensor=True)
    assert not result.skipped and {"dw", "head"} <= set(result.layers), result.summary
    assert 0 < result.flipped < 0.5, result.summary
    head = result.model.get_layer("head").get_weights()[0]
    step = np.abs(model.get_layer("head").get_weights()[0]).max() / 127
    levels = head / step
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)  # on the grid
    assert np.abs(levels).max() == pytest.approx(127, abs=1e-3)  # the peak, so the scale, kept
    plain = convert(model, "tflite-int8", tmp_path / "plain", calibration=x[:128],
                    granularity="per-tensor")  # fmt: skip
    ours = convert(model, "tflite-int8", tmp_path / "ours", calibration=x[:128],
                   granularity="per-tensor", adaround=True)  # fmt: skip
    in_file = _int8_weights(ours)[(5, 8)]  # TFLite stores the dense kernel as (out, in)
    np.testing.assert_array_equal(in_file, np.round(levels).T.astype(np.int8))
    assert not np.array_equal(_int8_weights(plain)[(5, 8)], in_file)


@pytest.mark.parametrize("fmt", ["tflite-int8-float-io", "onnx-int8"])
def test_per_tensor_adaround_keeps_outputs_closer_than_nearest_rounding(convnet, tmp_path, fmt):
    model, x = convnet
    calib, held = x[:128], x[128:]
    common = {"calibration": calib, "granularity": "per-tensor"}
    plain = convert(model, fmt, tmp_path / "plain", **common)
    ours = convert(model, fmt, tmp_path / "ours", adaround=True, **common)
    assert ours.read_bytes() != plain.read_bytes()
    assert _sqnr(ours, model, held) > _sqnr(plain, model, held) + 0.25  # 0.75 dB measured


def test_a_model_without_weighted_layers_is_skipped_with_a_reason(tmp_path):
    import keras

    from toolkit.convert import adaround as module

    inputs = keras.Input((6,), name="input")
    model = keras.Model(inputs, keras.layers.Softmax()(keras.layers.ReLU()(inputs)))
    x = np.random.default_rng(0).normal(size=(64, 6)).astype(np.float32)
    path = convert(model, "tflite-int8", tmp_path, calibration=x, adaround=True)
    assert path.is_file()  # skipped, not a failed export
    assert module.SUMMARY["tflite"] == "skipped: no conv/depthwise/dense layer"


def test_ptq_adaround_lands_in_the_report(cli, convnet, tmp_path):
    model, x = convnet
    model.save(tmp_path / "m.keras")
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(len(x)) % 5)
    proc = cli("export", str(tmp_path / "m.keras"), "--data", f"npz:{tmp_path / 'd.npz'}",
               "--task", "classification", "--latency-runs", "0", "--out", str(tmp_path / "e"),
               "--formats", "tflite,onnx", "--precisions", "int8", "--granularity",
               "per-tensor", "--ptq", "adaround+bias-correction",
               "--runtimes", "litert:xnnpack,onnxruntime")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((tmp_path / "e" / "report.json").read_text())["artifacts"]
    assert {r["name"] for r in rows} >= {"tflite-int8", "onnx-int8"}
    for row in rows:
        if row["name"] == "keras-fp32":
            continue
        assert row["ptq"]["method"] == "adaround+bias-correction", row["ptq"]
        assert "of weights not rounded to nearest" in row["ptq"]["adaround"], row["ptq"]
        assert "layers" in row["ptq"]["bias_correction"], row["ptq"]


def test_rounding_fits_the_float_layer_output_not_its_own_rounded_inputs():
    """The asymmetric target: with inputs already perturbed upstream (`x` = the float inputs
    plus a systematic shift), the rounding learned against the float layer's own output
    (`float_x`) lands closer to it than the rounding learned against the same weights on the
    perturbed inputs, which can only reproduce the upstream error."""
    import keras

    from toolkit.convert.adaround import _learn

    keras.utils.set_random_seed(5)
    layer = keras.layers.Dense(16, use_bias=False)
    rng = np.random.default_rng(1)
    float_x = rng.normal(0, 1, (256, 32)).astype(np.float32)
    x = float_x + np.float32(0.01) * rng.normal(0, 1, (1, 32)).astype(np.float32)
    layer.build((None, 32))
    kernel = np.asarray(layer.get_weights()[0], np.float32)
    fold = np.ones(16, np.float32)
    target = float_x @ kernel

    def error(k: np.ndarray) -> float:
        return float(np.mean((x @ k - target) ** 2))

    own, _ = _learn(layer, x, kernel, fold, per_tensor=True, levels=127)
    asym, _ = _learn(layer, x, kernel, fold, per_tensor=True, levels=127, float_x=float_x)
    # measured 0.943 of the error (a weight moves one level at most, so most of a shift
    # stays); the same target on both sides gives 1.0
    assert error(asym) < 0.97 * error(own), (error(asym), error(own))

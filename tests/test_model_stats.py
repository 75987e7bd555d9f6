"""`inspect`'s static facts: params and MACs agree with a hand count in TFLite and ONNX."""

from __future__ import annotations

import json

import numpy as np
import pytest

# input 8x8x3 -> conv 3x3 (3->4, same) -> depthwise 3x3 (4, same) -> flatten -> dense 5
CONV_MACS = 8 * 8 * 4 * (3 * 3 * 3)
DEPTHWISE_MACS = 8 * 8 * 4 * (3 * 3)
DENSE_MACS = 5 * (8 * 8 * 4)
PARAMS = (3 * 3 * 3 * 4 + 4) + (3 * 3 * 4 + 4) + (8 * 8 * 4 * 5 + 5)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, object]:
    import keras

    from toolkit.convert.onnx import export_onnx
    from toolkit.convert.tflite import export_tflite

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(4, 3, padding="same", bias_initializer="random_normal"),
        keras.layers.DepthwiseConv2D(3, padding="same", bias_initializer="random_normal"),
        keras.layers.Flatten(),
        keras.layers.Dense(5, bias_initializer="random_normal"),
    ])  # fmt: skip
    assert model.count_params() == PARAMS
    out = tmp_path_factory.mktemp("stats")
    calib = np.random.default_rng(0).normal(size=(16, 8, 8, 3)).astype(np.float32)
    return {
        "fp32": export_tflite(model, out / "m-fp32.tflite"),
        "int8": export_tflite(model, out / "m-int8.tflite", "int8", calibration=calib),
        "onnx": export_onnx(model, out / "m.onnx"),
    }


@pytest.mark.parametrize("name", ["fp32", "int8"])
def test_tflite_params_macs_and_bytes(artifacts, name) -> None:
    from toolkit.core.model_stats import tflite_stats

    path = artifacts[name]
    stats = tflite_stats(path)
    assert stats["macs"] == CONV_MACS + DEPTHWISE_MACS + DENSE_MACS
    assert stats["params"] == PARAMS
    assert stats["ops"]["CONV_2D"] == 1 and stats["ops"]["DEPTHWISE_CONV_2D"] == 1
    assert sum(stats["bytes"].values()) == path.stat().st_size
    quant = stats["bytes"]["quantization_params"]
    if name == "fp32":
        assert quant == 0
    else:  # per-channel scale (4 B) + int64 zero point (8 B), for weights and biases
        assert quant >= 2 * 12 * (4 + 4 + 5)


def test_onnx_params_and_macs(artifacts) -> None:
    from toolkit.core.model_stats import onnx_stats

    stats = onnx_stats(artifacts["onnx"])
    assert stats["macs"] == CONV_MACS + DEPTHWISE_MACS + DENSE_MACS
    assert stats["params"] == PARAMS
    assert stats["opset"]["ai.onnx"] == 17


def test_inspect_json_shows_them(cli, artifacts) -> None:
    result = cli("inspect", str(artifacts["int8"]), "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["macs"] == CONV_MACS + DEPTHWISE_MACS + DENSE_MACS
    assert info["params"] == PARAMS and info["inputs"][0]["dtype"] == "int8"


def test_split_softmax_leaves_a_model_without_one_alone(artifacts) -> None:
    from toolkit.core.tflite_edit import split_trailing_softmax

    assert split_trailing_softmax(artifacts["int8"].read_bytes()) is None  # ends at a Dense

"""The Runner interface behaves the same over Keras, LiteRT and ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from toolkit.core.errors import UserError
from toolkit.runtimes import (
    TensorSpec,
    available_runtimes,
    dequantize,
    open_runner,
    quantize,
    runtime_for,
)

keras = pytest.importorskip("keras")


@pytest.fixture(scope="module")
def tabular() -> tuple[object, np.ndarray]:
    """A small trained Dense model on 8 features, 3 classes."""
    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(256, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5).astype(int)
    inp = keras.Input((8,), name="features")
    h = keras.layers.Dense(16, activation="relu")(inp)
    out = keras.layers.Dense(3, activation="softmax")(h)
    model = keras.Model(inp, out)
    model.compile(keras.optimizers.Adam(0.02), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    return model, x


@pytest.fixture(scope="module")
def artifacts(tabular, tmp_path_factory) -> dict[str, Path]:
    """One artifact per runtime shape: fixed-batch and dynamic-batch tflite, int8, onnx."""
    import tensorflow as tf

    from toolkit.convert import convert
    from toolkit.convert.tflite import export_tflite

    model, x = tabular
    out = tmp_path_factory.mktemp("artifacts")
    paths = {
        name: convert(model, name, out, calibration=x[:64])
        for name in ("keras-fp32", "tflite-fp32", "tflite-int8", "onnx-fp32", "onnx-int8")
    }
    dynamic = (tf.TensorSpec([None, 8], tf.float32, name="input"),)
    paths["tflite-dynamic-batch"] = export_tflite(
        model, out / "dyn.tflite", "fp32", input_signature=dynamic
    )
    return paths


CASES = [
    ("keras-fp32", None),
    ("tflite-fp32", "xnnpack"),
    ("tflite-fp32", "reference"),
    ("tflite-int8", "xnnpack"),
    ("tflite-int8", "reference"),
    ("tflite-dynamic-batch", "xnnpack"),
    ("tflite-dynamic-batch", "reference"),
    ("onnx-fp32", "CPUExecutionProvider"),
    ("onnx-int8", "cpu"),
]


@pytest.mark.parametrize(("name", "provider"), CASES)
def test_batch_of_7_and_latency_on_every_runner(tabular, artifacts, name, provider):
    model, x = tabular
    ref = np.asarray(model(x[:7], training=False))
    with open_runner(artifacts[name], provider=provider) as runner:
        out = runner.predict(x[:7])
        assert out.shape == (7, 3) and out.dtype == np.float32
        if "int8" in name:
            assert (out.argmax(1) == ref.argmax(1)).mean() >= 6 / 7
            assert np.abs(out - ref).max() < 0.1
        else:
            assert np.abs(out - ref).max() < 1e-4
        np.testing.assert_allclose(runner.predict(x[0]), out[:1], atol=1e-6)  # unbatched sample
        latency = runner.latency_ms(x[0], warmup=2, runs=10)
        assert 0 < latency["p50"] <= latency["p90"]


def test_tensor_specs_describe_the_artifact(artifacts):
    with open_runner(artifacts["tflite-fp32"]) as r:
        assert (r.name, r.provider) == ("litert", "xnnpack")
        assert r.inputs[0].shape == (1, 8) and r.inputs[0].fixed_batch == 1
        assert r.inputs[0].quantization is None
    with open_runner(artifacts["tflite-dynamic-batch"], provider="reference") as r:
        assert r.inputs[0].shape == (-1, 8) and r.inputs[0].fixed_batch is None
        assert r.predict(np.zeros((5, 8))).shape == (5, 3)
        assert r.predict(np.zeros((2, 8))).shape == (2, 3)  # resized back down
    with open_runner(artifacts["tflite-int8"]) as r:
        assert r.inputs[0].dtype == "int8" and r.outputs[0].dtype == "int8"
        scale, zero_point = r.outputs[0].quantization
        assert scale > 0 and -128 <= zero_point <= 127
    with open_runner(artifacts["onnx-fp32"]) as r:
        assert (r.name, r.provider) == ("onnxruntime", "CPUExecutionProvider")
        assert r.inputs[0].shape == (-1, 8) and r.inputs[0].dtype == "float32"
    with open_runner(artifacts["keras-fp32"]) as r:
        assert r.name == "keras" and r.inputs[0].shape == (-1, 8)


def test_onnx_runner_pins_threads_only_when_asked(tabular, artifacts):
    _, x = tabular
    with open_runner(artifacts["onnx-fp32"]) as default:
        options = default._session.get_session_options()
        assert options.intra_op_num_threads == 0  # ORT's own choice, as before
        expected = default.predict(x[:3])
    with open_runner(artifacts["onnx-int8"], provider="cpu", num_threads=1) as r:
        options = r._session.get_session_options()
        assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)
    with open_runner(artifacts["onnx-fp32"], num_threads=1) as r:
        np.testing.assert_allclose(r.predict(x[:3]), expected, atol=1e-6)
    with pytest.raises(UserError, match="num_threads"):
        open_runner(artifacts["onnx-fp32"], num_threads=0)


def test_keras_runner_accepts_a_model_object(tabular):
    model, x = tabular
    runner = open_runner(model)
    assert runner.name == "keras"
    np.testing.assert_allclose(runner.predict(x[:3]), model(x[:3], training=False), atol=1e-6)


def test_wrong_input_shape_is_a_user_error(artifacts):
    for name in ("tflite-fp32", "onnx-fp32", "keras-fp32"):
        with open_runner(artifacts[name]) as r, pytest.raises(UserError, match=r"\(batch, 8\)"):
            r.predict(np.zeros((2, 9)))


def test_non_tflite_bytes_are_refused(tmp_path, artifacts):
    bogus = tmp_path / "model.tflite"
    bogus.write_bytes(b"this is not a flatbuffer at all")
    with pytest.raises(UserError, match="not a TFLite flatbuffer"):
        open_runner(bogus)
    renamed = tmp_path / "onnx.tflite"
    renamed.write_bytes(artifacts["onnx-fp32"].read_bytes())
    with pytest.raises(UserError, match="not a TFLite flatbuffer"):
        open_runner(renamed)
    with pytest.raises(UserError, match="not found"):
        open_runner(tmp_path / "missing.tflite")


def test_corrupted_onnx_is_refused(tmp_path, artifacts):
    truncated = tmp_path / "truncated.onnx"
    data = artifacts["onnx-fp32"].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="not a valid ONNX model"):
        open_runner(truncated)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\xff" * 64)
    with pytest.raises(UserError, match="not a valid ONNX model"):
        open_runner(garbage)


def test_unavailable_provider_lists_the_available_ones(artifacts):
    import onnxruntime as ort

    available = ort.get_available_providers()
    missing = next(
        p for p in ("OpenVINOExecutionProvider", "NoSuchExecutionProvider") if p not in available
    )
    with pytest.raises(UserError, match=r"not available here; available: .*CPUExecutionProvider"):
        open_runner(artifacts["onnx-fp32"], provider=missing)


def test_missing_openvino_says_how_to_get_it(monkeypatch):
    """The OpenVINO EP's usual failure is a shadowed install; the error names the fix."""
    import importlib.metadata as md

    from toolkit.runtimes.onnxrt import install_hint

    assert install_hint("CUDAExecutionProvider") == ""
    real = md.version

    def without(name: str) -> str:
        if name == "onnxruntime-openvino":
            raise md.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(md, "version", without)
    assert "make openvino" in install_hint("OpenVINOExecutionProvider")
    monkeypatch.setattr(md, "version", lambda name: "1.24.1")
    hint = install_hint("OpenVINOExecutionProvider")
    assert "pip uninstall onnxruntime" in hint and "--force-reinstall --no-deps" in hint


def test_open_runner_dispatch_errors(artifacts, tmp_path):
    assert runtime_for("a/b/model.keras") == "keras"
    assert runtime_for("m.TFLITE") == "litert"
    assert runtime_for("m.onnx") == "onnxruntime"
    with pytest.raises(UserError, match="cannot tell which runtime"):
        open_runner(tmp_path / "model.pt")
    with pytest.raises(UserError, match="unknown runtime 'tflite'"):
        open_runner(artifacts["tflite-fp32"], runtime="tflite")
    with pytest.raises(UserError, match="unknown LiteRT delegate 'gpu'"):
        open_runner(artifacts["tflite-fp32"], provider="gpu")
    with pytest.raises(UserError, match="keras runtime has no provider"):
        open_runner(artifacts["keras-fp32"], provider="xnnpack")


def test_available_runtimes_lists_what_runs_here():
    pairs = available_runtimes()
    assert pairs[0][0] == "keras"
    assert ("litert", "xnnpack") in pairs and ("litert", "reference") in pairs
    assert ("onnxruntime", "CPUExecutionProvider") in pairs


def test_quantize_rounds_and_clips_to_the_dtype_range():
    spec = TensorSpec("x", (-1, 3), "int8", (0.5, -10))
    q = quantize(np.array([[0.0, 1.26, 1000.0]]), spec)
    assert q.dtype == np.int8 and q.tolist() == [[-10, -7, 127]]
    assert dequantize(q, spec).tolist() == [[0.0, 1.5, 68.5]]
    u8 = TensorSpec("x", (-1, 2), "uint8", (1.0, 0))
    assert quantize(np.array([[-5.0, 300.0]]), u8).tolist() == [[0, 255]]
    i16 = TensorSpec("x", (-1, 1), "int16", (1e-3, 0))
    assert quantize(np.array([[100.0]]), i16).tolist() == [[32767]]
    f32 = TensorSpec("x", (-1, 1), "float32")
    assert quantize(np.array([[0.25]]), f32).dtype == np.float32
    with pytest.raises(ValueError, match="no scale"):
        quantize(np.zeros((1, 1)), TensorSpec("x", (-1, 1), "int8"))

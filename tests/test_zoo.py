"""Every builder in the zoo: builds, trains a step, converts to TFLite int8 and ONNX, and both
artifacts load and run in their runtimes (LiteRT, ONNX Runtime) close to the Keras model."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.builders import BuildContext, build_model, list_builders
from toolkit.core.errors import UserError

# Small shapes and widths keep each round trip to a few seconds on 2 CPU cores.
CASES: dict[str, tuple[tuple[int, ...], dict]] = {
    "cnn": ((16, 16, 1), {"filters": [8, 16]}),
    "mlp": ((12,), {}),
    "mobilenet_v1": ((32, 32, 3), {"alpha": 0.25}),
    "mobilenet_v2": ((32, 32, 3), {"alpha": 0.35}),
    "mobilenet_v3_small": ((32, 32, 3), {"alpha": 0.75}),
    "mobilenet_v3_large": ((32, 32, 3), {"alpha": 0.75}),
    "resnet8": ((32, 32, 3), {"filters": [8, 16, 32]}),
    "ds_cnn": ((32, 10), {"filters": 16, "blocks": 2}),
    "conv1d": ((24, 3), {"filters": [8, 16]}),
    "lstm": ((24, 3), {"units": [8]}),
    "gru": ((24, 3), {"units": [8]}),
    "transformer_tiny": ((24, 3), {"d_model": 16, "blocks": 1, "ff": 32}),
    # GELU on purpose: TF's exact GELU computes erfc, which tf2onnx must be taught (onnx.py)
    "vit_tiny": ((16, 16, 3), {"d_model": 16, "heads": 2, "blocks": 1, "ff": 32}),
    "autoencoder": ((24, 3), {"hidden": [16], "bottleneck": 4}),
}
TASK = {"autoencoder": "anomaly"}


def test_every_registered_builder_has_a_case() -> None:
    # detectors train on boxes, not class labels: tests/test_detection*.py round-trips them
    named = {info.name for info in list_builders() if "detection" not in info.tasks}
    assert named == set(CASES)


def _tiny_model(name: str):
    shape, args = CASES[name]
    task = TASK.get(name, "classification")
    ctx = BuildContext(input_shape=shape, task=task, num_outputs=3)
    return build_model(name, ctx, args), shape, task


def _tflite_ops(path) -> set[str]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    return {op["op_name"] for op in interpreter._get_ops_details()}


# MobileNets are big graphs: their conversions take most of this file's time, so they run
# with the slow (end-to-end) tests.
PARAMS = [
    pytest.param(n, marks=pytest.mark.slow) if n.startswith("mobilenet") else n
    for n in sorted(CASES)
]


@pytest.mark.parametrize("name", PARAMS)
def test_builder_round_trip(name: str, tmp_path) -> None:
    from toolkit.convert import convert
    from toolkit.core.tasks import resolve_loss
    from toolkit.runtimes import open_runner
    from toolkit.train.optim import make_loss

    model, shape, task = _tiny_model(name)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, *shape)).astype("float32")
    y = np.arange(16) % (2 if task == "anomaly" else 3)
    model.compile("adam", make_loss(resolve_loss("auto", task, 3), 0.0))
    before = [w.copy() for w in model.get_weights()]
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))

    reference = model.predict(x[:4], verbose=0)
    assert reference.shape == ((4, 1) if task == "anomaly" else (4, 3))
    int8 = convert(model, "tflite-int8", tmp_path, calibration=x)
    onnx = convert(model, "onnx-fp32", tmp_path)
    tflite_out = open_runner(int8).predict(x[:4])
    onnx_out = open_runner(onnx).predict(x[:4])
    assert tflite_out.shape == reference.shape and np.all(np.isfinite(tflite_out))
    np.testing.assert_allclose(onnx_out, reference, atol=1e-4, rtol=1e-3)
    scale = float(np.max(np.abs(reference))) or 1.0
    assert float(np.max(np.abs(tflite_out - reference))) < 0.35 * max(scale, 1.0)
    if name == "lstm":
        assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in _tflite_ops(int8)
        assert "WHILE" not in _tflite_ops(int8)
        # The fused op keeps state between invokes: each sample must still start from zero.
        fp32 = open_runner(convert(model, "tflite-fp32", tmp_path)).predict(x[:4])
        np.testing.assert_allclose(fp32, reference, atol=1e-5)


def test_lstm_model_saves_and_reloads(tmp_path) -> None:
    from toolkit.core.modelio import load_model

    model, shape, _ = _tiny_model("lstm")
    model.save(tmp_path / "m.keras")
    x = np.random.default_rng(1).normal(size=(3, *shape)).astype("float32")
    loaded = load_model(tmp_path / "m.keras").model
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


@pytest.mark.parametrize(
    ("name", "shape", "message"),
    [
        ("lstm", (32, 32, 3), "needs sequence input"),
        ("ds_cnn", (16, 16, 3), r"needs features shaped \(frames, coefficients\)"),
        ("resnet8", (40,), "needs image input"),
        ("transformer_tiny", (1, 3), "at least 2 steps"),
        ("vit_tiny", (30, 30, 3), r"must divide by patch \(4\)"),
        ("vit_tiny", (16, 3), "needs image input"),
    ],
)
def test_builders_reject_input_they_cannot_take(name, shape, message) -> None:
    ctx = BuildContext(input_shape=shape, task="classification", num_outputs=3)
    with pytest.raises(UserError, match=message):
        build_model(name, ctx, {})


def test_autoencoder_does_only_anomaly() -> None:
    ctx = BuildContext(input_shape=(12,), task="classification", num_outputs=3)
    with pytest.raises(UserError, match="does not do classification"):
        build_model("autoencoder", ctx, {})

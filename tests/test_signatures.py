"""Every exported .tflite carries a `serving_default` SignatureDef named like the Keras model.

Signature runners (LiteRT's `get_signature_runner`, Android's `runSignature`) and
ai-edge-quantizer refuse a file without one. The signature runner must give exactly what a
plain `invoke()` by tensor index gives, and a foreign file without a signature still runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

SIGNATURE = {"serving_default": {"inputs": ["image"], "outputs": ["probs"]}}
PRECISIONS = ("fp32", "fp16", "dynamic", "int8", "int8-float-io", "uint8", "int16x8")


@pytest.fixture(scope="module")
def model_and_data() -> tuple[object, np.ndarray]:
    """A small CNN whose input and output layers carry names of their own."""
    keras.utils.set_random_seed(5)
    inp = keras.Input((12, 12, 1), name="image")
    h = keras.layers.Rescaling(1 / 255.0)(inp)
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    out = keras.layers.Dense(3, activation="softmax", name="probs")(h)
    x = np.random.default_rng(6).uniform(0, 255, (40, 12, 12, 1)).astype(np.float32)
    return keras.Model(inp, out), x


@pytest.fixture(scope="module")
def files(model_and_data, tmp_path_factory) -> dict[str, Path]:
    """Every tflite precision, the budget ladder's selective int8, and a softmax-split file."""
    from toolkit.convert import convert
    from toolkit.convert.tflite import export_tflite, layer_sensitivity
    from toolkit.core.tflite_edit import split_trailing_softmax

    model, x = model_and_data
    out = tmp_path_factory.mktemp("sig")
    paths = {p: convert(model, f"tflite-{p}", out, calibration=x) for p in PRECISIONS}
    sensitive = [r["tensor_name"] for r in layer_sensitivity(model, x)][:1]
    for precision in ("int8", "int8-float-io"):  # what the ladder's denylisted rungs write
        paths[f"{precision}-denylisted"] = export_tflite(
            model, out / f"deny-{precision}.tflite", precision, calibration=x,
            denylisted_nodes=sensitive,
        )  # fmt: skip
    paths["int8-ops-denylisted"] = export_tflite(
        model, out / "deny-ops.tflite", "int8-float-io", calibration=x,
        denylisted_ops=["FULLY_CONNECTED"],
    )  # fmt: skip
    split = split_trailing_softmax(paths["int8"].read_bytes())
    assert split is not None
    paths["int8-softmax-split"] = out / "split.tflite"
    paths["int8-softmax-split"].write_bytes(split)
    return paths


def _interpreter(path: Path) -> object:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    return interpreter


def _raw_input(interpreter: object, x: np.ndarray) -> np.ndarray:
    from toolkit.runtimes.base import quantize
    from toolkit.runtimes.litert import _spec

    return quantize(x, _spec(interpreter.get_input_details()[0]))


def _invoke(path: Path, x: np.ndarray) -> np.ndarray:
    """The plain route: set the input tensor by index, invoke, read output 0."""
    interpreter = _interpreter(path)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], _raw_input(interpreter, x))
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy()


KINDS = [
    *PRECISIONS,
    "int8-denylisted",
    "int8-float-io-denylisted",
    "int8-ops-denylisted",
    "int8-softmax-split",
]


@pytest.mark.parametrize("kind", KINDS)
def test_every_tflite_has_a_named_signature_that_runs_like_invoke(files, model_and_data, kind):
    from toolkit.convert.tflite_signature import signature_keys
    from toolkit.runtimes import open_runner

    _, x = model_and_data
    path = files[kind]
    assert signature_keys(path.read_bytes()) == ["serving_default"]
    interpreter = _interpreter(path)
    assert interpreter.get_signature_list() == SIGNATURE
    runner = interpreter.get_signature_runner("serving_default")
    for i in range(3):
        sample = x[i : i + 1]
        by_signature = runner(image=_raw_input(interpreter, sample))["probs"]
        by_index = _invoke(path, sample)
        assert by_signature.dtype == by_index.dtype
        np.testing.assert_array_equal(by_signature, by_index)  # bit for bit
        assert np.all(np.isfinite(by_signature.astype(np.float64)))
    with open_runner(path) as ours:  # the LiteRT runner goes through the signature
        assert ours._signature is not None
        assert (ours.inputs[0].name, ours.outputs[0].name) == ("image", "probs")
        got = ours.predict(x[:3])
    expected = np.concatenate([_invoke(path, x[i : i + 1]) for i in range(3)])
    from toolkit.runtimes.base import dequantize

    np.testing.assert_array_equal(got, dequantize(expected, ours.outputs[0]))


def test_float_outputs_match_keras(files, model_and_data):
    from toolkit.runtimes import open_runner

    model, x = model_and_data
    reference = np.asarray(model(x[:8], training=False))
    with open_runner(files["fp32"]) as runner:
        np.testing.assert_allclose(runner.predict(x[:8]), reference, atol=1e-5)


def test_a_foreign_tflite_without_signature_still_runs(model_and_data, files, tmp_path):
    """Converted as before this change (no trackable object): no SignatureDef, tensor indices."""
    import tensorflow as tf

    from toolkit.convert import tflite_signature as sig
    from toolkit.convert.tflite_signature import signature_keys
    from toolkit.runtimes import open_runner

    model, x = model_and_data
    spec = sig.input_signature(model, None)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [sig.concrete_function(model, spec)], None
    )
    path = tmp_path / "foreign.tflite"
    path.write_bytes(converter.convert())
    assert signature_keys(path.read_bytes()) == []
    assert _interpreter(path).get_signature_list() == {}
    with open_runner(path) as foreign, open_runner(files["fp32"]) as ours:
        assert foreign._signature is None and ours._signature is not None
        np.testing.assert_array_equal(foreign.predict(x[:5]), ours.predict(x[:5]))


def test_dynamic_batch_signature_resizes(model_and_data, tmp_path):
    import tensorflow as tf

    from toolkit.convert.tflite import export_tflite
    from toolkit.runtimes import open_runner

    model, x = model_and_data
    spec = (tf.TensorSpec([None, 12, 12, 1], tf.float32),)  # unnamed: the Keras name is used
    path = export_tflite(model, tmp_path / "dyn.tflite", "fp32", input_signature=spec)
    assert _interpreter(path).get_signature_list() == SIGNATURE
    reference = np.asarray(model(x[:7], training=False))
    with open_runner(path) as runner:
        assert runner.inputs[0].fixed_batch is None
        np.testing.assert_allclose(runner.predict(x[:7]), reference, atol=1e-5)
        np.testing.assert_allclose(runner.predict(x[:2]), reference[:2], atol=1e-5)


def test_sequential_and_unnamed_models_get_keras_names():
    from toolkit.convert.tflite_signature import input_names, output_names

    seq = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="head")])
    assert output_names(seq) == ["head"] and input_names(seq)[0].startswith("input_layer")
    inp = keras.Input((4,), name="my input")
    functional = keras.Model(inp, keras.layers.Dense(2, name="out x")(inp))
    assert (input_names(functional), output_names(functional)) == (["my_input"], ["out_x"])

"""Every registered builder builds, runs in inference mode, and rejects input it cannot take."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.builders import BuildContext, build_model, list_builders
from toolkit.core.errors import UserError

IMAGE_CTX = {"input_shape": (32, 32, 3), "task": "classification", "num_outputs": 4}


def _ctx(**kw) -> BuildContext:
    return BuildContext(**{**IMAGE_CTX, **kw})


# Non-image builders take these shapes; the rest take (32, 32, 3). tests/test_zoo.py covers
# every builder's train step and conversion.
SHAPES = {"mlp": (12,), "conv1d": (16, 3), "lstm": (16, 3), "gru": (16, 3),
          "transformer_tiny": (16, 3), "ds_cnn": (16, 8)}  # fmt: skip


def _shape_for(name: str) -> tuple[int, ...]:
    return SHAPES.get(name, (32, 32, 3))


CLASSIFIERS = [info for info in list_builders() if "classification" in info.tasks]


@pytest.mark.parametrize("info", CLASSIFIERS, ids=lambda i: i.name)
def test_every_builder_builds_and_predicts(info) -> None:
    shape = _shape_for(info.name)
    model = build_model(info.name, _ctx(input_shape=shape), {})
    x = np.random.default_rng(0).uniform(0, 1, size=(2, *shape)).astype("float32")
    out = model.predict(x, verbose=0)
    assert out.shape == (2, 4)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)  # softmax head
    assert model.inputs[0].name == "input"


def test_regression_head_is_linear_and_unscales_targets() -> None:
    import keras

    ctx = _ctx(input_shape=(5,), task="regression", num_outputs=1, target_scale=(10.0, 2.0))
    model = build_model("mlp", ctx, {})
    dense = model.get_layer("dense_output")
    assert dense.activation.__name__ == "linear"
    assert model.output.shape[-1] == 1
    x = np.ones((3, 5), "float32")
    standardized = keras.Model(model.inputs, dense.output).predict(x, verbose=0)
    np.testing.assert_allclose(model.predict(x, verbose=0), standardized * 2.0 + 10.0, rtol=1e-5)


def test_preprocessing_layers_come_first() -> None:
    from keras import layers

    pre = [layers.Rescaling(1 / 255.0, name="rescale")]
    model = build_model("cnn", _ctx(input_shape=(16, 16, 1), preprocess=pre), {})
    assert model.layers[1].name == "rescale"


def test_cnn_rejects_tabular_input() -> None:
    with pytest.raises(UserError, match="needs image input"):
        build_model("cnn", _ctx(input_shape=(30,)), {})


def test_mobilenet_rejects_tiny_images() -> None:
    with pytest.raises(UserError, match="at least 32x32"):
        build_model("mobilenet_v2", _ctx(input_shape=(16, 16, 1)), {})


def test_unknown_builder_suggests_closest() -> None:
    with pytest.raises(UserError, match="did you mean 'mobilenet_v2'"):
        build_model("mobilenet_v", _ctx(), {})


def test_unknown_builder_argument_lists_params() -> None:
    with pytest.raises(UserError, match=r"has no argument 'widht'.*filters"):
        build_model("cnn", _ctx(), {"widht": 3})


def test_imagenet_weights_absent_from_cache_is_a_clear_error(tmp_path, monkeypatch) -> None:
    from keras.src.backend import config

    monkeypatch.setattr(config, "keras_home", lambda: str(tmp_path))
    with pytest.raises(UserError, match=r"not in the local Keras cache.*nothing can be downloaded"):
        build_model("mobilenet_v2", _ctx(input_shape=(96, 96, 3)), {"weights": "imagenet"})


def test_imagenet_weights_need_a_supported_size() -> None:
    with pytest.raises(UserError, match="square inputs"):
        build_model("mobilenet_v2", _ctx(input_shape=(40, 40, 3)), {"weights": "imagenet"})


def test_weights_path_must_exist() -> None:
    with pytest.raises(UserError, match="weights file not found"):
        build_model("mobilenet_v3_small", _ctx(), {"weights": "/nonexistent/w.h5"})


def test_weights_from_a_local_file_are_loaded(tmp_path) -> None:
    """weights: PATH loads a saved backbone file: the rebuilt model gives the same outputs."""
    import keras

    backbone = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None
    )
    path = tmp_path / "backbone.weights.h5"
    backbone.save_weights(str(path))
    model = build_model("mobilenet_v2", _ctx(), {"weights": str(path)})
    layer = model.get_layer("Conv1")
    np.testing.assert_array_equal(
        layer.get_weights()[0], backbone.get_layer("Conv1").get_weights()[0]
    )

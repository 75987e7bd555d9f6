"""The Keras 3 <-> tf_keras bridge: every registered builder round-trips with equal outputs."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.core.errors import UserError

# Builders the bridge refuses with a clear error: attention calls take several tensors.
UNSUPPORTED = {"transformer_tiny", "vit_tiny"}


def _shape(inputs: str) -> tuple[int, ...]:
    """A small input that suits a builder's documented input kind."""
    if inputs.startswith("image"):
        return (32, 32, 3)
    if inputs.startswith("sequence"):
        return (16, 3)
    if "TxF" in inputs:
        return (49, 10)
    return (6,)


def _model(builder: str, preprocess: str, task: str | None = None):
    import keras

    from toolkit.builders import BuildContext, build_model, get_builder

    info = get_builder(builder)
    shape = _shape(info.inputs)
    if preprocess == "normalize":  # adapted, as training bakes it in
        layer = keras.layers.Normalization(axis=-1, name="normalize")
        layer.adapt(np.random.default_rng(0).uniform(0, 255, (16, *shape)).astype("float32"))
    else:
        layer = keras.layers.Rescaling(2 / 255, offset=-1.0, name="rescale")
    task = task or info.tasks[0]
    scale = (3.0, 2.0) if task == "regression" else None
    outputs = int(np.prod(shape)) if task == "anomaly" else 3
    ctx = BuildContext(shape, task, outputs, preprocess=[layer], target_scale=scale)
    return build_model(builder, ctx, {})


def _diff(a, b) -> float:
    shape = tuple(int(d) for d in a.inputs[0].shape[1:])
    x = np.random.default_rng(1).uniform(0, 255, (3, *shape)).astype("float32")
    return float(
        np.max(np.abs(np.asarray(a(x, training=False)) - np.asarray(b(x, training=False))))
    )


def _builders() -> list[str]:
    from toolkit.builders import list_builders

    return [info.name for info in list_builders()]


def _params() -> list:
    """MobileNets take ~10-30 s each to build and bridge on 2 cores: slow-marked."""
    slow = pytest.mark.slow
    return [pytest.param(b, marks=slow) if b.startswith("mobilenet") else b for b in _builders()]


@pytest.mark.parametrize("builder", _params())
def test_every_builder_round_trips_exactly(builder: str) -> None:
    import keras

    from toolkit.optimize.bridge import to_keras, to_tf_keras

    preprocess = "rescale" if builder.startswith("mobilenet") else "normalize"
    model = _model(builder, preprocess)
    custom = [lay for lay in model.layers if getattr(keras.layers, type(lay).__name__, None)
              is not type(lay)]  # fmt: skip
    if custom or builder in UNSUPPORTED:  # refused by name, never silently wrong
        with pytest.raises(UserError, match=r"layer '\w+' of class \w+"):
            to_tf_keras(model)
        return
    legacy = to_tf_keras(model)
    assert type(legacy).__module__.startswith("tf_keras")
    back = to_keras(legacy)
    assert type(back).__module__.startswith("keras")
    assert _diff(model, legacy) <= 1e-6
    assert _diff(model, back) <= 1e-6
    assert [w.shape for w in back.trainable_weights] == [w.shape for w in model.trainable_weights]


def test_regression_head_and_sequential_models_round_trip() -> None:
    import keras

    from toolkit.optimize.bridge import to_keras, to_tf_keras

    model = _model("mlp", "normalize", task="regression")  # a Rescaling output layer
    assert _diff(model, to_keras(to_tf_keras(model))) <= 1e-6
    seq = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="relu"),
                            keras.layers.Dense(2)])  # fmt: skip
    assert _diff(seq, to_tf_keras(seq)) <= 1e-6


def test_a_custom_layer_is_refused_with_its_name_and_class() -> None:
    import keras

    from toolkit.optimize.bridge import to_tf_keras

    @keras.saving.register_keras_serializable("test")
    class Twice(keras.layers.Layer):
        def call(self, x):
            return x * 2

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(Twice(name="twice")(inputs)))
    with pytest.raises(UserError, match=r"layer 'twice' of class Twice"):
        to_tf_keras(model)


def test_a_subclassed_model_is_refused() -> None:
    import keras

    from toolkit.optimize.bridge import to_tf_keras

    class Mine(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    model = Mine()
    model(np.zeros((1, 3), "float32"))
    with pytest.raises(UserError):
        to_tf_keras(model)

"""toolkit.core.modelio: each kind loads as a Keras 3 model; each bad input is one UserError."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from toolkit.core.errors import UserError
from toolkit.core.modelio import LoadedModel, load_model, model_input_shape

pytestmark = pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
VWW = SHARED / "models" / "vww_96.h5"


def _x(shape: tuple[int, ...], n: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *shape)).astype("float32")


def _same(loaded: LoadedModel, predict, shape: tuple[int, ...], atol: float = 1e-6) -> float:
    x = _x(shape)
    diff = float(np.max(np.abs(np.asarray(loaded.model.predict_on_batch(x)) - predict(x))))
    assert diff <= atol, diff
    return diff


@pytest.fixture(scope="module")
def tiny():
    """A small Keras 3 model: Dense -> BatchNorm -> softmax on 4 features."""
    import keras

    inputs = keras.Input((4,), name="features")
    hidden = keras.layers.BatchNormalization()(keras.layers.Dense(8, activation="relu")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(hidden))
    return model


@pytest.fixture(scope="module")
def tiny_keras(tiny, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("keras") / "tiny.keras"
    tiny.save(path)
    return path


def _raises(path: Path, **kwargs) -> str:
    with pytest.raises(UserError) as info:
        load_model(path, **kwargs)
    message = str(info.value)
    assert path.name in message and "\n" not in message, message
    return message


def test_import_does_not_load_tensorflow():
    code = (
        "import sys, toolkit.core.modelio; "
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_keras_file(tiny, tiny_keras):
    loaded = load_model(tiny_keras)
    assert (loaded.kind, loaded.input_spec, loaded.recipe_path, loaded.notes) == (
        "keras",
        None,
        None,
        [],
    )
    assert model_input_shape(loaded.model) == (4,)
    _same(loaded, lambda x: tiny.predict_on_batch(x), (4,))


def test_run_dir_gives_input_spec_and_recipe(tiny, tmp_path):
    run = tmp_path / "runs" / "demo"
    run.mkdir(parents=True)
    tiny.save(run / "model.keras")
    spec = {"version": 1, "kind": "tabular", "shape": [4], "dtype": "float32"}
    (run / "input_spec.json").write_text(json.dumps(spec))
    (run / "recipe.yaml").write_text("name: demo\n")
    loaded = load_model(run)
    assert (loaded.kind, loaded.path, loaded.input_spec) == ("run", run, spec)
    assert loaded.recipe_path == run / "recipe.yaml"
    # A bare file picks up an input_spec.json lying beside it too.
    assert load_model(run / "model.keras").input_spec == spec


def test_saved_model_export_roundtrip(tiny, tmp_path):
    tiny.export(tmp_path / "sm", verbose=False)
    for path in (tmp_path / "sm", tmp_path / "sm" / "saved_model.pb"):
        loaded = load_model(path)
        assert loaded.kind == "saved_model" and loaded.input_spec is None
        assert model_input_shape(loaded.model) == (4,)
        _same(loaded, lambda x: tiny.predict_on_batch(x), (4,))


def test_saved_model_with_two_inputs_refused(tmp_path):
    import keras

    a, b = keras.Input((2,)), keras.Input((3,))
    model = keras.Model([a, b], keras.layers.Dense(1)(keras.layers.Concatenate()([a, b])))
    model.export(tmp_path / "two", verbose=False)
    assert "2 inputs" in _raises(tmp_path / "two")


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_lambda_refused_in_safe_mode(tmp_path, suffix):
    import keras

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2.0)(inputs))
    path = tmp_path / f"lambda{suffix}"
    model.save(path)
    message = _raises(path)
    assert "Lambda layer with Python code" in message and "--unsafe" in message
    loaded = load_model(path, safe_mode=False)
    _same(loaded, lambda x: 2.0 * x, (4,))


def test_vww_h5_matches_tf_keras():
    if not VWW.is_file():
        pytest.skip("../shared/models/vww_96.h5 is absent")
    import keras
    import tf_keras

    loaded = load_model(VWW)
    assert loaded.kind == "h5" and isinstance(loaded.model, keras.Model)
    assert model_input_shape(loaded.model) == (96, 96, 3)
    assert loaded.model.output_shape == (None, 2)
    assert any("'groups'" in note for note in loaded.notes), loaded.notes
    # Plain Keras 3 layers, not the loader's shims: the model saves and reloads anywhere.
    assert all(type(layer).__module__.startswith("keras.src.") for layer in loaded.model.layers)
    reference = tf_keras.models.load_model(VWW, compile=False)
    _same(loaded, lambda x: reference(x, training=False).numpy(), (96, 96, 3), atol=1e-5)


def _tfk_sequential(tfk):
    return tfk.Sequential(
        [tfk.Input((5,)), tfk.layers.Dense(4), tfk.layers.BatchNormalization(), tfk.layers.Dense(2)]
    )


def _tfk_locally_connected(tfk):  # no Keras 3 layer: only tf_keras can read it
    inputs = tfk.Input((5, 3))
    hidden = tfk.layers.Flatten()(tfk.layers.LocallyConnected1D(4, 2)(inputs))
    return tfk.Model(inputs, tfk.layers.Dense(2)(hidden))


def _tfk_time_major(tfk):  # Keras 3 lacks time_major: dropping it changes outputs
    inputs = tfk.Input((5, 3))
    return tfk.Model(inputs, tfk.layers.LSTM(4, time_major=True)(inputs))


@pytest.mark.parametrize(
    ("build", "via_tf_keras"),
    [(_tfk_sequential, False), (_tfk_locally_connected, True), (_tfk_time_major, True)],
)
def test_tf_keras_h5_outputs_preserved(tmp_path, build, via_tf_keras):
    import tf_keras

    model = build(tf_keras)
    path = tmp_path / "legacy.h5"
    model.save(path)
    loaded = load_model(path)
    assert loaded.kind == "h5"
    assert any("tf_keras" in note for note in loaded.notes) == via_tf_keras, loaded.notes
    shape = model_input_shape(loaded.model)
    _same(loaded, lambda x: model(x, training=False).numpy(), shape)


def test_weights_only_h5_refused(tiny, tmp_path):
    import tf_keras

    tiny.save_weights(tmp_path / "keras3.weights.h5")
    legacy = _tfk_sequential(tf_keras)
    legacy.save_weights(tmp_path / "legacy_weights.h5")
    for name in ("keras3.weights.h5", "legacy_weights.h5"):
        assert "holds weights only" in _raises(tmp_path / name)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _truncated(source: Path, target: Path) -> Path:
    return _write(target, source.read_bytes()[: source.stat().st_size // 2])


def _zip_without_config(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", "{}")
    return path


BAD_FILES = {
    "random .keras": lambda d, k, h: _write(
        d / "noise.keras", np.random.default_rng(1).bytes(4096)
    ),
    "random .h5": lambda d, k, h: _write(d / "noise.h5", np.random.default_rng(2).bytes(4096)),
    "empty .h5": lambda d, k, h: _write(d / "empty.h5", b""),
    "hdf5 magic then junk": lambda d, k, h: _write(
        d / "junk.hdf5", b"\x89HDF\r\n\x1a\n" + b"x" * 999
    ),
    "truncated .keras": lambda d, k, h: _truncated(k, d / "cut.keras"),
    "truncated .h5": lambda d, k, h: _truncated(h, d / "cut.h5"),
    "zip without config": lambda d, k, h: _zip_without_config(d / "bare.keras"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_are_one_line_user_errors(tiny, tiny_keras, tmp_path, case):
    h5 = tmp_path / "good.h5"
    tiny.save(h5)
    path = BAD_FILES[case](tmp_path, tiny_keras, h5)
    assert "not a valid Keras file" in _raises(path)


def test_missing_unknown_and_oversized(tiny_keras, tmp_path):
    assert "model file not found" in _raises(tmp_path / "nope.keras")
    message = _raises(_write(tmp_path / "model.pt", b"x"))
    assert all(kind in message for kind in (".keras", ".h5", "SavedModel", "run directory"))
    (tmp_path / "empty_dir").mkdir()
    assert "SavedModel" in _raises(tmp_path / "empty_dir")
    message = _raises(tiny_keras, max_bytes=1024)
    assert "larger than" in message and "MiB" in message


def test_multi_input_and_unknown_dims_refused(tmp_path):
    import keras

    a, b = keras.Input((2,)), keras.Input((3,))
    keras.Model([a, b], keras.layers.Concatenate()([a, b])).save(tmp_path / "two.keras")
    assert "2 inputs" in _raises(tmp_path / "two.keras")
    seq = keras.Input((None, 3))
    keras.Model(seq, keras.layers.Dense(2)(seq)).save(tmp_path / "ragged.keras")
    assert "unknown dimensions" in _raises(tmp_path / "ragged.keras")


def test_h5_neither_loader_can_read_is_user_error(tmp_path):
    import h5py

    layers = [
        {
            "class_name": "InputLayer",
            "name": "in",
            "inbound_nodes": [],
            "config": {"batch_input_shape": [None, 4], "dtype": "float32", "name": "in"},
        },
        {
            "class_name": "NoSuchLayer",
            "name": "odd",
            "config": {"name": "odd"},
            "inbound_nodes": [[["in", 0, 0, {}]]],
        },
    ]
    config = {
        "class_name": "Functional",
        "config": {
            "name": "m",
            "layers": layers,
            "input_layers": [["in", 0, 0]],
            "output_layers": [["odd", 0, 0]],
        },
    }
    path = tmp_path / "custom.h5"
    with h5py.File(path, "w") as h5:
        h5.attrs["model_config"] = json.dumps(config)
        h5.create_group("model_weights")
    assert "NoSuchLayer" in _raises(path)

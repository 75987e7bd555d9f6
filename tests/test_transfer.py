"""Transfer learning: backbone cut, frozen phase 1, top-layer phase 2 with BatchNorm frozen,
and every bad input (missing/corrupt backbone, unknown cut, impossible size) as a UserError."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.core.errors import UserError
from toolkit.core.recipe import parse_recipe


@pytest.fixture(scope="module")
def backbone_file(tmp_path_factory):
    """A small 'pretrained' RGB classifier (24x24x3 in [0, 1]) saved as a Keras 3 file."""
    import keras
    from keras import layers

    inputs = keras.Input((24, 24, 3))
    x = layers.Conv2D(8, 3, name="conv_a")(inputs)
    x = layers.BatchNormalization(name="bn_a")(x)
    x = layers.ReLU(name="relu_a")(x)
    x = layers.Conv2D(8, 3, name="conv_b")(x)
    x = layers.BatchNormalization(name="bn_b")(x)
    x = layers.ReLU(name="relu_b")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(0.1, name="drop")(x)
    model = keras.Model(inputs, layers.Dense(2, activation="softmax", name="top")(x))
    path = tmp_path_factory.mktemp("backbone") / "backbone.keras"
    model.save(path)
    return path


def _recipe(backbone, **transfer):
    return parse_recipe({
        "name": "t",
        "dataset": {"name": "digits", "image_size": [16, 16], "max_samples": 300},
        "model": {"builder": "cnn"},
        "train": {"epochs": 1, "batch_size": 32, "tensorboard": False},
        "transfer": {"backbone": str(backbone), **transfer},
    })  # fmt: skip


@pytest.fixture(scope="module")
def digits():
    from toolkit.data import DataSpec, load_dataset

    return load_dataset(DataSpec("digits", image_size=(16, 16), max_samples=300))


def test_auto_cut_is_the_input_of_the_last_dense(backbone_file) -> None:
    import keras

    from toolkit.train.transfer import feature_layer

    model = keras.saving.load_model(backbone_file)
    assert feature_layer(model, "auto").name == "gap"  # dropout skipped
    assert feature_layer(model, "relu_a").name == "relu_a"


def test_model_resizes_rescales_and_tiles_gray(backbone_file, digits) -> None:
    from toolkit.train.transfer import build_transfer_model

    model, record = build_transfer_model(_recipe(backbone_file), digits, "x")
    assert model.input.shape[1:] == (16, 16, 1)  # the dataset's raw shape
    assert [layer.name for layer in model.layers[1:4]] == [
        "resize",
        "backbone_range",
        "gray_to_rgb",
    ]
    assert record["backbone_input"] == [24, 24, 3] and record["cut"] == "gap"
    assert record["scale"] == pytest.approx(1 / 16)  # digits 0..16 -> the backbone's 0..1
    assert model.output.shape[-1] == 10


def test_phase1_freezes_backbone_and_phase2_keeps_batchnorm_frozen(backbone_file, digits) -> None:
    from toolkit.train.transfer import build_transfer_model, unfreeze_top

    model, _ = build_transfer_model(_recipe(backbone_file), digits, "x")
    trunk = model.get_layer("backbone")
    x, y = digits.train.take_x(), digits.train.y

    def snapshot():
        return {w.path: np.array(w) for w in trunk.weights}

    model.compile("adam", "sparse_categorical_crossentropy")
    before = snapshot()
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    after1 = snapshot()
    assert all(np.array_equal(before[k], after1[k]) for k in before)  # frozen, BN stats too

    assert unfreeze_top(model, 1) == 1
    assert trunk.get_layer("conv_b").trainable and not trunk.get_layer("conv_a").trainable
    assert not trunk.get_layer("bn_b").trainable
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    after2 = snapshot()
    changed = {k for k in before if not np.array_equal(after1[k], after2[k])}
    assert changed and all("conv_b" in k for k in changed)  # BN moving stats untouched


def test_train_runs_both_phases_and_the_model_reloads(backbone_file, tmp_path) -> None:
    from toolkit.core.modelio import load_model
    from toolkit.train.stage import train

    recipe = _recipe(backbone_file, fine_tune_layers=1, fine_tune_epochs=1)
    result = train(recipe, tmp_path)
    assert len(result.history["epoch"]) == 2  # phase 1 + phase 2, one history
    reloaded = load_model(result.run_dir)
    assert reloaded.input_spec["normalize"] == "transfer"
    assert 0.0 <= result.metrics["test"]["accuracy"] <= 1.0


def test_builder_backbone_with_fresh_weights(tmp_path, digits) -> None:
    from toolkit.train.transfer import build_transfer_model

    recipe = _recipe("mobilenet_v1", weights="none", input_size=[32, 32])
    model, record = build_transfer_model(recipe, digits, "x")
    assert record["backbone_input"] == [32, 32, 1]
    assert model.output.shape[-1] == 10


def test_missing_backbone_file(tmp_path, digits) -> None:
    from toolkit.train.transfer import build_transfer_model

    with pytest.raises(UserError, match=r"no such file, and not a builder"):
        build_transfer_model(_recipe(tmp_path / "nope.h5"), digits, "x")


def test_corrupt_backbone_file(tmp_path, digits) -> None:
    from toolkit.train.transfer import build_transfer_model

    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not an hdf5 file at all")
    with pytest.raises(UserError, match=r"bad\.h5"):
        build_transfer_model(_recipe(bad), digits, "x")


def test_cut_layer_not_found_suggests(backbone_file, digits) -> None:
    from toolkit.train.transfer import build_transfer_model

    with pytest.raises(UserError, match=r"no layer 'relu_c'.*relu_"):
        build_transfer_model(_recipe(backbone_file, cut="relu_c"), digits, "x")


def test_input_size_the_backbone_cannot_take(backbone_file, digits) -> None:
    from toolkit.train.transfer import build_transfer_model

    with pytest.raises(UserError, match="takes 24x24 inputs"):
        build_transfer_model(_recipe(backbone_file, input_size=[64, 64]), digits, "x")
    with pytest.raises(UserError, match="at least 32x32"):
        build_transfer_model(_recipe("mobilenet_v1", input_size=[16, 16]), digits, "x")


def test_non_image_data_is_refused(backbone_file) -> None:
    from toolkit.data import DataSpec, load_dataset
    from toolkit.train.transfer import build_transfer_model

    ds = load_dataset(DataSpec("wine"))
    with pytest.raises(UserError, match="needs image data"):
        build_transfer_model(_recipe(backbone_file), ds, "x")


def test_cli_missing_backbone_exits_2(cli, tmp_path) -> None:
    proc = cli("train", "digits-cnn", "--runs-dir", str(tmp_path),
               "--backbone", str(tmp_path / "missing.h5"))  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "missing.h5" in proc.stderr and "Traceback" not in proc.stderr


def test_vww_backbone_cut_and_range(shared_dir) -> None:
    from toolkit.data import DataSpec, load_dataset
    from toolkit.train.transfer import build_transfer_model

    data = shared_dir / "data" / "cifar10-test"
    ds = load_dataset(DataSpec(f"image-folder:{data}", max_samples=100))
    recipe = _recipe(shared_dir / "models" / "vww_96.h5", input_range=[0, 1])
    model, record = build_transfer_model(recipe, ds, "x")
    assert record["cut"] == "flatten" and record["backbone_input"] == [96, 96, 3]
    assert record["scale"] == pytest.approx(1 / 255)
    out = model.predict(ds.test.take_x(4), verbose=0)
    assert out.shape == (4, 10)
    with pytest.raises(UserError, match="takes 96x96"):
        build_transfer_model(_recipe(shared_dir / "models" / "vww_96.h5", input_size=[64, 64]),
                             ds, "x")  # fmt: skip

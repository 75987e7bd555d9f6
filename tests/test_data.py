"""toolkit.data: every source loads with the right shapes, ranges and labels; splits are
stratified, disjoint and deterministic; image folders stream; every bad input is a UserError."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from toolkit.core.errors import UserError
from toolkit.data import (
    ArraySplit,
    Dataset,
    DataSpec,
    FileSplit,
    list_datasets,
    load_dataset,
)
from toolkit.data import folder as folder_module
from toolkit.data.images import decode_image
from toolkit.data.splits import infer_task, split_indices

REPO = Path(__file__).resolve().parents[1]
MNIST_TEST = REPO.parent / "shared" / "data" / "mnist-test"


def load(name: str, **kwargs) -> Dataset:
    return load_dataset(DataSpec(name, **kwargs))


def user_error(name: str, match: str, **kwargs) -> str:
    """Load `name`, expect a one-line UserError matching `match`, return its message."""
    with pytest.raises(UserError, match=match) as info:
        load(name, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def all_x(split) -> np.ndarray:
    return split.take_x()


# ---------------------------------------------------------------------------------------------
# fixtures: tiny files written into tmp_path


def rgb(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def save_all_modes(folder: Path, seed: int) -> None:
    """Eight readable images of different PIL modes, formats and sizes in one class folder."""
    folder.mkdir(parents=True)
    img = Image.fromarray(rgb(23, 37, seed))
    img.save(folder / "a_rgb.jpg")  # the first file: sets the default size, 23x37
    img.convert("L").resize((30, 20)).save(folder / "b_gray.png")
    rgba = img.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(folder / "c_rgba.png")
    img.convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "d_palette.png", transparency=0)
    gray16 = (np.random.default_rng(seed).random((17, 19)) * 65535).astype(np.uint16)
    Image.fromarray(gray16).save(folder / "e_gray16.png")
    img.convert("CMYK").save(folder / "f_cmyk.jpg")
    img.resize((41, 29)).save(folder / "g_rgb.bmp")
    img.convert("L").save(folder / "H_UPPER.JPEG")


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """Two classes x 8 readable mixed-mode images, plus a corrupt and a truncated JPEG."""
    root = tmp_path_factory.mktemp("images")
    save_all_modes(root / "cats", seed=1)
    save_all_modes(root / "dogs", seed=2)
    (root / "cats" / "corrupt.jpg").write_bytes(b"not an image at all" * 20)
    whole = (root / "cats" / "a_rgb.jpg").read_bytes()
    (root / "dogs" / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (root / "dogs" / "notes.txt").write_text("ignored: not an image suffix")
    return root


@pytest.fixture(scope="module")
def gray_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gray")
    for c, name in enumerate(["one", "two"]):
        (root / name).mkdir()
        for i in range(8):
            Image.fromarray(rgb(12, 10, 10 * c + i)[..., 0]).save(root / name / f"{i}.png")
    return root


def write_csv(tmp_path: Path, text: str, name: str = "data.csv") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def table_csv(tmp_path: Path, rows: int = 40, target: str = "label") -> str:
    rng = np.random.default_rng(0)
    lines = [f"age,height,{target}"]
    for i in range(rows):
        lines.append(f"{rng.integers(18, 90)},{rng.normal(170, 10):.2f},{['cat', 'dog'][i % 2]}")
    return write_csv(tmp_path, "\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------------
# package surface


def test_import_does_not_load_heavy_libraries():
    code = (
        "import sys, toolkit.data\n"
        "heavy = ['tensorflow', 'keras', 'sklearn', 'pandas', 'PIL', 'scipy', 'mlxtend']\n"
        "print([m for m in heavy if m in sys.modules])"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "[]"


def test_list_datasets_rows():
    rows = list_datasets()
    names = {row["name"] for row in rows}
    assert {"digits", "mnist-5k", "breast-cancer", "wine", "diabetes"} <= names
    assert {"image-folder:PATH", "npz:PATH", "csv:PATH", "mnist-idx:PATH"} <= names
    for row in rows:
        assert set(row) == {"name", "kind", "task", "description"}
        assert row["kind"] in ("image", "tabular", "sequence")


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("digitz", "unknown dataset 'digitz'.*did you mean 'digits'"),
        ("image_folder:/x", "unknown dataset kind 'image_folder'.*'image-folder'"),
        ("csv:", "needs a path"),
        ("npz", "needs a path"),
    ],
)
def test_unknown_dataset_names(name, match):
    user_error(name, match)


def test_bare_path_gets_a_prefix_hint(tmp_path):
    path = table_csv(tmp_path)
    user_error(path, f"did you mean 'csv:{path}'")


# ---------------------------------------------------------------------------------------------
# built-in sources


def test_digits_raw_and_upsampled():
    small = load("digits")
    assert (small.kind, small.task, small.input_shape) == ("image", "classification", (8, 8, 1))
    assert small.value_range == (0.0, 16.0)
    assert small.labels == [str(i) for i in range(10)]
    assert len(small.train) + len(small.val) + len(small.test) == 1797
    assert small.train.y.dtype == np.int64

    big = load("digits", image_size=(32, 32), color_mode="rgb")
    x = all_x(big.train)
    assert x.shape[1:] == big.input_shape == (32, 32, 3)
    assert x.dtype == np.float32 and x.min() >= 0 and x.max() <= 16 and x.max() > 15


def test_mnist_5k():
    data = load("mnist-5k", image_size=(16, 16))
    assert data.input_shape == (16, 16, 1) and data.value_range == (0.0, 255.0)
    assert len(data.train) + len(data.val) + len(data.test) == 5000
    assert (len(data.test), len(data.val)) == (1000, 500)
    assert 200 < all_x(data.test).max() <= 255


@pytest.mark.parametrize(
    ("name", "features", "task"),
    [
        ("breast-cancer", 30, "classification"),
        ("wine", 13, "classification"),
        ("diabetes", 10, "regression"),
    ],
)
def test_sklearn_tables(name, features, task):
    data = load(name)
    assert (data.kind, data.task, data.input_shape) == ("tabular", task, (features,))
    assert data.feature_names is not None and len(data.feature_names) == features
    x = all_x(data.train)
    assert data.value_range == (float(x.min()), float(x.max()))
    if task == "regression":
        assert data.labels is None and data.train.y.dtype == np.float32
    else:
        assert data.num_classes == len(np.unique(data.train.y)) and data.train.y.dtype == np.int64


# ---------------------------------------------------------------------------------------------
# splits


def test_splits_are_disjoint_stratified_and_deterministic():
    y = np.repeat(np.arange(4), [100, 50, 30, 20])
    spec = DataSpec("x", val_fraction=0.1, test_fraction=0.2, seed=3)
    train, val, test = split_indices(y, "classification", list("abcd"), spec, "t")
    assert (len(train), len(val), len(test)) == (140, 20, 40)
    everything = np.concatenate([train, val, test])
    assert len(np.unique(everything)) == len(y)  # disjoint and complete
    for part, size in ((train, 140), (val, 20), (test, 40)):
        share = np.bincount(y[part], minlength=4) / size
        np.testing.assert_allclose(share, [0.5, 0.25, 0.15, 0.1], atol=0.03)
    again = split_indices(y, "classification", list("abcd"), spec, "t")
    for a, b in zip((train, val, test), again, strict=True):
        np.testing.assert_array_equal(a, b)
    other = split_indices(y, "classification", list("abcd"), DataSpec("x", seed=4), "t")
    assert not np.array_equal(np.sort(test), np.sort(other[2]))


def test_same_spec_gives_identical_datasets():
    spec = DataSpec("wine", seed=7, max_samples=120)
    a, b = load_dataset(spec), load_dataset(spec)
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(a, name).x, getattr(b, name).x)
        np.testing.assert_array_equal(getattr(a, name).y, getattr(b, name).y)
    assert len(a.train) + len(a.val) + len(a.test) == 120
    assert isinstance(a.train, ArraySplit)


def test_max_samples_is_stratified():
    data = load("digits", max_samples=500)
    y = np.concatenate([data.train.y, data.val.y, data.test.y])
    assert len(y) == 500 and np.bincount(y).min() >= 45


def test_regression_split_sizes():
    data = load("diabetes", val_fraction=0.25, test_fraction=0.25)
    assert (len(data.train), len(data.val), len(data.test)) == (
        222,
        110,
        110,
    )  # 110.5 rounds to 110


@pytest.mark.parametrize(
    ("val", "test", "match"),
    [
        (0.0, 0.2, "val_fraction"),
        (0.1, 1.0, "test_fraction"),
        (-0.1, 0.2, "val_fraction"),
        (0.5, 0.5, r"val_fraction \+ test_fraction must be < 1"),
        (0.1, "x", "test_fraction"),
    ],
)
def test_bad_fractions(val, test, match):
    user_error("wine", match, val_fraction=val, test_fraction=test)


def test_bad_max_samples():
    user_error("wine", "max_samples must be a positive integer", max_samples=0)
    user_error("wine", "max_samples=2 is fewer than the 3 classes", max_samples=2)


def test_class_with_too_few_samples(tmp_path):
    rows = "\n".join(f"{i},{'a' if i < 20 else 'b' if i < 38 else 'rare'}" for i in range(40))
    path = write_csv(tmp_path, "f,label\n" + rows + "\n")
    user_error(f"csv:{path}", "class 'rare' has 2; each class needs at least 3")


def test_split_too_small_for_classes(tmp_path):
    rows = "\n".join(f"{i},{i % 4}" for i in range(12))
    path = write_csv(tmp_path, "f,label\n" + rows + "\n")
    message = user_error(f"csv:{path}", "split", task="classification")
    assert "4 classes" in message


# ---------------------------------------------------------------------------------------------
# image folders


def test_image_folder_lists_skips_and_shapes(image_folder):
    data = load(f"image-folder:{image_folder}")
    assert data.labels == ["cats", "dogs"]
    assert data.input_shape == (23, 37, 3)  # first image's size; mixed modes -> rgb
    assert data.value_range == (0.0, 255.0)
    assert data.skipped == 2
    assert any("skipped 2 unreadable" in note for note in data.notes)
    assert len(data.train) + len(data.val) + len(data.test) == 16
    assert isinstance(data.train, FileSplit)


def test_image_folder_streams_batches(image_folder):
    import tensorflow as tf

    data = load(f"image-folder:{image_folder}", image_size=(16, 20))
    seen = 0
    for x, y in data.train.batches(4, shuffle=True, seed=1):
        assert x.shape[1:] == (16, 20, 3) and x.dtype == tf.float32 and y.dtype == tf.int64
        assert float(tf.reduce_min(x)) >= 0 and float(tf.reduce_max(x)) <= 255
        seen += int(x.shape[0])
    assert seen == len(data.train)
    inputs = next(iter(data.test.inputs(batch_size=8)))
    assert inputs.shape == (len(data.test), 16, 20, 3)


def test_take_x_decodes_only_n(image_folder, monkeypatch):
    data = load(f"image-folder:{image_folder}", color_mode="grayscale")
    calls = []
    real = folder_module.decode_image
    monkeypatch.setattr(folder_module, "decode_image", lambda *a: calls.append(a[0]) or real(*a))
    x = data.train.take_x(3, seed=0)
    assert x.shape == (3, 23, 37, 1) and x.dtype == np.float32 and len(calls) == 3
    np.testing.assert_array_equal(x, data.train.take_x(3, seed=0))


def test_gray_folder_defaults_to_grayscale(gray_folder):
    data = load(f"image-folder:{gray_folder}")
    assert data.input_shape == (12, 10, 1)
    assert data.train.take_x(2).shape == (2, 12, 10, 1)


def test_decode_converts_modes(tmp_path):
    clear = np.zeros((5, 6, 4), dtype=np.uint8)  # fully transparent black
    Image.fromarray(clear).save(tmp_path / "clear.png")
    np.testing.assert_array_equal(decode_image(str(tmp_path / "clear.png"), "rgb", (5, 6)), 255)
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(tmp_path / "white16.png")
    assert decode_image(str(tmp_path / "white16.png"), "grayscale", (4, 4)).min() == 255
    Image.new("CMYK", (7, 3), (0, 0, 0, 0)).save(tmp_path / "cmyk.jpg")
    cmyk = decode_image(str(tmp_path / "cmyk.jpg"), "rgb", (3, 7))
    assert cmyk.shape == (3, 7, 3) and cmyk.min() > 240


def test_image_folder_errors(tmp_path, image_folder):
    user_error(f"image-folder:{tmp_path / 'nope'}", "folder not found")
    user_error(f"image-folder:{image_folder / 'cats' / 'a_rgb.jpg'}", "not a directory")

    one = tmp_path / "one"
    save_all_modes(one / "cats", seed=3)
    user_error(f"image-folder:{one}", r"has 1 class \(cats\); need at least 2")

    broken = tmp_path / "broken"
    for name in ("a", "b"):
        (broken / name).mkdir(parents=True)
        (broken / name / "x.png").write_bytes(b"garbage")
    user_error(f"image-folder:{broken}", "none of the 2 image files could be read")

    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    (empty / "b").mkdir()
    user_error(f"image-folder:{empty}", "no image files found")

    few = tmp_path / "few"
    save_all_modes(few / "many", seed=4)
    (few / "rare").mkdir()
    for i in range(2):
        Image.fromarray(rgb(8, 8, i)).save(few / "rare" / f"{i}.png")
    user_error(f"image-folder:{few}", "class 'rare' has 2")


# ---------------------------------------------------------------------------------------------
# npz


def test_npz_images_tables_and_sequences(tmp_path):
    y = np.arange(30) % 3
    images = np.random.default_rng(0).integers(0, 256, (30, 9, 7), dtype=np.uint8)
    np.savez(tmp_path / "img.npz", x=images, y=y)
    data = load(f"npz:{tmp_path / 'img.npz'}", val_fraction=0.2, test_fraction=0.2)
    assert (data.kind, data.input_shape, data.value_range) == ("image", (9, 7, 1), (0.0, 255.0))
    assert data.labels == ["0", "1", "2"]

    np.savez(tmp_path / "tab.npz", x=np.random.default_rng(0).normal(size=(30, 4)), y=y * 0.5)
    data = load(f"npz:{tmp_path / 'tab.npz'}", task="regression")
    assert (data.kind, data.input_shape, data.task) == ("tabular", (4,), "regression")

    seqs = np.arange(1, 30 * 6 + 1).reshape(30, 6)
    np.savez(tmp_path / "seq.npz", x=seqs, y=y)
    short = load(f"npz:{tmp_path / 'seq.npz'}", sequence_length=4, val_fraction=0.2)
    assert (short.kind, short.input_shape) == ("sequence", (4,))
    long = load(f"npz:{tmp_path / 'seq.npz'}", sequence_length=8, val_fraction=0.2)
    row = long.train.take_x()[0]
    assert row.shape == (8,) and np.all(row[6:] == 0) and np.all(row[:6] > 0)  # post padding
    first = short.train.take_x()[0]
    assert np.all(np.diff(first) == 1) and first[0] % 6 == 1  # post truncation keeps the start


def test_npz_errors(tmp_path):
    user_error(f"npz:{tmp_path / 'missing.npz'}", "file not found")
    np.savez(tmp_path / "keys.npz", X=np.zeros((5, 2)), labels=np.zeros(5))
    user_error(f"npz:{tmp_path / 'keys.npz'}", "needs an array named 'x'.*'y'.*has 'X', 'labels'")
    ragged = np.array([[1, 2], [3]], dtype=object)
    np.savez(tmp_path / "ragged.npz", x=ragged, y=np.array([0, 1]))
    user_error(f"npz:{tmp_path / 'ragged.npz'}", "array 'x' holds Python objects")
    (tmp_path / "text.npz").write_text("hello")
    user_error(f"npz:{tmp_path / 'text.npz'}", "not a readable .npz archive")
    np.savez(tmp_path / "len.npz", x=np.zeros((5, 2)), y=np.zeros(4))
    user_error(f"npz:{tmp_path / 'len.npz'}", "'x' has 5 samples but 'y' has 4")
    np.savez(tmp_path / "nan.npz", x=np.array([[1.0], [np.nan], [2.0]]), y=np.zeros(3))
    user_error(f"npz:{tmp_path / 'nan.npz'}", r"NaN or infinite values \(first in sample 1\)")


# ---------------------------------------------------------------------------------------------
# csv


def test_csv_classification_with_text_target(tmp_path):
    data = load(f"csv:{table_csv(tmp_path)}")
    assert (data.kind, data.task, data.input_shape) == ("tabular", "classification", (2,))
    assert data.labels == ["cat", "dog"] and data.feature_names == ["age", "height"]
    assert data.train.y.dtype == np.int64
    x = all_x(data.train)
    assert data.value_range == (float(x.min()), float(x.max()))


def test_csv_target_choice_and_task_inference(tmp_path):
    rng = np.random.default_rng(0)
    lines = ["price,rooms,kind"] + [
        f"{rng.normal(300, 50):.1f},{rng.integers(1, 5)},{i % 2}" for i in range(60)
    ]
    path = write_csv(tmp_path, "\n".join(lines))
    by_default = load(f"csv:{path}")
    assert by_default.task == "classification" and by_default.labels == ["0", "1"]
    price = load(f"csv:{path}", target="price")
    assert price.task == "regression" and price.train.y.dtype == np.float32
    assert price.feature_names == ["rooms", "kind"]


def test_infer_task_rule():
    assert infer_task(np.array(["a", "b"] * 5)) == "classification"
    assert infer_task(np.arange(100) % 5) == "classification"
    assert infer_task(np.arange(100) % 30) == "regression"  # > 20 distinct values
    assert infer_task(np.arange(10)) == "regression"  # as many values as rows
    assert infer_task(np.linspace(0, 1, 100)) == "regression"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "the file is empty"),
        ("a,b\n", "only a header"),
        ("a,b\n1,2\n", "1 data row"),
        ("a\n1\n2\n3\n", "needs at least one feature column"),
        ("age,y\n1,0\n2,1\nabc,0\n", r"column 'age' has a non-numeric value 'abc' at row 3"),
        ("age,y\n1,0\n,1\n3,0\n", r"column 'age' has an empty \(missing\) value at row 2"),
        ("age,y\n1,0\ninf,1\n3,0\n", r"column 'age' has an infinite value 'inf' at row 2"),
        ("age,y\n1,0\n2,\n3,0\n", "target column 'y' has an empty value at row 2"),
    ],
)
def test_csv_bad_contents(tmp_path, text, match):
    user_error(f"csv:{write_csv(tmp_path, text)}", match)


def test_csv_bad_target_and_path(tmp_path):
    path = table_csv(tmp_path)
    user_error(
        f"csv:{path}", r"unknown target column 'lable'.*'label'.*age, height", target="lable"
    )
    user_error(f"csv:{tmp_path / 'nope.csv'}", "file not found")
    user_error(f"csv:{path}", "task is regression but the target is not numeric", task="regression")


# ---------------------------------------------------------------------------------------------
# mnist-idx


def write_idx(path: Path, array: np.ndarray, magic_rank: int | None = None, cut: int = 0) -> None:
    rank = magic_rank if magic_rank is not None else array.ndim
    header = bytes([0, 0, 0x08, rank]) + np.array(array.shape, dtype=">u4").tobytes()
    data = header + array.astype(np.uint8).tobytes()
    data = data[: len(data) - cut]
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def test_mnist_idx_real_test_set():
    if not MNIST_TEST.is_dir():
        pytest.skip(f"{MNIST_TEST} not present")
    data = load(f"mnist-idx:{MNIST_TEST}")
    assert (data.input_shape, data.value_range) == ((28, 28, 1), (0.0, 255.0))
    assert data.labels == [str(i) for i in range(10)]
    assert len(data.test) == 2000 and len(data.train) + len(data.val) == 8000
    x = data.test.take_x(50)
    assert x.shape == (50, 28, 28, 1) and x.max() == 255 and x.min() == 0
    counts = np.bincount(data.test.y)
    assert counts.min() >= 170 and counts.max() <= 235  # stratified: ~10 % per digit


def test_mnist_idx_synthetic_pairs_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n, suffix in (("train", 30, ".gz"), ("t10k", 20, "")):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 5, 4)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", np.arange(n) % 2)
    data = load(f"mnist-idx:{tmp_path}", image_size=(10, 8))
    assert data.input_shape == (10, 8, 1) and len(data.train) + len(data.val) + len(data.test) == 50

    bad = tmp_path / "bad"
    bad.mkdir()
    user_error(f"mnist-idx:{bad}", "no MNIST IDX files found")
    user_error(f"mnist-idx:{tmp_path / 'nope'}", "folder not found")
    write_idx(bad / "t10k-images-idx3-ubyte", rng.integers(0, 256, (6, 5, 4)), magic_rank=2)
    user_error(f"mnist-idx:{bad}", "found one t10k file but not t10k-labels")
    write_idx(bad / "t10k-labels-idx1-ubyte", np.arange(6) % 2)
    user_error(f"mnist-idx:{bad}", "magic number 2050 .expected 2051")
    write_idx(bad / "t10k-images-idx3-ubyte", rng.integers(0, 256, (6, 5, 4)), cut=7)
    user_error(f"mnist-idx:{bad}", "truncated or corrupt")

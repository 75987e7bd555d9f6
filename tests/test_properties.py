"""Property-based tests (hypothesis) over the loaders and the recipe parser (issue #8).

Whatever a user hands over (a mangled CSV, random bytes named .tflite, a truncated model, a
16-bit PNG, a recipe with a list where a number goes) the toolkit either works or says what is
wrong in one line (UserError / exit 2). Any other exception is a failure here. Examples are
bounded and derandomized so the suite is fast and the same on every run.
"""

from __future__ import annotations

import ast
import csv
import io
import subprocess
import sys
import types
import typing
from pathlib import Path
from typing import Any

import _badinput
import numpy as np
import pytest
import yaml
from _badinput import invoke, outcome_of, record
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolkit.core.errors import UserError

tiny_models = _badinput.tiny_models  # the session fixture, shared with the other modules
FAST = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FEW = settings(FAST, max_examples=15)

# ---------------------------------------------------------------------------------- CSV files

CELLS = st.one_of(
    st.integers(-1000, 1000).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "nan", "NaN", "inf", "-inf", "Infinity", "1e400", "abc", "1,5", "N/A"]),
    st.text(max_size=6),
)
HEADERS = st.text(min_size=0, max_size=8)  # unicode, empty, commas, quotes, newlines


CSV_KINDS = ["mangled table", "clean table", "wide (50-300 cols)", "one row", "raw text", "empty"]


@st.composite
def csv_texts(draw: st.DrawFn, kind: str) -> str:
    """A CSV of one kind: a mangled table of some shape, a clean one, or raw noise."""
    if kind == "raw text":
        return draw(st.text(max_size=200))
    if kind == "empty":
        return draw(st.sampled_from(["", "\n", "\n\n\n", " ", "a,b\n", "\ufeff"]))
    if kind.startswith("wide"):  # cells from a seeded generator: hypothesis draws stay small
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        n_cols, n_rows = int(rng.integers(50, 300)), int(rng.integers(20, 40))
        p_bad = draw(st.sampled_from([0.0, 0.0005, 0.01]))
        bad = np.array(["", "nan", "inf", "abc", "1e400"])
        cells = rng.integers(0, 100, (n_rows, n_cols)).astype(str)
        mask = rng.random(cells.shape) < p_bad
        cells[mask] = rng.choice(bad, int(mask.sum()))
        cells[:, -1] = np.arange(n_rows) % 2
        header = ",".join(f"c{i}" for i in range(n_cols))
        return "\n".join([header, *(",".join(row) for row in cells)]) + "\n"
    n_cols = draw(st.integers(1, 6))
    n_rows = {"one row": 1, "clean table": draw(st.integers(20, 40))}.get(
        kind, draw(st.integers(0, 25))
    )
    headers = draw(st.lists(HEADERS, min_size=n_cols, max_size=n_cols))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(headers)
    for r in range(n_rows):
        if kind == "clean table":  # numeric features, a 2-class target: these should load
            row = [str(draw(st.integers(0, 9))) for _ in range(n_cols - 1)] + [str(r % 2)]
        else:
            row = draw(st.lists(CELLS, min_size=n_cols, max_size=n_cols))
        writer.writerow(row)
    return buffer.getvalue()


@pytest.mark.parametrize("kind", CSV_KINDS)
@settings(FAST, max_examples=10)
@given(data=st.data())
def test_random_csv_through_the_loader(tmp_path: Path, kind: str, data: st.DataObject) -> None:
    from toolkit.data import load_dataset
    from toolkit.data.base import DataSpec

    text = data.draw(csv_texts(kind))
    path = tmp_path / "data.csv"
    path.write_text(text, encoding="utf-8")
    try:
        ds = load_dataset(DataSpec(name=f"csv:{path}"))
    except UserError as err:
        assert str(err).startswith(f"csv {path}"), err  # names the file
        record(f"random CSV: {kind}", "csv: loader", "UserError")
        return
    x = ds.train.take_x()
    assert np.isfinite(x).all() and x.shape[1:] == ds.input_shape
    record(f"random CSV: {kind}", "csv: loader", "loaded")


@pytest.mark.parametrize("kind", CSV_KINDS)
@settings(FAST, max_examples=2)
@given(data=st.data())
def test_random_csv_through_train(tmp_path_factory, kind: str, data: st.DataObject) -> None:
    text = data.draw(csv_texts(kind))
    tmp = tmp_path_factory.mktemp("csv-train")
    (tmp / "data.csv").write_text(text, encoding="utf-8")
    recipe = {
        "name": "t",
        "dataset": {"name": f"csv:{tmp / 'data.csv'}"},
        "model": {"builder": "mlp", "args": {"hidden": [4]}},
        "train": {"epochs": 1, "tensorboard": False},
    }
    (tmp / "r.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    result = invoke("train", tmp / "r.yaml", "--runs-dir", tmp / "runs")
    outcome = outcome_of(result)
    assert outcome != "exit 1"
    runs = tmp / "runs"
    leftovers = list(runs.iterdir()) if runs.exists() else []
    if outcome == "exit 0":
        assert [p.name for p in leftovers] == ["t"] and (runs / "t" / "metrics.json").is_file()
    else:
        assert leftovers == [], leftovers  # nothing half-written
    record(f"random CSV: {kind}", "train", outcome)


# --------------------------------------------------------------------- random bytes as models

MAGIC = {
    ".tflite": [b"", b"\x1c\x00\x00\x00TFL3", b"\x18\x00\x00\x00TFL3\x00\x00\x0e\x00"],
    ".onnx": [b"", b"\x08\x07\x12\x07pytorch", b"\x08\x08:\x02\n\x00"],
    ".keras": [b"", b"PK\x03\x04", b"PK\x05\x06" + b"\x00" * 18],
    ".h5": [b"", b"\x89HDF\r\n\x1a\n", b"\x89HDF\r\n\x1a\n\x00\x00\x00\x00\x00\x08\x08\x00"],
}


@st.composite
def junk_files(draw: st.DrawFn) -> tuple[str, bytes]:
    suffix = draw(st.sampled_from(sorted(MAGIC)))
    head = draw(st.sampled_from(MAGIC[suffix]))
    return suffix, head + draw(st.binary(max_size=3000))


@FAST
@given(case=junk_files())
def test_random_bytes_as_a_model(tmp_path: Path, tiny_models: dict[str, Path], case) -> None:
    from toolkit.core.modelio import load_model
    from toolkit.runtimes import open_runner

    suffix, data = case
    path = tmp_path / f"junk{suffix}"
    path.write_bytes(data)
    with pytest.raises(UserError):
        load_model(path)
    record(f"random bytes as {suffix}", "load_model (export)", "UserError")
    with pytest.raises(UserError):
        open_runner(path)
    record(f"random bytes as {suffix}", "open_runner (validate)", "UserError")
    for command in (["inspect", path], ["predict", path, tiny_models["keras"]]):
        result = invoke(*command)
        assert outcome_of(result) == "exit 2 (one-line error)"
        record(f"random bytes as {suffix}", command[0], "exit 2 (one-line error)")
    result = invoke("export", path, "--out", tmp_path / "out", "--formats", "tflite")
    assert outcome_of(result) == "exit 2 (one-line error)"
    assert not (tmp_path / "out").exists()
    record(f"random bytes as {suffix}", "export", "exit 2 (one-line error)")


NATIVE_FUZZ = r"""
import sys, numpy as np
from pathlib import Path
from toolkit.core.errors import UserError
from toolkit.runtimes import open_runner
real = {s: Path(p).read_bytes() for s, p in zip(('.tflite', '.onnx'), sys.argv[2:4])}
rng = np.random.default_rng(0)
counts = {}
for i in range(int(sys.argv[1])):
    suffix = ('.tflite', '.onnx')[i % 2]
    data = bytearray(real[suffix])
    if i % 4 < 2:  # flip random bytes after the header
        for pos in rng.integers(8, len(data), size=int(rng.integers(1, 16))):
            data[pos] = int(rng.integers(0, 256))
    else:  # random bytes behind a valid-looking header
        data = data[:8] + bytearray(rng.bytes(int(rng.integers(0, 4000))))
    path = Path(sys.argv[4]) / f"m{i}{suffix}"
    path.write_bytes(bytes(data))
    try:
        with open_runner(path) as runner:
            runner.predict(np.zeros((1, *runner.inputs[0].shape[1:]), np.float32))
        key = 'ran'
    except UserError:
        key = 'UserError'
    except Exception as exc:  # a Python-level failure inside the runtime, not a crash
        key = 'other:' + type(exc).__name__
    counts[suffix + ' ' + key] = counts.get(suffix + ' ' + key, 0) + 1
print(counts)
"""


def test_mutated_models_never_crash_the_native_runtimes(tiny_models, tmp_path: Path) -> None:
    """Corrupted .tflite/.onnx through LiteRT/ORT load + invoke, in a child: a segfault shows."""
    n = 200
    proc = subprocess.run(
        [sys.executable, "-c", NATIVE_FUZZ, str(n), tiny_models["tflite"], tiny_models["onnx"],
         tmp_path],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, f"native crash (rc {proc.returncode}): {proc.stderr[-1500:]}"
    counts = ast.literal_eval(proc.stdout.strip().splitlines()[-1])  # the dict we printed
    assert sum(counts.values()) == n
    for key, count in counts.items():
        suffix, outcome = key.split(" ", 1)
        for _ in range(count):
            record(f"mutated/random-body {suffix} (native, in a child)", "open_runner+predict",
                   outcome)  # fmt: skip
    others = {k: v for k, v in counts.items() if k.split(" ", 1)[1].startswith("other:")}
    assert not others, f"runtime errors that escape as non-UserError: {others}"


# -------------------------------------------------------------------- truncated real models

TRUNCATABLE = ["keras", "image_h5", "tflite", "tflite_int8", "onnx"]


@FAST
@given(which=st.sampled_from(TRUNCATABLE), fraction=st.floats(0.0, 0.999))
def test_truncated_real_models(tiny_models, tmp_path: Path, which: str, fraction: float) -> None:
    from toolkit.core.modelio import load_model
    from toolkit.runtimes import open_runner

    source = tiny_models[which]
    data = source.read_bytes()
    path = tmp_path / f"cut{source.suffix}"
    path.write_bytes(data[: int(len(data) * fraction)])
    cls = f"truncated real {source.suffix} ({which})"
    if source.suffix in (".keras", ".h5"):
        with pytest.raises(UserError):
            load_model(path)
        record(cls, "load_model (export)", "UserError")
    try:
        with open_runner(path) as runner:
            runner.predict(np.zeros((1, *runner.inputs[0].shape[1:]), np.float32))
        outcome = "loaded (cut kept a whole model)"
    except UserError:
        outcome = "UserError"
    record(cls, "open_runner (predict/validate)", outcome)
    assert outcome == "UserError" or fraction > 0.9, "a badly truncated file ran"


# ------------------------------------------------------------------ images of every PIL mode

IMAGES = "image of each PIL mode (12), sizes 1x1..3x500"
MODES = ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "I", "I;16", "F", "YCbCr"]
SIZES = [(1, 1), (3, 500), (500, 3), (2, 2), (17, 9), (64, 48)]


def _image(mode: str, size: tuple[int, int], seed: int) -> Any:
    """A random image in `mode` (width, height = size)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    width, height = size
    if mode in ("I", "I;16"):  # uint16 -> I;16, int32 -> I
        dtype = np.uint16 if mode == "I;16" else np.int32
        return Image.fromarray(rng.integers(0, 65535, (height, width)).astype(dtype))
    if mode == "F":
        return Image.fromarray(rng.uniform(0, 255, (height, width)).astype(np.float32))
    rgba = Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8), "RGBA")
    if mode == "P":
        return rgba.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    if mode == "PA":
        return rgba.convert("PA")
    return rgba.convert(mode)


def _save(image: Any, folder: Path, stem: str, *, folder_loader: bool) -> Path | None:
    """Save in the first format that keeps the mode (folder loader: .png/.jpg/.bmp only)."""
    formats = [".png", ".bmp", ".jpg"] + ([] if folder_loader else [".tif"])
    for suffix in formats:
        path = folder / f"{stem}{suffix}"
        try:
            image.save(path)
        except (OSError, KeyError, ValueError):
            path.unlink(missing_ok=True)
            continue
        return path
    return None


@settings(FAST, max_examples=30)
@given(mode=st.sampled_from(MODES), size=st.sampled_from(SIZES), channels=st.sampled_from([1, 3]))
def test_every_pil_mode_through_predict_inputs(tmp_path, mode, size, channels) -> None:
    """predict's loader decodes exactly as training's image-folder decoder does."""
    from toolkit.data.images import decode_image
    from toolkit.data.inputs import load_inputs

    path = _save(_image(mode, size, 0), tmp_path, f"img-{mode.replace(';', '_')}",
                 folder_loader=False)  # fmt: skip
    assert path is not None, f"could not save a {mode} image"
    batch, _ = load_inputs([path], (8, 8, channels), {"value_range": [0, 16]})
    assert batch.shape == (1, 8, 8, channels) and np.isfinite(batch).all()
    assert batch.min() >= 0 and batch.max() <= 16
    color = "grayscale" if channels == 1 else "rgb"
    trained = decode_image(str(path), color, (8, 8)) / 255.0 * 16
    np.testing.assert_allclose(batch[0], trained, atol=1e-4)  # same pixels as training saw
    record(IMAGES, "predict input loader", "decoded exactly as training")


@settings(FAST, max_examples=20)
@given(mode=st.sampled_from(MODES), size=st.sampled_from(SIZES))
def test_every_pil_mode_through_the_image_folder(tmp_path_factory, mode, size) -> None:
    from toolkit.data import load_dataset
    from toolkit.data.base import DataSpec

    root = tmp_path_factory.mktemp("folder")
    saved = []
    for cls in ("a", "b"):
        (root / cls).mkdir()
        for i in range(6):
            saved.append(_save(_image(mode, size, i), root / cls, f"{i}", folder_loader=True))
    spec = DataSpec(name=f"image-folder:{root}", image_size=(8, 8), val_fraction=0.25,
                    test_fraction=0.25)  # fmt: skip
    if None in saved:  # the mode has no .png/.jpg/.bmp form (F): nothing listed
        with pytest.raises(UserError, match="no image files"):
            load_dataset(spec)
        record(IMAGES, "image-folder loader", f"UserError: no .png/.jpg/.bmp form ({mode})")
        return
    ds = load_dataset(spec)
    x = ds.train.take_x()
    assert x.shape[1:3] == (8, 8) and np.isfinite(x).all()
    assert x.min() >= 0 and x.max() <= 255
    record(IMAGES, "image-folder loader", "loaded")


@pytest.mark.parametrize("mode", MODES)
def test_every_pil_mode_through_predict_cli(tiny_models, tmp_path: Path, mode: str) -> None:
    path = _save(_image(mode, (3, 500), 1), tmp_path, "x", folder_loader=False)
    result = invoke("predict", tiny_models["image_keras"], path, "--json")
    assert outcome_of(result) == "exit 0"
    record(IMAGES, "predict", "exit 0")


# ------------------------------------------------------------------ recipes with wrong types

BASE_RECIPE = {
    "name": "t",
    "dataset": {"name": "wine"},
    "model": {"builder": "mlp"},
    "train": {"epochs": 1, "tensorboard": False},
}


def _leaves(model: type, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, annotation, field info) for every leaf of the recipe schema."""
    from pydantic import BaseModel

    out = []
    for name, info in model.model_fields.items():
        ann = info.annotation
        union = typing.get_origin(ann) in (typing.Union, types.UnionType)
        args = [a for a in typing.get_args(ann) if a is not type(None)] if union else []
        nested = [a for a in [ann, *args] if isinstance(a, type) and issubclass(a, BaseModel)]
        if nested:
            out += _leaves(nested[0], f"{prefix}{name}.")
        else:
            out.append((f"{prefix}{name}", ann, info))
    return out


def _wrong_values(annotation: Any) -> list[Any]:
    """Values of the wrong type for a field: never accepted by pydantic's lax mode."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        return [v for v in _wrong_values(options[0]) if v is not None]
    if origin is typing.Literal:
        return ["not-an-option", 7, ["list"]]
    if annotation is bool:
        return ["maybe", [True], 2.5]
    if annotation in (int, float):
        return ["seven", [1], {"a": 1}, "1..2"]
    if annotation is str:
        return [[1, 2], {"a": "b"}, 3.5]
    if origin is tuple:
        return ["8x8", [8], [8, 8, 8], [8, "x"]]
    if origin is dict:
        return [[1, 2], "args", 5]
    if origin is list:
        return ["one", 5, {"a": 1}]
    raise AssertionError(f"no wrong values for {annotation!r}")


def _out_of_range(info: Any) -> list[Any]:
    """Just past each numeric bound of a field (gt/lt: the bound, ge: -1, le: +1)."""
    step = {"gt": 0, "lt": 0, "ge": -1, "le": 1}
    return [
        getattr(meta, attr) + delta
        for meta in info.metadata
        for attr, delta in step.items()
        if getattr(meta, attr, None) is not None
    ]


def _section_model(dotted_section: str) -> Any:
    """The pydantic model of a recipe section ('train.optimizer'), through optional unions."""
    from pydantic import BaseModel

    from toolkit.core.recipe import Recipe

    model: Any = Recipe
    for key in dotted_section.split("."):
        ann = model.model_fields[key].annotation
        model = next(a for a in (ann, *typing.get_args(ann))
                     if isinstance(a, type) and issubclass(a, BaseModel))  # fmt: skip
    return model


def _minimal(model: Any) -> dict[str, Any]:
    """Placeholder values for a section's required keys (so only the bad key is wrong)."""
    out = {}
    for name, info in model.model_fields.items():
        if info.is_required():
            assert info.annotation is str, (name, info.annotation)
            out[name] = "x"
    return out


def _set(data: dict, dotted: str, value: Any) -> dict:
    data = yaml.safe_load(yaml.safe_dump(data))  # deep copy
    node = data
    *parents, leaf = dotted.split(".")
    for i, key in enumerate(parents):
        if node.get(key) is None:  # an absent optional section: fill its required keys
            node[key] = _minimal(_section_model(".".join(parents[: i + 1])))
        node = node[key]
    node[leaf] = value
    return data


def _schema_cases() -> list[tuple[str, Any, str]]:
    """(dotted key, bad value, 'wrong type' | 'out of range') for every leaf of the schema."""
    from toolkit.core.recipe import Recipe

    cases = []
    for dotted, annotation, info in _leaves(Recipe):
        cases += [(dotted, v, "wrong type") for v in _wrong_values(annotation)]
        cases += [(dotted, v, "out of range") for v in _out_of_range(info)]
    return cases


SCHEMA_CASES = _schema_cases()


def test_schema_walk_covers_every_key() -> None:
    keys = {k for k, _, _ in SCHEMA_CASES}
    assert {"train.epochs", "train.optimizer.momentum", "dataset.image_size", "model.args",
            "preprocess.augment.flip", "train.early_stopping.patience"} <= keys  # fmt: skip
    assert len(keys) >= 40


@settings(FAST, max_examples=60)
@given(case=st.sampled_from(SCHEMA_CASES))
def test_recipe_with_a_wrong_type_names_the_key(case: tuple[str, Any, str]) -> None:
    from toolkit.core.recipe import parse_recipe

    dotted, value, kind = case
    with pytest.raises(UserError) as err:
        parse_recipe(_set(BASE_RECIPE, dotted, value), source="r.yaml")
    message = str(err.value)
    assert message.startswith(f"recipe r.yaml: {dotted}"), (dotted, value, message)
    assert "\n" not in message
    record(f"recipe key: {kind} value", "recipe parser", "UserError naming the key")


@settings(FEW, max_examples=10)
@given(case=st.sampled_from(SCHEMA_CASES))
def test_recipe_with_a_wrong_type_through_train(tmp_path_factory, case) -> None:
    dotted, value, kind = case
    tmp = tmp_path_factory.mktemp("recipe")
    (tmp / "r.yaml").write_text(yaml.safe_dump(_set(BASE_RECIPE, dotted, value)))
    result = invoke("train", tmp / "r.yaml", "--runs-dir", tmp / "runs")
    assert outcome_of(result) == "exit 2 (one-line error)"
    assert dotted in result.output and not (tmp / "runs").exists()
    record(f"recipe key: {kind} value", "train", "exit 2 (one-line error)")


YAML_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)  # fmt: skip


@FAST
@given(doc=st.one_of(YAML_VALUES, st.text(max_size=300)))
def test_random_yaml_documents(tmp_path: Path, doc: Any) -> None:
    from toolkit.core.recipe import load_recipe

    path = tmp_path / "r.yaml"
    text = doc if isinstance(doc, str) else yaml.safe_dump(doc)
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserError) as err:
        load_recipe(str(path))
    assert str(path) in str(err.value)
    record("random YAML document as a recipe", "recipe parser", "UserError")


def test_pathological_yaml_is_refused_quickly(tmp_path: Path) -> None:
    from toolkit.core.recipe import load_recipe

    deep = tmp_path / "deep.yaml"
    deep.write_text("name: x\nmodel: {builder: mlp, args: {a: " + "[" * 5000 + "]" * 5000 + "}}\n")
    laughs = ["name: x", "dataset: {name: wine}", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    laughs += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    laughs.append("model: {builder: mlp, args: {bomb: *a8}}")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(laughs) + "\n")
    for path, needle in ((deep, "nested too deeply"), (bomb, "aliases")):
        with pytest.raises(UserError, match=needle):
            load_recipe(str(path))
        record("pathological YAML (deep nesting, alias bomb)", "recipe parser", "UserError")

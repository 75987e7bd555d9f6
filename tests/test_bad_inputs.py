"""One table of bad inputs across the commands (issue #8): each is one line, exit 2, no output.

Every row runs `keras-edge ...` in this process (typer's CliRunner, the same code path as the
console script) and checks the error policy: exit 2, exactly one `error: ` line that names the
problem, no traceback, and no output directory or hidden partial directory left behind.
Cases already covered by test_cli.py / test_export.py are not repeated here.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _badinput
import numpy as np
import pytest
import yaml
from _badinput import TAB_RECIPE, error_line, hidden_leftovers, invoke, record

tiny_models = _badinput.tiny_models  # the session fixture, shared with the other modules
Models = dict[str, Path]


@dataclass
class Case:
    cls: str
    command: str
    argv: Callable[[Path, Models], list[Any]]  # (tmp dir, tiny models) -> arguments
    needle: str  # must appear in the error line
    env: dict[str, str] = field(default_factory=dict)


def _recipe(tmp: Path, **changes: Any) -> Path:
    data = yaml.safe_load(yaml.safe_dump(TAB_RECIPE))
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    path = tmp / "r.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


def _npy(path: Path, array: np.ndarray, *, pickle: bool = False) -> Path:
    np.save(path, array, allow_pickle=pickle)
    return path


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _train(tmp: Path, recipe: Path, *extra: Any) -> list[Any]:
    return ["train", recipe, "--runs-dir", tmp / "runs", *extra]


def _dataset(tmp: Path, name: str, **extra: Any) -> list[Any]:
    return _train(tmp, _recipe(tmp, **{"dataset.name": name, **extra}))


def _folder(tmp: Path, classes: dict[str, list[bytes]]) -> Path:
    for cls, files in classes.items():
        (tmp / "imgs" / cls).mkdir(parents=True)
        for i, data in enumerate(files):
            (tmp / "imgs" / cls / f"{i}.png").write_bytes(data)
    return tmp / "imgs"


def _png(size: tuple[int, int]) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", size, 128).save(buffer, format="PNG")
    return buffer.getvalue()


def _export(tmp: Path, model: Path, *extra: Any) -> list[Any]:
    return ["export", model, "--out", tmp / "out", "--latency-runs", "1", *extra]


def _export_dir_without_reference(tmp: Path, m: Models) -> Path:
    folder = tmp / "exp"
    folder.mkdir()
    (folder / "model-fp32.tflite").write_bytes(m["tflite"].read_bytes())
    return folder


def _onnx_escaping(tmp: Path) -> Path:
    """An ONNX model whose weight lives in an external file outside its directory."""
    from onnx import TensorProto, helper

    _write(tmp / "secret.bin", np.arange(3, dtype=np.float32).tobytes())
    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[3])
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../secret.bin"), ("offset", "0"), ("length", "12")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    io_ = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3]) for n in ("x", "y")]
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "g", [io_[0]], [io_[1]], [weight]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return _write(tmp / "m" / "model.onnx", model.SerializeToString())


def _zip_slip_keras(tmp: Path, m: Models) -> Path:
    """A .keras zip with a member named ../escape.txt besides the real model."""
    path = tmp / "slip.keras"
    with zipfile.ZipFile(m["keras"]) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item))
        dst.writestr("../escape.txt", "outside")
    return path


CASES = [
    # ------------------------------------------------------------------ train: recipes
    Case("recipe is a directory", "train", lambda t, m: _train(t, t), "not found"),
    Case("recipe is binary junk", "train",
         lambda t, m: _train(t, _write(t / "r.yaml", b"\xff\xfe\x00\x01junk")), "not valid YAML"),
    Case("recipe is an empty file", "train",
         lambda t, m: _train(t, _write(t / "r.yaml", "")), "expected a mapping"),
    Case("recipe is a YAML list", "train",
         lambda t, m: _train(t, _write(t / "r.yaml", "- a\n- b\n")), "expected a mapping"),
    Case("recipe larger than 1 MiB", "train",
         lambda t, m: _train(t, _write(t / "r.yaml", "#" * (1024**2 + 1))), "larger than"),
    Case("recipe name with a slash", "train",
         lambda t, m: _train(t, _recipe(t, name="../evil")), "name: must be a plain name"),
    Case("recipe with a python tag", "train",
         lambda t, m: _train(t, _write(t / "r.yaml", "name: !!python/object/apply:os.system [id]")),
         "not valid YAML"),
    Case("builder argument unknown", "train",
         lambda t, m: _train(t, _recipe(t, **{"model.args": {"nope": 1}})), "no argument 'nope'"),
    Case("builder argument of a wrong type", "train",
         lambda t, m: _train(t, _recipe(t, **{"model.args": {"hidden": "wide"}})), "'mlp'"),
    Case("--set on a key that is not a section", "train",
         lambda t, m: _train(t, _recipe(t), "--set", "name.x=1"), "not a section"),
    Case("--set with a wrong type", "train",
         lambda t, m: _train(t, _recipe(t), "--set", "train.epochs=[1, 2]"), "train.epochs"),
    Case("--runs-dir is a file", "train",
         lambda t, m: ["train", _recipe(t), "--runs-dir", _write(t / "runs", "x")], "runs"),
    Case("run name of an existing file", "train",
         lambda t, m: [*_train(t, _recipe(t)), "--name", _write(t / "runs" / "f", "x").name],
         "not a directory"),
    # ------------------------------------------------------------------ train: datasets
    Case("unknown dataset kind prefix", "train",
         lambda t, m: _dataset(t, "parquet:/x.parquet"), "unknown dataset kind 'parquet'"),
    Case("dataset prefix without a path", "train",
         lambda t, m: _dataset(t, "csv:"), "needs a path"),
    Case("csv path that is a directory", "train",
         lambda t, m: _dataset(t, f"csv:{t}"), "not a file"),
    Case("csv with an unknown target column", "train",
         lambda t, m: _dataset(t, "csv:" + str(_write(t / "d.csv", "a,b\n1,2\n3,4\n")),
                               **{"dataset.target": "label"}), "target column"),
    Case("csv target with an empty cell", "train",
         lambda t, m: _dataset(t, "csv:" + str(_write(t / "d.csv", "a,y\n1,0\n2,\n3,1\n"))),
         "empty value"),
    Case("npz holding pickled objects", "train",
         lambda t, m: _dataset(t, "npz:" + str(_npz(t / "d.npz", x=np.array([[1], [2, 3]],
                               dtype=object), y=np.array([0, 1])))), "never unpickled"),
    Case("npz that is random bytes", "train",
         lambda t, m: _dataset(t, f"npz:{_write(t / 'd.npz', os.urandom(300))}"), "not a readable"),
    Case("npz without x and y", "train",
         lambda t, m: _dataset(t, f"npz:{_npz(t / 'd.npz', a=np.zeros(3))}"), "'x'"),
    Case("npz x/y length mismatch", "train",
         lambda t, m: _dataset(t, f"npz:{_npz(t / 'd.npz', x=np.zeros((4, 2)), y=np.zeros(3))}"),
         "samples"),
    Case("npz x with NaN", "train",
         lambda t, m: _dataset(t, "npz:" + str(_npz(t / "d.npz", x=np.full((10, 2), np.nan),
                               y=np.arange(10) % 2))), "NaN"),
    Case("image folder path is a file", "train",
         lambda t, m: _dataset(t, f"image-folder:{_write(t / 'f.png', _png((4, 4)))}"),
         "not a directory"),
    Case("image folder with empty class folders", "train",
         lambda t, m: _dataset(t, f"image-folder:{_folder(t, {'a': [], 'b': []})}"),
         "no image files"),
    Case("image folder of 1x1 images into a CNN", "train",
         lambda t, m: _train(t, _recipe(t, **{
             "dataset.name": f"image-folder:{_folder(t, {c: [_png((1, 1))] * 20 for c in 'ab'})}",
             "model.builder": "cnn", "model.args": {}})), "at least 8x8"),
    Case("mnist-idx folder without IDX files", "train",
         lambda t, m: _dataset(t, f"mnist-idx:{t}"), "mnist-idx"),
    # ------------------------------------------------------------------ export / validate
    Case("model bigger than --max-model-bytes", "export",
         lambda t, m: ["--max-model-bytes", "1K", *_export(t, m["run"])], "--max-model-bytes"),
    Case("model bigger than $KERAS_EDGE_MAX_MODEL_BYTES", "export",
         lambda t, m: _export(t, m["run"]), "KERAS_EDGE_MAX_MODEL_BYTES",
         {"KERAS_EDGE_MAX_MODEL_BYTES": "20K"}),
    Case("malformed size bound", "export",
         lambda t, m: ["--max-model-bytes", "lots", *_export(t, m["run"])], "'lots'"),
    Case(".keras zip with a ../ member (zip-slip)", "export",
         lambda t, m: _export(t, _zip_slip_keras(t, m), "--data", "wine"), "unsafe member"),
    Case("--out is an existing file", "export",
         lambda t, m: [*_export(t, m["run"]), "--out", _write(t / "f", "x"), "--force"],
         "not a directory"),
    Case("--input-range malformed", "export",
         lambda t, m: _export(t, m["run"], "--input-range", "0;1"), "LO,HI"),
    Case("--input-range not finite", "export",
         lambda t, m: _export(t, m["run"], "--input-range", "0,inf"), "--input-range"),
    Case("--data names an unknown dataset", "export",
         lambda t, m: _export(t, m["run"], "--data", "mnist5k"), "did you mean"),
    Case("validate a missing directory", "validate",
         lambda t, m: ["validate", t / "nope"], "not found"),
    Case("validate a directory without artifacts", "validate",
         lambda t, m: ["validate", t], "no artifacts"),
    Case("validate without a reference model", "validate",
         lambda t, m: ["validate", _export_dir_without_reference(t, m)], "--reference"),
    Case("validate --runtimes with an unknown runtime", "validate",
         lambda t, m: ["validate", _export_dir_without_reference(t, m), "--reference",
                       m["image_keras"], "--data", "digits", "--runtimes", "tensorrt:x"],
         "runtime"),
    # ------------------------------------------------------------------ predict / inspect
    Case("input file missing", "predict",
         lambda t, m: ["predict", m["run"], t / "nope.csv"], "not found"),
    Case("input of an unsupported type", "predict",
         lambda t, m: ["predict", m["run"], _write(t / "x.txt", "1,2")], "unsupported input"),
    Case(".npy holding pickled objects", "predict",
         lambda t, m: ["predict", m["run"], _npy(t / "x.npy", np.array([{}], dtype=object),
                                                 pickle=True)], "not a readable .npy"),
    Case(".npy that is random bytes", "predict",
         lambda t, m: ["predict", m["run"], _write(t / "x.npy", os.urandom(256))], ".npy"),
    Case(".npy of the wrong shape", "predict",
         lambda t, m: ["predict", m["run"], _npy(t / "x.npy", np.zeros((2, 5)))], "shape"),
    Case(".csv with text / NaN", "predict",
         lambda t, m: ["predict", m["run"], _write(t / "x.csv", "a,b\nx,\n")], "x.csv"),
    Case("image given to a tabular model", "predict",
         lambda t, m: ["predict", m["run"], _write(t / "x.png", _png((4, 4)))], "image"),
    Case("corrupt image file", "predict",
         lambda t, m: ["predict", m["image_keras"], _write(t / "x.png", b"\x89PNG\r\n\x1a\n0")],
         "not a readable image"),
    Case("input_spec.json that is not JSON", "predict",
         lambda t, m: ["predict", _copy_with_spec(t, m), _write(t / "x.png", _png((4, 4)))],
         "not valid JSON"),
    Case("unknown LiteRT delegate", "predict",
         lambda t, m: ["predict", m["tflite"], _write(t / "x.png", _png((4, 4))),
                       "--provider", "gpu"], "delegate"),
    Case("unavailable ORT provider", "predict",
         lambda t, m: ["predict", m["onnx"], _write(t / "x.png", _png((4, 4))),
                       "--provider", "cuda"], "not available"),
    Case(".onnx with external data outside its folder", "inspect",
         lambda t, m: ["inspect", _onnx_escaping(t)], "outside"),
    Case("artifact with an unknown suffix", "inspect",
         lambda t, m: ["inspect", _write(t / "model.pt", b"x")], "which runtime"),
    Case("artifact bigger than the size bound", "inspect",
         lambda t, m: ["--max-model-bytes", "100", "inspect", m["tflite"]], "bound"),
]  # fmt: skip


def _copy_with_spec(tmp: Path, m: Models) -> Path:
    folder = tmp / "model"
    folder.mkdir()
    (folder / "model.keras").write_bytes(m["image_keras"].read_bytes())
    (folder / "input_spec.json").write_text("{not json")
    return folder / "model.keras"


@pytest.mark.parametrize("case", CASES, ids=[c.cls for c in CASES])
def test_bad_input(case: Case, tiny_models: Models, tmp_path: Path, monkeypatch) -> None:
    # `--max-model-bytes` sets the variable in this process: setenv+delenv restores "unset"
    monkeypatch.setenv("KERAS_EDGE_MAX_MODEL_BYTES", "")
    monkeypatch.delenv("KERAS_EDGE_MAX_MODEL_BYTES")
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    argv = case.argv(tmp_path, tiny_models)
    before = {p for p in tmp_path.rglob("*")}
    result = invoke(*argv)
    line = error_line(result)
    assert case.needle in line, line
    created = {p for p in tmp_path.rglob("*")} - before
    assert not created, f"left behind: {sorted(created)}"
    assert not hidden_leftovers(tmp_path) or all(p in before for p in hidden_leftovers(tmp_path))
    assert not (tmp_path / "out").exists()
    record(case.cls, case.command, "exit 2 (one-line error)")


@pytest.mark.parametrize(
    "argv",
    [["train", "digits-cnn", "--epochs", "0"], ["export", "x", "--calib-samples", "0"],
     ["predict", "m.keras", "x.png", "--top-k", "0"], ["datasets", "extra"],
     ["builders", "--bogus"], ["inspect"]],
    ids=["train --epochs 0", "export --calib-samples 0", "predict --top-k 0",
         "datasets extra argument", "builders unknown option", "inspect without argument"],
)  # fmt: skip
def test_usage_errors_exit_2(argv: list[str]) -> None:
    """Flag/argument errors are click usage errors: exit 2, a usage hint, no traceback."""
    result = invoke(*argv)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "Usage:" in result.output or "Error" in result.output
    record("bad flag / argument (usage error)", argv[0], "exit 2 (usage message)")


def test_size_bound_is_configurable(tiny_models: Models, monkeypatch) -> None:
    from toolkit.core.errors import UserError
    from toolkit.core.modelio import load_model, max_model_bytes
    from toolkit.runtimes import open_runner

    monkeypatch.setenv("KERAS_EDGE_MAX_MODEL_BYTES", "500")
    assert max_model_bytes() == 500
    for path in (tiny_models["tflite"], tiny_models["onnx"], tiny_models["image_keras"]):
        with pytest.raises(UserError, match="bound"):
            open_runner(path)
    with pytest.raises(UserError, match="bound"):
        load_model(tiny_models["run"])
    load_model(tiny_models["run"], max_bytes=10 * 1024**2)  # an explicit bound wins
    monkeypatch.setenv("KERAS_EDGE_MAX_MODEL_BYTES", "10M")
    open_runner(tiny_models["tflite"]).close()


def _code_only(path: Path) -> list[tuple[int, str]]:
    """(line number, code) with string literals and comments removed."""
    import io
    import tokenize

    lines: dict[int, str] = {}
    source = path.read_text(encoding="utf-8")
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (tokenize.STRING, tokenize.COMMENT) or tok.type == getattr(
            tokenize, "FSTRING_MIDDLE", -1
        ):
            continue
        lines[tok.start[0]] = lines.get(tok.start[0], "") + tok.string
    return sorted(lines.items())


def test_nothing_unpickles() -> None:
    """No np.load with pickles, no pickle/joblib/torch.load, no unsafe Keras/YAML loading."""
    import re

    forbidden = re.compile(
        r"allow_pickle=True|\b(pickle|cPickle|joblib|dill|cloudpickle)\.loads?\(|torch\.load"
        r"|safe_mode=False|enable_unsafe_deserialization|yaml\.(unsafe_)?load\(|\beval\("
    )
    package = Path(__file__).resolve().parents[1] / "toolkit"
    offenders = [
        f"{path.relative_to(package)}:{n}: {code}"
        for path in sorted(package.rglob("*.py"))
        for n, code in _code_only(path)
        if forbidden.search(code)
    ]
    assert not offenders, offenders
    record("pickle / unsafe deserialization in the code (static check)", "all", "none found")


def test_tflite_identifier_and_onnx_checker_run_before_the_runtimes(tmp_path, monkeypatch):
    """Foreign bytes never reach LiteRT's or ORT's constructor."""
    import ai_edge_litert.interpreter as litert
    import onnxruntime

    from toolkit.core.errors import UserError
    from toolkit.runtimes import open_runner

    def boom(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the runtime saw an unchecked file")

    monkeypatch.setattr(litert, "Interpreter", boom)
    monkeypatch.setattr(onnxruntime, "InferenceSession", boom)
    tfl = _write(tmp_path / "m.tflite", b"\x00\x00\x00\x00TFL2" + b"\x00" * 64)
    with pytest.raises(UserError, match="TFL3"):
        open_runner(tfl)
    onx = _write(tmp_path / "m.onnx", b"\x08\x07" + os.urandom(64))
    with pytest.raises(UserError, match="not a valid ONNX model"):
        open_runner(onx)
    record("wrong flatbuffer identifier / invalid ONNX proto", "open_runner", "UserError")


def test_keras_safe_mode_refuses_lambda_everywhere(tmp_path: Path) -> None:
    """A Lambda layer is refused by export, predict and inspect (no --unsafe on the last two)."""
    import keras

    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2.0)(inputs))
    for suffix in (".keras", ".h5"):
        path = tmp_path / f"lam{suffix}"
        model.save(path)
        x = _npy(tmp_path / "x.npy", np.ones(3, np.float32))
        for argv in (["export", path, "--out", tmp_path / "o"], ["predict", path, x],
                     ["inspect", path]):  # fmt: skip
            line = error_line(invoke(*argv))
            assert "lambda" in line.lower(), line
            assert not (tmp_path / "o").exists()
            record(f"Lambda layer in a {suffix} file (safe_mode)", str(argv[0]),
                   "exit 2 (one-line error)")  # fmt: skip

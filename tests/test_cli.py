"""The CLI as a user meets it: real processes, exit codes, one-line errors, nothing half-written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from _badinput import one_error_line, record

REPO = Path(__file__).resolve().parents[1]


def _nothing_written(runs: Path) -> None:
    assert not runs.exists() or list(runs.iterdir()) == []


def _recipe(tmp_path: Path, **sections) -> Path:
    data = {
        "name": "t",
        "dataset": {"name": "digits", "image_size": [8, 8]},
        "model": {"builder": "cnn", "args": {"filters": [8]}},
        "train": {"epochs": 1, "tensorboard": False},
    }
    data.update(sections)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_help_does_not_import_tensorflow() -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from toolkit.cli.app import app;"
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output;"
        "assert 'train' in r.output;"
        "bad = [m for m in ('tensorflow', 'keras', 'onnxruntime', 'tf_keras') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_version_and_module_entry_point(cli) -> None:
    proc = cli("--version")
    assert proc.returncode == 0 and "keras-edge-toolkit" in proc.stdout


def test_builders_and_datasets_tables(cli) -> None:
    builders = cli("builders")
    assert builders.returncode == 0
    for name in ("cnn", "mobilenet_v2", "mobilenet_v3_small", "mlp"):
        assert name in builders.stdout
    datasets = cli("datasets")
    assert datasets.returncode == 0
    for name in ("digits", "mnist-5k", "image-folder:PATH", "csv:PATH", "npz:PATH", "mnist-idx"):
        assert name in datasets.stdout


def test_missing_recipe_path(cli, tmp_path) -> None:
    proc = cli("train", str(tmp_path / "nope.yaml"), "--runs-dir", str(tmp_path / "runs"))
    one_error_line_alone(proc, "recipe file not found")
    _nothing_written(tmp_path / "runs")


def test_unknown_builder_suggests(cli, tmp_path) -> None:
    path = _recipe(tmp_path, model={"builder": "mobilenetv2"})
    proc = cli("train", str(path), "--runs-dir", str(tmp_path / "runs"))
    one_error_line_alone(proc, "unknown builder 'mobilenetv2'", "did you mean 'mobilenet_v2'")
    _nothing_written(tmp_path / "runs")


def test_unknown_dataset_suggests(cli, tmp_path) -> None:
    path = _recipe(tmp_path, dataset={"name": "mnist5k"})
    proc = cli("train", str(path), "--runs-dir", str(tmp_path / "runs"))
    one_error_line_alone(proc, "mnist5k", "did you mean 'mnist-5k'")
    _nothing_written(tmp_path / "runs")


def test_recipe_with_wrong_key(cli, tmp_path) -> None:
    path = _recipe(tmp_path, train={"epoch": 3})
    proc = cli("train", str(path), "--runs-dir", str(tmp_path / "runs"))
    one_error_line_alone(proc, "train.epoch", "extra inputs are not permitted")


def test_recipe_with_wrong_type(cli, tmp_path) -> None:
    path = _recipe(tmp_path, train={"batch_size": "big"})
    proc = cli("train", str(path), "--runs-dir", str(tmp_path / "runs"))
    one_error_line_alone(proc, "train.batch_size", "'big'")


def test_bad_set_override(cli, tmp_path) -> None:
    proc = cli("train", "digits-cnn", "--set", "train.epochs", "--runs-dir", str(tmp_path))
    one_error_line_alone(proc, "--set expects KEY=VALUE")


def _image_folder(root: Path, classes: dict[str, int], corrupt: int = 0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls, count in classes.items():
        (root / cls).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 255, size=(12, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i}.png")
        for i in range(corrupt):
            (root / cls / f"broken{i}.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return root


def test_image_folder_with_one_class(cli, tmp_path) -> None:
    folder = _image_folder(tmp_path / "imgs", {"cats": 10})
    path = _recipe(tmp_path, dataset={"name": f"image-folder:{folder}"})
    proc = cli("train", str(path), "--runs-dir", str(tmp_path / "runs"))
    one_error_line_alone(proc, "1 class", "need at least 2")
    _nothing_written(tmp_path / "runs")


def test_image_folder_of_only_corrupt_files(cli, tmp_path) -> None:
    folder = _image_folder(tmp_path / "imgs", {"a": 0, "b": 0}, corrupt=4)
    path = _recipe(tmp_path, dataset={"name": f"image-folder:{folder}"})
    proc = cli("train", str(path), "--runs-dir", str(tmp_path / "runs"))
    one_error_line_alone(proc, "could be read")
    _nothing_written(tmp_path / "runs")


def test_image_folder_with_some_corrupt_files_trains_and_counts_them(cli, tmp_path) -> None:
    folder = _image_folder(tmp_path / "imgs", {"a": 12, "b": 12}, corrupt=2)
    path = _recipe(tmp_path, dataset={"name": f"image-folder:{folder}"})
    proc = cli("train", str(path), "--runs-dir", str(tmp_path / "runs"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "4 unreadable files skipped" in proc.stderr
    metrics = json.loads((tmp_path / "runs" / "t" / "metrics.json").read_text())
    assert metrics["skipped_files"] == 4


@pytest.mark.parametrize(
    ("cell", "needle"), [("", "empty"), ("abc", "non-numeric value 'abc'"), ("inf", "infinite")]
)
def test_csv_with_bad_feature_cell(cli, tmp_path, cell, needle) -> None:
    rows = ["a,b,label"] + [f"{i},{i % 3},{i % 2}" for i in range(30)]
    rows[5] = f"4,{cell},0"
    csv = tmp_path / "data.csv"
    csv.write_text("\n".join(rows) + "\n")
    path = _recipe(tmp_path, dataset={"name": f"csv:{csv}"}, model={"builder": "mlp"})
    proc = cli("train", str(path), "--runs-dir", str(tmp_path / "runs"))
    one_error_line_alone(proc, "column 'b'", needle)
    _nothing_written(tmp_path / "runs")


def test_input_shape_that_does_not_fit_the_builder(cli, tmp_path) -> None:
    path = _recipe(tmp_path, dataset={"name": "wine"})  # a table into a conv net
    proc = cli("train", str(path), "--runs-dir", str(tmp_path / "runs"))
    one_error_line_alone(proc, "builder 'cnn' needs image input", "(13,)")
    _nothing_written(tmp_path / "runs")


def test_images_too_small_for_mobilenet(cli, tmp_path) -> None:
    path = _recipe(tmp_path, model={"builder": "mobilenet_v2"})
    proc = cli("train", str(path), "--runs-dir", str(tmp_path / "runs"))
    one_error_line_alone(proc, "at least 32x32")


def test_debug_shows_the_traceback(cli, tmp_path) -> None:
    proc = cli("--debug", "train", str(tmp_path / "nope.yaml"))
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "UserError" in proc.stderr


def test_predict_and_inspect_bad_paths(cli, tmp_path) -> None:
    one_error_line_alone(cli("predict", str(tmp_path / "m.keras"), "x.png"), "not found")
    one_error_line_alone(cli("inspect", str(tmp_path)), "without model.keras")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 64)
    one_error_line_alone(cli("inspect", str(junk)), "TFLite")


COMMANDS = {"export", "train", "validate"}
USAGE_ERRORS = {
    "missing argument": (["export"], "missing argument", "keras-edge export --help"),
    "unknown option": (["export", "x", "--no-such-flag"], "--no-such-flag", "export --help"),
    "bad int value": (["train", "digits-cnn", "--epochs", "abc"], "--epochs", "train --help"),
    "value out of range": (["export", "m", "--opset", "99"], "--opset", "export --help"),
    "missing option value": (["export", "m", "--formats"], "--formats", "export --help"),
    "unknown command": (["frobnicate"], "frobnicate", "'keras-edge --help'"),
    "unknown root option": (["--no-such-flag"], "--no-such-flag", "'keras-edge --help'"),
    "extra argument": (["validate", "a", "b"], "unexpected extra argument", "validate --help"),
}


@pytest.mark.parametrize("case", list(USAGE_ERRORS))
def test_usage_errors_are_one_line(cli, case) -> None:
    """Flag/usage mistakes get the same one-line policy as user errors, not typer's box."""
    args, *needles = USAGE_ERRORS[case]
    proc = cli(*args, timeout=120)
    one_error_line_alone(proc, *needles)
    assert not set("│╭╰─") & set(proc.stderr), proc.stderr
    assert proc.stderr.rstrip("\n").endswith("--help'"), proc.stderr
    record(
        f"usage error: {case}",
        args[0] if args[0] in COMMANDS else "keras-edge",
        "exit 2 (one-line error)",
    )


def test_usage_error_with_debug_keeps_click_usage(cli) -> None:
    proc = cli("--debug", "export", timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "Usage:" in proc.stderr and "Missing argument" in proc.stderr


def test_help_and_bare_command_still_show_help(cli) -> None:
    for args in (["--help"], ["export", "--help"], ["-h"]):
        proc = cli(*args, timeout=120)
        assert proc.returncode == 0 and "Usage" in proc.stdout, (args, proc.stderr)
        assert not proc.stderr.strip()
    bare = cli(timeout=120)
    assert "Usage" in bare.stdout and "export" in bare.stdout
    assert "error:" not in bare.stderr


def one_error_line_alone(proc: subprocess.CompletedProcess, *needles: str) -> None:
    one_error_line(proc, *needles, alone=True)

"""Training on your own data (issue #21): BatchNorm momentum for the run, the collapse and
input-size warnings, and the one-line start `keras-edge train --data KIND:PATH`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from _badinput import error_line, invoke, one_error_line

from toolkit.builders import BuildContext, build_model
from toolkit.builders.base import scratch_bn_momentum
from toolkit.train.health import bn_momenta, collapse_callback, input_size_warning


def _image_folder(root: Path, counts: dict[str, int], size: int = 12) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls, count in counts.items():
        (root / cls).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 255, size=(size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i}.png")
    return root


def _ctx(shape: tuple[int, ...], steps: int | None = None) -> BuildContext:
    return BuildContext(input_shape=shape, task="classification", num_outputs=10, total_steps=steps)


# --- BatchNorm momentum -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "momentum"),
    [(None, 0.9), (100, 0.9), (1250, 0.9), (4999, 0.9), (5000, 0.99), (50_000, 0.999)],
)
def test_scratch_momentum_fits_the_run(steps, momentum) -> None:
    assert scratch_bn_momentum(steps) == momentum


def test_mobilenet_from_scratch_gets_the_run_momentum_pretrained_keeps_its_own(tmp_path) -> None:
    import keras

    model = build_model("mobilenet_v2", _ctx((32, 32, 3), 1250), {"alpha": 0.35})
    assert bn_momenta(model) == [0.9]  # the run: 125 steps x 10 epochs
    # A stride-32 backbone leaves 1x1 of a 32x32 image: warned, with a size that fits.
    message = input_size_warning(model, "mobilenet_v2")
    assert message and "1x1 feature map" in message and "--image-size 64" in message
    assert "resnet8" in message
    explicit = build_model("mobilenet_v1", _ctx((32, 32, 3), 1250), {"bn_momentum": 0.97})
    assert bn_momenta(explicit) == [0.97]
    long_run = build_model("mobilenet_v3_small", _ctx((32, 32, 3), 60_000), {})
    assert bn_momenta(long_run) == [0.999]

    backbone = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None
    )
    backbone.save_weights(tmp_path / "backbone.weights.h5")
    pretrained = build_model(
        "mobilenet_v2", _ctx((32, 32, 3), 1250), {"weights": str(tmp_path / "backbone.weights.h5")}
    )
    assert bn_momenta(pretrained) == [0.999]  # keras.applications' own, for pretrained weights


def test_input_size_check_is_quiet_when_a_map_is_left() -> None:
    assert input_size_warning(build_model("resnet8", _ctx((32, 32, 3)), {}), "resnet8") is None
    tiny = build_model("cnn", _ctx((8, 8, 1)), {"filters": [8, 16]})
    assert input_size_warning(tiny, "cnn") is None  # 8x8 -> 2x2


# --- The collapse detector, on made-up epoch logs -----------------------------------------


def _feed(watch, rows: list[dict[str, float]]) -> None:
    watch.on_train_begin()
    for epoch, logs in enumerate(rows):
        watch.on_epoch_end(epoch, logs)


def test_collapse_fires_once_names_cause_and_fix_and_notes_recovery() -> None:
    said: list[str] = []
    watch = collapse_callback("classification", 0.1, total_steps=1250, bn_momentum=[0.999],
                              log=said.append)  # fmt: skip
    rows = [{"accuracy": a, "val_accuracy": 0.1} for a in (0.15, 0.25, 0.3, 0.36, 0.4)]
    _feed(watch, [*rows, {"accuracy": 0.45, "val_accuracy": 0.3}])
    assert len(said) == 1
    assert "BatchNorm" in said[0] and "bn_momentum" in said[0] and "0.999" in said[0]
    assert watch.finding["epochs"] == [1, 3] and watch.finding["recovered_epoch"] == 6


@pytest.mark.parametrize(
    "rows",
    [
        [{"accuracy": 0.11, "val_accuracy": 0.1}] * 5,  # nothing learned anywhere: no claim
        [{"accuracy": a, "val_accuracy": v} for a, v in ((0.3, 0.1), (0.4, 0.2), (0.5, 0.1))],
        [{"accuracy": a, "val_accuracy": a - 0.05} for a in (0.3, 0.4, 0.5, 0.6)],  # healthy
    ],
)
def test_collapse_stays_quiet(rows) -> None:
    said: list[str] = []
    _feed(collapse_callback("classification", 0.1, total_steps=99, bn_momentum=[0.9],
                            log=said.append), rows)  # fmt: skip
    assert said == []


def test_regression_collapse_is_val_r2_at_or_below_zero() -> None:
    said: list[str] = []
    watch = collapse_callback("regression", None, total_steps=50, bn_momentum=[], log=said.append)
    _feed(watch, [{"r2": r, "val_r2": -0.05} for r in (0.1, 0.3, 0.5)])
    assert len(said) == 1 and "R²" in said[0] and "no BatchNorm" in said[0]
    quiet: list[str] = []
    healthy = collapse_callback("regression", None, total_steps=50, bn_momentum=[],
                                log=quiet.append)  # fmt: skip
    _feed(healthy, [{"r2": r, "val_r2": r - 0.1} for r in (0.2, 0.3, 0.5)])
    assert quiet == []


# --- The collapse detector in real runs -------------------------------------------------


def _tiny_valued_digits(path: Path) -> Path:
    """Digits scaled to 0..0.03: batch variance far below BatchNorm's initial moving variance
    of 1, so with momentum 0.999 over ~50 steps inference mode sees near-zero activations and
    predicts one class while training mode learns: a collapse forced in seconds."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    np.savez(path, x=(digits.images * 0.002).astype("float32"), y=digits.target)
    return path


def _collapse_recipe(tmp_path: Path, momentum: float) -> Path:
    data = {"name": f"npz:{_tiny_valued_digits(tmp_path / 'd.npz')}", "max_samples": 800,
            "val_fraction": 0.25}  # fmt: skip
    args = {"filters": [8, 16], "dense": 16, "bn_momentum": momentum}
    train = {"epochs": 4, "batch_size": 32, "tensorboard": False,
             "optimizer": {"learning_rate": 0.003}}  # fmt: skip
    recipe = {"name": "collapse", "dataset": data, "preprocess": {"normalize": "none"},
              "model": {"builder": "cnn", "args": args}, "train": train}  # fmt: skip
    path = tmp_path / f"collapse-{momentum}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_forced_collapse_warns_during_training_and_is_recorded(tmp_path) -> None:
    result = invoke("train", _collapse_recipe(tmp_path, 0.999), "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output[-2000:]
    lines = [ln for ln in result.output.splitlines() if "inference-mode collapse" in ln]
    # once while training, once under the summary table
    assert len(lines) == 2 and all(ln.startswith("warning: ") for ln in lines), result.output
    assert "BatchNorm moving statistics" in lines[0] and "bn_momentum" in lines[0]
    assert "val at baseline" in result.output  # the summary table's row
    metrics = json.loads((tmp_path / "runs" / "collapse" / "metrics.json").read_text())
    (finding,) = [w for w in metrics["warnings"] if w["kind"] == "collapse"]
    assert finding["val"] == pytest.approx(metrics["baseline"], abs=0.03)
    assert metrics["bn_momentum"] == [0.999]


@pytest.mark.slow
def test_no_collapse_warning_on_digits_cnn(tmp_path) -> None:
    result = invoke("train", "digits-cnn", "--epochs", "5", "--runs-dir", tmp_path)
    assert result.exit_code == 0, result.output[-2000:]
    assert "inference-mode collapse" not in result.output
    assert not [ln for ln in result.output.splitlines() if ln.startswith("warning: ")]
    metrics = json.loads((tmp_path / "digits-cnn" / "metrics.json").read_text())
    assert metrics["warnings"] == [] and metrics["test"]["accuracy"] > 0.9


def test_regression_logs_r2_and_stays_quiet(tmp_path) -> None:
    from toolkit.core.recipe import parse_recipe
    from toolkit.train.stage import train

    recipe = {"name": "reg", "dataset": {"name": "diabetes"}, "model": {"builder": "mlp"},
              "train": {"epochs": 4, "tensorboard": False}}  # fmt: skip
    result = train(parse_recipe(recipe), tmp_path)
    assert {"r2", "val_r2"} <= set(result.history)
    assert result.metrics["warnings"] == []


# --- The one-line start -------------------------------------------------------------------


def test_auto_recipe_reads_size_channels_and_balance_from_the_data(tmp_path) -> None:
    from PIL import Image

    from toolkit.train.autorecipe import auto_recipe

    small = auto_recipe(f"image-folder:{_image_folder(tmp_path / 'small', {'a': 10, 'b': 10})}")
    assert small.recipe.model.builder == "resnet8" and small.recipe.name == "small-resnet8"
    assert small.recipe.dataset.image_size == (16, 16)  # 12x12 upsampled
    assert small.recipe.preprocess.augment.flip == "horizontal"
    assert small.recipe.train.epochs == 50 and small.recipe.train.batch_size == 32
    assert small.dataset is None  # loaded at 12x12, trained at 16x16: loaded again

    big = tmp_path / "big"
    for cls, count in (("a", 30), ("b", 10)):  # 3:1 -> class weights
        (big / cls).mkdir(parents=True)
        for i in range(count):
            Image.new("L", (128, 128), color=i).save(big / cls / f"{i}.png")
    auto = auto_recipe(f"image-folder:{big}", epochs=3)
    assert auto.recipe.model.builder == "mobilenet_v2"
    assert auto.recipe.dataset.image_size == (96, 96)
    augment = auto.recipe.preprocess.augment
    assert augment.flip is None and augment.rotation > 0  # grayscale: no mirroring
    assert auto.recipe.train.class_weight == "balanced" and "imbalanced" in auto.notes[-1]
    assert auto.recipe.train.epochs == 3


@pytest.mark.slow
def test_one_line_start_on_an_image_folder_prints_saves_and_reproduces(tmp_path) -> None:
    folder = _image_folder(tmp_path / "pics", {"cat": 12, "dog": 12, "owl": 12})
    runs = tmp_path / "runs"
    result = invoke("train", "--data", f"image-folder:{folder}", "--epochs", "1",
                    "--runs-dir", runs)  # fmt: skip
    assert result.exit_code == 0, result.output[-2000:]
    assert "recipe (saved as" in result.output and "builder: resnet8" in result.output
    saved = runs / "pics-resnet8" / "recipe.yaml"
    recipe = yaml.safe_load(saved.read_text())
    assert recipe["dataset"]["image_size"] == [16, 16]  # 12x12 images upsampled
    assert recipe["preprocess"]["augment"]["flip"] == "horizontal"  # RGB photos
    assert recipe["train"]["schedule"]["name"] == "cosine"
    assert recipe["train"]["schedule"]["warmup_epochs"] == 1
    assert recipe["train"]["early_stopping"]["monitor"] == "val_accuracy"
    assert recipe["train"]["checkpoint"] == "best" and recipe["train"]["class_weight"] is None

    again = invoke("train", saved, "--runs-dir", tmp_path / "again")
    assert again.exit_code == 0, again.output[-2000:]
    first = json.loads((runs / "pics-resnet8" / "metrics.json").read_text())
    second = json.loads((tmp_path / "again" / "pics-resnet8" / "metrics.json").read_text())
    assert second["test"] == first["test"]  # the saved recipe reproduces the run


def test_one_line_start_on_an_imbalanced_csv_weights_the_classes(tmp_path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4))
    y = (np.arange(200) % 5 == 0).astype(int)  # 40 of one class, 160 of the other
    body = [",".join(f"{v:.4f}" for v in r) + f",{t}" for r, t in zip(x, y, strict=True)]
    rows = ["a,b,c,d,label", *body]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    result = invoke("train", "--data", f"csv:{tmp_path / 't.csv'}", "--epochs", "2",
                    "--runs-dir", tmp_path / "runs")  # fmt: skip
    assert result.exit_code == 0, result.output[-2000:]
    assert "classes are imbalanced" in result.output and "class weights (balanced)" in result.output
    metrics = json.loads((tmp_path / "runs" / "t-mlp" / "metrics.json").read_text())
    assert metrics["class_weight"]["1"] > metrics["class_weight"]["0"]


def test_one_line_start_on_npz_regression(tmp_path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 3)).astype("float32")
    np.savez(tmp_path / "r.npz", x=x, y=(x @ [1.0, -2.0, 0.5]).astype("float32"))
    result = invoke("train", "--data", f"npz:{tmp_path / 'r.npz'}", "--epochs", "2",
                    "--runs-dir", tmp_path / "runs")  # fmt: skip
    assert result.exit_code == 0, result.output[-2000:]
    recipe = yaml.safe_load((tmp_path / "runs" / "r-mlp" / "recipe.yaml").read_text())
    assert recipe["model"]["builder"] == "mlp"
    assert recipe["train"]["early_stopping"]["monitor"] == "val_loss"


def test_recipe_with_data_trains_the_recipe_on_that_data(tmp_path) -> None:
    folder = _image_folder(tmp_path / "pics", {"a": 10, "b": 10}, size=8)
    recipe = {"name": "r", "dataset": {"name": "digits"},
              "model": {"builder": "cnn", "args": {"filters": [4]}},
              "train": {"epochs": 1, "tensorboard": False}}  # fmt: skip
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    result = invoke("train", tmp_path / "r.yaml", "--data", f"image-folder:{folder}",
                    "--runs-dir", tmp_path / "runs")  # fmt: skip
    assert result.exit_code == 0, result.output[-2000:]
    saved = yaml.safe_load((tmp_path / "runs" / "r" / "recipe.yaml").read_text())
    assert saved["dataset"]["name"] == f"image-folder:{folder}"
    assert saved["model"]["args"] == {"filters": [4]}  # --builder not given: args kept


# --- Bad input: one line, exit 2 ----------------------------------------------------------


def test_one_line_start_bad_inputs(tmp_path) -> None:
    one = _image_folder(tmp_path / "one", {"only": 5})
    pics = _image_folder(tmp_path / "pics", {"a": 10, "b": 10})
    cases = [
        (["--data", f"image-folder:{one}"], "1 class"),
        (["--data", f"image-folder:{pics}", "--builder", "lstm"], "lstm"),
        (["--data", f"image-folder:{pics}", "--builder", "mobilenet_v2"], "at least 32x32"),
        (["--data", f"image-folder:{pics}", "--builder", "resnet"], "did you mean"),
        (["--data", f"image-folder:{pics}", "--image-size", "0"], "--image-size"),
        ([], "--data"),
    ]
    for args, needle in cases:
        line = error_line(invoke("train", *args, "--runs-dir", tmp_path / "runs"))
        assert needle in line, (args, line)
    assert not (tmp_path / "runs").exists()


def test_bad_image_size_is_one_stderr_line_in_a_real_process(cli, tmp_path) -> None:
    pics = _image_folder(tmp_path / "pics", {"a": 5, "b": 5})
    proc = cli("train", "--data", f"image-folder:{pics}", "--image-size", "0")
    one_error_line(proc, "--image-size", alone=True)

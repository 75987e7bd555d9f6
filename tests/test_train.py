"""The train stage on tiny, fast settings: real training, real files on disk."""

from __future__ import annotations

import json

import numpy as np
import pytest

from toolkit.core.errors import UserError
from toolkit.core.recipe import parse_recipe
from toolkit.train.stage import train

TINY_DIGITS = {
    "name": "tiny-digits",
    "dataset": {"name": "digits", "image_size": [8, 8], "max_samples": 600},
    "model": {"builder": "cnn", "args": {"filters": [8, 16], "dense": 16}},
    "train": {"epochs": 3, "batch_size": 32, "tensorboard": False},
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    return train(parse_recipe(TINY_DIGITS), runs)


def test_run_directory_has_every_output(tiny_run) -> None:
    run = tiny_run.run_dir
    for name in ("model.keras", "input_spec.json", "recipe.yaml", "history.csv", "metrics.json"):
        assert (run / name).is_file(), name
    assert {p.name for p in (run / "plots").iterdir()} >= {
        "loss.png",
        "accuracy.png",
        "confusion_matrix.png",
    }
    assert [p.name for p in run.parent.iterdir()] == [run.name]  # no partial dirs left


def test_metrics_are_inference_mode_and_complete(tiny_run) -> None:
    import keras

    from toolkit.core.recipe import parse_recipe
    from toolkit.data import load_dataset

    metrics = json.loads((tiny_run.run_dir / "metrics.json").read_text())
    test = metrics["test"]
    for key in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "roc_auc"):
        assert 0.0 <= test[key] <= 1.0
    assert np.asarray(test["confusion_matrix"]).sum() == test["samples"]
    # Recompute from the saved model in inference mode: the same accuracy.
    model = keras.saving.load_model(tiny_run.run_dir / "model.keras")
    ds = load_dataset(parse_recipe(TINY_DIGITS).dataset.spec())
    pred = model.predict(ds.test.inputs(), verbose=0).argmax(axis=1)
    assert float(np.mean(pred == ds.test.y)) == pytest.approx(test["accuracy"])
    assert test["accuracy"] > metrics["baseline"] + 0.3  # learned something in 3 epochs


def test_input_spec_describes_raw_inputs(tiny_run) -> None:
    spec = json.loads((tiny_run.run_dir / "input_spec.json").read_text())
    assert spec["shape"] == [8, 8, 1]
    assert spec["value_range"] == [0.0, 16.0]
    assert spec["normalize"] == "standardize" and len(spec["mean"]) == 1
    assert spec["labels"] == [str(i) for i in range(10)]
    assert spec["layout"] == "NHWC"


def test_model_takes_raw_values(tiny_run) -> None:
    """Normalization is inside the model: feeding raw 0..16 pixels gives confident outputs."""
    import keras

    model = keras.saving.load_model(tiny_run.run_dir / "model.keras")
    assert model.layers[1].name == "normalize"


def test_existing_run_needs_force(tiny_run) -> None:
    with pytest.raises(UserError, match="--force"):
        train(parse_recipe(TINY_DIGITS), tiny_run.run_dir.parent)


def test_same_seed_same_metrics(tmp_path, tiny_run) -> None:
    again = train(parse_recipe(TINY_DIGITS), tmp_path)
    assert again.metrics["test"]["accuracy"] == tiny_run.metrics["test"]["accuracy"]
    assert again.history["loss"] == pytest.approx(tiny_run.history["loss"], rel=1e-5)


def test_regression_run(tmp_path) -> None:
    recipe = parse_recipe(
        {
            "name": "diab",
            "dataset": {"name": "diabetes"},
            "model": {"builder": "mlp", "args": {"hidden": [16]}},
            "train": {"epochs": 30, "tensorboard": False, "optimizer": {"learning_rate": 0.01}},
        }
    )
    result = train(recipe, tmp_path)
    test = result.metrics["test"]
    assert set(test) >= {"mae", "mse", "rmse", "r2"}
    assert test["mae"] < result.metrics["baseline"]  # beats predicting the median
    assert not (result.run_dir / "plots" / "confusion_matrix.png").exists()


def test_categorical_loss_sgd_step_schedule_and_augment(tmp_path) -> None:
    data = {
        **TINY_DIGITS,
        "preprocess": {"normalize": "rescale", "augment": {"rotation": 0.05, "contrast": 0.1}},
        "train": {
            "epochs": 4,
            "tensorboard": False,
            "loss": "categorical_crossentropy",
            "label_smoothing": 0.1,
            "optimizer": {"name": "sgd", "momentum": 0.9, "learning_rate": 0.05},
            "schedule": {"name": "step", "step_epochs": 1},
            "early_stopping": {"monitor": "val_accuracy", "patience": 4},
        },
    }
    result = train(parse_recipe(data), tmp_path)
    assert result.metrics["loss"] == "categorical_crossentropy"
    assert result.metrics["test"]["accuracy"] > result.metrics["baseline"]


def test_binary_crossentropy_on_two_classes(tmp_path) -> None:
    recipe = parse_recipe(
        {
            "name": "bc",
            "dataset": {"name": "breast-cancer"},
            "model": {"builder": "mlp", "args": {"hidden": [8]}},
            "train": {"epochs": 5, "tensorboard": False, "loss": "binary_crossentropy"},
        }
    )
    result = train(recipe, tmp_path)
    assert result.metrics["test"]["roc_auc"] > 0.9


def test_reduce_lr_with_a_schedule_is_refused(tmp_path) -> None:
    data = {
        **TINY_DIGITS,
        "train": {"schedule": {"name": "cosine"}, "reduce_lr": {"patience": 2}},
    }
    with pytest.raises(UserError, match="reduce_lr needs a constant"):
        train(parse_recipe(data), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_wrong_loss_for_task(tmp_path) -> None:
    data = {**TINY_DIGITS, "train": {"loss": "mse"}}
    with pytest.raises(UserError, match="for regression"):
        train(parse_recipe(data), tmp_path)


def test_schedules_follow_the_recipe() -> None:
    from toolkit.core.recipe import ScheduleConfig
    from toolkit.train.optim import make_schedule

    step = make_schedule(ScheduleConfig(name="step", step_epochs=2, decay_rate=0.5), 0.1, 10, 6)
    assert [float(step(s)) for s in (0, 19, 20, 40)] == pytest.approx([0.1, 0.1, 0.05, 0.025])
    cos = make_schedule(ScheduleConfig(name="cosine", warmup_epochs=1), 0.1, 10, 5)
    assert float(cos(0)) == pytest.approx(0.01)  # warm-up starts at a tenth
    assert float(cos(10)) == pytest.approx(0.1, rel=1e-3)  # peak after warm-up
    assert float(cos(49)) < 0.01  # decays towards zero
    assert make_schedule(ScheduleConfig(), 0.1, 10, 5) == 0.1
    with pytest.raises(UserError, match="warmup"):
        make_schedule(ScheduleConfig(warmup_epochs=1), 0.1, 10, 5)

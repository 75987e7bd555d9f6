"""`keras-edge tune`: the search space is checked, trials run and prune, outputs are written."""

from __future__ import annotations

import pytest
import yaml

from toolkit.core.errors import UserError
from toolkit.core.recipe import ParamRange, load_recipe, parse_recipe

BASE = {
    "name": "tiny-tune",
    "dataset": {"name": "digits", "image_size": [8, 8], "max_samples": 400},
    "preprocess": {"normalize": "standardize"},
    "model": {"builder": "mlp", "args": {"hidden": [16]}},
    "train": {"epochs": 2, "batch_size": 32, "tensorboard": False,
              "optimizer": {"name": "adam", "learning_rate": 0.001}},
}  # fmt: skip


def _recipe(search=None):
    return parse_recipe({**BASE, **({"search": search} if search is not None else {})})


@pytest.mark.parametrize(
    ("search", "message"),
    [
        (None, "declares no search space"),
        ({"params": {}}, "declares no search space"),
        ({"params": {"train.batch_size": {"choices": []}}}, "choices is empty"),
        ({"params": {"train.optimizer.learning_rate": {"low": 0.1, "high": 0.01}}}, "low < high"),
        (
            {"params": {"train.optimizer.learning_rate": {"low": 0, "high": 1, "log": True}}},
            "log ranges need low > 0",
        ),
    ],
)
def test_bad_search_spaces_are_user_errors(search, message) -> None:
    from toolkit.pipeline.tuning import search_space

    with pytest.raises(UserError, match=message):
        search_space(_recipe(search))


def test_grid_values() -> None:
    from toolkit.pipeline.tuning import grid_values

    assert grid_values(ParamRange(low=16, high=64, step=16), 3) == [16, 32, 48, 64]
    assert grid_values(ParamRange(low=0.001, high=0.1, log=True), 3) == [0.001, 0.01, 0.1]
    assert grid_values(ParamRange(choices=[[8, 16], "a"]), 3) == ["[8, 16]", "a"]


def test_tune_runs_trials_and_writes_the_best_recipe(tmp_path) -> None:
    from toolkit.pipeline.tuning import tune

    recipe = _recipe({
        "trial_epochs": 1,
        "max_int8_kb": 1000,
        "params": {
            "train.optimizer.learning_rate": {"low": 0.0005, "high": 0.01, "log": True},
            "model.args.hidden": {"choices": [[16], [32, 16]]},
        },
    })  # fmt: skip
    result = tune(recipe, trials=2, sampler="tpe", out_dir=tmp_path, seed=0)
    assert [t["state"] for t in result.trials] == ["COMPLETE", "COMPLETE"]
    assert result.default is not None and result.default["values"] == {
        "train.optimizer.learning_rate": 0.001, "model.args.hidden": [16]}  # fmt: skip
    assert result.metric == "accuracy" and result.best is not None
    assert all(t["int8_kb"] is not None and t["feasible"] for t in result.trials)
    best = load_recipe(str(result.best_recipe_path))
    assert best.name == "tiny-tune-tuned" and best.search is None
    assert best.train.epochs == 2  # the full budget, not the trial budget
    assert (tmp_path / "trials.csv").read_text().count("\n") == 3


def test_cli_empty_search_space_exits_2(cli, tmp_path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(BASE))
    proc = cli("tune", str(path), "--trials", "2")
    assert proc.returncode == 2
    assert "declares no search space" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_bad_sampler_exits_2(cli) -> None:
    proc = cli("tune", "digits-tune", "--sampler", "annealing")
    assert proc.returncode == 2 and "--sampler must be one of" in proc.stderr

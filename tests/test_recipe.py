"""Recipe parsing: built-ins load, typos name the bad key, overrides re-validate."""

from __future__ import annotations

import pytest
import yaml

from toolkit.core.errors import UserError
from toolkit.core.recipe import load_recipe, parse_recipe
from toolkit.core.resources import builtin_names

MINIMAL = {"name": "r", "dataset": {"name": "digits"}, "model": {"builder": "cnn"}}


@pytest.mark.parametrize("name", builtin_names("models"))
def test_every_builtin_recipe_parses(name: str) -> None:
    recipe = load_recipe(name)
    assert recipe.name == name


def test_builtin_recipes_include_the_four_the_issue_names() -> None:
    assert {"digits-cnn", "mnist-cnn", "tabular-mlp", "mnist-full-cnn"} <= set(
        builtin_names("models")
    )


def test_unknown_top_level_key_is_named() -> None:
    with pytest.raises(UserError, match=r"traning: extra inputs are not permitted"):
        parse_recipe({**MINIMAL, "traning": {}})


def test_nested_wrong_type_is_named_with_the_value() -> None:
    data = {**MINIMAL, "train": {"epochs": "many"}}
    with pytest.raises(UserError, match=r"train\.epochs: .*integer.*got 'many'"):
        parse_recipe(data)


def test_missing_required_section() -> None:
    with pytest.raises(UserError, match=r"model: field required"):
        parse_recipe({"name": "r", "dataset": {"name": "digits"}})


def test_not_a_mapping() -> None:
    with pytest.raises(UserError, match="expected a mapping"):
        parse_recipe(["a", "list"])


def test_unsafe_run_name_rejected() -> None:
    with pytest.raises(UserError, match="name"):
        parse_recipe({**MINIMAL, "name": "../escape"})


def test_overrides_apply_and_revalidate() -> None:
    recipe = parse_recipe(MINIMAL).with_overrides({"train.epochs": 3, "train.seed": None})
    assert recipe.train.epochs == 3
    assert recipe.train.seed == 0  # None means "not given"
    with pytest.raises(UserError, match=r"train\.epochs"):
        recipe.with_overrides({"train.epochs": 0})


def test_invalid_yaml_file(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_recipe(str(bad))


def test_missing_file_and_unknown_name() -> None:
    with pytest.raises(UserError, match="recipe file not found"):
        load_recipe("no/such/recipe.yaml")
    with pytest.raises(UserError, match="did you mean 'digits-cnn'"):
        load_recipe("digit-cnn")


def test_round_trip_yaml(tmp_path) -> None:
    recipe = load_recipe("digits-cnn")
    path = tmp_path / "copy.yaml"
    path.write_text(recipe.to_yaml())
    assert load_recipe(str(path)) == recipe
    assert yaml.safe_load(recipe.to_yaml())["model"]["builder"] == "cnn"


def test_optimize_section_is_the_optimize_config_and_names_bad_keys() -> None:
    from toolkit.core.optimize_config import OptimizeConfig

    section = {"prune": {"sparsity": 0.5}, "cluster": {"clusters": 16}, "epochs": 2}
    recipe = parse_recipe({**MINIMAL, "optimize": section})
    assert isinstance(recipe.optimize, OptimizeConfig)
    assert recipe.optimize.steps() == ["prune", "cluster"]
    assert parse_recipe(MINIMAL).optimize is None
    with pytest.raises(UserError, match=r"optimize\.prune\.sparsity: .*less than 1"):
        parse_recipe({**MINIMAL, "optimize": {"prune": {"sparsity": 1.5}}})
    with pytest.raises(UserError, match=r"optimize\.pruning: extra inputs"):
        parse_recipe({**MINIMAL, "optimize": {"pruning": {}}})
    with pytest.raises(UserError, match=r"optimize: nothing to do"):
        parse_recipe({**MINIMAL, "optimize": {"epochs": 2}})


def test_optimize_section_can_be_added_with_set_and_round_trips(tmp_path) -> None:
    recipe = parse_recipe(MINIMAL).with_overrides({"optimize.prune.sparsity": 0.5})
    assert recipe.optimize is not None and recipe.optimize.steps() == ["prune"]
    recipe = recipe.with_overrides({"optimize.qat.enabled": True})
    assert recipe.optimize.steps() == ["prune", "qat"]
    path = tmp_path / "r.yaml"
    path.write_text(recipe.to_yaml())
    assert load_recipe(str(path)) == recipe

"""Recipes: every shipped recipe loads into a valid RunConfig; bad keys and YAML fail with one clear line."""

from pathlib import Path

import pytest

from distill.core.errors import ConfigError
from distill.pipeline.config import RunConfig
from distill.pipeline.recipe import dump_recipe, load_recipe, parse_overrides, recipe_to_fields

RECIPES = sorted((Path(__file__).resolve().parents[1] / "experiments" / "recipes").glob("*.yaml"))


def test_recipes_exist():
    names = {p.stem for p in RECIPES}
    assert {"sst2-tiny", "sst2-mini", "sst2-small", "mrpc-tiny", "mrpc-mini", "mrpc-small",
            "conll2003-tiny", "conll2003-mini", "conll2003-small"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_loads(path):
    values = load_recipe(path)
    cfg = RunConfig(**values)
    assert cfg.teacher.name and cfg.data.task
    assert Path(cfg.data.path).is_absolute() and Path(cfg.data.path).name in ("SST-2", "MRPC", "conll2003")


def test_overrides_and_round_trip():
    values = {**recipe_to_fields({"teacher": {"name": "x"}, "train": {"lr": 1e-3}}),
              **parse_overrides(["train.lr=5e-5", "prune.enabled=false", "distill.hidden_weight=0"])}
    cfg = RunConfig(**values)
    assert (cfg.train.lr, cfg.prune.enabled, cfg.distill.hidden_weight) == (5e-5, False, 0)
    assert RunConfig(**recipe_to_fields(dump_recipe(cfg))) == cfg


@pytest.mark.parametrize("recipe,match", [
    ({"trian": {"lr": 1}}, "unknown recipe section 'trian'.*did you mean 'train'"),
    ({"train": {"learning_rate": 1}}, "unknown recipe key 'train.learning_rate'"),
    ({"train": 3}, "is not a mapping"),
])
def test_bad_recipes(recipe, match):
    with pytest.raises(ConfigError, match=match):
        recipe_to_fields(recipe)


def test_malformed_yaml_and_bad_set(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: [1e-4\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_recipe(bad)
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_overrides(["lr=3"])


def test_breadth_keys_round_trip(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    recipe = tmp_path / "multi.yaml"
    recipe.write_text("teacher: {names: [a, b], weights: [0.7, 0.3]}\nstudent: {init: teacher-pruned, "
                      "layer_selection: last-k}\ndata: {augment: 2}\n")
    cfg = RunConfig(**load_recipe(recipe))
    teacher = cfg.teacher
    assert teacher.all_names == [str(tmp_path / "a"), str(tmp_path / "b")] and teacher.name == str(tmp_path / "a")
    assert (teacher.weights, cfg.student.init, cfg.student.layer_selection, cfg.data.augment) == (
        [0.7, 0.3], "teacher-pruned", "last-k", 2)
    assert RunConfig(**recipe_to_fields(dump_recipe(cfg))) == cfg
    assert RunConfig(teacher="x", teachers=["x"]).teacher.names is None  # one teacher stays the single-teacher path
    with pytest.raises(ConfigError, match="not the first of the teachers"):
        RunConfig(teacher="c", teachers=["a", "b"])

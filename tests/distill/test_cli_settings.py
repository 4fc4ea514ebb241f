"""One settings schema: RunConfig's section dataclasses generate the flags, the recipe keys and ``--help``.

Every option string a command had before the flags were generated (``cli_flags.json``) still parses; a setting's
flag, recipe key and ``--set`` path all come from its one field; RunConfig takes flat names or sections alike.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from distill.cli import build_parser
from distill.core.errors import ConfigError
from distill.pipeline.config import SETTINGS, PruneSettings, RunConfig, TeacherSettings, TrainSettings
from distill.pipeline.recipe import dump_recipe, parse_overrides, recipe_to_fields

OLD_FLAGS = json.loads(Path(__file__).with_name("cli_flags.json").read_text())


def _options(command: str) -> dict[str, str]:
    """option string -> dest of ``distill COMMAND``."""
    sub = build_parser()._subparsers._group_actions[0].choices[command]
    return {o: a.dest for a in sub._actions for o in a.option_strings}


@pytest.mark.parametrize("command", sorted(OLD_FLAGS))
def test_every_earlier_flag_still_exists(command):
    assert set(OLD_FLAGS[command]) <= set(_options(command))


def test_run_has_a_flag_for_every_setting_and_nothing_else_of_the_schema():
    options = _options("run")
    for s in SETTINGS.values():
        if s.on_cli:
            assert options[s.flag] == s.dest, s
        else:
            assert s.dest not in options.values(), s
    assert {s.dest for s in SETTINGS.values() if s.meta.get("resume")} == {"checkpoint_every", "keep_checkpoints",
                                                                           "skip_nonfinite"}


def test_untyped_flags_stay_out_of_the_namespace():
    args = build_parser().parse_args(["run", "--epochs", "3", "--no-prune"])
    assert {k for k in vars(args) if k in SETTINGS} == {"epochs", "prune"} and args.prune is False


def test_every_setting_has_a_recipe_key_and_a_set_path():
    recipe = dump_recipe(RunConfig(teacher="t"))
    assert sum(len(keys) for keys in recipe.values()) == len(SETTINGS)
    for s in SETTINGS.values():
        text = yaml.safe_dump(s.default, default_flow_style=True).strip().removesuffix("...").strip()
        assert parse_overrides([f"{s.section}.{s.key}={text}"]) == {s.dest: s.default}, s
    with pytest.raises(ConfigError, match="unknown recipe key 'prune.head'.*did you mean 'heads'"):
        recipe_to_fields({"prune": {"head": 0.5}})


def test_flat_names_and_sections_build_the_same_config():
    flat = RunConfig(teacher="t", prune_heads=0.3, lr=1e-3, max_int8_drop=0.01, temperature=3.0)
    sections = RunConfig(teacher=TeacherSettings(name="t"), prune=PruneSettings(heads=0.3),
                         train=TrainSettings(lr=1e-3), quantize={"max_drop": 0.01}, distill={"temperature": 3.0})
    assert flat == sections
    assert (flat.teacher.name, flat.prune.heads, flat.train.lr, flat.quantize.max_drop) == ("t", 0.3, 1e-3, 0.01)
    assert flat.flat()["prune_heads"] == 0.3 and len(flat.flat()) == len(SETTINGS)
    assert RunConfig(teacher=TeacherSettings(name="t"), teacher_lr=1e-4).teacher == TeacherSettings("t", lr=1e-4)
    assert RunConfig(prune=False, data="d").prune.enabled is False and RunConfig(data="d").data.path == "d"
    with pytest.raises(TypeError, match="unknown setting 'learning_rate'"):
        RunConfig(learning_rate=1e-3)


def test_sections_check_themselves():
    with pytest.raises(ConfigError, match="--prune-steps 0 must be ≥ 1"):
        PruneSettings(steps=0)
    PruneSettings(enabled=False, steps=0)  # pruning off: its plan is not checked
    with pytest.raises(ConfigError, match="--keep-checkpoints 0 must be ≥ 1"):
        RunConfig(keep_checkpoints=0)
    assert TrainSettings(lr=None).fit_config(epochs=2.0).lr == 1e-4


def test_run_help_imports_no_torch():
    """The loss flags come from DistillConfig's fields, which live in the torch-free distill.objective.config."""
    code = ("import contextlib, io, sys\nfrom distill.cli import main\n"
            "for argv in (['--help'], ['run', '--help']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n        main(argv)\n"
            "print('torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"

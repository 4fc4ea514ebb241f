"""From the parsed command line to a ``RunConfig``: defaults < the command's defaults < recipe (``--config``) <
typed flags < ``--set`` < what the command fixes; or, for ``--resume``, the run's saved ``config.yaml``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from distill.cli.flags import typed
from distill.core.errors import ConfigError
from distill.pipeline.config import SETTINGS, RunConfig


def run_config(args: argparse.Namespace, need_teacher: bool = True, **fixed: Any) -> RunConfig:
    """The settings of this command line, checked by RunConfig (``need_teacher``: refuse a missing teacher)."""
    from distill.pipeline.recipe import load_recipe, parse_overrides

    values = dict(getattr(args, "command_defaults", {}))
    if getattr(args, "config", None):
        values.update(load_recipe(args.config))
    values.update(typed(args))
    values.update(parse_overrides(getattr(args, "set", [])))
    values.update(fixed)
    teacher_list(values, args)
    if need_teacher and not values.get("teacher"):
        raise ConfigError("no teacher given", "pass --teacher NAME_OR_DIR or set teacher.name in the recipe")
    try:
        return RunConfig(**values)
    except TypeError as exc:
        raise ConfigError(f"bad setting ({exc})", "check the recipe and flags") from None


def teacher_list(values: dict, args: argparse.Namespace) -> None:
    """``--teacher A --teacher B`` or ``--teachers A,B`` -> teacher (the first) and teachers (all, when several)."""
    given, many = getattr(args, "teacher", None), getattr(args, "teachers", None)
    if isinstance(given, list) and many:
        raise ConfigError("both --teacher and --teachers are given", "give --teacher A --teacher B, or --teachers A,B")
    if isinstance(values.get("teacher"), list):
        names = values["teacher"]
        values["teacher"], values["teachers"] = names[0], (names if len(names) > 1 else None)
    elif many:
        values["teacher"] = many[0]


def resume_config(args: argparse.Namespace) -> RunConfig:
    """The settings saved in OUTPUT/config.yaml, with only the settings marked ``resume`` changeable."""
    import yaml

    from distill.pipeline.recipe import recipe_to_fields

    out = Path(args.resume)
    saved = out / "config.yaml"
    if not saved.is_file():
        raise ConfigError(f"'{out}' holds no config.yaml, so there is no run to resume",
                          "pass the --output-dir of an earlier `distill run`")
    now = typed(args)
    changed = sorted(SETTINGS[k].flag for k in now if not SETTINGS[k].meta.get("resume"))
    if changed or getattr(args, "config", None) or getattr(args, "set", None):
        flags = ", ".join(changed) or "--config/--set"
        raise ConfigError(f"--resume takes every setting from {saved}, so {flags} cannot change them",
                          "drop them, or start a new run in another --output-dir")
    try:
        values = recipe_to_fields(yaml.safe_load(saved.read_text()) or {})
    except yaml.YAMLError:
        raise ConfigError(f"{saved} is not valid YAML", "restore it, or start a new run") from None
    values.update({k: v for k, v in now.items() if SETTINGS[k].meta.get("resume")})
    values.update(output_dir=str(out), overwrite=False)
    try:
        return RunConfig(**values)
    except TypeError as exc:
        raise ConfigError(f"bad setting in {saved} ({exc})", "restore it, or start a new run") from None

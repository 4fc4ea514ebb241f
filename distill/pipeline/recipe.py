"""Recipes: YAML files holding only the changes from the defaults, in the sections of ``RunConfig``, plus
``--set section.key=value`` overrides. Sections and keys are RunConfig's sections and their field names.

Precedence: defaults < recipe < command-line flags < ``--set``. Paths in a recipe (settings marked ``path``) are
resolved relative to the recipe file, so a recipe works from any working directory.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml

from distill.core.errors import ConfigError
from distill.pipeline.config import SETTINGS, RunConfig
from distill.pipeline.schema import Setting

# section -> recipe key -> setting
SECTIONS: dict[str, dict[str, Setting]] = {}
for _s in SETTINGS.values():
    SECTIONS.setdefault(_s.section, {})[_s.key] = _s


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"did you mean '{close[0]}'? " if close else ""


def _setting(section: str, key: str) -> Setting:
    if section not in SECTIONS:
        raise ConfigError(f"unknown recipe section '{section}'",
                          f"{_suggest(section, SECTIONS)}sections are: {', '.join(SECTIONS)}")
    keys = SECTIONS[section]
    if key not in keys:
        raise ConfigError(f"unknown recipe key '{section}.{key}'",
                          f"{_suggest(key, keys)}keys of '{section}' are: {', '.join(keys)}")
    return keys[key]


def _number(value: Any) -> Any:
    """YAML 1.1 reads ``5e-5`` as a string; turn numeric strings into numbers."""
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                return float(value)
            except ValueError:
                return value
    return value


def _resolve_path(value: Any, base: Path) -> Any:
    """A relative path that exists next to the recipe is made absolute; names (aliases, Hub ids) are kept."""
    if isinstance(value, list):  # several paths (teacher.names)
        return [_resolve_path(v, base) for v in value]
    if not isinstance(value, str) or not value or Path(value).is_absolute():
        return value
    candidate = (base / value).resolve()
    return str(candidate) if candidate.exists() or value.startswith(".") else value


def recipe_to_fields(recipe: dict, base: Path | None = None) -> dict[str, Any]:
    """A sectioned recipe as flat setting values (``RunConfig(**values)``), checking every key."""
    if not isinstance(recipe, dict):
        raise ConfigError("the recipe is not a mapping of sections", "write it as `section:` then `key: value` lines")
    values: dict[str, Any] = {}
    for section, body in recipe.items():
        if not isinstance(body, dict):
            raise ConfigError(f"recipe section '{section}' is not a mapping", f"write `{section}:` then indented keys")
        for key, value in body.items():
            s = _setting(str(section), str(key))
            if base is not None and s.meta.get("path"):
                value = _resolve_path(value, base)
            values[s.dest] = _number(value)
    return values


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Read a recipe file into flat setting values; malformed YAML and unknown keys are ConfigErrors."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe '{path}' does not exist", "pass the path of a YAML recipe")
    try:
        recipe = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        raise ConfigError(f"recipe '{path}' is not valid YAML{line}", "fix the indentation or quoting") from None
    return recipe_to_fields(recipe, path.parent.resolve())


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["train.lr=5e-5", "prune.enabled=false"]`` -> flat setting values (values parsed as YAML scalars)."""
    values: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or "." not in key:
            raise ConfigError(f"--set '{item}' is not of the form section.key=value", "e.g. --set train.lr=5e-5")
        section, _, name = key.strip().partition(".")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        values[_setting(section, name).dest] = _number(value)
    return values


def dump_recipe(config: RunConfig) -> dict[str, dict[str, Any]]:
    """A RunConfig as a sectioned recipe (every setting), e.g. for ``OUTPUT/config.yaml``."""
    flat = config.flat()
    return {section: {key: flat[s.dest] for key, s in keys.items()} for section, keys in SECTIONS.items()}

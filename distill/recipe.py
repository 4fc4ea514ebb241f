"""Recipes: YAML files holding only the changes from the defaults, in sections, plus ``--set a.b=value`` overrides.

Precedence: defaults < recipe < command-line flags < ``--set``. Paths in a recipe are resolved relative to the
recipe file, so a recipe works from any working directory.
"""

from __future__ import annotations

import difflib
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from distill.core.errors import ConfigError

# section -> {recipe key -> RunConfig field}
SECTIONS: dict[str, dict[str, str]] = {
    "teacher": {"name": "teacher", "names": "teachers", "weights": "teacher_weights", "lr": "teacher_lr",
                "epochs": "teacher_epochs"},
    "student": {"name": "student", "init": "init", "layer_selection": "layer_selection"},
    "data": {"task": "task", "path": "data", "text_columns": "text_columns", "label_column": "label_column",
             "max_seq_length": "max_seq_length", "max_train_samples": "max_train_samples", "augment": "augment",
             "augment_mlm": "augment_mlm"},
    "distill": {k: k for k in ("temperature", "alpha", "hidden_weight", "attention_weight", "attention_loss",
                               "embedding_weight", "cosine_weight", "relation_weight", "relation_heads",
                               "relation_layer", "temperature_schedule", "temperature_end", "alpha_schedule",
                               "alpha_end", "feature_schedule", "feature_scale_end")},
    "train": {k: k for k in ("lr", "epochs", "batch_size", "seed", "device", "grad_accum_steps", "group_by_length",
                             "compile", "teacher_dtype", "teacher_shard", "cache_teacher", "cache_top_k",
                             "checkpoint_every", "keep_checkpoints", "skip_nonfinite")},
    "prune": {"enabled": "prune", "heads": "prune_heads", "ffn": "prune_ffn", "hidden": "prune_hidden",
              "layers": "prune_layers", "importance": "prune_importance", "steps": "prune_steps",
              "importance_batches": "importance_batches", "recover_epochs": "recover_epochs"},
    "quantize": {"enabled": "quantize", "mode": "quantize_mode", "target": "quantize_target",
                 "calibration": "calibration", "calibration_samples": "calibration_samples",
                 "max_drop": "max_int8_drop", "qat": "qat"},
    "report": {"latency_seq": "latency_seq", "latency_threads": "latency_threads", "latency_runs": "latency_runs",
               "min_retention": "min_retention", "max_latency_ms": "max_latency_ms", "max_size_mb": "max_size_mb"},
    "output": {"dir": "output_dir", "overwrite": "overwrite", "tensorboard": "tensorboard"},
}
PATH_KEYS = {"data.path", "teacher.name", "teacher.names", "student.name", "output.dir", "data.augment_mlm"}


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"did you mean '{close[0]}'? " if close else ""


def _field(section: str, key: str) -> str:
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
    """Flatten a sectioned recipe into RunConfig field values, checking every key."""
    if not isinstance(recipe, dict):
        raise ConfigError("the recipe is not a mapping of sections", "write it as `section:` then `key: value` lines")
    values: dict[str, Any] = {}
    for section, body in recipe.items():
        if not isinstance(body, dict):
            raise ConfigError(f"recipe section '{section}' is not a mapping", f"write `{section}:` then indented keys")
        for key, value in body.items():
            name = _field(str(section), str(key))
            if base is not None and f"{section}.{key}" in PATH_KEYS:
                value = _resolve_path(value, base)
            values[name] = _number(value)
    return values


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Read a recipe file into RunConfig field values; malformed YAML and unknown keys are ConfigErrors."""
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
    """``["train.lr=5e-5", "prune.enabled=false"]`` -> RunConfig field values (values parsed as YAML scalars)."""
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
        values[_field(section, name)] = _number(value)
    return values


def dump_recipe(config) -> dict[str, dict[str, Any]]:
    """A RunConfig as a sectioned recipe (every setting), e.g. for ``OUTPUT/config.yaml``."""
    current = {f.name: getattr(config, f.name) for f in fields(config)}
    return {section: {key: current[name] for key, name in keys.items() if name in current}
            for section, keys in SECTIONS.items()}

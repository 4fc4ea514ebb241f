"""Settings as data: a setting is one dataclass field, and its ``metadata`` says how it appears on the command line
and in a recipe. The CLI flags, the recipe sections, ``config.yaml`` and ``--help`` are all generated from the
section dataclasses of ``RunConfig``, so adding a setting is one edit (the litgpt / accelerate pattern).

Field metadata (every key optional; ``setting()`` writes it):

- ``help``: the ``--help`` text. ``{default}`` in it is replaced by the command's default.
- ``dest``: the flat name: argparse dest, keyword of ``RunConfig(...)`` and key of report.json's ``settings``
  (default: the field name). Recipe keys are always the field names.
- ``flags``: option strings (default ``--`` + dest with dashes; ``--no-`` + dest for a bool that defaults to True).
- ``choices`` (a sequence, or a callable returning one, for registries users extend), ``metavar``, ``type`` (an
  argparse type callable), ``nargs``, ``action``: handed to argparse as they are.
- ``cli``: False for a recipe-only setting (no flag).
- ``path``: True when a relative value in a recipe names a file next to the recipe.
- ``resume``: True when ``distill run --resume`` may change the setting.

Sections that other packages own (``DistillConfig``) work the same way: their fields are read generically, their
metadata first, filled in from the ``extra`` mapping of the section's RunConfig field (``section(..., extra=...)``).
This module imports no torch, so ``distill --help`` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any


def setting(default: Any = None, help: str = "", **meta: Any) -> Any:
    """A section field: ``lr: float = setting(1e-4, "learning rate", flags=("--lr",))``."""
    return field(default=default, metadata={"help": help, **meta})


def section(cls: type, title: str, **meta: Any) -> Any:
    """A RunConfig field holding section ``cls``; ``title`` heads its group in ``--help``."""
    return field(default_factory=cls, metadata={"title": title, "section": cls, **meta})


@dataclass(frozen=True)
class Setting:
    """One setting as the CLI and recipes see it: recipe ``section.key``, flat name ``dest``, type and default."""

    section: str
    key: str
    dest: str
    type: Any
    default: Any
    meta: Mapping[str, Any]

    @property
    def base(self) -> Any:
        """The annotation without ``None``: ``float | None`` -> float; ``str | list[int]`` -> str (typed as text)."""
        if not _is_union(self.type):
            return self.type
        args = [a for a in typing.get_args(self.type) if a is not type(None)]
        return args[0] if len(args) == 1 else (str if str in args else args[0])

    @property
    def flags(self) -> tuple[str, ...]:
        if "flags" in self.meta:
            return tuple(self.meta["flags"])
        prefix = "--no-" if self.base is bool and self.default is True else "--"
        return (prefix + self.dest.replace("_", "-"),)

    @property
    def flag(self) -> str:
        """The main option string, as error messages name it."""
        return self.flags[0]

    @property
    def on_cli(self) -> bool:
        return self.meta.get("cli", True)


def _is_union(tp: Any) -> bool:
    return isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union


def section_settings(name: str, cls: type, extra: Mapping[str, Mapping] | None = None) -> list[Setting]:
    """The settings of section ``cls`` (recipe section ``name``); ``extra[field]`` fills metadata the class lacks."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        meta = {**(extra or {}).get(f.name, {}), **{k: v for k, v in f.metadata.items() if v not in (None, "")}}
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else None)
        out.append(Setting(name, f.name, meta.get("dest", f.name), hints[f.name], default, meta))
    return out


def sections_of(cls: type) -> Iterator[tuple[dataclasses.Field, type]]:
    """(RunConfig field, section class) for every section of ``cls``, in order."""
    for f in fields(cls):
        yield f, f.metadata["section"]


def index(cls: type) -> dict[str, Setting]:
    """Every setting of the sectioned config ``cls`` by flat name, section by section."""
    found: dict[str, Setting] = {}
    for f, section_cls in sections_of(cls):
        for s in section_settings(f.name, section_cls, f.metadata.get("extra")):
            if s.dest in found:
                raise TypeError(f"settings {found[s.dest].section}.{found[s.dest].key} and {s.section}.{s.key} "
                                f"share the flat name '{s.dest}'")
            found[s.dest] = s
    return found


def build(cls: type, values: Mapping[str, Any], settings: Mapping[str, Setting]) -> dict[str, Any]:
    """Section objects for ``cls(**values)``: each keyword is a flat setting name, or a section given as its object,
    a mapping of its recipe keys, or (when a setting's flat name is the section's name) that setting's value."""
    sections = {f.name: c for f, c in sections_of(cls)}
    bases: dict[str, Any] = {}
    changes: dict[str, dict[str, Any]] = {name: {} for name in sections}
    for name, value in values.items():
        if name in sections and isinstance(value, sections[name]):
            bases[name] = value
        elif name in sections and isinstance(value, Mapping):
            changes[name].update(value)
        elif name in settings:
            changes[settings[name].section][settings[name].key] = value
        else:
            raise TypeError(f"{cls.__name__} got an unknown setting '{name}'")
    built = {}
    for name, section_cls in sections.items():
        base = bases.get(name)
        if base is None:
            built[name] = section_cls(**changes[name])
        else:
            built[name] = dataclasses.replace(base, **changes[name]) if changes[name] else base
    return built


def names(text: str) -> list[str]:
    """``A,B`` -> ["A", "B"] (argparse type of comma-separated names)."""
    return [t.strip() for t in text.split(",") if t.strip()]


def floats(text: str) -> list[float]:
    """``0.7,0.3`` -> [0.7, 0.3] (argparse type of comma-separated numbers)."""
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of numbers") from None


def choices_of(meta: Mapping[str, Any]) -> list | None:
    """The allowed values of a setting (a callable is asked now: registries may have grown)."""
    choices = meta.get("choices")
    return list(choices()) if callable(choices) else (list(choices) if choices else None)

"""Command-line flags generated from the settings (``distill.pipeline.schema``): a setting's option strings, type,
choices and help come from its dataclass field, and its default stays there. Every generated flag defaults to
``argparse.SUPPRESS``, so the parsed namespace holds exactly what was typed: a typed flag beats the recipe (even
at the default's value) with no second parse. A command's own defaults (``distill prune --heads`` is 0, not the
run's 0.5) are a mapping the command passes along (``set_defaults(command_defaults=...)``)."""

from __future__ import annotations

import argparse
import typing
from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any

from distill.pipeline.config import SETTINGS, RunConfig
from distill.pipeline.schema import Setting, choices_of

TITLES = {f.name: f.metadata["title"] for f in fields(RunConfig)}  # section -> heading in --help
PASSED = ("metavar", "required", "nargs", "type", "action")  # metadata handed to argparse as it is


def _help(text: str, default: Any) -> str:
    """Help text for argparse: ``%`` escaped, ``{default}`` filled in."""
    return text.replace("%", "%%").replace("{default}", str(default))


def argparse_kwargs(s: Setting, meta: Mapping[str, Any], default: Any) -> dict[str, Any]:
    """``add_argument`` keywords of setting ``s`` (``meta``: its metadata with the command's overrides)."""
    kw: dict[str, Any] = {k: meta[k] for k in PASSED if k in meta}
    kw["help"] = _help(meta.get("help", ""), default)
    if "action" in kw:
        return kw
    if s.base is bool:
        kw["action"] = "store_false" if s.default is True else "store_true"
        return kw
    if typing.get_origin(s.base) is list and "type" not in kw:
        kw.setdefault("nargs", "+")
        item = typing.get_args(s.base)[0]
        if item is not str:
            kw["type"] = item
    elif s.base in (int, float) and "type" not in kw:
        kw["type"] = s.base
    if choices := choices_of(meta):
        kw["choices"] = choices
    return kw


def add_setting(parser, dest: str, defaults: Mapping[str, Any] | None = None, **override: Any) -> None:
    """The flag of setting ``dest`` on ``parser`` (or an argument group); ``override`` changes its metadata for this
    command (e.g. ``flags=("--heads",)``, ``help=...``, ``required=True``)."""
    s = SETTINGS[dest]
    meta = {**s.meta, **override}
    default = (defaults or {}).get(dest, s.default)
    flags = tuple(override["flags"]) if "flags" in override else s.flags
    parser.add_argument(*flags, dest=dest, default=argparse.SUPPRESS, **argparse_kwargs(s, meta, default))


def add_settings(parser, dests: Iterable[str], defaults: Mapping[str, Any] | None = None,
                 overrides: Mapping[str, Mapping[str, Any]] | None = None, title: str | None = None) -> None:
    """Flags of several settings, in a group titled ``title`` when given."""
    target = parser.add_argument_group(title) if title else parser
    for dest in dests:
        add_setting(target, dest, defaults, **(overrides or {}).get(dest, {}))


def add_sections(parser, defaults: Mapping[str, Any] | None = None,
                 overrides: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """A group of flags per RunConfig section: every setting that has a flag (``distill run``)."""
    for name, title in TITLES.items():
        dests = [s.dest for s in SETTINGS.values() if s.section == name and s.on_cli]
        add_settings(parser, dests, defaults, overrides, title)


def typed(args: argparse.Namespace) -> dict[str, Any]:
    """The settings typed on the command line (generated flags are absent from ``args`` unless typed)."""
    return {k: v for k, v in vars(args).items() if k in SETTINGS}


def value(args: argparse.Namespace, dest: str) -> Any:
    """Setting ``dest`` as this command sees it: typed, else the command's default, else the setting's."""
    found = typed(args)
    if dest in found:
        return found[dest]
    return getattr(args, "command_defaults", {}).get(dest, SETTINGS[dest].default)

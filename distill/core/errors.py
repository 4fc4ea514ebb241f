"""The one exception family the CLI turns into a one-line message and exit code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DistillError(Exception):
    """A user-facing error: ``problem`` says what is wrong, ``fix`` says what to do about it."""

    exit_code = 2

    def __init__(self, problem: str, fix: str = "") -> None:
        self.problem = problem.rstrip(".")
        self.fix = fix.rstrip(".")
        super().__init__(self.line())

    def line(self) -> str:
        """The single line printed on stderr."""
        return f"error: {self.problem}" + (f"; {self.fix}." if self.fix else ".")


class ConfigError(DistillError):
    """A setting is out of range, malformed or contradicts another one."""


class DataError(DistillError):
    """A data file is missing, unreadable or has the wrong columns or labels."""


class ModelError(DistillError):
    """A checkpoint is missing, unreadable or incompatible with the task or the other model."""


class UnknownNameError(ConfigError):
    """A name (alias, preset, task, loss, ...) that no registry knows (a kind of setting error)."""

    def __init__(self, kind: str, name: str, choices: Iterable[str], extra: str = "") -> None:
        choices = sorted(choices)
        close = difflib.get_close_matches(name, choices, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        super().__init__(f"unknown {kind} '{name}'", f"{hint}choose one of: {', '.join(choices)}{extra}")

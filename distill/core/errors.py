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


class RunError(DistillError):
    """A run failed part-way (a non-finite loss, a write that failed); finished stages and checkpoints are kept.

    Exit code 1, not 2: the input was valid. ``resume`` is the command that continues the run, when there is one.
    """

    exit_code = 1

    def __init__(self, problem: str, fix: str = "", resume: str | None = None) -> None:
        self.resume = resume
        super().__init__(problem, fix)

    def line(self) -> str:
        line = super().line()
        return f"{line[:-1]}; resume with `{self.resume}`." if self.resume else line


class NonFiniteLoss(RunError):
    """The training loss became NaN or infinite (``--skip-nonfinite`` skips such batches instead)."""

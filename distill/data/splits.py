"""``Splits``: the train and dev sets a run reads, whatever their source."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from distill.data.task import Task


@dataclass
class Splits:
    """The two splits a run needs, plus the task as actually read (label count may be inferred)."""

    train: Any  # datasets.Dataset
    dev: Any
    task: Task
    source: str

"""Small, attributed demo data sets shipped inside the package, so ``--data sst2-demo`` works offline anywhere.

Each demo is a folder beside this file (package data: it is in the wheel too) in a format the ``--data DIR`` reader
already accepts, plus a README.md with its source, citation and licence. A demo names its task, so
``--data sst2-demo`` alone also means ``--task sst2``. Adding one (e.g. a WikiText-2 sample for a causal-LM task)
is one folder and one ``register_demo`` call.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from distill.core.errors import ConfigError, DataError
from distill.core.registry import Registry
from distill.data.tasks import Task, get_task

HERE = Path(__file__).resolve().parent
DATA_SUFFIXES = (".tsv", ".csv", ".jsonl", ".json", ".txt")


@dataclass(frozen=True)
class DemoSet:
    """One demo data set: ``folder`` (beside this module) holds its files and a README.md with the attribution."""

    name: str
    folder: str
    task: str
    description: str
    citation: str

    @property
    def path(self) -> Path:
        """Where the files are (inside the installed package)."""
        return HERE / self.folder


DEMOS: Registry[DemoSet] = Registry("demo data set")


def register_demo(demo: DemoSet) -> None:
    """Make ``--data NAME`` read ``demo``'s folder."""
    DEMOS.register(demo.name, demo)


register_demo(DemoSet(
    "sst2-demo", "sst2-demo", "sst2",
    "GLUE SST-2 sample: 2,000 train rows (seed 13) + the whole 872-row dev set; majority class 0.509",
    "Socher et al. 2013 (EMNLP), Stanford Sentiment Treebank; Wang et al. 2019 (ICLR), GLUE",
))

register_demo(DemoSet(
    "wikitext-2-demo", "wikitext-2-demo", "causal-lm",
    "WikiText-2 raw sample: the first 6 articles of wiki.valid.raw (train) and 3 of wiki.test.raw (dev); CC BY-SA 3.0",
    "Merity et al. 2017 (ICLR), Pointer Sentinel Mixture Models (WikiText)",
))


def _is_bare_name(data: str) -> bool:
    """A word, not a path: no directory separator and no data-file suffix."""
    return "/" not in data and "\\" not in data and not data.lower().endswith(DATA_SUFFIXES)


def resolve_demo(data: str | None) -> DemoSet | None:
    """The demo ``data`` names, or None when it is a path (an existing path always wins over a demo name).

    A bare name that is neither an existing path nor a demo raises one line naming the demo sets.
    """
    if not data or Path(data).exists() or not _is_bare_name(str(data)):
        return None
    if data in DEMOS:
        return DEMOS.get(data)
    names = DEMOS.names()
    close = difflib.get_close_matches(data.lower(), names, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise DataError(f"data path '{data}' does not exist and is not a demo data set",
                    f"{hint}pass a directory with train and dev files, or a demo set: {', '.join(names)}")


def resolve_data(task: Task | None, data: str | None) -> tuple[Task | None, str | None]:
    """``(task, data)`` with a demo name replaced by its folder and its task (a different ``task`` is one line)."""
    demo = resolve_demo(data)
    if demo is None:
        return task, data
    if task is not None and task.name != demo.task:
        raise ConfigError(f"--task {task.name} does not match the demo data '{demo.name}' (task {demo.task})",
                          f"use --task {demo.task}, or drop --task")
    return task or get_task(demo.task), str(demo.path)

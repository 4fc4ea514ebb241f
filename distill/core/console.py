"""The one place that talks to the terminal: a rich console, progress bars and the library logger."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Container, Iterable, Iterator, Mapping, Sequence
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

T = TypeVar("T")

console = Console(stderr=True)
# Piped output (CI logs, files) gets a wide table instead of rich's 80-column default, so nothing is cut.
out = Console(width=None if sys.stdout.isatty() else 160)
_state = {"quiet": False}


def get_logger(name: str) -> logging.Logger:
    """A stdlib logger under ``distill``; the CLI decides where it goes."""
    return logging.getLogger(name if name.startswith("distill") else f"distill.{name}")


def set_quiet(quiet: bool) -> None:
    _state["quiet"] = quiet


def is_quiet() -> bool:
    return _state["quiet"]


def info(message: str) -> None:
    """A status line on stderr (suppressed by ``--quiet``)."""
    if not _state["quiet"]:
        console.print(message, highlight=False)


def track(items: Iterable[T], description: str, total: int | None = None, postfix=None) -> Iterator[T]:
    """Iterate with a rich progress bar on a terminal, plain otherwise; ``postfix()`` adds live text."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if _state["quiet"] or not console.is_terminal:
        yield from items
        return
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[post]}")]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total, post="")
        for item in items:
            yield item
            progress.update(task, advance=1, post=postfix() if postfix else "")


def progress_text(values: Mapping[str, float], speed: Mapping[str, float] | None = None) -> str:
    """The live part of a training bar: every loss term, then throughput (``speed``: samples and start time)."""
    parts = [f"{k} {v:.4f}" for k, v in values.items()]
    if speed is not None and speed.get("samples"):
        seconds = max(time.perf_counter() - speed["start"], 1e-9)
        parts.append(f"{speed['samples'] / seconds:,.0f} samples/s")
    return "  ".join(parts)


def configure_logging(level: str = "WARNING") -> None:
    """Send library log records to stderr; called only by the CLI."""
    logging.basicConfig(stream=sys.stderr, level=level.upper(), format="%(levelname)s %(name)s: %(message)s")


def quiet_libraries(level: str = "WARNING") -> None:
    """Turn off the Hugging Face libraries' own progress bars and info logs (the CLI reports progress itself), so
    an error stays one line; works whether or not they are imported yet."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    quiet = logging.getLevelName(level.upper()) in (logging.WARNING, logging.ERROR, logging.CRITICAL)
    if quiet:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    transformers = sys.modules.get("transformers")
    if transformers is not None:
        transformers.utils.logging.disable_progress_bar()
        if quiet:
            transformers.utils.logging.set_verbosity_error()


def table(title: str, headers: Sequence[str], rows: Iterable[Sequence[str]], right: Container[str] = (), *,
          caption: str | None = None, styles: Sequence[str | None] = ()) -> Table:
    """A terminal table (every command's tables go through here): ``right`` names the right-aligned columns,
    ``styles`` gives a style per row (e.g. a collapsed stage in red), ``caption`` a line under the table."""
    out = Table(title=title, caption=caption)
    for header in headers:
        out.add_column(header, justify="right" if header in right else "left")
    for i, row in enumerate(rows):
        out.add_row(*row, style=styles[i] if i < len(styles) else None)
    return out

"""Ctrl-C and SIGTERM: inside a training loop they stop the run after the current step, not in the middle of it.

``graceful()`` (installed by the CLI) turns SIGINT/SIGTERM into ``Interrupted``. Within ``deferred()`` (the training
loop) the first signal is only recorded; the loop polls ``requested()`` after each optimiser step, writes a
checkpoint and raises ``Interrupted`` itself. A second signal, or one outside a training loop, raises at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_STATE: dict = {"signal": None, "deferring": 0}


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal; ``exit_code`` is 128 + the signal number (130 SIGINT, 143 SIGTERM)."""

    def __init__(self, signum: int = signal.SIGINT, where: str = "", saved: str | None = None,
                 resume: str | None = None) -> None:
        self.signum, self.where, self.saved, self.resume = int(signum), where, saved, resume
        super().__init__(self.line())

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def line(self) -> str:
        """The single line printed on stderr."""
        line = f"interrupted by {signal.Signals(self.signum).name}"
        line += f" at {self.where}" if self.where else ""
        line += f"; checkpoint written to {self.saved}" if self.saved else ""
        line += f"; resume with `{self.resume}`" if self.resume else ""
        return line + "."


def requested() -> int | None:
    """The signal received inside ``deferred()`` and not yet acted on, or None."""
    return _STATE["signal"]


def take() -> int | None:
    """``requested()``, marking it acted on."""
    signum, _STATE["signal"] = _STATE["signal"], None
    return signum


def _handler(signum, frame) -> None:
    if _STATE["deferring"] and _STATE["signal"] is None:
        _STATE["signal"] = signum  # the training loop stops after this step
        return
    raise Interrupted(signum)


@contextlib.contextmanager
def graceful() -> Iterator[None]:
    """Handle SIGINT and SIGTERM as described above within the block (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handler) for s in (signal.SIGINT, signal.SIGTERM)}
    _STATE["signal"] = None
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _STATE["signal"] = None


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Within the block a first signal is recorded for ``requested()`` instead of raising; one still pending when
    the block ends is raised then."""
    _STATE["deferring"] += 1
    try:
        yield
    finally:
        _STATE["deferring"] -= 1
    signum = take()
    if signum is not None:
        raise Interrupted(signum)

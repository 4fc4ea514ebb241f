"""Optional experiment logging (``--tensorboard``): loss terms per optimiser step and dev metrics per epoch, as
TensorBoard event files under ``OUTPUT/tensorboard/``, one tag group per training stage.

The engine always talks to ``tracker()``; unless a run starts TensorBoard it is a no-op. The event writer is
created on the first value logged, so a run refused by validation writes nothing.
"""

from __future__ import annotations

import importlib.util
import math
import re
from collections.abc import Mapping
from pathlib import Path

from distill.core.errors import ConfigError

INSTALL_FIX = "pip install tensorboard (or pip install 'distill[tensorboard]'), or drop --tensorboard"


class Tracker:
    """Logs nothing: what the engine uses when no tracking is on."""

    def log_step(self, stage: str, step: int, values: Mapping[str, float]) -> None:
        """Values of one optimiser step (loss terms, learning rate)."""

    def log_epoch(self, stage: str, epoch: int, values: Mapping[str, object]) -> None:
        """One epoch's record: mean loss terms and ``dev_*`` metrics."""

    def close(self) -> None:
        """Flush and release files."""


def require_tensorboard() -> None:
    """A one-line error, before any work, when the ``tensorboard`` package is missing."""
    if importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("--tensorboard needs the tensorboard package, which is not installed", INSTALL_FIX)


def _tag(stage: str) -> str:
    """A stage description (``recover 1/2``) as a TensorBoard tag prefix (``recover_1_2``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stage).strip("_") or "train"


class TensorBoardTracker(Tracker):
    """Scalars ``STAGE/train/TERM`` per step, ``STAGE/epoch/TERM`` and ``STAGE/dev/METRIC`` per epoch."""

    def __init__(self, log_dir: str | Path) -> None:
        require_tensorboard()
        self.log_dir = Path(log_dir)
        self._writer = None

    def _write(self, tag: str, value: object, step: int) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.log_dir), flush_secs=10)
        self._writer.add_scalar(tag, float(value), step)

    def log_step(self, stage: str, step: int, values: Mapping[str, float]) -> None:
        for key, value in values.items():
            self._write(f"{_tag(stage)}/train/{key}", value, step)

    def log_epoch(self, stage: str, epoch: int, values: Mapping[str, object]) -> None:
        for key, value in values.items():
            if key in ("epoch", "step"):
                continue
            group, name = ("dev", key[4:]) if key.startswith("dev_") else ("epoch", key)
            self._write(f"{_tag(stage)}/{group}/{name}", value, epoch)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


_ACTIVE: list[Tracker] = [Tracker()]


def tracker() -> Tracker:
    """The tracker the engine logs to now."""
    return _ACTIVE[-1]


def start_tracking(tensorboard: bool, log_dir: str | Path) -> Tracker:
    """Make TensorBoard (or, when off, the no-op tracker) the current one, closing any previous tracker."""
    stop_tracking()
    if tensorboard:
        _ACTIVE.append(TensorBoardTracker(log_dir))
    return tracker()


def stop_tracking() -> None:
    """Close the current tracker and go back to logging nothing (safe to call twice)."""
    while len(_ACTIVE) > 1:
        _ACTIVE.pop().close()

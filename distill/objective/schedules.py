"""Schedules for the temperature and the loss weights: a value from ``start`` to ``end`` over training progress 0→1.

Every schedule is a pure function ``(start, end, progress) -> value`` registered in ``SCHEDULES``; progress is
clamped to [0, 1], so ``f(start, end, 0) == start`` and ``f(start, end, 1) == end`` (except ``constant``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from distill.core.registry import Registry

Schedule = Callable[[float, float, float], float]
SCHEDULES: Registry[Schedule] = Registry("schedule")


def _clamp(progress: float) -> float:
    """Progress clamped to [0, 1] (NaN counts as 0)."""
    return min(max(float(progress), 0.0), 1.0) if progress == progress else 0.0


@SCHEDULES.register("constant")
def constant(start: float, end: float, progress: float) -> float:
    """v(p) = start for every p; ``end`` is ignored."""
    return float(start)


@SCHEDULES.register("linear")
def linear(start: float, end: float, progress: float) -> float:
    """v(p) = start + (end − start)·p."""
    return float(start) + (float(end) - float(start)) * _clamp(progress)


@SCHEDULES.register("cosine")
def cosine(start: float, end: float, progress: float) -> float:
    """v(p) = end + (start − end)·(1 + cos πp)/2 (half-cosine annealing, Loshchilov & Hutter 2017)."""
    return float(end) + (float(start) - float(end)) * 0.5 * (1.0 + math.cos(math.pi * _clamp(progress)))


def scheduled(name: str, start: float, end: float | None, progress: float) -> float:
    """The value of schedule ``name`` at ``progress``; ``end=None`` keeps the value at ``start``."""
    return SCHEDULES.get(name)(start, start if end is None else end, progress)

"""distill: turn a large transformer teacher into a small, fast, scored INT8 student.

Layers (enforced by tests/test_architecture.py): ``distill.core`` at the bottom; the generic packages
``distill.data``, ``distill.objective``, ``distill.train``, ``distill.evaluate`` and ``distill.report`` above it;
``teachers``, ``students`` and ``compress`` above those and never importing each other; ``distill.pipeline``
and ``distill.cli`` on top. Public names load lazily so ``import distill`` stays fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "RunConfig": "distill.pipeline", "run": "distill.pipeline", "RunReport": "distill.pipeline",
    "TrainConfig": "distill.train.loop", "fit": "distill.train.loop", "FitResult": "distill.train.loop",
    "DistillConfig": "distill.objective.objective", "Objective": "distill.objective.objective",
    "uniform_layer_map": "distill.objective.objective",
    "Task": "distill.data.tasks", "get_task": "distill.data.tasks", "TASKS": "distill.data.tasks",
    "load_splits": "distill.data", "DistillError": "distill.core.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'distill' has no attribute '{name}'")

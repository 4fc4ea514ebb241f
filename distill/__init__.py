"""distill: turn a large transformer teacher into a small, fast, scored INT8 student.

Layers (enforced by tests/test_architecture.py): ``distill.core`` at the bottom; the generic engine modules
(``tasks``, ``data``, ``losses``, ``objective``, ``engine``, ``evaluation``, ``measure``, ``scoring``, ``report``)
above it; ``teachers``, ``students`` and ``compress`` above those and never importing each other; ``pipeline``
and ``cli`` on top. Public names load lazily so ``import distill`` stays fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "RunConfig": "distill.pipeline", "run": "distill.pipeline",
    "TrainConfig": "distill.engine", "fit": "distill.engine", "FitResult": "distill.engine",
    "DistillConfig": "distill.objective", "Objective": "distill.objective", "uniform_layer_map": "distill.objective",
    "Task": "distill.tasks", "get_task": "distill.tasks", "TASKS": "distill.tasks",
    "load_splits": "distill.data", "DistillError": "distill.core.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'distill' has no attribute '{name}'")

"""distill: turn a large transformer teacher into a small, fast, scored INT8 student.

Layers (enforced by tests/test_architecture.py): ``distill.core`` at the bottom; the generic packages
``distill.data`` < ``distill.objective`` < ``distill.train`` < ``distill.evaluate`` < ``distill.report`` above it;
``students`` and ``compress`` (core and the task kinds of data only) and ``teachers`` (core, data, objective,
train) above those and never importing each other; ``distill.pipeline`` and ``distill.cli`` on top. No import
cycles, one owner per heavy backend. Public names load lazily so ``import distill`` stays fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "RunConfig": "distill.pipeline", "run": "distill.pipeline", "RunReport": "distill.pipeline",
    "TrainConfig": "distill.train.config", "fit": "distill.train.loop", "FitResult": "distill.train.config",
    "DistillConfig": "distill.objective.config", "Objective": "distill.objective.objective",
    "uniform_layer_map": "distill.objective.objective",
    "Task": "distill.data.tasks", "get_task": "distill.data.tasks", "TASKS": "distill.data.tasks",
    "load_splits": "distill.data", "DistillError": "distill.core.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'distill' has no attribute '{name}'")

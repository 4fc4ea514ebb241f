"""``distill run``: teacher → student → distil → prune + recover → INT8 → score, each stage a small module.

- ``schema``, ``config``, ``recipe``: the settings (``RunConfig``, in sections), generated flags and recipes.
- ``checks``, ``preflight``, ``prepare``: everything that can be checked is checked before anything is written; then
  ``start`` creates the output dir and the ``Context`` (``context``) the stages share.
- ``stages/``: ``teacher``, ``student``, ``prune``, ``quantize``, ``score`` (plus ``teaching``: the objective and the
  live or cached teacher), each returning a typed result (``results``).
- ``runner``: the only place that orders the stages; ``commands``: ``distill prune/quantize/eval`` on any model;
  ``check``: ``distill check``.

Each stage writes to a temporary directory that is renamed into place only when complete. Under ``accelerate
launch`` every process trains (the loop runs data-parallel and scores dev on all of them), only the main process
writes files and prints, the others wait at a barrier after each save they may read, and export, INT8, scoring and
the report are the main process's alone. Training stages write checkpoints to ``OUTPUT/checkpoints/<stage>``,
finished stages are recorded in ``OUTPUT/stages.json``, and ``run(cfg, resume=True)`` skips the finished stages and
continues the interrupted one from its newest intact checkpoint.

Public names load lazily, so importing ``distill.pipeline.config`` (the CLI's flags) stays free of torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "RunConfig": "distill.pipeline.config", "run": "distill.pipeline.runner",
    "finetune_only": "distill.pipeline.runner", "RunReport": "distill.pipeline.results",
    "prune_only": "distill.pipeline.commands", "quantize_only": "distill.pipeline.commands",
    "eval_only": "distill.pipeline.commands", "check_pair": "distill.pipeline.check",
    "default_student_lr": "distill.pipeline.stages.student",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'distill.pipeline' has no attribute '{name}'")

"""How a stage's dev outputs compare with the teacher's: KL of the distributions, predictions for confusion
matrices (computations the scores and the report both read). What is compared (every example, or every labelled
word) and what a prediction is come from the task's kind."""

from __future__ import annotations

import numpy as np


def kl_to_teacher(task, logits: np.ndarray, teacher_logits: np.ndarray) -> float | None:
    """Mean KL(teacher ‖ stage) of the softmax distributions of the rows given (T = 1); None for kinds whose
    report has no KL (regression)."""
    if not task.kind.report.kl:
        return None
    log_p, log_q = _log_softmax(np.asarray(teacher_logits)), _log_softmax(np.asarray(logits))
    return float((np.exp(log_p) * (log_p - log_q)).sum(-1).mean())


def _log_softmax(x: np.ndarray) -> np.ndarray:
    """Numerically stable log-softmax over the last axis, in float64."""
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def dev_predictions(task, logits: np.ndarray, labels: np.ndarray | None = None) -> list:
    """Dev predictions for ``report["predictions"]``: class ids (ints), or scores for regression.

    Token classification (logits (N, L, C) with ``labels``): the tag id of every labelled word (label ≠ -100),
    flattened over sentences, so confusion matrices count words.
    """
    kind = task.kind
    return kind.predictions(kind.scored(np.asarray(logits), labels)).tolist()

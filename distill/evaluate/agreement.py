"""How a stage's dev outputs compare with the teacher's: KL of the distributions, predictions for confusion
matrices (computations the scores and the report both read)."""

from __future__ import annotations

import numpy as np

from distill.data.batching import IGNORE_INDEX


def kl_to_teacher(task, logits: np.ndarray, teacher_logits: np.ndarray) -> float | None:
    """Mean KL(teacher ‖ stage) of the dev-set softmax distributions (T = 1); None for regression tasks."""
    if task.is_regression:
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
    logits = np.asarray(logits)
    if logits.ndim == 3 and labels is not None:
        return logits.argmax(-1)[np.asarray(labels) != IGNORE_INDEX].astype(int).tolist()
    return logits.reshape(-1).tolist() if task.is_regression else logits.argmax(-1).astype(int).tolist()

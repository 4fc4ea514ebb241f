"""Score every stage against the teacher: task metric, retention, agreement, parameters, size and latency."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from distill.collapse import is_collapsed
from distill.evaluation import compute_metrics, predictions_from_logits
from distill.losses import IGNORE_INDEX
from distill.report import kl_to_teacher
from distill.tasks import Task


@dataclass
class StageScore:
    """One row of the report; ``retention`` and ``agreement`` are relative to the teacher row."""

    name: str
    metric: float
    retention: float
    agreement: float
    params: int
    size_mb: float
    latency_ms: float
    path: str
    metrics: dict[str, float] = field(default_factory=dict)
    kl_to_teacher: float | None = None
    latencies_ms: dict[str, float] = field(default_factory=dict)
    collapsed: bool | None = None  # no better than the task's trivial predictor (distill.collapse); None: unchecked

    def to_dict(self) -> dict:
        return asdict(self)


def agreement(task: Task, logits: np.ndarray, teacher_logits: np.ndarray, labels: np.ndarray | None = None) -> float:
    """Fraction of dev examples where the stage predicts the teacher's class (regression: Pearson r).

    Token classification: the share of labelled tokens (first pieces of words, ``labels != -100``) with the
    teacher's tag.
    """
    a, b = predictions_from_logits(task, logits), predictions_from_logits(task, teacher_logits)
    if task.is_token and labels is not None:
        keep = np.asarray(labels) != IGNORE_INDEX
        return float((a[keep] == b[keep]).mean()) if keep.any() else 0.0
    if task.is_regression:
        if a.std() == 0 or b.std() == 0:
            return 0.0
        return float(np.corrcoef(a, b)[0, 1])
    return float((a == b).mean())


def score_stage(name: str, task: Task, logits: np.ndarray, labels: np.ndarray, teacher_logits: np.ndarray,
                teacher_metric: float | None, *, params: int, size_mb: float, latency_ms: float,
                path: str, trivial_metric: float | None = None) -> StageScore:
    """Build a report row from dev-set logits and the measurements of one artifact; with ``trivial_metric`` (the
    task's trivial predictor on dev) the row says whether the stage collapsed to it."""
    metrics = compute_metrics(task, logits, labels)
    value = metrics[task.main_metric]
    base = value if teacher_metric is None else teacher_metric
    retention = value / base if base else 0.0
    if task.is_token:  # only labelled tokens count: rows (N, L, C) become one row per scored word
        keep = np.asarray(labels) != IGNORE_INDEX
        kl = kl_to_teacher(task, np.asarray(logits)[keep], np.asarray(teacher_logits)[keep])
    else:
        kl = kl_to_teacher(task, logits, teacher_logits)
    collapsed = None if trivial_metric is None else is_collapsed(task, value, trivial_metric, logits)
    return StageScore(name, value, retention, agreement(task, logits, teacher_logits, labels), params,
                      round(size_mb, 3), round(latency_ms, 3), path, metrics, kl, collapsed=collapsed)

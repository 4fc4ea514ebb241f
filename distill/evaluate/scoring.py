"""Score every stage against the teacher: task metric, retention, agreement, parameters, size and latency."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from distill.data.tasks import Task
from distill.evaluate.agreement import kl_to_teacher
from distill.evaluate.collapse import MARGIN, is_collapsed
from distill.evaluate.predict import compute_metrics


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
    collapsed: bool | None = None  # no better than the task's trivial predictor (evaluate.collapse); None: unchecked

    def to_dict(self) -> dict:
        return asdict(self)


def agreement(task: Task, logits: np.ndarray, teacher_logits: np.ndarray, labels: np.ndarray | None = None) -> float:
    """How often the stage predicts what the teacher does, as the task's kind measures it: the share of dev
    examples with the teacher's class (regression: Pearson r of the scores; token classification: the share of
    labelled words, ``labels != -100``, with the teacher's tag)."""
    kind = task.kind
    ours = kind.predictions(kind.scored(np.asarray(logits), labels))
    theirs = kind.predictions(kind.scored(np.asarray(teacher_logits), labels))
    return kind.agreement(ours, theirs)


def score_stage(name: str, task: Task, logits: np.ndarray, labels: np.ndarray, teacher_logits: np.ndarray,
                teacher_metric: float | None, *, params: int, size_mb: float, latency_ms: float,
                path: str, trivial_metric: float | None = None, margin: float = MARGIN) -> StageScore:
    """Build a report row from dev-set logits and the measurements of one artifact; with ``trivial_metric`` (the
    task's trivial predictor on dev) the row says whether the stage collapsed to it."""
    metrics = compute_metrics(task, logits, labels)
    value = metrics[task.main_metric]
    base = value if teacher_metric is None else teacher_metric
    retention = value / base if base else 0.0
    scored = task.kind.scored  # token classification: rows (N, L, C) become one row per labelled word
    kl = kl_to_teacher(task, scored(np.asarray(logits), labels), scored(np.asarray(teacher_logits), labels))
    collapsed = None if trivial_metric is None else is_collapsed(task, value, trivial_metric, logits, margin)
    return StageScore(name, value, retention, agreement(task, logits, teacher_logits, labels), params,
                      round(size_mb, 3), round(latency_ms, 3), path, metrics, kl, collapsed=collapsed)

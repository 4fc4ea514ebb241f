"""The trivial baseline: what a model that ignores its input scores on dev, the floor a trained stage must clear.

The task's kind says what that model predicts (``task.kind.trivial``: majority class, training mean, all-``O``);
this module scores it with the task's own metrics.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from distill.data.task import Task
from distill.evaluate.predict import compute_metrics


@dataclass(frozen=True)
class TrivialBaseline:
    """The trivial predictor's dev scores: ``metric`` is the main metric (an undefined one, such as the Pearson r
    of a constant, counts as 0), ``metrics`` all of them, ``description`` what it predicts."""

    description: str
    metric: float
    metrics: dict[str, float] = field(default_factory=dict)


def trivial_metric(task: Task, train_labels, dev_labels) -> TrivialBaseline:
    """Score the kind's trivial predictor on dev: ``train_labels`` are the training labels (ids or scores; the kind
    may ignore them), ``dev_labels`` the dev labels as the scorer sees them ((N,), or (N, L) per word)."""
    trivial = task.kind.trivial(task, train_labels, dev_labels)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on constant input (regression's training mean)
        scores = compute_metrics(task, trivial.logits, np.asarray(dev_labels))
    value = scores.get(task.main_metric)
    value = 0.0 if value is None or not math.isfinite(value) else float(value)
    return TrivialBaseline(trivial.description, value, scores)

"""No silent junk: flag a stage whose dev metric is no better than the task's trivial predictor.

A stage that predicts the majority class for every row (or a constant score, or no entity at all) can look fine in a
table of retentions and agreements. Each stage's main dev metric is compared with what the task kind's trivial
predictor (``task.kind.trivial``, scored by ``distill.evaluate.baseline``) scores with the same metric; a stage at
most ``collapse_margin`` above it (``MARGIN``; wider for correlations on few rows) has *collapsed*: the table
and reports mark it, one line says the likely cause and the fix, and ``--min-retention`` fails on it (a collapsed
teacher makes every retention meaningless).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from distill.data.tasks import Task
from distill.evaluate.baseline import trivial_metric

# Absolute margin on the main metric (accuracy, F1, Matthews, Pearson): on SST-2's 872 dev rows one standard error of
# accuracy is ~1.7 points, so a stage within 2 points of the majority class has not shown that it learned anything.
MARGIN = 0.02
# Correlations (Pearson, Spearman, Matthews) of a model that ignores its input scatter around 0 with standard error
# ~1/sqrt(n-1) on n dev rows (0.026 on STS-B's 1,500): within two of them the stage has shown no signal.
CORRELATIONS = ("pearson", "spearmanr", "matthews_correlation")
CONSTANT_STD = 1e-6  # regression predictions this flat are a constant


def split_labels(task: Task, dataset) -> np.ndarray:
    """The labels of a loaded split as the scorer sees them (the task kind's ``split_labels``)."""
    return np.asarray(task.kind.split_labels(dataset))


def trivial_baseline(task: Task, train_labels, dev_labels) -> dict:
    """The task kind's trivial predictor scored on dev with the task's main metric (``baseline.trivial_metric``):
    the report's ``trivial_*`` fields. An undefined score (the Pearson r of a constant) counts as 0."""
    found = trivial_metric(task, train_labels, dev_labels)
    return {"trivial_predictor": found.description, "trivial_metric": round(found.metric, 6),
            "collapse_margin": collapse_margin(task, len(dev_labels))}


def collapse_margin(task: Task, n_dev: int) -> float:
    """How far above the trivial predictor a stage must score to count as learned: ``MARGIN`` for accuracy and
    F1; for a correlation metric also two standard errors of a zero correlation on ``n_dev`` rows."""
    if task.main_metric not in CORRELATIONS or n_dev < 3:
        return MARGIN
    return round(max(MARGIN, 2.0 / math.sqrt(n_dev - 1)), 4)


def learned_floor(baseline: Mapping) -> float:
    """The score a stage must beat to count as learned: the trivial predictor's (``baseline["trivial_metric"]``,
    from ``trivial_baseline`` or a report) plus its collapse margin. Early stopping waits for it too."""
    return baseline.get("trivial_metric", 0.0) + baseline.get("collapse_margin", MARGIN)


def is_collapsed(task: Task, metric: float, trivial_metric: float, logits=None, margin: float = MARGIN) -> bool:
    """True when ``metric`` is not finite or at most ``margin`` above the trivial predictor's, or when the stage's
    dev ``logits`` make a constant prediction: one score (regression) or one class for every row (classification;
    it can beat the training majority when dev's majority is the other class, yet it has learned nothing)."""
    if metric is None or not math.isfinite(metric) or metric <= trivial_metric + margin:
        return True
    if logits is None or task.is_token:
        return False
    logits = np.asarray(logits)
    if task.is_regression:
        return bool(float(np.std(logits)) < CONSTANT_STD)
    return bool(logits.ndim == 2 and len(logits) > 1 and np.unique(logits.argmax(-1)).size == 1)


def collapsed_stages(report: Mapping) -> list[Mapping]:
    """The stages of ``report`` flagged ``collapsed``."""
    return [s for s in report.get("stages") or [] if s.get("collapsed")]


def _floor(report: Mapping) -> str:
    """'majority class 'positive' (0.5092)' for messages."""
    return f"{report.get('trivial_predictor', 'the trivial predictor')} ({report.get('trivial_metric', 0):.4f})"


ADVICE = {
    "teacher": "teacher fine-tuning did not learn: raise --teacher-epochs or --teacher-lr, or give it more rows; "
               "every retention below is measured against it",
    "student": "distillation did not learn: train longer (--epochs, more rows), try another --lr or --init (`distill "
               "check` lists the ones this pair supports); on a few thousand rows --hidden-weight 0 learns sooner",
    "pruned": "recovery did not win back what pruning removed: prune less (--prune-heads, --prune-ffn) or raise "
              "--recover-epochs",
    "int8": "INT8 lost what the FP32 model had: try --max-int8-drop 0.01, --quantize-mode static or --qat",
}


def _why(report: Mapping, stage: Mapping) -> str:
    """Why ``stage`` counts as collapsed: its score is at the trivial predictor's, or it predicts a constant."""
    metric, name = stage.get("metric", float("nan")), report.get("metric_name", "metric")
    if not math.isfinite(metric) or metric <= learned_floor(report):
        margin = report.get("collapse_margin", MARGIN)
        return f"dev {name} {metric:.4f} is no better than the {_floor(report)} + {margin}"
    return (f"it makes the same prediction for every dev row (its dev {name} {metric:.4f} reflects the dev labels' "
            "balance, not learning)")


def collapse_lines(report: Mapping) -> list[str]:
    """One warning per collapse that starts a chain (a stage collapsed after one that had not), with the likely
    cause and the fix; the stages after it that collapsed too are named on the same line."""
    stages = report.get("stages") or []
    lines, previous_ok = [], True
    for i, s in enumerate(stages):
        if not s.get("collapsed"):
            previous_ok = True
            continue
        name = s.get("name")
        if previous_ok or name == "teacher":
            after = [t["name"] for t in stages[i + 1:] if t.get("collapsed")] if name != "teacher" else []
            also = f" ({', '.join(after)} {'inherits' if len(after) == 1 else 'inherit'} it)" if after else ""
            why = ADVICE.get(name, "this stage did not learn: train it longer or with another --lr")
            lines.append(f"warning: {name} collapsed: {_why(report, s)}{also}; {why}.")
        previous_ok = False
    return lines


def gate_lines(report: Mapping, row: Mapping) -> list[str]:
    """``--min-retention`` failures that a retention number hides: a collapsed teacher or final stage."""
    teacher = next((s for s in report.get("stages") or [] if s.get("name") == "teacher"), None)
    lines = []
    if teacher is not None and teacher.get("collapsed"):
        lines.append(f"gate failed: the teacher collapsed ({_why(report, teacher)}), so --min-retention measures "
                     "against nothing")
    if row.get("collapsed") and row is not teacher:
        lines.append(f"gate failed: {row.get('name')} collapsed ({_why(report, row)}): it has learned nothing to "
                     "retain")
    return lines


def mark(stage: Mapping) -> str | None:
    """The table's 'learned' cell: 'COLLAPSED', 'yes', or None (a report without the check)."""
    if stage.get("collapsed") is None:
        return None
    return "COLLAPSED" if stage["collapsed"] else "yes"


def note(report: Mapping) -> str:
    """The sentence under a table with a collapsed stage."""
    margin = report.get("collapse_margin", MARGIN)
    return (f"COLLAPSED: dev {report.get('metric_name', 'metric')} at most {margin} above the {_floor(report)}, or "
            "the same prediction for every dev row: what a model that ignores its input does.")


def fit_warning(task: Task, stage: str, result, trivial: Mapping) -> str | None:
    """Right after a training stage: a line when its best dev score is no better than the trivial predictor's."""
    best = getattr(result, "best_metric", None)
    margin = trivial.get("collapse_margin", MARGIN)
    if best is None or not math.isfinite(best) or not is_collapsed(task, best, trivial["trivial_metric"],
                                                                   margin=margin):
        return None
    return (f"{stage}: best dev {task.main_metric} {best:.4f} is no better than the {_floor(trivial)} + {margin}; "
            "the report will flag it")


def print_lines(report: Mapping) -> None:
    """Print ``collapse_lines`` on stderr (also under --quiet: a collapsed result must not pass unnoticed)."""
    from distill.core.console import console

    for line in collapse_lines(report):
        console.print(line, style="yellow", highlight=False, markup=False, soft_wrap=True)

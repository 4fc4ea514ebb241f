"""Predict on a dev set and score predictions with the task's metrics through the ``evaluate`` API.

Metric modules ship inside the package (``distill/metrics/<name>/<name>.py``) and load by path, so scoring
works offline; ``evaluate`` itself is imported lazily because it costs seconds at import.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import torch

from distill.core.runtime import autocast, resolve_device
from distill.data.tasks import Task
from distill.objective.losses import IGNORE_INDEX
from distill.train.sharding import is_sharded

METRICS_DIR = Path(__file__).parent / "metrics"
TOKEN_METRIC = "seqeval_f1"  # entity-level P/R/F1 for token classification


@cache
def load_metric(name: str):
    """``evaluate.load`` of a bundled metric module (no Hub access)."""
    import evaluate

    return evaluate.load(str(METRICS_DIR / name))


def predictions_from_logits(task: Task, logits: np.ndarray) -> np.ndarray:
    """Class ids for classification, the scalar score for regression."""
    return logits.reshape(-1) if task.is_regression else logits.argmax(-1)


def compute_metrics(task: Task, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """All of the task's metrics, main metric first."""
    if task.is_token:
        return token_metrics(task, logits, labels)
    preds = predictions_from_logits(task, logits)
    scores: dict[str, float] = {}
    for name in task.metrics:
        scores.update(load_metric(name).compute(predictions=preds.tolist(), references=labels.tolist()))
    return {k: float(v) for k, v in scores.items()}


def token_metrics(task: Task, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Entity-level F1 (and precision, recall, token accuracy) of word-level tags: the argmax at each labelled
    word piece (labels ≠ -100) of (N, L, C) logits, through the bundled ``seqeval_f1`` module."""
    from distill.data.tokens import word_predictions, word_tags

    names = task.label_names or tuple(str(i) for i in range(logits.shape[-1]))
    labels = np.asarray(labels)
    gold = [row[row != IGNORE_INDEX].astype(int).tolist() for row in labels]
    scores = load_metric(TOKEN_METRIC).compute(predictions=word_tags(word_predictions(logits, labels), names),
                                               references=word_tags(gold, names))
    ordered = {k: scores[k] for k in task.metrics if k in scores}
    return {k: float(v) for k, v in {**ordered, **scores}.items()}


def pad_stack(arrays: list[np.ndarray], fill: float) -> np.ndarray:
    """Concatenate per-batch arrays along rows; token arrays (B, L[, C]) of different widths are right-padded with
    ``fill`` to the widest (labels with -100, logits with 0) first."""
    if not arrays or arrays[0].ndim < 2 or len({a.shape[1] for a in arrays}) == 1:
        return np.concatenate(arrays)
    width = max(a.shape[1] for a in arrays)
    padded = []
    for a in arrays:
        out = np.full((a.shape[0], width, *a.shape[2:]), fill, dtype=a.dtype)
        out[:, :a.shape[1]] = a
        padded.append(out)
    return np.concatenate(padded)


@torch.inference_mode()
def predict(model, loader, device: str | torch.device = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Run ``model`` (a torch module, or any callable taking a batch dict and returning logits) over ``loader``."""
    is_torch = isinstance(model, torch.nn.Module)
    dev = resolve_device(device) if isinstance(device, str) else device
    if is_torch:
        if not is_sharded(model):  # FSDP shards are placed already
            model.to(dev)
        model.eval()
    all_logits, all_labels = [], []
    for batch in loader:
        labels = batch.pop("labels")
        if is_torch:
            with torch.no_grad(), autocast(dev):
                logits = model(**{k: v.to(dev) for k, v in batch.items()}).logits
            logits = logits.float().cpu().numpy()
        else:
            logits = np.asarray(model(batch), dtype=np.float32)
        all_logits.append(logits)
        all_labels.append(labels.numpy())
    if all_labels and all_labels[0].ndim == 2:  # token classification: batches have their own widths
        return pad_stack(all_logits, 0.0), pad_stack(all_labels, IGNORE_INDEX)
    return np.concatenate(all_logits), np.concatenate(all_labels)


def evaluator(task: Task, loader, device: str | torch.device = "auto"):
    """A closure for ``fit(evaluate=...)``: model -> metrics on ``loader``."""

    def run(model) -> dict[str, float]:
        logits, labels = predict(model, loader, device)
        return compute_metrics(task, logits, labels)

    return run

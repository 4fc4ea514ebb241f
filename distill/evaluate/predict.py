"""Predict on a dev set and score predictions with the task's metrics through the ``evaluate`` API.

Metric modules ship inside the package (``distill/evaluate/metrics/<name>/<name>.py``) and load by path, so scoring
works offline; ``evaluate`` itself is imported lazily because it costs seconds at import. Which metrics run on
which predictions is the task kind's business (``task.kind.metrics``); this module hands it ``load_metric``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from distill.core.dist import get_accelerator
from distill.core.runtime import autocast, resolve_device
from distill.data.tasks import Task
from distill.objective.losses import IGNORE_INDEX
from distill.train.sharding import is_sharded
from distill.train.teacher import STRIPPED

METRICS_DIR = Path(__file__).parent / "metrics"


@cache
def load_metric(name: str):
    """``evaluate.load`` of a bundled metric module (no Hub access)."""
    import evaluate

    return evaluate.load(str(METRICS_DIR / name))


def predictions_from_logits(task: Task, logits: np.ndarray) -> np.ndarray:
    """The task kind's predictions: class ids for classification, the scalar score for regression."""
    return task.kind.predictions(logits)


def compute_metrics(task: Task, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """All of the task's metrics, main metric first, computed by the task's kind with the bundled modules."""
    return task.kind.metrics(task, logits, labels, load_metric)


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


def gathered_evaluator(task: Task, loader: DataLoader,
                       device: str | torch.device = "auto") -> Callable[[nn.Module], dict[str, float]]:
    """``evaluator``, except that under ``accelerate launch`` each process scores its shard of the dev
    set and the logits are gathered (``gather_for_metrics``), so every process sees the whole set's metrics."""
    acc = get_accelerator(device if isinstance(device, str) else device.type)
    if acc is None:
        return evaluator(task, loader, device)
    shard = acc.prepare_data_loader(loader)

    def run(model: nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()
        logits, labels = [], []
        for batch in shard:
            gold = batch.pop("labels")
            inputs = {k: v.to(acc.device) for k, v in batch.items() if k not in STRIPPED}
            with torch.inference_mode(), autocast(acc.device):
                out = model(**inputs).logits.float()
            out, gold = acc.gather_for_metrics((out, gold.to(acc.device)))
            logits.append(out.cpu())
            labels.append(gold.cpu())
        model.train(was_training)
        return compute_metrics(task, torch.cat(logits).numpy(), torch.cat(labels).numpy())

    return run

"""Scoring on dev while training: each epoch's metrics (gathered across processes under ``accelerate launch``),
the best epoch's weights kept, and per-process loss means averaged."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.data import DataLoader

from distill.core.dist import get_accelerator
from distill.core.runtime import autocast
from distill.train.config import FitResult
from distill.train.teacher import STRIPPED

if TYPE_CHECKING:
    from accelerate import Accelerator

    from distill.data.tasks import Task


def gathered_evaluator(task: Task, loader: DataLoader,
                       device: str | torch.device = "auto") -> Callable[[nn.Module], dict[str, float]]:
    """``evaluation.evaluator``, except that under ``accelerate launch`` each process scores its shard of the dev
    set and the logits are gathered (``gather_for_metrics``), so every process sees the whole set's metrics."""
    from distill.evaluate.predict import compute_metrics, evaluator

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


def score_epoch(model: nn.Module, evaluate: Callable[[nn.Module], dict], metric: str | None, record: dict,
                result: FitResult) -> dict | None:
    """Score on dev into ``record``; a CPU copy of the weights when this epoch is the best so far, else None."""
    model.eval()
    scores = evaluate(model)
    model.train()
    record.update({f"dev_{k}": v for k, v in scores.items()})
    key = metric or next(iter(scores))
    if scores[key] > result.best_metric:
        result.best_metric, result.best_epoch = scores[key], record["epoch"]
        return {k: v.detach().clone() if hasattr(v, "to_local") else v.detach().to("cpu", copy=True)
                for k, v in model.state_dict().items()}  # FSDP shards (DTensors) stay where they are
    return None


def mean_over_processes(acc: Accelerator, values: dict[str, float]) -> dict[str, float]:
    """Average per-process epoch means, so the history describes the whole epoch on every process."""
    if not values:
        return values
    keys = list(values)  # the same order on every process
    mean = acc.reduce(torch.tensor([values[k] for k in keys], dtype=torch.float64, device=acc.device), "mean")
    return dict(zip(keys, mean.tolist(), strict=True))

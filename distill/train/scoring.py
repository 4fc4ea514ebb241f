"""Scoring on dev while training: each epoch's metrics (from the ``evaluate`` callable ``fit`` is given, e.g.
``distill.evaluate.predict.gathered_evaluator``), the best epoch's weights kept, and per-process loss means averaged."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from distill.train.config import FitResult


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


def mean_over_processes(acc: Any, values: dict[str, float]) -> dict[str, float]:
    """Average per-process epoch means, so the history describes the whole epoch on every process."""
    if not values:
        return values
    keys = list(values)  # the same order on every process
    mean = acc.reduce(torch.tensor([values[k] for k in keys], dtype=torch.float64, device=acc.device), "mean")
    return dict(zip(keys, mean.tolist(), strict=True))

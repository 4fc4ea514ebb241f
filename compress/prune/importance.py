"""Pruning criteria: which channels, heads and layers matter. A new criterion is one registered function.

A factory is called as ``factory(model, example_inputs, batches=..., loss_fn=...)`` right before a cut is planned
and returns a scorer: torch-pruning ``Group`` -> 1-D tensor, one score per channel of the group's root (higher =
keep). ``example_inputs`` may hold ``labels``; ``batches`` (default ``[example_inputs]``) are the batches a
gradient-based criterion runs; ``loss_fn(model, batch) -> scalar`` replaces the task loss ``model(**batch).loss``.
Scores are compared across layers when whole layers are chosen, so return them unnormalised.
torch_pruning is imported inside functions only.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import torch

from distill.core.errors import ConfigError, ModelError
from distill.core.registry import Registry

Batch = dict[str, torch.Tensor]
LossFn = Callable[[torch.nn.Module, Batch], torch.Tensor]
Scorer = Callable[[Any], torch.Tensor]
ImportanceFactory = Callable[..., Scorer]
IMPORTANCES: Registry[ImportanceFactory] = Registry("pruning importance")
NEEDS_TEACHER = (
    "importance 'distillation' needs the teacher's loss",
    "pass loss_fn=compress.kd_loss_fn(teacher) to prune_model (CLI: --teacher DIR)",
)


@IMPORTANCES.register("magnitude")
def magnitude_importance(model: torch.nn.Module, example_inputs: Batch, **_: Any) -> Scorer:
    """L2 norm of each channel's weights across its whole dependency group; data-free and deterministic."""
    import torch_pruning as tp

    return tp.importance.GroupMagnitudeImportance(p=2, normalizer=None)


@IMPORTANCES.register("taylor")
def taylor_importance(
    model: torch.nn.Module,
    example_inputs: Batch,
    *,
    batches: Iterable[Batch] | None = None,
    loss_fn: LossFn | None = None,
    **_: Any,
) -> Scorer:
    """First-order Taylor |w · dL/dw| summed over each channel's group; L = task loss (labels) unless ``loss_fn``."""
    import torch_pruning as tp

    accumulate_gradients(model, batches if batches is not None else [example_inputs], loss_fn or task_loss)
    return tp.importance.GroupTaylorImportance(normalizer=None)


@IMPORTANCES.register("distillation")
def distillation_importance(
    model: torch.nn.Module,
    example_inputs: Batch,
    *,
    batches: Iterable[Batch] | None = None,
    loss_fn: LossFn | None = None,
    **_: Any,
) -> Scorer:
    """Taylor importance of a distillation loss: what the teacher's soft targets need (``loss_fn=kd_loss_fn(t)``)."""
    if loss_fn is None:
        raise ConfigError(*NEEDS_TEACHER)
    return taylor_importance(model, example_inputs, batches=batches, loss_fn=loss_fn)


def task_loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """The model's own loss on a labelled batch (``labels`` key), as in training."""
    if "labels" not in batch:
        raise ConfigError(
            "gradient-based importance needs labelled batches (a 'labels' tensor) or a loss_fn",
            "pass batches with labels, loss_fn=compress.kd_loss_fn(teacher), or importance='magnitude'",
        )
    out = model(**_accepted(model, batch))
    loss = out.get("loss") if isinstance(out, dict) else getattr(out, "loss", None)
    if loss is None:
        raise ConfigError(
            f"{type(model).__name__} returns no loss for labelled batches",
            "pass loss_fn=..., or importance='magnitude'",
        )
    return loss


def kd_loss_fn(teacher: torch.nn.Module, divergence: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> LossFn:
    """``loss_fn`` for distillation importance: ``divergence(student_logits, teacher_logits)`` on each batch, the
    teacher run without gradients (e.g. the objective's T²·KL, passed in by the pipeline)."""

    def loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        was_training = teacher.training
        teacher.eval()
        try:
            with torch.no_grad():
                device = next(teacher.parameters()).device
                t_inputs = _accepted(teacher, {k: _to(v, device) for k, v in inputs.items()})
                t_logits = _logits(teacher(**t_inputs), "teacher")
        finally:
            teacher.train(was_training)
        s_logits = _logits(model(**_accepted(model, inputs)), "student")
        if s_logits.shape != t_logits.shape:
            raise ModelError(
                f"student logits {tuple(s_logits.shape)} and teacher logits {tuple(t_logits.shape)} differ",
                "distil between models with the same task head",
            )
        return divergence(s_logits, t_logits.to(s_logits.device))

    return loss


def accumulate_gradients(model: torch.nn.Module, batches: Iterable[Batch], loss_fn: LossFn) -> None:
    """Fill every parameter's ``.grad`` with dL/dw summed over ``batches``, in eval mode (no dropout noise).

    Parameters the loss does not reach get zero gradients, so torch-pruning's Taylor scorer finds one everywhere.
    """
    device = next(model.parameters()).device
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
        p.grad = None
    n = 0
    with torch.enable_grad():
        for batch in batches:
            loss = loss_fn(model, {k: _to(v, device) for k, v in batch.items()})
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or not torch.isfinite(loss).all():
                raise ModelError(f"importance loss is not a finite scalar: {loss!r}", "check loss_fn and batches")
            loss.backward()
            n += 1
    if n == 0:
        raise ConfigError("gradient-based importance got no batches", "pass at least one batch")
    for p in model.parameters():
        if p.grad is None:
            p.grad = torch.zeros_like(p)


def _to(value: Any, device: torch.device) -> Any:
    return value.to(device) if isinstance(value, torch.Tensor) else value


def _accepted(model: torch.nn.Module, batch: Batch) -> Batch:
    """The keys of ``batch`` that ``model.forward`` takes (extra columns such as ``idx`` are dropped)."""
    params = inspect.signature(model.forward).parameters
    return {k: v for k, v in batch.items() if k in params}


def _logits(out: Any, who: str) -> torch.Tensor:
    logits = out.get("logits") if isinstance(out, dict) else getattr(out, "logits", None)
    if logits is None:
        raise ModelError(f"the {who} returns no logits", "distillation importance needs models with a task head")
    return logits

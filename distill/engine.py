"""The one training loop: distillation, teacher fine-tuning and pruning recovery all run through ``fit``.

AdamW with linear warm-up/decay, dynamic padding (done by the loader), bf16 autocast on CUDA, the teacher
under ``torch.inference_mode``, evaluation on dev after each epoch, and the best epoch's weights kept.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import get_linear_schedule_with_warmup

from distill.core.console import info, track
from distill.core.errors import ConfigError, DistillError
from distill.core.runtime import autocast, resolve_device, seed_everything
from distill.objective import Objective, capture_qkv, eager_attention


@dataclass
class TrainConfig:
    """Optimiser and schedule settings shared by every training stage."""

    lr: float = 1e-4
    epochs: float = 3.0
    batch_size: int = 32
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 42
    device: str = "auto"

    def __post_init__(self) -> None:
        if not self.epochs > 0:
            raise ConfigError(f"--epochs {self.epochs} must be > 0", "use e.g. --epochs 3")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size {self.batch_size} must be ≥ 1", "use e.g. --batch-size 32")
        if not self.lr > 0:
            raise ConfigError(f"--lr {self.lr} must be > 0", "use e.g. --lr 1e-4")


@dataclass
class FitResult:
    """What happened: per-epoch history (loss terms, dev metrics), the best epoch and the wall time."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_metric: float = float("-inf")
    steps: int = 0
    seconds: float = 0.0


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _forward(model, batch: dict, hidden: bool, attentions: bool = False):
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if attentions:
        inputs["output_attentions"] = True
    return model(**inputs, output_hidden_states=hidden)


def _loss_context(stack: contextlib.ExitStack, model, teacher, objective: Objective):
    """Turn on what the objective needs for the training loop: eager attention maps and Q/K/V capture hooks."""
    attentions = objective.needs_attentions and teacher is not None
    if attentions:
        stack.enter_context(eager_attention(model))
        stack.enter_context(eager_attention(teacher))
    captured = (None, None)
    if objective.needs_qkv and teacher is not None:
        s, t = objective.qkv_layers
        captured = (stack.enter_context(capture_qkv(model, [s])), stack.enter_context(capture_qkv(teacher, [t])))
    return attentions, captured


def fit(model: torch.nn.Module, objective: Objective, train_loader, config: TrainConfig, *,
        teacher: torch.nn.Module | None = None, evaluate: Callable[[torch.nn.Module], dict] | None = None,
        metric: str | None = None, description: str = "train") -> FitResult:
    """Train ``model`` (in place) on ``objective``; with ``evaluate``, keep the weights of the best dev epoch."""
    seed_everything(config.seed)
    device = resolve_device(config.device)
    model.to(device).train()
    objective.to(device).train()
    if teacher is not None:
        teacher.to(device).eval()
    params = [p for p in list(model.parameters()) + list(objective.parameters()) if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    steps_per_epoch = len(train_loader)
    total_steps = max(1, math.ceil(steps_per_epoch * config.epochs))
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    hidden = objective.needs_hidden_states
    result, best_state, step, start = FitResult(), None, 0, time.perf_counter()
    n_epochs = math.ceil(config.epochs)
    generator = getattr(train_loader, "generator", None)
    for epoch in range(n_epochs):
        if generator is not None:  # the shuffle order depends only on (seed, epoch): repeatable and resumable
            generator.manual_seed(config.seed * 1_000_003 + epoch)
        stack = contextlib.ExitStack()
        attentions, (s_qkv, t_qkv) = _loss_context(stack, model, teacher, objective)
        sums: dict[str, float] = {}
        seen = 0
        last = {"loss": float("nan")}
        batches = track(train_loader, f"{description} {epoch + 1}/{n_epochs}",
                        total=min(steps_per_epoch, total_steps - step),
                        postfix=lambda last=last: f"loss {last['loss']:.4f}")
        for batch in batches:
            if step >= total_steps:
                break
            batch = _to_device(batch, device)
            objective.set_progress(step / total_steps)
            with autocast(device):
                teacher_out = None
                if teacher is not None:
                    with torch.inference_mode():
                        teacher_out = _forward(teacher, batch, hidden, attentions)
                    teacher_out = _as_constants(teacher_out)
                student_out = _forward(model, batch, hidden, attentions)
                extra = {}
                if s_qkv is not None:
                    (s_layer,), (t_layer,) = s_qkv, t_qkv
                    extra = {"student_qkv": s_qkv[s_layer], "teacher_qkv": t_qkv[t_layer]}
                loss, terms = objective(student_out, batch["labels"], teacher_out, batch.get("attention_mask"),
                                        **extra)
            if not torch.isfinite(loss):
                raise DistillError(f"the training loss became {float(loss)} at step {step} ({terms})",
                                   "lower --lr or --temperature")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            seen += 1
            last["loss"] = float(loss.detach())
            for k, v in {"loss": last["loss"], **terms}.items():
                sums[k] = sums.get(k, 0.0) + v
        stack.close()
        record = {"epoch": epoch + 1, "step": step, **{k: v / max(seen, 1) for k, v in sums.items()}}
        if evaluate is not None:
            model.eval()
            scores = evaluate(model)
            model.train()
            record.update({f"dev_{k}": v for k, v in scores.items()})
            key = metric or next(iter(scores))
            if scores[key] > result.best_metric:
                result.best_metric, result.best_epoch = scores[key], epoch + 1
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        result.history.append(record)
        info(f"  {description} epoch {epoch + 1}: " + ", ".join(f"{k} {v:.4f}" for k, v in record.items()
                                                                  if isinstance(v, float)))
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    result.steps, result.seconds = step, time.perf_counter() - start
    return result


def _as_constants(output):
    """Clone inference-mode tensors (logits, hidden states, attentions) so autograd may save them for backward."""
    for key in ("logits", "hidden_states", "attentions"):
        value = getattr(output, key, None)
        if isinstance(value, torch.Tensor):
            setattr(output, key, value.clone())
        elif isinstance(value, tuple) and value:
            setattr(output, key, tuple(v.clone() for v in value))
    return output

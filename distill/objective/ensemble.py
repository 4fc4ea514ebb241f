"""Several teachers at once: a weighted ensemble of their soft targets plus each teacher's own feature terms.

The soft target is the weighted mean of the teachers' temperature-T *probabilities* (not of their logits):
averaging distributions keeps each teacher's confidence, and it is what an ensemble predicts. Regression averages
the teachers' scores. Feature terms (hidden states, attention, ...) are computed per teacher, each with its own
projections from the student (teachers may differ in width and depth), and summed with the teacher weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from distill.core.errors import ConfigError
from distill.objective.objective import TERM_WEIGHTS, Objective


def normalise_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    """Teacher weights summing to 1 (equal weights when ``None``); wrong counts and negative weights are errors."""
    if weights is None:
        return [1.0 / n] * n
    weights = [float(w) for w in weights]
    if len(weights) != n:
        raise ConfigError(f"--teacher-weights gives {len(weights)} weight(s) for {n} teacher(s)",
                          "give one weight per teacher, in the teachers' order, e.g. --teacher-weights 0.7,0.3")
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise ConfigError(f"--teacher-weights {','.join(f'{w:g}' for w in weights)} has a negative weight or sums "
                          "to 0", "give non-negative weights with a positive sum, e.g. 0.7,0.3")
    total = sum(weights)
    return [w / total for w in weights]


def ensemble_logits(logits: Sequence[torch.Tensor], weights: Sequence[float], temperature: float = 1.0, *,
                    regression: bool = False) -> torch.Tensor:
    """Logits whose softmax at ``temperature`` is the weighted mean of the teachers' softmaxes at that temperature.

    That is T·log Σ_k w_k·softmax(z_k / T) (over the last dimension, so per-token logits work too); ``weights``
    must sum to 1. For regression, the weighted mean of the scores.
    """
    stacked = torch.stack([z.float() for z in logits])
    w = torch.tensor(list(weights), dtype=stacked.dtype, device=stacked.device).view(-1, *[1] * (stacked.dim() - 1))
    if regression:
        return (w * stacked).sum(0)
    t = float(temperature)
    return t * torch.logsumexp(F.log_softmax(stacked / t, dim=-1) + w.log(), dim=0)


class MultiTeacherObjective(nn.Module):
    """``Objective`` for several teachers: one per-teacher ``Objective`` (own layer map and projections) in ``parts``.

    loss = α·CE + (1−α)·T²·KL(ensemble ‖ student) + s·Σ_term weight_term·Σ_k w_k·term_k. The hard label term, α, T
    and the schedules are the first teacher's part's (every part has the same ``DistillConfig``). ``forward`` takes
    one teacher output (and Q/K/V capture) per teacher, in order. Logged terms add each teacher's feature terms
    as ``<term>_t<k>``.
    """

    def __init__(self, parts: Sequence[Objective], weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if not parts:
            raise ConfigError("a multi-teacher objective needs at least one teacher", "pass --teacher DIR")
        self.parts = nn.ModuleList(parts)
        self.weights = normalise_weights(weights, len(parts))
        self.config = parts[0].config
        self.regression = parts[0].regression

    @property
    def layer_map(self) -> list[tuple[int, int]]:
        return self.parts[0].layer_map

    @property
    def needs_hidden_states(self) -> bool:
        return any(p.needs_hidden_states for p in self.parts)

    @property
    def needs_attentions(self) -> bool:
        return any(p.needs_attentions for p in self.parts)

    @property
    def needs_qkv(self) -> bool:
        return any(p.needs_qkv for p in self.parts)

    @property
    def qkv_layers(self) -> tuple[int, int]:
        return self.parts[0].qkv_layers

    @property
    def temperature(self) -> float:
        return self.parts[0].temperature

    @property
    def alpha(self) -> float:
        return self.parts[0].alpha

    @property
    def feature_scale(self) -> float:
        return self.parts[0].feature_scale

    @property
    def progress(self) -> float:
        """Training progress shared by every part (checkpoints record it)."""
        return self.parts[0].progress

    def set_progress(self, progress: float) -> None:
        """Training progress in [0, 1], passed to every part (the schedules)."""
        for part in self.parts:
            part.set_progress(progress)

    def forward(self, student_out, labels: torch.Tensor, teacher_out: Sequence | None = None,
                attention_mask: torch.Tensor | None = None, *,
                student_qkv: Mapping[str, torch.Tensor] | None = None,
                teacher_qkv: Sequence[Mapping[str, torch.Tensor] | None] | None = None,
                ) -> tuple[torch.Tensor, dict[str, float]]:
        """Return the weighted total and each term's unweighted value (for logging)."""
        first = self.parts[0]
        if teacher_out is None:
            total, terms = first.label_terms(student_out.logits, labels, None)
            return total, {k: float(v.detach()) for k, v in terms.items()}
        if len(teacher_out) != len(self.parts):
            raise ConfigError(f"{len(teacher_out)} teacher outputs for an objective of {len(self.parts)} teachers",
                              "pass one output per teacher, in order")
        mixed = ensemble_logits([o.logits for o in teacher_out], self.weights, first.temperature,
                                regression=first.regression)
        total, terms = first.label_terms(student_out.logits, labels, mixed)
        features: dict[str, torch.Tensor] = {}
        for k, (part, out, w) in enumerate(zip(self.parts, teacher_out, self.weights, strict=True), 1):
            qkv = teacher_qkv[k - 1] if teacher_qkv is not None else None
            for name, value in part.feature_terms(student_out, out, attention_mask, student_qkv=student_qkv,
                                                  teacher_qkv=qkv).items():
                features[name] = features.get(name, 0.0) + w * value
                terms[f"{name}_t{k}"] = value
        scale = first.feature_scale
        for name, value in features.items():
            terms[name] = value
            total = total + getattr(self.config, TERM_WEIGHTS[name]) * scale * value
        return total, {k: float(v.detach()) for k, v in terms.items()}

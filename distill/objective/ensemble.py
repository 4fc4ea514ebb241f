"""Several teachers at once: a weighted ensemble of their soft targets plus each teacher's own feature terms.

The soft target is the weighted mean of the teachers' temperature-T *probabilities* (not of their logits):
averaging distributions keeps each teacher's confidence, and it is what an ensemble predicts. Regression averages
the teachers' scores. Feature terms (hidden states, attention, ...) are computed per teacher, each with its own
projections from the student (teachers may differ in width and depth), and summed with the teacher weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from distill.core.errors import ConfigError
from distill.objective.objective import Objective, ObjectiveBase, output_loss


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


class MultiTeacherObjective(ObjectiveBase):
    """``Objective`` for several teachers: one per-teacher ``Objective`` (own layer map and projections) in ``parts``.

    loss = α·CE + (1−α)·T²·KL(ensemble ‖ student) + s·Σ_term weight_term·Σ_k w_k·term_k: the same loop over the
    terms as ``Objective`` (``ObjectiveBase.weighted_sum``). The output terms, the task kind and the settings (α, T,
    the schedules) are the first part's. ``forward`` takes one teacher output (and Q/K/V capture) per teacher, in
    order. Logged terms add each teacher's feature terms as ``<term>_t<k>``.
    """

    def __init__(self, parts: Sequence[Objective], weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if not parts:
            raise ConfigError("a multi-teacher objective needs at least one teacher", "pass --teacher DIR")
        self._parts = nn.ModuleList(parts)
        self.weights = normalise_weights(weights, len(parts))
        self.config = parts[0].config
        self.progress = parts[0].progress

    @property
    def parts(self) -> Sequence[Objective]:
        return self._parts

    def forward(self, student_out: Any, labels: torch.Tensor, teacher_out: Sequence[Any] | None = None,
                attention_mask: torch.Tensor | None = None, *, student_qkv: Mapping[str, torch.Tensor] | None = None,
                teacher_qkv: Sequence[Mapping[str, torch.Tensor] | None] | None = None,
                ) -> tuple[torch.Tensor, dict[str, float]]:
        """Return the weighted total and each term's unweighted value (for logging)."""
        if teacher_out is None:
            return self.weighted_sum(student_out, labels, None, attention_mask, student_qkv, None, None, self.weights)
        if len(teacher_out) != len(self.parts):
            raise ConfigError(f"{len(teacher_out)} teacher outputs for an objective of {len(self.parts)} teachers",
                              "pass one output per teacher, in order")
        mixed = ensemble_logits([o.logits for o in teacher_out], self.weights, self.temperature,
                                regression=output_loss(self.kind, student_out.logits).mixes_scores)
        return self.weighted_sum(student_out, labels, teacher_out, attention_mask, student_qkv, teacher_qkv, mixed,
                                 self.weights)

    def loss(self, student_out: Any, labels: torch.Tensor, teacher_outs: Sequence[Any] | None,
             attention_mask: torch.Tensor | None = None, *, student_qkv: Any = None,
             teacher_qkv: Sequence[Any] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        return self(student_out, labels, teacher_outs or None, attention_mask, student_qkv=student_qkv,
                    teacher_qkv=teacher_qkv)

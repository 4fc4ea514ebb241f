"""The distillation objective: which loss terms, with which weights, between which layers.

``Objective`` is an ``nn.Module`` because it owns the learned projections used when student and teacher
widths differ; they train with the student and are dropped afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from distill.core.errors import ConfigError
from distill.losses import hard_label_ce, hidden_mse, logits_mse, soft_target_kl


@dataclass
class DistillConfig:
    """Loss settings: ``alpha`` weighs hard labels against soft targets; ``hidden_weight`` is β."""

    temperature: float = 2.0
    alpha: float = 0.5
    hidden_weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ConfigError(f"--temperature {self.temperature} must be > 0", "use e.g. --temperature 2")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"--alpha {self.alpha} is outside [0, 1]", "use e.g. --alpha 0.5")
        if self.hidden_weight < 0:
            raise ConfigError(f"--hidden-weight {self.hidden_weight} is negative", "use 0 to turn it off")


def uniform_layer_map(n_student: int, n_teacher: int) -> list[tuple[int, int]]:
    """Pairs (student layer, teacher layer), 1-based into ``hidden_states``: student i ↔ teacher round(i·Lt/Ls).

    Index 0 (embeddings) is not mapped; the last student layer always meets the last teacher layer.
    """
    if n_student <= 0 or n_teacher <= 0:
        return []
    return [(i, max(1, round(i * n_teacher / n_student))) for i in range(1, n_student + 1)]


class Objective(nn.Module):
    """loss = α·CE(labels) + (1−α)·T²·KL(teacher ‖ student) + β·Σ MSE(proj(h_s[i]), h_t[map(i)]).

    For regression (one output) CE becomes MSE to the label and KL becomes MSE to the teacher's score.
    With no teacher (fine-tuning) only the label term is used, at full weight.
    """

    def __init__(self, config: DistillConfig, *, regression: bool = False, student_width: int = 0,
                 teacher_width: int = 0, layer_map: list[tuple[int, int]] | None = None) -> None:
        super().__init__()
        self.config = config
        self.regression = regression
        self.layer_map = list(layer_map or []) if config.hidden_weight > 0 else []
        if self.layer_map and student_width != teacher_width:
            self.projections = nn.ModuleList(nn.Linear(student_width, teacher_width) for _ in self.layer_map)
        else:
            self.projections = nn.ModuleList(nn.Identity() for _ in self.layer_map)

    @property
    def needs_hidden_states(self) -> bool:
        return bool(self.layer_map)

    def forward(self, student_out, labels: torch.Tensor, teacher_out=None,
                attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Return the weighted total and each term's unweighted value (for logging)."""
        logits = student_out.logits
        hard = logits_mse(logits, labels) if self.regression else hard_label_ce(logits, labels)
        terms = {"ce": hard}
        if teacher_out is None:
            return hard, {k: float(v.detach()) for k, v in terms.items()}
        a = self.config.alpha
        if self.regression:
            soft = logits_mse(logits, teacher_out.logits)
        else:
            soft = soft_target_kl(logits, teacher_out.logits, self.config.temperature)
        terms["kd"] = soft
        total = a * hard + (1 - a) * soft
        if self.layer_map:
            hs, ht = student_out.hidden_states, teacher_out.hidden_states
            hidden = sum(hidden_mse(proj(hs[i]), ht[j], attention_mask)
                         for proj, (i, j) in zip(self.projections, self.layer_map, strict=True))
            terms["hidden"] = hidden
            total = total + self.config.hidden_weight * hidden
        return total, {k: float(v.detach()) for k, v in terms.items()}

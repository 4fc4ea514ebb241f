"""The objective of general distillation (TinyBERT/MiniLM's first stage): the student's encoder body learns the
teacher's encoder body on unlabelled text, from feature terms only: no task head, no logits, no labels.

loss = Σ over the chosen terms of weight · term, each term one of ``LOSS_TERMS``' feature terms:

- ``hidden``: Σ_(i,j) MSE(W_i·h_s[i], h_t[j]) over the uniform layer map (h (B, L, D), W_i Linear(D_s → D_t));
- ``attention``: Σ_(i,j) KL(A_t[j] ‖ A_s[i]) (or MSE, ``--attention-loss``) of the attention maps (B, H, L, L);
- ``relation``: MiniLMv2's Σ over Q, K, V of KL(R_t ‖ R_s), R = softmax(X Xᵀ/√d_r) (B, R, L, L) at the last layer;
- ``embedding``: MSE(W·h_s[0], h_t[0]) of the embedding outputs.

Every term weighs 1 (they are of the same order on the models measured here: experiments/README.md) and is
averaged over the real tokens (the attention mask), so padding teaches nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from distill.core.errors import ConfigError
from distill.objective.config import GENERAL_TERMS, DistillConfig
from distill.objective.objective import Objective, uniform_layer_map
from distill.objective.terms import LOSS_TERMS, Scale, TermInputs

__all__ = ["GENERAL_TERMS", "GeneralObjective", "general_config"]


def general_config(base: DistillConfig, terms: Sequence[str]) -> DistillConfig:
    """``base`` (for --attention-loss, --relation-heads, --relation-layer) with the chosen terms at weight 1 and every
    other feature term off."""
    unknown = [t for t in terms if t not in GENERAL_TERMS]
    if unknown or not terms:
        raise ConfigError(f"--general-terms {','.join(terms) or '(none)'} is not a list of feature terms",
                          f"use some of: {','.join(GENERAL_TERMS)}")
    weights = {f"{name}_weight": 1.0 if name in terms else 0.0 for name in GENERAL_TERMS}
    weights["cosine_weight"] = 0.0
    return replace(base, **weights, feature_schedule="constant", feature_scale_end=None)


class GeneralObjective(Objective):
    """The feature terms of ``general_config`` between a student body and a teacher body (outputs without logits).

    ``loss`` returns the weighted sum and each term's unweighted value; it needs exactly one teacher output.
    """

    def __init__(self, base: DistillConfig, terms: Sequence[str], *, student_layers: int, teacher_layers: int,
                 student_width: int, teacher_width: int, student_heads: int) -> None:
        config = general_config(base, terms)
        super().__init__(config, student_width=student_width, teacher_width=teacher_width,
                         layer_map=uniform_layer_map(student_layers, teacher_layers), student_heads=student_heads)
        self.terms = nn.ModuleDict({name: t for name, t in self.terms.items() if t.per_teacher})

    @classmethod
    def between(cls, base: DistillConfig, terms: Sequence[str], student_config: Any,
                teacher_config: Any) -> GeneralObjective:
        """The objective for a student and a teacher described by their (HF) configs."""
        return cls(base, terms, student_layers=student_config.num_hidden_layers,
                   teacher_layers=teacher_config.num_hidden_layers, student_width=student_config.hidden_size,
                   teacher_width=teacher_config.hidden_size, student_heads=student_config.num_attention_heads)

    def loss(self, student_out: Any, labels: torch.Tensor, teacher_outs: Sequence[Any] | None,
             attention_mask: torch.Tensor | None = None, *, student_qkv: Any = None,
             teacher_qkv: Sequence[Any] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        if not teacher_outs or len(teacher_outs) != 1:
            raise ConfigError("general distillation learns from exactly one teacher output per batch",
                              "pass the teacher's encoder body as the only teacher")
        inputs = TermInputs(student_out, labels, teacher=teacher_outs[0], mask=attention_mask,
                            student_qkv=student_qkv,
                            teacher_qkv=teacher_qkv[0] if teacher_qkv is not None else None)
        scale = Scale(1.0, 1.0, 1.0)
        total, logged = None, {}
        for term in self.terms.values():
            value = term.compute(inputs)
            logged[term.name] = float(value.detach())
            weighted = LOSS_TERMS.get(term.name).weight(self.config, scale) * value
            total = weighted if total is None else total + weighted
        return total, logged

    def forward(self, student_out: Any, labels: torch.Tensor, teacher_out: Any = None,
                attention_mask: torch.Tensor | None = None, *, student_qkv: Any = None,
                teacher_qkv: Any = None) -> tuple[torch.Tensor, dict[str, float]]:
        return self.loss(student_out, labels, None if teacher_out is None else [teacher_out], attention_mask,
                         student_qkv=student_qkv, teacher_qkv=None if teacher_qkv is None else [teacher_qkv])

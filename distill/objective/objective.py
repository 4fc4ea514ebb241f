"""The distillation objective: the enabled loss terms (``distill.objective.terms``), weighted and summed, with the
output loss of the task kind.

``Objective`` is an ``nn.Module`` because its terms own the learned projections used when student and teacher
widths differ; they train with the student and are dropped afterwards. ``MultiTeacherObjective``
(``distill.objective.ensemble``) runs the same loop over several teachers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from distill.core.errors import ConfigError
from distill.core.registry import Registry
from distill.objective.config import DistillConfig
from distill.objective.losses import (
    IGNORE_INDEX,
    hard_label_ce,
    label_mse,
    logits_mse,
    soft_target_kl,
    token_ce,
    token_kl,
)
from distill.objective.schedules import scheduled
from distill.objective.terms import (
    DIFFERENT_TOKENIZERS,
    LOSS_TERMS,
    TOKEN_KD_NEEDS_ONE_TOKENIZER,
    LossTerm,
    PairShape,
    Scale,
    TermInputs,
    relation_layers,
)

__all__ = ["DIFFERENT_TOKENIZERS", "OUTPUT_LOSSES", "TOKEN_KD_NEEDS_ONE_TOKENIZER", "DistillConfig", "Objective",
           "ObjectiveBase", "OutputLoss", "disable_unsupported", "output_loss", "supported_losses",
           "uniform_layer_map"]


# ---- the output loss a task kind names ----------------------------------------------------------------------------

@dataclass(frozen=True)
class OutputLoss:
    """How a task kind scores the student's logits: ``hard(logits, labels)`` against the gold labels (the ce term),
    ``soft(logits, teacher_logits, labels, T)`` against the teacher (the kd term), and whether several teachers'
    outputs are mixed as scores (their weighted mean) rather than as probabilities (``ensemble.ensemble_logits``)."""

    hard: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    soft: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]
    mixes_scores: bool = False


# keyed by the output-loss name a task kind declares (``distill.data.kinds.TaskKind.output_loss``): a new kind (e.g. a
# causal LM's next-token loss) registers its own here and names it
SEQUENCE, REGRESSION, TOKEN = "ce_kl", "mse", "token_ce_kl"
OUTPUT_LOSSES: Registry[OutputLoss] = Registry("output loss")


def _kl(logits: torch.Tensor, target: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    return soft_target_kl(logits, target, temperature)


def _token_kl(logits: torch.Tensor, target: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    return token_kl(logits, target, labels != IGNORE_INDEX, temperature)


def _score_mse(logits: torch.Tensor, target: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    return logits_mse(logits, target)


OUTPUT_LOSSES.register(SEQUENCE, OutputLoss(hard_label_ce, _kl))
OUTPUT_LOSSES.register(REGRESSION, OutputLoss(label_mse, _score_mse, mixes_scores=True))
OUTPUT_LOSSES.register(TOKEN, OutputLoss(token_ce, _token_kl))

# causal LMs (``distill.data.lm_kind``): the hard term is next-token CE (logits at i against the label at i + 1), the
# soft term T²·KL(teacher ‖ student) per token over the vocabulary (``lm_losses``), both masked to real tokens; a
# truncated teacher (``lm_losses.TopKTeacher``, what the causal-LM teacher cache serves as ``logits``) is scored with
# the tail-bucket divergence ``lm_kd_loss_topk`` instead
LM = "lm_kd"
LM_DIVERGENCES = {LM: "forward_kl", "lm_reverse_kl": "reverse_kl", "lm_jsd": "jsd", "lm_tv": "tv"}


def next_token_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Causal-LM CE: logits (B, L, V) at position i against labels (B, L) at i + 1, mean over labels ≠ -100."""
    return token_ce(logits[:, :-1], labels[:, 1:])


def _lm_soft(divergence: str) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]:
    def soft(logits: torch.Tensor, target: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
        from distill.objective.lm_losses import TopKTeacher, lm_kd_loss, lm_kd_loss_topk

        loss = lm_kd_loss_topk if isinstance(target, TopKTeacher) else lm_kd_loss
        return loss(logits, target, labels != IGNORE_INDEX, kind=divergence, temperature=temperature)

    return soft


for _name, _divergence in LM_DIVERGENCES.items():
    OUTPUT_LOSSES.register(_name, OutputLoss(next_token_ce, _lm_soft(_divergence)))


def output_loss(kind: str | None, logits: torch.Tensor) -> OutputLoss:
    """The one place that picks the output loss: by task kind; without a kind, token classification for
    (B, L, C) logits and sequence classification otherwise (callers that predate task kinds)."""
    return OUTPUT_LOSSES.get(kind or (TOKEN if logits.dim() == 3 else SEQUENCE))


def uniform_layer_map(n_student: int, n_teacher: int) -> list[tuple[int, int]]:
    """Pairs (student layer, teacher layer), 1-based into ``hidden_states``: student i ↔ teacher round(i·Lt/Ls).

    Index 0 (embeddings) is not mapped; the last student layer always meets the last teacher layer.
    """
    if n_student <= 0 or n_teacher <= 0:
        return []
    return [(i, max(1, round(i * n_teacher / n_student))) for i in range(1, n_student + 1)]


# ---- which terms a student/teacher pair supports -----------------------------------------------------------------

def supported_losses(student_config: Any, teacher_config: Any, same_tokenizer: bool, *,
                     token: bool = False) -> dict[str, str | None]:
    """For each registered term (ce, kd, hidden, embedding, cosine, attention, relation): None if usable, else why.

    With different tokenizers only sequence-level terms remain: ce, and kd for sequence classification
    (``token=False``); every per-token term (and token-level kd) is unsupported.
    """
    return {name: cls.supported(student_config, teacher_config, same_tokenizer, token)
            for name, cls in LOSS_TERMS.items()}


def disable_unsupported(config: DistillConfig, support: Mapping[str, str | None]) -> tuple[DistillConfig, list[str]]:
    """``config`` with every unsupported but enabled term turned off, and one message per term turned off."""
    changes: dict[str, Any] = {}
    messages: list[str] = []
    for name, cls in LOSS_TERMS.items():
        reason = support.get(name)
        off = cls.turn_off(config, reason) if reason else None
        if off is not None:
            changes.update(off[0])
            messages.append(off[1])
    return (replace(config, **changes) if changes else config), messages


# ---- the objective -----------------------------------------------------------------------------------------------

class ObjectiveBase(nn.Module):
    """What the training loop uses of an objective: one part (an ``Objective``) per teacher, the schedules, what to
    run the models with, and ``loss`` (one output per teacher). ``Objective`` and ``MultiTeacherObjective`` share
    it, and ``weighted_sum``, the loop over the terms."""

    config: DistillConfig
    progress: float

    @property
    def parts(self) -> Sequence[Objective]:
        """One ``Objective`` per teacher (own layer map and projections)."""
        raise NotImplementedError

    @property
    def kind(self) -> str | None:
        return self.parts[0].kind

    @property
    def regression(self) -> bool:
        return self.kind == REGRESSION

    def _terms(self) -> list[LossTerm]:
        return [t for part in self.parts for t in part.terms.values()]

    @property
    def needs_hidden_states(self) -> bool:
        return any(t.needs_hidden_states for t in self._terms())

    @property
    def needs_attentions(self) -> bool:
        """Attention probabilities are needed: run both models with ``output_attentions=True`` (eager attention)."""
        return any(t.needs_attentions for t in self._terms())

    @property
    def needs_qkv(self) -> bool:
        """Q/K/V are needed: capture them with ``capture_qkv`` at ``qkv_layers`` and pass them to ``forward``."""
        return any(t.needs_qkv for t in self._terms())

    @property
    def qkv_layers(self) -> tuple[int, int]:
        """(student, teacher) 0-based encoder-layer indices for ``capture_qkv``: the student's last layer."""
        return relation_layers(self.config)

    def set_progress(self, progress: float) -> None:
        """Training progress in [0, 1] (step / total steps) that drives the schedules."""
        self.progress = min(max(float(progress), 0.0), 1.0)
        for part in self.parts:
            if part is not self:
                part.set_progress(progress)

    @property
    def temperature(self) -> float:
        c = self.config
        return scheduled(c.temperature_schedule, c.temperature, c.temperature_end, self.progress)

    @property
    def alpha(self) -> float:
        c = self.config
        return scheduled(c.alpha_schedule, c.alpha, c.alpha_end, self.progress)

    @property
    def feature_scale(self) -> float:
        c = self.config
        return scheduled(c.feature_schedule, 1.0, c.feature_scale_end, self.progress)

    def loss(self, student_out: Any, labels: torch.Tensor, teacher_outs: Sequence[Any] | None,
             attention_mask: torch.Tensor | None = None, *, student_qkv: Any = None,
             teacher_qkv: Sequence[Any] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """The training loop's call: one output (and Q/K/V capture) per teacher, in order; none to fine-tune."""
        raise NotImplementedError

    def weighted_sum(self, student_out: Any, labels: torch.Tensor, teacher_outs: Sequence[Any] | None,
                     mask: torch.Tensor | None, student_qkv: Any, teacher_qkv: Sequence[Any] | None,
                     target: torch.Tensor | None,
                     teacher_weights: Sequence[float] | None) -> tuple[torch.Tensor, dict[str, float]]:
        """Σ weight·term over the enabled terms, and each term's unweighted value (for logging).

        The output terms of the first part run once, against the soft-target logits ``target``; each part's feature
        terms run on its own teacher and are mixed with ``teacher_weights`` (None: a single teacher, logged as is;
        else also logged per teacher as ``<term>_t<k>``). Without teachers only the label term, at full weight.
        """
        head, present = self.parts[0], bool(teacher_outs)
        scale = Scale(self.alpha if present else 1.0, self.temperature, self.feature_scale)
        inputs = TermInputs(student_out, labels, mask=mask, student_qkv=student_qkv, target=target,
                            output=output_loss(head.kind, student_out.logits), temperature=scale.temperature)
        total, logged = None, {}
        terms = [t for t in head.terms.values() if not t.per_teacher and (present or not t.needs_teacher)]
        weights = [t.weight(self.config, scale) for t in terms]
        for t, weight in zip(terms, weights, strict=True):
            # a term weighted 0 (e.g. ce at α = 0) is only logged: no graph, so no (B·L, V) backward for nothing
            frozen = weight == 0 and any(w != 0 for w in weights)
            with torch.no_grad() if frozen else contextlib.nullcontext():
                logged[t.name] = value = t.compute(inputs)
            weighted = weight * value
            total = weighted if total is None else total + weighted
        if not present:
            return total, {k: float(v.detach()) for k, v in logged.items()}
        mixed: dict[str, torch.Tensor] = {}
        for k, (part, out) in enumerate(zip(self.parts, teacher_outs, strict=True)):
            one = inputs.for_teacher(out, teacher_qkv[k] if teacher_qkv is not None else None)
            for t in part.terms.values():
                if t.per_teacher:
                    value = t.compute(one)
                    if teacher_weights is None:
                        mixed[t.name] = value
                    else:
                        logged[f"{t.name}_t{k + 1}"] = value
                        mixed[t.name] = mixed.get(t.name, 0.0) + teacher_weights[k] * value
        for name, value in mixed.items():
            logged[name] = value
            total = total + LOSS_TERMS.get(name).weight(self.config, scale) * value
        return total, {k: float(v.detach()) for k, v in logged.items()}


class Objective(ObjectiveBase):
    """loss = α·CE(labels) + (1−α)·T²·KL(teacher ‖ student) + s·(β·Σ MSE(proj(h_s[i]), h_t[map(i)]) + extra terms).

    One term object per enabled term of ``LOSS_TERMS`` (in ``terms``): attention KL/MSE over the mapped layers,
    embedding MSE, last-layer cosine and MiniLMv2 Q/K/V relations, each weighted by its ``DistillConfig`` weight;
    α, T and the feature scale s follow their schedules (``set_progress``). The output terms follow ``kind``, the
    output-loss name the task kind declares (``OUTPUT_LOSSES``; ``regression=True`` is ``kind="mse"``; without a
    kind, (B, L, C) logits are token classification): regression uses MSE to the label and to the teacher's score,
    token classification per-token CE and KL over the labelled positions (labels ≠ -100), the feature terms keep
    using the attention mask. With no teacher (fine-tuning) only the label term is used, at full weight.
    """

    def __init__(self, config: DistillConfig, *, regression: bool = False, kind: str | None = None,
                 student_width: int = 0, teacher_width: int = 0, layer_map: Sequence[tuple[int, int]] | None = None,
                 student_heads: int = 0) -> None:
        super().__init__()
        self.config = config
        self._kind = kind or (REGRESSION if regression else None)
        if self._kind is not None:
            OUTPUT_LOSSES.get(self._kind)  # an unknown kind fails here, not at the first batch
        pair = PairShape(student_width, teacher_width, tuple(tuple(p) for p in layer_map or ()), student_heads)
        self.terms = nn.ModuleDict({name: cls(config, pair) for name, cls in LOSS_TERMS.items()
                                    if cls.enabled(config, pair)})
        self.progress = 0.0

    @property
    def parts(self) -> Sequence[Objective]:
        return (self,)

    @property
    def kind(self) -> str | None:
        return self._kind

    @property
    def teacher_layers(self) -> list[int]:
        """The teacher ``hidden_states`` indices the terms read (-1 = the last layer): what a cache must hold."""
        return sorted(set().union(*(t.teacher_layers() for t in self.terms.values())))

    def forward(self, student_out: Any, labels: torch.Tensor, teacher_out: Any = None,
                attention_mask: torch.Tensor | None = None, *, student_qkv: Any = None,
                teacher_qkv: Any = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Return the weighted total and each term's unweighted value (for logging)."""
        teachers = None if teacher_out is None else [teacher_out]
        target = None if teacher_out is None else teacher_out.logits
        return self.weighted_sum(student_out, labels, teachers, attention_mask, student_qkv, [teacher_qkv], target,
                                 None)

    def loss(self, student_out: Any, labels: torch.Tensor, teacher_outs: Sequence[Any] | None,
             attention_mask: torch.Tensor | None = None, *, student_qkv: Any = None,
             teacher_qkv: Sequence[Any] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        if teacher_outs and len(teacher_outs) != 1:
            raise ConfigError(f"{len(teacher_outs)} teacher outputs for an objective of 1 teacher",
                              "build a distill.objective.ensemble.MultiTeacherObjective with one Objective per teacher")
        one = teacher_outs[0] if teacher_outs else None
        return self(student_out, labels, one, attention_mask, student_qkv=student_qkv,
                    teacher_qkv=teacher_qkv[0] if teacher_qkv is not None and one is not None else None)

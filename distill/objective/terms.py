"""Loss terms as registered objects: each term is one class in ``LOSS_TERMS`` that says what it reads, when a
student/teacher pair supports it, and how it is weighted, so ``Objective`` is a loop over the enabled terms.

A term is an ``nn.Module`` (it owns its learned projections, which train with the student and are dropped after).
It declares:

- ``name`` (its key in the logged loss terms) and ``weight_field``, the ``DistillConfig`` field holding its weight;
- what it needs from the models: ``needs_hidden_states``, ``needs_attentions`` (eager attention maps),
  ``needs_qkv`` (query/key/value captured at ``DistillConfig.relation_layer``) and ``teacher_layers()``, the teacher
  ``hidden_states`` indices it reads (what a teacher cache must hold);
- ``supported(student_config, teacher_config, same_tokenizer, token)``: None, or why the pair cannot use it;
- ``compute(inputs)``: its unweighted value (a scalar tensor) on one batch; ``weight(config, scale)`` is the factor
  the objective multiplies it by, and calling the term gives the weighted value.

Output terms (``per_teacher = False``: ce, kd) score the logits once, through the task kind's output loss
(``distill.objective.objective.OUTPUT_LOSSES``); feature terms (hidden, embedding, cosine, attention, relation) are
computed once per teacher, each teacher with its own projections. Adding a term: one class here, registered with
``@term``, a ``<name>_weight`` field in ``DistillConfig``, and its tests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
from torch import nn

from distill.core.errors import ConfigError
from distill.core.families import supports_qkv
from distill.core.registry import Registry
from distill.objective.capture import QKV
from distill.objective.config import flag
from distill.objective.losses import (
    LOSSES,
    attention_relation_kl,
    embedding_mse,
    hidden_cosine,
    hidden_mse,
)

if TYPE_CHECKING:
    from distill.objective.config import DistillConfig

DIFFERENT_TOKENIZERS = "student and teacher use different tokenizers, so their tokens do not line up"
TOKEN_KD_NEEDS_ONE_TOKENIZER = ("token classification scores one distribution per word piece, and the two "
                                "tokenizers split words into different pieces")


class OutputLoss(Protocol):
    """How a task kind scores the student's logits (``distill.objective.objective.OUTPUT_LOSSES``)."""

    def hard(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Against the gold labels."""

    def soft(self, logits: torch.Tensor, target: torch.Tensor, labels: torch.Tensor,
             temperature: float) -> torch.Tensor:
        """Against the teacher's logits ``target`` (the same shape as ``logits``)."""


@dataclass(frozen=True)
class PairShape:
    """What terms know about a student/teacher pair when they are built: widths (hidden sizes), the 1-based
    ``hidden_states`` layer map (student i ↔ teacher j) and the student's attention heads."""

    student_width: int = 0
    teacher_width: int = 0
    layer_map: tuple[tuple[int, int], ...] = ()
    student_heads: int = 0


@dataclass(frozen=True)
class Scale:
    """The schedules at the current training progress: α, the temperature T and the feature scale s."""

    alpha: float
    temperature: float
    features: float


@dataclass
class TermInputs:
    """One batch as a term sees it, for one teacher.

    ``student``/``teacher`` are model outputs (``logits`` (B, C), (B, 1) or (B, L, C); ``hidden_states``, a tuple of
    layers + 1 tensors (B, L, D); ``attentions``, one (B, H, L, L) per layer); ``mask`` is the attention mask (B, L);
    ``*_qkv`` map query/key/value to (B, L, D); ``target`` is the soft target's logits (the teacher's, or the
    ensemble of several teachers'), ``output`` the task kind's output loss.
    """

    student: Any
    labels: torch.Tensor
    teacher: Any = None
    mask: torch.Tensor | None = None
    student_qkv: Mapping[str, torch.Tensor] | None = None
    teacher_qkv: Mapping[str, torch.Tensor] | None = None
    target: torch.Tensor | None = None
    output: OutputLoss | None = None
    temperature: float = 1.0

    def for_teacher(self, teacher: Any, teacher_qkv: Mapping[str, torch.Tensor] | None) -> TermInputs:
        return replace(self, teacher=teacher, teacher_qkv=teacher_qkv)


class LossTerm(nn.Module):
    """One loss term: see the module docstring. Subclasses set the class attributes and ``compute``."""

    name: ClassVar[str]
    weight_field: ClassVar[str]
    per_teacher: ClassVar[bool] = True
    needs_teacher: ClassVar[bool] = True
    needs_hidden_states: ClassVar[bool] = False
    needs_attentions: ClassVar[bool] = False
    needs_qkv: ClassVar[bool] = False
    config_field: ClassVar[str | None] = "hidden_size"  # what both models' configs must have for this term

    def __init__(self, config: DistillConfig, pair: PairShape) -> None:
        super().__init__()
        self.config = config

    @classmethod
    def enabled(cls, config: DistillConfig, pair: PairShape) -> bool:
        """Whether an objective with these settings computes the term (feature terms: weight > 0)."""
        return getattr(config, cls.weight_field) > 0

    @classmethod
    def weight(cls, config: DistillConfig, scale: Scale) -> float:
        """The term's factor in the total: its weight times the feature scale s."""
        return getattr(config, cls.weight_field) * scale.features

    def teacher_layers(self) -> set[int]:
        """The teacher ``hidden_states`` indices the term reads (-1 = the last layer)."""
        return set()

    @classmethod
    def supported(cls, student_config: Any, teacher_config: Any, same_tokenizer: bool,
                  token: bool = False) -> str | None:
        """None if the pair can use the term, else the reason. Feature terms need tokens that line up."""
        if not same_tokenizer:
            return DIFFERENT_TOKENIZERS
        reason = None
        for who, cfg in (("student", student_config), ("teacher", teacher_config)):
            if cls.config_field and not getattr(cfg, cls.config_field, None):
                reason = f"the {who} config has no {cls.config_field}"
        return reason

    @classmethod
    def turn_off(cls, config: DistillConfig, reason: str) -> tuple[dict[str, Any], str] | None:
        """The ``DistillConfig`` changes that turn the term off and the note saying why (None: already off)."""
        if getattr(config, cls.weight_field) > 0:
            return {cls.weight_field: 0.0}, f"{flag(cls.weight_field)} set to 0: {reason}"
        return None

    def compute(self, inputs: TermInputs) -> torch.Tensor:
        """The unweighted value on one batch (a scalar tensor)."""
        raise NotImplementedError

    def forward(self, inputs: TermInputs, scale: Scale) -> torch.Tensor:
        """The weighted value: ``weight(config, scale) · compute(inputs)``."""
        return self.weight(self.config, scale) * self.compute(inputs)


LOSS_TERMS: Registry[type[LossTerm]] = Registry("loss term")


def term(cls: type[LossTerm]) -> type[LossTerm]:
    """Register a ``LossTerm`` class under its ``name`` (the order of registration is the order of the total)."""
    LOSS_TERMS.register(cls.name, cls)
    return cls


def _projection(student_width: int, teacher_width: int) -> nn.Module:
    """A learned Linear(student → teacher width) when the widths differ, else Identity."""
    return nn.Linear(student_width, teacher_width) if student_width != teacher_width else nn.Identity()


# ---- output terms ------------------------------------------------------------------------------------------------

class _OutputTerm(LossTerm):
    per_teacher = False
    weight_field = "alpha"
    config_field = None

    @classmethod
    def enabled(cls, config: DistillConfig, pair: PairShape) -> bool:
        return True


@term
class HardLabels(_OutputTerm):
    """ce = the task kind's hard loss: mean cross-entropy over labelled rows (B, C) for classification (rows labelled
    -100 skipped), MSE to the label for regression (B, 1), mean per-token CE over labels ≠ -100 for token
    classification (B, L, C). Weight α; without a teacher the only term, at weight 1."""

    name = "ce"
    needs_teacher = False

    @classmethod
    def weight(cls, config: DistillConfig, scale: Scale) -> float:
        return scale.alpha

    @classmethod
    def supported(cls, student_config: Any, teacher_config: Any, same_tokenizer: bool,
                  token: bool = False) -> str | None:
        return None

    @classmethod
    def turn_off(cls, config: DistillConfig, reason: str) -> None:
        return None

    def compute(self, inputs: TermInputs) -> torch.Tensor:
        return inputs.output.hard(inputs.student.logits, inputs.labels)


@term
class SoftTargets(_OutputTerm):
    """kd = the task kind's soft loss against the teacher's logits z_t: T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)) averaged
    over the batch (B, C) for classification, MSE to the teacher's score (B, 1) for regression, per-token T²·KL
    over labelled positions (B, L, C) for token classification. Weight 1 − α."""

    name = "kd"

    @classmethod
    def weight(cls, config: DistillConfig, scale: Scale) -> float:
        return 1 - scale.alpha

    @classmethod
    def supported(cls, student_config: Any, teacher_config: Any, same_tokenizer: bool,
                  token: bool = False) -> str | None:
        """Needs the same number of outputs; token classification also needs word pieces that line up."""
        reason = None
        ns, nt = getattr(student_config, "num_labels", None), getattr(teacher_config, "num_labels", None)
        if ns != nt:
            reason = f"the student has {ns} outputs and the teacher {nt}"
        if not same_tokenizer and token:
            reason = TOKEN_KD_NEEDS_ONE_TOKENIZER
        return reason

    @classmethod
    def turn_off(cls, config: DistillConfig, reason: str) -> tuple[dict[str, Any], str] | None:
        if config.alpha < 1:
            return ({"alpha": 1.0, "alpha_schedule": "constant", "alpha_end": None},
                    f"--alpha set to 1 (no soft targets): {reason}")
        return None

    def compute(self, inputs: TermInputs) -> torch.Tensor:
        return inputs.output.soft(inputs.student.logits, inputs.target, inputs.labels, inputs.temperature)


# ---- feature terms -----------------------------------------------------------------------------------------------

@term
class HiddenStates(LossTerm):
    """hidden = Σ_(i,j) MSE(W_i·h_s[i], h_t[j]) over the layer map, each MSE averaged over every element of the real
    tokens; h_s[i] (B, L, D_s), h_t[j] (B, L, D_t), W_i a learned Linear(D_s → D_t) per mapped layer when the widths
    differ (the README's β term). Off without a layer map."""

    name = "hidden"
    weight_field = "hidden_weight"
    needs_hidden_states = True

    def __init__(self, config: DistillConfig, pair: PairShape) -> None:
        super().__init__(config, pair)
        self.layer_map = list(pair.layer_map)
        if pair.student_width != pair.teacher_width:
            self.projections = nn.ModuleList(nn.Linear(pair.student_width, pair.teacher_width) for _ in self.layer_map)
        else:
            self.projections = nn.ModuleList(nn.Identity() for _ in self.layer_map)

    @classmethod
    def enabled(cls, config: DistillConfig, pair: PairShape) -> bool:
        return config.hidden_weight > 0 and bool(pair.layer_map)

    def teacher_layers(self) -> set[int]:
        return {j for _, j in self.layer_map}

    def compute(self, inputs: TermInputs) -> torch.Tensor:
        hs, ht = inputs.student.hidden_states, inputs.teacher.hidden_states
        return sum(hidden_mse(proj(hs[i]), ht[j], inputs.mask)
                   for proj, (i, j) in zip(self.projections, self.layer_map, strict=True))


@term
class Embeddings(LossTerm):
    """embedding = MSE(W·h_s[0], h_t[0]) over the real tokens: TinyBERT's embedding-layer loss on
    ``hidden_states[0]`` (B, L, D_s) vs (B, L, D_t), W a learned Linear when the widths differ."""

    name = "embedding"
    weight_field = "embedding_weight"
    needs_hidden_states = True

    def __init__(self, config: DistillConfig, pair: PairShape) -> None:
        super().__init__(config, pair)
        self.projection = _projection(pair.student_width, pair.teacher_width)

    def teacher_layers(self) -> set[int]:
        return {0}

    def compute(self, inputs: TermInputs) -> torch.Tensor:
        return embedding_mse(self.projection(inputs.student.hidden_states[0]), inputs.teacher.hidden_states[0],
                             inputs.mask)


@term
class Cosine(LossTerm):
    """cosine = mean over real tokens of 1 − cos(W·h_s[-1], h_t[-1]): DistilBERT's loss on the last layers
    (B, L, D_s) vs (B, L, D_t), W a learned Linear when the widths differ."""

    name = "cosine"
    weight_field = "cosine_weight"
    needs_hidden_states = True

    def __init__(self, config: DistillConfig, pair: PairShape) -> None:
        super().__init__(config, pair)
        self.projection = _projection(pair.student_width, pair.teacher_width)

    def teacher_layers(self) -> set[int]:
        return {-1}

    def compute(self, inputs: TermInputs) -> torch.Tensor:
        return hidden_cosine(self.projection(inputs.student.hidden_states[-1]), inputs.teacher.hidden_states[-1],
                             inputs.mask)


@term
class Attention(LossTerm):
    """attention = Σ_(i,j) loss(A_s[i], A_t[j]) over the layer map (the last layers without one), on attention
    probabilities (B, H, L, L); loss is ``--attention-loss``: ``kl`` (MiniLM: Σ_k A_t·log(A_t/A_s) per query row) or
    ``mse`` (TinyBERT), mean over heads and real positions; head-means when the head counts differ."""

    name = "attention"
    weight_field = "attention_weight"
    needs_attentions = True
    config_field = "num_attention_heads"

    def __init__(self, config: DistillConfig, pair: PairShape) -> None:
        super().__init__(config, pair)
        # attentions[k] is layer k+1 of hidden_states
        self.pairs = [(i - 1, j - 1) for i, j in pair.layer_map] or [(-1, -1)]
        self.loss: Callable[..., torch.Tensor] = LOSSES.get(f"attention_{config.attention_loss}")

    def compute(self, inputs: TermInputs) -> torch.Tensor:
        sa, ta = _attentions(inputs.student, "student"), _attentions(inputs.teacher, "teacher")
        return sum(self.loss(sa[i], ta[j], inputs.mask) for i, j in self.pairs)


def _attentions(output: Any, who: str) -> Sequence[torch.Tensor]:
    attentions = getattr(output, "attentions", None)
    if not attentions:
        raise ConfigError(f"--attention-weight needs attention maps but the {who} returned none",
                          "run it with output_attentions=True and attn_implementation='eager'")
    return attentions


def relation_layers(config: DistillConfig) -> tuple[int, int]:
    """(student, teacher) 0-based encoder-layer indices whose Q/K/V the relation term reads: the student's last
    layer and ``relation_layer`` (1-based, negative from the end) of the teacher."""
    t = config.relation_layer
    return -1, t - 1 if t > 0 else t


@term
class Relations(LossTerm):
    """relation = Σ over X in Q, K, V of KL(R_t ‖ R_s), R = softmax(X_r X_rᵀ/√d_r) with X (B, L, D) re-split into R
    relation heads of d_r = D/R (MiniLMv2), between the student's last layer and the teacher's ``relation_layer``;
    summed over keys, mean over heads and real queries. R is ``--relation-heads`` (default: the student's heads)."""

    name = "relation"
    weight_field = "relation_weight"
    needs_qkv = True

    def __init__(self, config: DistillConfig, pair: PairShape) -> None:
        super().__init__(config, pair)
        self.heads = config.relation_heads or pair.student_heads
        if not self.heads:
            raise ConfigError("--relation-weight needs a relation head count", "set e.g. --relation-heads 4")
        for who, width in (("student", pair.student_width), ("teacher", pair.teacher_width)):
            if width and width % self.heads:
                raise ConfigError(f"--relation-heads {self.heads} does not divide the {who} width {width}",
                                  "pick a common divisor of both widths, e.g. the student's heads")

    @classmethod
    def supported(cls, student_config: Any, teacher_config: Any, same_tokenizer: bool,
                  token: bool = False) -> str | None:
        """Also needs separate query/key/value layers in both models."""
        reason = super().supported(student_config, teacher_config, same_tokenizer, token)
        if not same_tokenizer:
            return reason
        for who, cfg in (("student", student_config), ("teacher", teacher_config)):
            if not supports_qkv(cfg):
                reason = f"the {who} ({cfg.model_type}) has no separate query/key/value layers"
        return reason

    def compute(self, inputs: TermInputs) -> torch.Tensor:
        student_qkv, teacher_qkv = inputs.student_qkv, inputs.teacher_qkv
        if student_qkv is None or teacher_qkv is None:
            raise ConfigError("--relation-weight needs the query/key/value of both models",
                              "capture them with objective.capture.capture_qkv; pass student_qkv/teacher_qkv")
        r = self.heads
        for who, qkv in (("student", student_qkv), ("teacher", teacher_qkv)):
            if qkv["query"].shape[-1] % r:
                raise ConfigError(f"--relation-heads {r} does not divide the {who}'s query/key/value width "
                                  f"{qkv['query'].shape[-1]}", "pick a common divisor, e.g. the student's heads")
        return sum(attention_relation_kl(student_qkv[k], teacher_qkv[k], inputs.mask, r) for k in QKV)

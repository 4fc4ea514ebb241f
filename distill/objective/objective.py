"""The distillation objective: which loss terms, with which weights, between which layers.

``Objective`` is an ``nn.Module`` because it owns the learned projections used when student and teacher
widths differ; they train with the student and are dropped afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from distill.core.errors import ConfigError, UnknownNameError
from distill.objective.capture import QKV
from distill.objective.losses import (
    attention_kl,
    attention_mse,
    attention_relation_kl,
    embedding_mse,
    hard_label_ce,
    hidden_cosine,
    hidden_mse,
    logits_mse,
    soft_target_kl,
    token_ce,
    token_kl,
)
from distill.objective.schedules import SCHEDULES, scheduled

ATTENTION_LOSSES = {"kl": attention_kl, "mse": attention_mse}
# term name (as in Objective's logged terms) -> the DistillConfig field that turns it on
TERM_WEIGHTS = {"hidden": "hidden_weight", "embedding": "embedding_weight", "cosine": "cosine_weight",
                "attention": "attention_weight", "relation": "relation_weight"}


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


@dataclass
class DistillConfig:
    """Loss settings: ``alpha`` weighs hard labels against soft targets; ``hidden_weight`` is β.

    The other weights add TinyBERT attention/embedding, DistilBERT cosine and MiniLMv2 relation terms (0 = off).
    ``relation_layer`` is the teacher layer (1-based, negative from the end) whose Q/K/V the student's last layer
    learns; ``relation_heads`` defaults to the student's head count. Schedules run from the start value
    (``temperature``, ``alpha``, feature scale 1) to the ``*_end`` value over training.
    """

    temperature: float = 2.0
    alpha: float = 0.5
    hidden_weight: float = 0.1
    attention_weight: float = 0.0
    attention_loss: str = "kl"
    embedding_weight: float = 0.0
    cosine_weight: float = 0.0
    relation_weight: float = 0.0
    relation_heads: int | None = None
    relation_layer: int = -1
    temperature_schedule: str = "constant"
    temperature_end: float | None = None
    alpha_schedule: str = "constant"
    alpha_end: float | None = None
    feature_schedule: str = "constant"
    feature_scale_end: float | None = None

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ConfigError(f"--temperature {self.temperature} must be > 0", "use e.g. --temperature 2")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"--alpha {self.alpha} is outside [0, 1]", "use e.g. --alpha 0.5")
        for name in ("hidden_weight", *TERM_WEIGHTS.values()):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{_flag(name)} {getattr(self, name)} is negative", "use 0 to turn it off")
        if self.attention_loss not in ATTENTION_LOSSES:
            raise UnknownNameError("--attention-loss", self.attention_loss, ATTENTION_LOSSES)
        if self.relation_heads is not None and self.relation_heads < 1:
            raise ConfigError(f"--relation-heads {self.relation_heads} must be ≥ 1", "use e.g. --relation-heads 4")
        if self.relation_layer == 0:
            raise ConfigError("--relation-layer 0 is not a layer", "count from 1, or from the end with -1 (the last)")
        if self.temperature_end is not None and not self.temperature_end > 0:
            raise ConfigError(f"--temperature-end {self.temperature_end} must be > 0", "use e.g. --temperature-end 1")
        if self.alpha_end is not None and not 0.0 <= self.alpha_end <= 1.0:
            raise ConfigError(f"--alpha-end {self.alpha_end} is outside [0, 1]", "use e.g. --alpha-end 0.1")
        if self.feature_scale_end is not None and not self.feature_scale_end >= 0:
            raise ConfigError(f"--feature-scale-end {self.feature_scale_end} is negative", "use e.g. 0 to fade out")
        for schedule, end in (("temperature_schedule", "temperature_end"), ("alpha_schedule", "alpha_end"),
                              ("feature_schedule", "feature_scale_end")):
            name, end_value = getattr(self, schedule), getattr(self, end)
            if name not in SCHEDULES:
                raise UnknownNameError(_flag(schedule), name, SCHEDULES.names())
            if (name.lower() == "constant") != (end_value is None):
                raise ConfigError(f"{_flag(schedule)} {name} with {_flag(end)} {end_value} is contradictory",
                                  f"give both {_flag(schedule)} linear|cosine and {_flag(end)}, or neither")


def uniform_layer_map(n_student: int, n_teacher: int) -> list[tuple[int, int]]:
    """Pairs (student layer, teacher layer), 1-based into ``hidden_states``: student i ↔ teacher round(i·Lt/Ls).

    Index 0 (embeddings) is not mapped; the last student layer always meets the last teacher layer.
    """
    if n_student <= 0 or n_teacher <= 0:
        return []
    return [(i, max(1, round(i * n_teacher / n_student))) for i in range(1, n_student + 1)]


def _projection(enabled: bool, student_width: int, teacher_width: int) -> nn.Module:
    """A learned Linear(student → teacher width) when the term is on and the widths differ, else Identity."""
    return nn.Linear(student_width, teacher_width) if enabled and student_width != teacher_width else nn.Identity()


class Objective(nn.Module):
    """loss = α·CE(labels) + (1−α)·T²·KL(teacher ‖ student) + s·(β·Σ MSE(proj(h_s[i]), h_t[map(i)]) + extra terms).

    Extra terms, each weighted by its ``DistillConfig`` weight: attention KL/MSE over the mapped layers, embedding
    MSE, last-layer cosine and MiniLMv2 Q/K/V relations; α, T and the feature scale s follow their schedules
    (``set_progress``). For regression (one output) CE becomes MSE to the label and KL becomes MSE to the teacher's
    score. With no teacher (fine-tuning) only the label term is used, at full weight. Token classification
    (logits of shape (B, L, C)) uses per-token CE and KL over the labelled positions (labels ≠ -100); the feature
    terms keep using the attention mask.
    """

    def __init__(self, config: DistillConfig, *, regression: bool = False, student_width: int = 0,
                 teacher_width: int = 0, layer_map: list[tuple[int, int]] | None = None,
                 student_heads: int = 0) -> None:
        super().__init__()
        self.config = config
        self.regression = regression
        given = list(layer_map or [])
        self.layer_map = given if config.hidden_weight > 0 else []
        if self.layer_map and student_width != teacher_width:
            self.projections = nn.ModuleList(nn.Linear(student_width, teacher_width) for _ in self.layer_map)
        else:
            self.projections = nn.ModuleList(nn.Identity() for _ in self.layer_map)
        # attentions[k] is layer k+1 of hidden_states; without a map only the last layers meet
        self.attention_map = ([(i - 1, j - 1) for i, j in given] or [(-1, -1)]) if config.attention_weight > 0 else []
        self.embedding_projection = _projection(config.embedding_weight > 0, student_width, teacher_width)
        self.cosine_projection = _projection(config.cosine_weight > 0, student_width, teacher_width)
        self.relation_heads = 0
        if config.relation_weight > 0:
            self.relation_heads = config.relation_heads or student_heads
            if not self.relation_heads:
                raise ConfigError("--relation-weight needs a relation head count", "set e.g. --relation-heads 4")
            for who, width in (("student", student_width), ("teacher", teacher_width)):
                if width and width % self.relation_heads:
                    raise ConfigError(f"--relation-heads {self.relation_heads} does not divide the {who} width "
                                      f"{width}", "pick a common divisor of both widths, e.g. the student's heads")
        self.progress = 0.0

    @property
    def needs_hidden_states(self) -> bool:
        c = self.config
        return bool(self.layer_map) or c.embedding_weight > 0 or c.cosine_weight > 0

    @property
    def needs_attentions(self) -> bool:
        """Attention probabilities are needed: run both models with ``output_attentions=True`` (eager attention)."""
        return bool(self.attention_map)

    @property
    def needs_qkv(self) -> bool:
        """Q/K/V are needed: capture them with ``capture_qkv`` at ``qkv_layers`` and pass them to ``forward``."""
        return self.relation_heads > 0

    @property
    def qkv_layers(self) -> tuple[int, int]:
        """(student, teacher) 0-based encoder-layer indices for ``capture_qkv``: the student's last layer."""
        t = self.config.relation_layer
        return -1, t - 1 if t > 0 else t

    def set_progress(self, progress: float) -> None:
        """Training progress in [0, 1] (step / total steps) that drives the schedules."""
        self.progress = min(max(float(progress), 0.0), 1.0)

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

    def forward(self, student_out, labels: torch.Tensor, teacher_out=None,
                attention_mask: torch.Tensor | None = None, *, student_qkv: Mapping[str, torch.Tensor] | None = None,
                teacher_qkv: Mapping[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Return the weighted total and each term's unweighted value (for logging)."""
        teacher_logits = teacher_out.logits if teacher_out is not None else None
        total, terms = self.label_terms(student_out.logits, labels, teacher_logits)
        if teacher_out is None:
            return total, {k: float(v.detach()) for k, v in terms.items()}
        extra = self.feature_terms(student_out, teacher_out, attention_mask, student_qkv=student_qkv,
                                   teacher_qkv=teacher_qkv)
        scale = self.feature_scale
        for name, value in extra.items():
            terms[name] = value
            total = total + getattr(self.config, TERM_WEIGHTS[name]) * scale * value
        return total, {k: float(v.detach()) for k, v in terms.items()}

    def label_terms(self, logits: torch.Tensor, labels: torch.Tensor,
                    teacher_logits: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """α·hard + (1−α)·soft (just the hard term without teacher logits) and the terms {ce, kd} as tensors."""
        token = logits.dim() == 3  # token classification: one distribution per word piece
        if token:
            hard = token_ce(logits, labels)
        else:
            hard = logits_mse(logits, labels) if self.regression else hard_label_ce(logits, labels)
        if teacher_logits is None:
            return hard, {"ce": hard}
        if token:
            soft = token_kl(logits, teacher_logits, labels != -100, self.temperature)
        elif self.regression:
            soft = logits_mse(logits, teacher_logits)
        else:
            soft = soft_target_kl(logits, teacher_logits, self.temperature)
        a = self.alpha
        return a * hard + (1 - a) * soft, {"ce": hard, "kd": soft}

    def feature_terms(self, student_out, teacher_out, attention_mask: torch.Tensor | None = None, *,
                      student_qkv: Mapping[str, torch.Tensor] | None = None,
                      teacher_qkv: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The unweighted feature terms (hidden, embedding, cosine, attention, relation) that are turned on."""
        c = self.config
        extra: dict[str, torch.Tensor] = {}
        if self.layer_map:
            hs, ht = student_out.hidden_states, teacher_out.hidden_states
            extra["hidden"] = sum(hidden_mse(proj(hs[i]), ht[j], attention_mask)
                                  for proj, (i, j) in zip(self.projections, self.layer_map, strict=True))
        if c.embedding_weight > 0:
            extra["embedding"] = embedding_mse(self.embedding_projection(student_out.hidden_states[0]),
                                               teacher_out.hidden_states[0], attention_mask)
        if c.cosine_weight > 0:
            extra["cosine"] = hidden_cosine(self.cosine_projection(student_out.hidden_states[-1]),
                                            teacher_out.hidden_states[-1], attention_mask)
        if self.attention_map:
            sa, ta = _attentions(student_out, "student"), _attentions(teacher_out, "teacher")
            loss = ATTENTION_LOSSES[c.attention_loss]
            extra["attention"] = sum(loss(sa[i], ta[j], attention_mask) for i, j in self.attention_map)
        if self.relation_heads:
            extra["relation"] = self._relation(student_qkv, teacher_qkv, attention_mask)
        return extra

    def weigh_features(self, extra: Mapping[str, torch.Tensor]) -> torch.Tensor | float:
        """Σ weight · feature scale · term over the feature terms (0 when there are none)."""
        scale = self.feature_scale
        return sum((getattr(self.config, TERM_WEIGHTS[name]) * scale * value for name, value in extra.items()), 0.0)

    def _relation(self, student_qkv, teacher_qkv, mask) -> torch.Tensor:
        """Σ over Q, K, V of the MiniLMv2 relation KL at ``relation_heads`` relation heads."""
        if student_qkv is None or teacher_qkv is None:
            raise ConfigError("--relation-weight needs the query/key/value of both models",
                              "capture them with objective.capture.capture_qkv; pass student_qkv/teacher_qkv")
        r = self.relation_heads
        for who, qkv in (("student", student_qkv), ("teacher", teacher_qkv)):
            if qkv["query"].shape[-1] % r:
                raise ConfigError(f"--relation-heads {r} does not divide the {who}'s query/key/value width "
                                  f"{qkv['query'].shape[-1]}", "pick a common divisor, e.g. the student's heads")
        return sum(attention_relation_kl(student_qkv[k], teacher_qkv[k], mask, r) for k in QKV)


def _attentions(output, who: str) -> Sequence[torch.Tensor]:
    attentions = getattr(output, "attentions", None)
    if not attentions:
        raise ConfigError(f"--attention-weight needs attention maps but the {who} returned none",
                          "run it with output_attentions=True and attn_implementation='eager'")
    return attentions



# ---- which terms a student/teacher pair supports ---------------------------------------------------------------

_FUSED_QKV = {"gpt2", "gpt_neox", "bloom", "falcon", "albert"}


DIFFERENT_TOKENIZERS = "student and teacher use different tokenizers, so their tokens do not line up"
TOKEN_KD_NEEDS_ONE_TOKENIZER = ("token classification scores one distribution per word piece, and the two "
                                "tokenizers split words into different pieces")


def supported_losses(student_config, teacher_config, same_tokenizer: bool, *,
                     token: bool = False) -> dict[str, str | None]:
    """For each term (ce, kd, hidden, embedding, cosine, attention, relation): None if usable, else the reason.

    With different tokenizers only sequence-level terms remain: ce, and kd for sequence classification
    (``token=False``); every per-token term (and token-level kd) is unsupported.
    """
    support: dict[str, str | None] = {"ce": None, "kd": None, **dict.fromkeys(TERM_WEIGHTS)}
    ns, nt = getattr(student_config, "num_labels", None), getattr(teacher_config, "num_labels", None)
    if ns != nt:
        support["kd"] = f"the student has {ns} outputs and the teacher {nt}"
    if not same_tokenizer:
        if token:
            support["kd"] = TOKEN_KD_NEEDS_ONE_TOKENIZER
        return {**support, **dict.fromkeys(TERM_WEIGHTS, DIFFERENT_TOKENIZERS)}
    for term, field in (("hidden", "hidden_size"), ("embedding", "hidden_size"), ("cosine", "hidden_size"),
                        ("attention", "num_attention_heads"), ("relation", "hidden_size")):
        for who, cfg in (("student", student_config), ("teacher", teacher_config)):
            if not getattr(cfg, field, None):
                support[term] = f"the {who} config has no {field}"
    for who, cfg in (("student", student_config), ("teacher", teacher_config)):
        if getattr(cfg, "model_type", None) in _FUSED_QKV:
            support["relation"] = f"the {who} ({cfg.model_type}) has no separate query/key/value layers"
    return support


def disable_unsupported(config: DistillConfig, support: Mapping[str, str | None]) -> tuple[DistillConfig, list[str]]:
    """``config`` with every unsupported but enabled term turned off, and one message per term turned off."""
    changes: dict[str, object] = {}
    messages: list[str] = []
    if support.get("kd") and config.alpha < 1:
        changes.update(alpha=1.0, alpha_schedule="constant", alpha_end=None)
        messages.append(f"--alpha set to 1 (no soft targets): {support['kd']}")
    for term, field in TERM_WEIGHTS.items():
        if support.get(term) and getattr(config, field) > 0:
            changes[field] = 0.0
            messages.append(f"{_flag(field)} set to 0: {support[term]}")
    return (replace(config, **changes) if changes else config), messages

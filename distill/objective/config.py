"""``DistillConfig``: the loss settings (the ``distill`` section of a run's settings), checked on construction.

Each field's ``metadata["help"]`` is its command-line help, so flags can be generated from the fields. This module
imports no torch: building ``--help`` from it stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from distill.core.errors import ConfigError, UnknownNameError
from distill.objective.schedules import SCHEDULES

ATTENTION_LOSS_CHOICES = ("kl", "mse")  # the attention term's losses: losses.attention_kl, losses.attention_mse
GENERAL_TERMS = ("hidden", "attention", "relation", "embedding")  # feature terms general distillation may use


def flag(name: str) -> str:
    """The command-line flag of a field: ``hidden_weight`` -> ``--hidden-weight``."""
    return "--" + name.replace("_", "-")


def _help(text: str, **extra) -> dict:
    return {"help": text, **extra}


@dataclass
class DistillConfig:
    """Loss settings: ``alpha`` weighs hard labels against soft targets; ``hidden_weight`` is β.

    The other weights add TinyBERT attention/embedding, DistilBERT cosine and MiniLMv2 relation terms (0 = off).
    ``relation_layer`` is the teacher layer (1-based, negative from the end) whose Q/K/V the student's last layer
    learns; ``relation_heads`` defaults to the student's head count. Schedules run from the start value
    (``temperature``, ``alpha``, feature scale 1) to the ``*_end`` value over training. Every ``*_weight`` field is
    a loss term's weight (``distill.objective.terms``), checked to be ≥ 0.
    """

    temperature: float = field(default=2.0, metadata=_help("softmax temperature T (2.0)"))
    alpha: float = field(default=0.5, metadata=_help("weight of hard-label CE; 1-alpha weighs T²·KL (0.5)"))
    hidden_weight: float = field(default=0.1, metadata=_help("β, weight of hidden-state MSE (0.1; 0 = off)"))
    attention_weight: float = field(default=0.0, metadata=_help("weight of the attention-map loss (TinyBERT)"))
    attention_loss: str = field(default="kl", metadata=_help("attention-map loss (kl)",
                                                             choices=ATTENTION_LOSS_CHOICES))
    embedding_weight: float = field(default=0.0, metadata=_help("weight of the embedding-layer MSE"))
    cosine_weight: float = field(default=0.0, metadata=_help("weight of the hidden-state cosine loss"))
    relation_weight: float = field(default=0.0, metadata=_help(
        "weight of the MiniLMv2 Q-Q/K-K/V-V self-attention relation loss"))
    relation_heads: int | None = field(default=None, metadata=_help(
        "relation heads (default: the student's head count)"))
    relation_layer: int = field(default=-1, metadata=_help("teacher layer for relations (1-based; -1 = last)"))
    temperature_schedule: str = field(default="constant", metadata=_help(
        "schedule of the temperature (weight) over training (constant)"))
    temperature_end: float | None = field(default=None, metadata=_help("final value for --temperature-schedule"))
    alpha_schedule: str = field(default="constant", metadata=_help(
        "schedule of the alpha (weight) over training (constant)"))
    alpha_end: float | None = field(default=None, metadata=_help("final value for --alpha-schedule"))
    feature_schedule: str = field(default="constant", metadata=_help(
        "schedule of the feature (weight) over training (constant)"))
    feature_scale_end: float | None = field(default=None, metadata=_help("final value for --feature-schedule"))

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ConfigError(f"--temperature {self.temperature} must be > 0", "use e.g. --temperature 2")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"--alpha {self.alpha} is outside [0, 1]", "use e.g. --alpha 0.5")
        for name in weight_fields():
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{flag(name)} {getattr(self, name)} is negative", "use 0 to turn it off")
        if self.attention_loss not in ATTENTION_LOSS_CHOICES:
            raise UnknownNameError("--attention-loss", self.attention_loss, ATTENTION_LOSS_CHOICES)
        if self.relation_heads is not None and self.relation_heads < 1:
            raise ConfigError(f"--relation-heads {self.relation_heads} must be ≥ 1", "use e.g. --relation-heads 4")
        if self.relation_layer == 0:
            raise ConfigError("--relation-layer 0 is not a layer", "count from 1, or from the end with -1 (the last)")
        self._check_schedules()

    def _check_schedules(self) -> None:
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
                raise UnknownNameError(flag(schedule), name, SCHEDULES.names())
            if (name.lower() == "constant") != (end_value is None):
                raise ConfigError(f"{flag(schedule)} {name} with {flag(end)} {end_value} is contradictory",
                                  f"give both {flag(schedule)} linear|cosine and {flag(end)}, or neither")


def weight_fields() -> list[str]:
    """The ``*_weight`` fields: one per feature loss term, 0 = off."""
    return [f.name for f in fields(DistillConfig) if f.name.endswith("_weight")]

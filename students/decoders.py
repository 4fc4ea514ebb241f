"""Decoder (causal LM) students: shapes relative to the teacher, built in the teacher's own family and initialised
from it by keeping teacher layers (evenly spread, or those with the highest measured block influence) and pruning
widths by activation importance on calibration text (Minitron style). The student is a copy of the teacher cut
by ``distill.core.families.decoder_cut``: same tokenizer, vocabulary, rotary/positions, tied embeddings (still one
tensor), and a config that plain ``AutoModelForCausalLM.from_pretrained`` rebuilds with identical logits.

Shapes (``--student``):

- ``half`` / ``third`` / ``quarter``: that fraction of the teacher's layers, widths kept.
- ``half-width``: half the query heads (the nearest count that groups evenly over K/V heads), half the FFN and
  half the hidden width (GPT-2: heads x head size, so the hidden width follows the heads).
- presets joined by ``+`` multiply: ``half+half-width`` is half the layers at half the width.
- explicit: ``layers=10,hidden=288,heads=6,kv_heads=2,ffn=768`` (keys left out keep the teacher's width).

Init (``--student-init``): ``teacher`` (default: teacher layers and pruned widths), or ``random`` (the same
config, fresh weights). Layer selection: ``uniform`` (first and last included), ``importance`` (block influence
1 - cos(in, out) on the calibration text) or a list of teacher layers.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from distill.core.errors import ConfigError
from distill.core.families import family_of
from distill.core.families.decoder_cut import cut_decoder
from distill.core.families.decoder_importance import (
    LAYER_SELECTIONS,
    DecoderTarget,
    gqa_shape,
    keep_for,
    measure_importance,
)

if TYPE_CHECKING:
    from torch import nn

# preset -> (fraction of layers, fraction of widths)
DECODER_PRESETS = {"half": (0.5, 1.0), "third": (1 / 3, 1.0), "quarter": (0.25, 1.0), "half-width": (1.0, 0.5)}
SHAPE_KEYS = ("layers", "hidden", "heads", "kv_heads", "ffn")
INITS = ("teacher", "random")


def is_decoder_student(spec: str) -> bool:
    """True when ``spec`` names a decoder shape (presets, ``+`` combinations or ``key=value`` shapes)."""
    text = str(spec).strip()
    return "=" in text or all(part in DECODER_PRESETS for part in text.split("+"))


def _round_width(width: int, fraction: float) -> int:
    """``width x fraction``, a multiple of 8 when the width is one (kernels like it), at least 1."""
    if fraction == 1.0:
        return width
    step = 8 if width % 8 == 0 and width * fraction >= 8 else 1
    return max(1, round(width * fraction / step) * step)


def student_target(spec: str, teacher_config: Any, layer_selection: str | list[int] = "uniform") -> DecoderTarget:
    """The shape ``spec`` asks of a student of ``teacher_config``; ConfigError naming the presets otherwise."""
    family = family_of(teacher_config, "a decoder student")
    w = family.widths(teacher_config)
    text = str(spec).strip()
    if "=" in text:
        return _explicit(text, w, layer_selection)
    depth = width = 1.0
    for part in text.split("+"):
        if part not in DECODER_PRESETS:
            raise ConfigError(f"unknown decoder student '{spec}'",
                              f"use {', '.join(DECODER_PRESETS)} (joined by +) or layers=..,hidden=..,heads=..,"
                              "kv_heads=..,ffn=..")
        d, f = DECODER_PRESETS[part]
        depth, width = depth * d, width * f
    layers = max(1, round(w.layers * depth))
    heads, kv = gqa_shape(w.heads, w.kv_heads, max(1, round(w.heads * width))) if family.kv_heads_key \
        else (max(1, round(w.heads * width)), None)
    hidden = heads * w.head_dim if family.head_dim_key is None else _round_width(w.hidden, width)
    return DecoderTarget(layers=layers, hidden=hidden, heads=heads, kv_heads=kv, ffn=_round_width(w.ffn, width),
                         layer_selection=layer_selection)


def _explicit(text: str, w: Any, layer_selection: str | list[int]) -> DecoderTarget:
    values: dict[str, int] = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if key not in SHAPE_KEYS or not value.strip().isdigit() or int(value) < 1:
            raise ConfigError(f"decoder student shape '{text}': '{item.strip()}' is not key=positive integer",
                              f"use keys {', '.join(SHAPE_KEYS)}, e.g. layers=10,hidden=288,ffn=768")
        values[key] = int(value)
    limits = {"layers": w.layers, "hidden": w.hidden, "heads": w.heads, "kv_heads": w.kv_heads, "ffn": w.ffn}
    for key, value in values.items():
        if value > limits[key]:
            raise ConfigError(f"decoder student {key}={value} is above the teacher's {limits[key]}",
                              "a student initialised from the teacher can only be narrower or shallower")
    return DecoderTarget(layer_selection=layer_selection, **values)


def parse_layer_selection(text: str | list[int]) -> str | list[int]:
    """``uniform``, ``importance`` or teacher layers (``"0,4,9"`` or a list)."""
    if isinstance(text, (list, tuple)):
        return [int(i) for i in text]
    text = str(text).strip()
    if text in LAYER_SELECTIONS:
        return text
    items = [p.strip() for p in text.split(",") if p.strip()]
    if not items or not all(p.isdigit() for p in items):
        raise ConfigError(f"layer selection '{text}' is not a strategy or a list of layers",
                          f"use {', '.join(LAYER_SELECTIONS)} or 0-based teacher layers, e.g. 0,4,9")
    return [int(p) for p in items]


@dataclass
class DecoderStudentReport:
    """How the student was made: shapes, layers kept, parameters, what the importance read."""

    spec: str
    init: str
    layer_selection: str | list[int]
    teacher: dict = field(default_factory=dict)
    student: dict = field(default_factory=dict)
    kept_layers: list[int] = field(default_factory=list)
    params_teacher: int = 0
    params_student: int = 0
    calibration_tokens: int = 0
    block_importance: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def build_decoder_student(
    teacher: nn.Module, spec: str, *, init: str = "teacher", layer_selection: str | list[int] = "uniform",
    calibration: Iterable[dict[str, Any]] | None = None,
) -> tuple[nn.Module, DecoderStudentReport]:
    """A student of ``teacher`` shaped by ``spec`` (the teacher is left as it was) and how it was made.

    ``calibration``: batches (``input_ids``, ``attention_mask``) for importance, needed by width cuts and by
    ``layer_selection="importance"`` (a uniform depth cut needs none).
    """
    if init not in INITS:
        raise ConfigError(f"unknown student init '{init}'", f"use one of {', '.join(INITS)}")
    family = family_of(teacher, "a decoder student")
    selection = parse_layer_selection(layer_selection)
    target = student_target(spec, teacher.config, selection)
    student = copy.deepcopy(teacher)
    keep = keep_for(student, target, None, family) if not _needs_scores(teacher, target) else None
    imp = None
    if keep is None and init == "random" and calibration is None:  # any channels do: the weights are redrawn
        import torch

        calibration = [{"input_ids": torch.zeros(1, 1, dtype=torch.long)}]
        target.layer_selection = selection if not isinstance(selection, str) else "uniform"
    if keep is None:
        if calibration is None:
            raise ConfigError(f"student '{spec}' with layer selection '{layer_selection}' needs calibration text",
                              "give calibration batches, or a depth-only student with uniform layers")
        imp = measure_importance(teacher, calibration, family)
        keep = keep_for(student, target, imp, family)
    cut_decoder(student, keep, family)
    if init == "random":
        student = _fresh(student)
    report = DecoderStudentReport(
        spec=spec, init=init, layer_selection=selection, teacher=asdict(family.widths(teacher.config)),
        student=asdict(family.widths(student.config)), params_teacher=_params(teacher), params_student=_params(student),
        kept_layers=keep.layers if keep.layers is not None else list(range(family.widths(teacher.config).layers)),
        calibration_tokens=imp.tokens if imp is not None else 0,
        block_importance=[round(float(x), 6) for x in imp.blocks] if imp is not None else [])
    return student.eval(), report


def _needs_scores(teacher: nn.Module, target: DecoderTarget) -> bool:
    w = family_of(teacher).widths(teacher.config)
    widths = ((target.hidden, w.hidden), (target.heads, w.heads), (target.kv_heads, w.kv_heads), (target.ffn, w.ffn))
    return target.layer_selection == "importance" or any(t not in (None, now) for t, now in widths)


def _fresh(model: nn.Module) -> nn.Module:
    """A randomly initialised model of ``model``'s (cut) config and class."""
    config = copy.deepcopy(model.config)
    return type(model)(config)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())

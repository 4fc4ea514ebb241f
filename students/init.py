"""Initialise a student from its teacher: embeddings plus every k-th encoder layer, when widths match."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from distill.core.errors import ConfigError

INIT_CHOICES = ("auto", "random", "teacher-layers")


@dataclass
class InitReport:
    """Which teacher layers were copied into which student layers (empty for random init)."""

    strategy: str
    layer_pairs: list[tuple[int, int]] = field(default_factory=list)
    copied_embeddings: bool = False


def select_layers(n_student: int, n_teacher: int) -> list[int]:
    """0-based teacher layers for each student layer: every k-th, ending at the teacher's last layer."""
    return [max(0, round((i + 1) * n_teacher / n_student) - 1) for i in range(n_student)]


def _encoder(model):
    base = getattr(model, model.base_model_prefix, model)
    encoder = getattr(base, "encoder", None)
    return base, getattr(encoder, "layer", None)


def _same_shapes(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape for k in sa)


def widths_match(student, teacher) -> bool:
    """True when a teacher layer can be loaded into a student layer as is."""
    _, s_layers = _encoder(student)
    _, t_layers = _encoder(teacher)
    return bool(s_layers) and bool(t_layers) and _same_shapes(s_layers[0], t_layers[0])


def init_from_teacher(student, teacher, strategy: str = "auto") -> InitReport:
    """Copy embeddings and selected layers (``teacher-layers``), or keep random weights (``random``).

    ``auto`` copies when the widths match and keeps the random init otherwise.
    """
    if strategy not in INIT_CHOICES:
        raise ConfigError(f"unknown --init '{strategy}'", f"choose one of: {', '.join(INIT_CHOICES)}")
    if strategy == "random" or (strategy == "auto" and not widths_match(student, teacher)):
        return InitReport("random")
    if not widths_match(student, teacher):
        raise ConfigError("--init teacher-layers needs the student's hidden size, heads and FFN width to equal "
                          "the teacher's", "use --init random, or a student of the teacher's width")
    s_base, s_layers = _encoder(student)
    t_base, t_layers = _encoder(teacher)
    pairs = list(enumerate(select_layers(len(s_layers), len(t_layers))))
    with torch.no_grad():
        for s, t in pairs:
            s_layers[s].load_state_dict(t_layers[t].state_dict())
        copied = _copy_embeddings(s_base.embeddings, t_base.embeddings)
    return InitReport("teacher-layers", pairs, copied)


def _copy_embeddings(student_emb, teacher_emb) -> bool:
    """Copy every embedding tensor whose shape matches (position tables may be shorter in the student)."""
    t_state = teacher_emb.state_dict()
    copied = False
    for name, tensor in student_emb.state_dict().items():
        src = t_state.get(name)
        if src is None or src.ndim != tensor.ndim or src.shape[1:] != tensor.shape[1:]:
            continue
        n = min(src.shape[0], tensor.shape[0]) if src.ndim else None
        if src.ndim == 0:
            tensor.copy_(src)
        else:
            tensor[:n].copy_(src[:n])
        copied = True
    return copied

"""Students of the teacher's family: a preset's shape (layers / hidden / heads / FFN) as a config of the teacher's
own model type, so it reads the same token ids the same way (vocabulary, special ids, RoBERTa's offset positions,
DeBERTa's relative attention and buckets, ModernBERT's rotary positions and local/global layers) and can take the
teacher's layers (``--init teacher-layers``) or be cut from it (``teacher-pruned``).

Everything that is not a width is copied from the teacher's config; the widths go in through the family's keys
(``Family.set_widths``), plus what the family ties to them: ELECTRA/DeBERTa's embedding width, DeBERTa's pooler
width, ModernBERT's per-layer attention kinds (those of the teacher layers the student stands for).

A student of another family (``family="bert"``) gets a fresh config of that type with the teacher's vocabulary,
special ids and labels; only families that read any tokenizer's ids the same way are offered (``bert`` always;
``distilbert`` when the tokenizer writes no token type ids, which it cannot read).
"""

from __future__ import annotations

import copy
from typing import Any

from distill.core.errors import ConfigError, ModelError
from distill.core.families import FAMILIES, UNSUPPORTED, Family, family_of, find_family
from students.init import family_layers
from students.presets import PRESETS, StudentPreset

CROSS_FAMILIES = ("bert", "distilbert")  # families a student may take whatever the teacher's family
# copied into a student of another family: how the ids are read and what the head predicts
_SHARED_KEYS = ("vocab_size", "pad_token_id", "bos_token_id", "eos_token_id", "num_labels", "id2label", "label2id",
                "problem_type")
_NOT_INHERITED = {"architectures": None, "_name_or_path": "", "dtype": None, "_attn_implementation_internal": None}
_MAX_POSITIONS = 512  # a position table for a teacher without one (rotary, relative): the longest BERT input


def student_families(teacher_config: Any, tokenizer: Any = None) -> dict[str, str | None]:
    """Every family a preset student of this teacher may take: None where it can, else why not.

    The teacher's own family always can (when registered); ``bert`` reads any tokenizer's ids; ``distilbert``
    has no token types, so it needs a tokenizer that writes none (``tokenizer.model_input_names``).
    """
    own = teacher_config.model_type
    out: dict[str, str | None] = {}
    for name in sorted(FAMILIES.names()):
        if name == own:
            out[name] = None
        elif name not in CROSS_FAMILIES:
            out[name] = (f"a {name} student reads ids only from a {name} tokenizer; the teacher is {own} "
                         f"(choose {own} or {' / '.join(CROSS_FAMILIES)})")
        elif not FAMILIES.get(name).token_types and _writes_token_types(teacher_config, tokenizer):
            out[name] = f"{name} has no token types and the teacher's tokenizer writes them"
        else:
            out[name] = None
    return out


def _writes_token_types(teacher_config: Any, tokenizer: Any) -> bool:
    if tokenizer is not None:
        return "token_type_ids" in getattr(tokenizer, "model_input_names", ())
    family = find_family(teacher_config)
    return family is None or family.token_types


def family_student_config(preset: StudentPreset | str, teacher_config: Any, *, family: str | None = None,
                          layer_selection: str | list[int] = "uniform", tokenizer: Any = None) -> Any:
    """The config of a ``preset`` student of ``teacher_config`` in ``family`` (default: the teacher's own).

    ModelError naming the supported families when the family is unknown or cannot read the teacher's ids;
    ConfigError when the preset's heads do not divide its hidden width.
    """
    shape = PRESETS.get(preset) if isinstance(preset, str) else preset
    if shape.hidden % shape.heads:
        raise ConfigError(f"student hidden size {shape.hidden} is not divisible by {shape.heads} heads",
                          "pick a head count that divides the hidden width")
    teacher_family = find_family(teacher_config)
    name = family or teacher_config.model_type
    if teacher_family is None and teacher_config.model_type in UNSUPPORTED:
        family_of(teacher_config, "distilling a preset student")  # one line: why, and the supported families
    if teacher_family is None and family is None:
        name = "bert"  # an unregistered BERT-like teacher (CamemBERT, ...): a BERT student reads its ids
    target = family_of(_Named(name), "a student")
    reason = student_families(teacher_config, tokenizer).get(name) if teacher_family is not None else None
    if reason:
        raise ModelError(f"cannot build a {name} student of a {teacher_config.model_type} teacher: {reason}",
                         f"use --student-family {teacher_config.model_type} or bert")
    if teacher_family is not None and name == teacher_config.model_type:
        config = _same_family(target, shape, teacher_config, layer_selection)
    else:
        config = _other_family(target, teacher_config, tokenizer)
        target.set_widths(config, layers=shape.layers, hidden=shape.hidden, heads=shape.heads, ffn=shape.ffn)
    return config


class _Named:
    """A stand-in config carrying only a model type, for ``family_of``'s one-line error."""

    def __init__(self, model_type: str) -> None:
        self.model_type = model_type


def _same_family(family: Family, shape: StudentPreset, teacher_config: Any,
                 layer_selection: str | list[int]) -> Any:
    """The teacher's config with the preset's widths: every other setting (positions, ids, labels) kept."""
    config = copy.deepcopy(teacher_config)
    teacher = family.widths(teacher_config)
    # not the student's: the teacher's class and source, a dtype it was loaded in (bf16 teachers would give a bf16
    # student: from_config builds in config.dtype) and an attention kernel set on it (the student picks its own)
    for key, value in _NOT_INHERITED.items():
        if hasattr(config, key):
            setattr(config, key, value)
    family.set_widths(config, layers=shape.layers, hidden=shape.hidden, heads=shape.heads, ffn=shape.ffn)
    if family.embedding_size_key is not None:
        width = getattr(teacher_config, family.embedding_size_key, None) or teacher.hidden
        # factorised (electra-small: 128 under 256) stays factorised, at most as wide as the student
        setattr(config, family.embedding_size_key, min(width, shape.hidden) if width < teacher.hidden else shape.hidden)
    types = getattr(teacher_config, family.layer_types_key, None) if family.layer_types_key else None
    if isinstance(types, (list, tuple)) and len(types) == teacher.layers:
        picked = family_layers(family, shape.layers, teacher.layers, layer_selection)
        setattr(config, family.layer_types_key, [types[i] for i in picked])
    return config


def _other_family(family: Family, teacher_config: Any, tokenizer: Any) -> Any:
    """A fresh config of ``family`` reading the teacher's ids: vocabulary, special ids, labels, positions."""
    from transformers import AutoConfig

    shared = {k: getattr(teacher_config, k) for k in _SHARED_KEYS if getattr(teacher_config, k, None) is not None}
    teacher_family = find_family(teacher_config)
    positions = getattr(teacher_config, "max_position_embeddings", None) or _MAX_POSITIONS
    if teacher_family is not None:
        positions -= teacher_family.position_offset
        if teacher_family.position_embeddings is None:  # rotary or relative: no table to match
            positions = min(positions, _MAX_POSITIONS)
    shared["max_position_embeddings"] = positions + family.position_offset
    if family.token_types:  # a pair's second segment is type 1 whatever the teacher's table holds
        shared["type_vocab_size"] = max(2, getattr(teacher_config, "type_vocab_size", 0) or 0)
    return AutoConfig.for_model(family.model_type, **shared)


def build_family_student(preset: StudentPreset | str, teacher_config: Any, *,
                         head: str = "ForSequenceClassification", family: str | None = None,
                         layer_selection: str | list[int] = "uniform", tokenizer: Any = None) -> Any:
    """A randomly initialised student of ``family_student_config``'s shape with ``AutoModel{head}``'s head
    (``ForTokenClassification`` for NER)."""
    import transformers

    config = family_student_config(preset, teacher_config, family=family, layer_selection=layer_selection,
                                   tokenizer=tokenizer)
    return getattr(transformers, "AutoModel" + head).from_config(config)

"""Build a BERT student that shares the teacher's tokenizer, vocabulary and task head (the task kind's head class)."""

from __future__ import annotations

from pathlib import Path

from distill.core.errors import ConfigError, ModelError
from distill.core.runtime import load_policy
from distill.data.kinds import SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION, TaskKind, get_kind
from students.presets import PRESETS, StudentPreset

# Settings copied from the teacher so the student reads the same token ids and predicts the same labels.
SHARED_KEYS = ("vocab_size", "max_position_embeddings", "type_vocab_size", "pad_token_id", "num_labels",
               "id2label", "label2id", "problem_type", "layer_norm_eps")


def _kind(kind: TaskKind | None, token: bool) -> TaskKind:
    """The kind given, else (callers that predate kinds) token or sequence classification."""
    return kind or get_kind(TOKEN_CLASSIFICATION if token else SEQUENCE_CLASSIFICATION)


def build_student(preset: StudentPreset | str, teacher_config, *, kind: TaskKind | None = None, token: bool = False):
    """A randomly initialised BERT of the preset's shape with the head of ``kind`` (``Bert`` + its head suffix,
    e.g. ``BertForTokenClassification`` for NER; default ``BertForSequenceClassification``, also used for
    regression)."""
    import transformers

    config = student_config(preset, teacher_config)
    return getattr(transformers, "Bert" + _kind(kind, token).head_suffix)(config)


def student_config(preset: StudentPreset | str, teacher_config):
    """The ``BertConfig`` of a preset student of ``teacher_config`` (no weights built: cheap, e.g. for checks)."""
    from transformers import BertConfig

    shape = PRESETS.get(preset) if isinstance(preset, str) else preset
    if shape.hidden % shape.heads:
        raise ConfigError(f"student hidden size {shape.hidden} is not divisible by {shape.heads} heads",
                          "pick a head count that divides the hidden size")
    shared = {k: getattr(teacher_config, k) for k in SHARED_KEYS if getattr(teacher_config, k, None) is not None}
    shared["type_vocab_size"] = max(1, shared.get("type_vocab_size", 2))
    return BertConfig(num_hidden_layers=shape.layers, hidden_size=shape.hidden, num_attention_heads=shape.heads,
                      intermediate_size=shape.ffn, **shared)


def load_student(source: str, teacher_config, *, kind: TaskKind | None = None, token: bool = False):
    """Load a student from a model dir or Hub id with the head of ``kind`` (default sequence classification; ``token``
    for callers that predate kinds), sized like the teacher's."""
    kwargs = {k: getattr(teacher_config, k) for k in ("num_labels", "id2label", "label2id", "problem_type")
              if getattr(teacher_config, k, None) is not None}
    try:
        return _kind(kind, token).model_class().from_pretrained(source, **load_policy().from_pretrained_kwargs(),
                                                                **kwargs)
    except Exception as exc:
        raise ModelError(f"cannot load student '{source}' ({exc.__class__.__name__}: {str(exc).splitlines()[0][:120]})",
                         "pass a preset name or a Hugging Face model directory with safetensors weights") from None


def student_source_is_preset(name: str) -> bool:
    return name in PRESETS and not Path(name).exists()

"""Build a BERT student that shares the teacher's tokenizer, vocabulary and task head."""

from __future__ import annotations

from pathlib import Path

from distill.core.errors import ConfigError, ModelError
from distill.core.runtime import load_policy
from students.presets import PRESETS, StudentPreset

# Settings copied from the teacher so the student reads the same token ids and predicts the same labels.
SHARED_KEYS = ("vocab_size", "max_position_embeddings", "type_vocab_size", "pad_token_id", "num_labels",
               "id2label", "label2id", "problem_type", "layer_norm_eps")


def build_student(preset: StudentPreset | str, teacher_config, *, token: bool = False):
    """A randomly initialised ``BertForSequenceClassification`` (``token=True``: ``BertForTokenClassification``,
    for NER) of the preset's shape."""
    from transformers import BertForSequenceClassification, BertForTokenClassification

    config = student_config(preset, teacher_config)
    return (BertForTokenClassification if token else BertForSequenceClassification)(config)


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


def load_student(source: str, teacher_config, *, token: bool = False):
    """Load a student from a model dir or Hub id, with a head sized like the teacher's (per token when ``token``)."""
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    kwargs = {k: getattr(teacher_config, k) for k in ("num_labels", "id2label", "label2id", "problem_type")
              if getattr(teacher_config, k, None) is not None}
    try:
        auto = AutoModelForTokenClassification if token else AutoModelForSequenceClassification
        return auto.from_pretrained(source, **load_policy().from_pretrained_kwargs(), **kwargs)
    except Exception as exc:
        raise ModelError(f"cannot load student '{source}' ({exc.__class__.__name__}: {str(exc).splitlines()[0][:120]})",
                         "pass a preset name or a Hugging Face model directory with safetensors weights") from None


def student_source_is_preset(name: str) -> bool:
    return name in PRESETS and not Path(name).exists()

"""Build a student of the teacher's family (students.families) that shares its tokenizer, vocabulary and task head
(the task kind's head class), or load one from a model dir."""

from __future__ import annotations

from pathlib import Path

from distill.core.errors import ModelError
from distill.core.runtime import load_policy
from distill.data.kinds import SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION, TaskKind, get_kind
from students.presets import PRESETS, StudentPreset


def _kind(kind: TaskKind | None, token: bool) -> TaskKind:
    """The kind given, else (callers that predate kinds) token or sequence classification."""
    return kind or get_kind(TOKEN_CLASSIFICATION if token else SEQUENCE_CLASSIFICATION)


def build_student(preset: StudentPreset | str, teacher_config, *, kind: TaskKind | None = None, token: bool = False,
                  family: str | None = None, layer_selection: str | list[int] = "uniform"):
    """A randomly initialised student of the preset's shape in the teacher's family (``family``: another one,
    e.g. bert) with the head of ``kind`` (default sequence classification; the kind's ``AutoModelFor...``)."""
    config = student_config(preset, teacher_config, family=family, layer_selection=layer_selection)
    return _kind(kind, token).model_class().from_config(config)


def student_config(preset: StudentPreset | str, teacher_config, *, family: str | None = None,
                   layer_selection: str | list[int] = "uniform"):
    """The config of a preset student of ``teacher_config`` (no weights built: cheap, e.g. for checks)."""
    from students.families import family_student_config

    return family_student_config(preset, teacher_config, family=family, layer_selection=layer_selection)


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

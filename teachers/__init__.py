"""Teachers: aliases, loading with a task head, fine-tuning when the head is untrained, caching outputs."""

from teachers.cache import CachedTeacher, cache_teacher_outputs
from teachers.finetune import finetune_teacher, teacher_fingerprint
from teachers.loading import LoadedTeacher, load_teacher, resolve_model_source
from teachers.registry import TEACHERS, register_teacher

__all__ = ["TEACHERS", "CachedTeacher", "LoadedTeacher", "cache_teacher_outputs", "finetune_teacher",
           "load_teacher", "register_teacher", "resolve_model_source", "teacher_fingerprint"]

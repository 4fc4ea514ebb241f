"""Teachers: aliases, loading with a task head, fine-tuning when the head is untrained, caching outputs
(``cache``: encoders; ``lm_cache``: causal LMs, top-k per token)."""

from teachers.cache import CachedTeacher, cache_teacher_outputs
from teachers.finetune import finetune_teacher, teacher_fingerprint
from teachers.lm_cache import CachedLMTeacher, cache_lm_teacher
from teachers.loading import LoadedTeacher, load_teacher, resolve_model_source
from teachers.registry import TEACHERS, register_teacher

__all__ = ["TEACHERS", "CachedLMTeacher", "CachedTeacher", "LoadedTeacher", "cache_lm_teacher",
           "cache_teacher_outputs", "finetune_teacher", "load_teacher", "register_teacher", "resolve_model_source",
           "teacher_fingerprint"]

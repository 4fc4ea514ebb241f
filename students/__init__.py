"""Students: size presets, building a BERT student from a teacher's config, and initialising it from the teacher."""

from students.build import build_student, load_student
from students.init import init_from_teacher
from students.presets import PRESETS, StudentPreset

__all__ = ["PRESETS", "StudentPreset", "build_student", "init_from_teacher", "load_student"]

"""What to change when the distilled student itself keeps too little of the teacher.

Pruning and INT8 are held to ``--target-retention`` of the *student* (``distill.report.retention``); a student that
kept much less of the *teacher* loses the task before compression starts, and no compression setting wins it back.
When that student's layers started from scratch (a preset narrower than half the teacher, ``--init
teacher-embeddings``; ``history.fresh_layers``), the report names the presets that start from the teacher's own
layers instead (``students.init.cut_presets``): on 2,000 rows of MRPC, STS-B and CoNLL-2003 the fresh 2-layer
``tiny`` kept 19-72% of an all-MiniLM-L6 teacher where ``mini`` cut from it kept 96-99% (experiments/README.md,
"Cross-task benchmark").
"""

from __future__ import annotations

from collections.abc import Mapping


def _stage(report: Mapping, name: str) -> Mapping | None:
    return next((s for s in report.get("stages") or [] if s.get("name") == name), None)


def student_lines(report: Mapping) -> list[str]:
    """One line when the distilled student keeps less than ``settings.target_retention`` of the teacher's metric
    and its layers started from scratch, naming what to try instead; empty otherwise (or when the teacher itself
    learned nothing, which ``distill.evaluate.collapse`` reports)."""
    fresh = (report.get("history") or {}).get("fresh_layers")
    target = (report.get("settings") or {}).get("target_retention")
    teacher, student = _stage(report, "teacher"), _stage(report, "student")
    if not fresh or target is None or teacher is None or student is None or teacher.get("collapsed"):
        return []
    kept = student.get("retention")
    if kept is None or kept >= target:
        return []
    cut = fresh.get("cut_presets") or []
    instead = (f"a preset cut from this teacher starts from its layers: {' or '.join(f'--student {p}' for p in cut)}"
               if cut else "no preset is cut from this teacher: pass a pretrained student (--student DIR)")
    return [f"the student keeps {kept:.1%} of the teacher's {report.get('metric_name', 'metric')}, under the "
            f"{target:.0%} target, before any compression: its layers started from scratch (--init "
            f"{fresh.get('init')}); {instead}, or train on more rows."]

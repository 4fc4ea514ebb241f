"""Commands that describe rather than run: ``distill presets`` (students, teachers, tasks, INT8 targets),
``distill env`` (this machine) and ``distill check`` (what a teacher/student pair supports)."""

from __future__ import annotations

import argparse


def cmd_check(args: argparse.Namespace) -> int:
    from rich.table import Table

    from distill.cli.settings import run_config
    from distill.core.artifacts import write_json
    from distill.core.console import out
    from distill.pipeline import check_pair

    result = check_pair(run_config(args))
    for pair in result["pairs"]:
        tokens = ("the same tokenizer" if pair["same_tokenizer"] else
                  f"different tokenizers ({pair['student_vocab']} and {pair['teacher_vocab']} tokens): each "
                  "tokenizes the raw text")
        table = Table(title=f"teacher {pair['teacher']} ({pair['teacher_shape']}) → student {pair['student']} "
                            f"({pair['student_shape']}): {tokens}")
        for col in ("term / init", "supported", "why not"):
            table.add_column(col)
        for kind in ("losses", "inits"):
            for name, why in pair[kind].items():
                label = name if kind == "losses" else f"--init {name}"
                table.add_row(label, "yes" if why is None else "no", why or "")
        out.print(table)
    if args.json_out:
        write_json(args.json_out, result)
    return 0


def _student_table():
    from rich.table import Table

    from students import PRESETS

    students = Table(title="student presets (BERT; vocabulary and positions from the teacher)")
    for col in ("name", "layers", "hidden", "heads", "FFN", "params (30,522-token vocab)"):
        students.add_column(col)
    for name, p in PRESETS.items():
        emb = 30522 * p.hidden + 512 * p.hidden + 2 * p.hidden + 2 * p.hidden
        layer = 4 * (p.hidden * p.hidden + p.hidden) + 2 * p.hidden * p.ffn + p.ffn + p.hidden + 4 * p.hidden
        params = emb + p.layers * layer + p.hidden * p.hidden + p.hidden
        students.add_row(name, str(p.layers), str(p.hidden), str(p.heads), str(p.ffn), f"{params / 1e6:.1f}M")
    return students


def cmd_presets(args: argparse.Namespace) -> int:
    from rich.table import Table

    from distill.core.console import out
    from distill.data.tasks import TASKS
    from teachers import TEACHERS

    teachers = Table(title="teacher aliases")
    teachers.add_column("alias")
    teachers.add_column("source")
    for name, source in TEACHERS.items():
        teachers.add_row(name, source if isinstance(source, str) else (source.__doc__ or "").strip())
    tasks = Table(title="tasks")
    for col in ("name", "text columns", "labels", "metrics"):
        tasks.add_column(col)
    for name, t in TASKS.items():
        tasks.add_row(name, ", ".join(t.text_columns), "regression" if t.is_regression else str(t.num_labels),
                      ", ".join(t.metrics))
    for table in (_student_table(), teachers, tasks, *_target_tables()):
        out.print(table)
    return 0


def _target_tables():
    from rich.table import Table

    try:
        from compress.quantize.targets import TARGETS, detect_target
    except ImportError:
        return []
    default = detect_target()
    table = Table(title=f"quantization targets (this machine: {default})")
    table.add_column("target")
    table.add_column("settings")
    for name, target in TARGETS.items():
        table.add_row(name, target.about)
    return [table]


def cmd_env(args: argparse.Namespace) -> int:
    import json

    from distill.core.console import out
    from distill.core.runtime import environment_info

    info = environment_info()
    try:
        from compress.quantize.targets import cpu_flags, detect_target

        flags = cpu_flags()
        info["cpu_features"] = sorted(f for f in flags if f.startswith(("avx", "amx", "sse4", "fma", "neon", "asimd")))
        info["quantization_target"] = detect_target()
    except ImportError:
        pass
    out.print_json(json.dumps(info, default=str))
    return 0

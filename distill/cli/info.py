"""Commands that describe rather than run: ``distill presets`` (students, teachers, tasks, INT8 targets),
``distill env`` (this machine) and ``distill check`` (what a teacher/student pair supports)."""

from __future__ import annotations

import argparse


def cmd_check(args: argparse.Namespace) -> int:
    from distill.cli.settings import run_config
    from distill.core.artifacts import write_json
    from distill.core.console import out, table
    from distill.pipeline import check_pair

    result = check_pair(run_config(args))
    for pair in result["pairs"]:
        tokens = ("the same tokenizer" if pair["same_tokenizer"] else
                  f"different tokenizers ({pair['student_vocab']} and {pair['teacher_vocab']} tokens): each "
                  "tokenizes the raw text")
        title = (f"teacher {pair['teacher']} ({pair['teacher_shape']}) → student {pair['student']} "
                 f"({pair['student_shape']}): {tokens}")
        rows = [(name if kind == "losses" else f"--init {name}", "yes" if why is None else "no", why or "")
                for kind in ("losses", "inits") for name, why in pair[kind].items()]
        out.print(table(title, ("term / init", "supported", "why not"), rows))
    if args.json_out:
        write_json(args.json_out, result)
    return 0


def _student_table():
    from distill.core.console import table
    from students import PRESETS

    rows = []
    for name, p in PRESETS.items():
        emb = 30522 * p.hidden + 512 * p.hidden + 2 * p.hidden + 2 * p.hidden
        layer = 4 * (p.hidden * p.hidden + p.hidden) + 2 * p.hidden * p.ffn + p.ffn + p.hidden + 4 * p.hidden
        params = emb + p.layers * layer + p.hidden * p.hidden + p.hidden
        rows.append((name, str(p.layers), str(p.hidden), str(p.heads), str(p.ffn), f"{params / 1e6:.1f}M"))
    return table("student presets (in the teacher's family; vocabulary and positions from the teacher)",
                 ("name", "layers", "hidden", "heads", "FFN", "params (30,522-token vocab)"), rows)


def _decoder_table():
    """The causal-LM student presets (relative to the teacher), when the decoder builder is installed."""
    from fractions import Fraction

    from distill.core.console import table

    try:
        from students.decoders import DECODER_PRESETS
    except ImportError:
        return []
    def share(x: float) -> str:
        return "all" if x == 1 else f"{Fraction(x).limit_denominator(8)} of the teacher's"

    rows = [(name, share(depth), share(width)) for name, (depth, width) in DECODER_PRESETS.items()]
    rows.append(("A+B (e.g. half+half-width)", "A's × B's", "A's × B's"))
    return [table("causal-LM student presets (--task causal-lm; cut from the teacher: layers by block influence, "
                  "widths by activation importance)", ("name", "layers", "hidden, heads, FFN"), rows)]


def _family_table():
    from distill.core.console import table
    from distill.core.families import FEATURE_COLUMNS, feature_rows

    return table("model families (a preset student takes its teacher's)", FEATURE_COLUMNS,
                 [tuple(row[c] for c in FEATURE_COLUMNS) for row in feature_rows()])


def cmd_presets(args: argparse.Namespace) -> int:
    from distill.core.console import out, table
    from distill.data.tasks import TASKS
    from teachers import TEACHERS

    teachers = table("teacher aliases", ("alias", "source"), [
        (name, source if isinstance(source, str) else (source.__doc__ or "").strip())
        for name, source in TEACHERS.items()])
    tasks = table("tasks", ("name", "text columns", "labels", "metrics"), [
        (name, ", ".join(t.text_columns), "regression" if t.is_regression else str(t.num_labels),
         ", ".join(t.metrics)) for name, t in TASKS.items()])
    for one in (_student_table(), *_decoder_table(), _family_table(), teachers, tasks, _demo_table(),
                *_target_tables()):
        out.print(one)
    return 0


def _demo_table():
    """The demo data sets shipped inside the package (``--data NAME``)."""
    from distill.core.console import table
    from distill.data.demo import DEMOS

    return table("demo data (--data NAME: shipped with the package, offline; source and licence in its README)",
                 ("name", "task", "what", "citation"),
                 [(name, d.task, d.description, d.citation) for name, d in DEMOS.items()])


def _target_tables():
    from distill.core.console import table

    try:
        from compress.quantize.targets import TARGETS, detect_target
    except ImportError:
        return []
    rows = [(name, target.about) for name, target in TARGETS.items()]
    return [table(f"quantization targets (this machine: {detect_target()})", ("target", "settings"), rows)]


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

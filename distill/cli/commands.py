"""The handlers of the commands that run the pipeline or read what it wrote: each builds the settings from the
command line (``distill.cli.settings``) and calls ``distill.pipeline``, importing the heavy modules only then.
``presets``, ``env`` and ``check``, which describe rather than run, are in ``distill.cli.info``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping

from distill.cli.flags import value
from distill.cli.info import cmd_check, cmd_env, cmd_presets  # noqa: F401 (the parser takes every handler here)
from distill.cli.settings import resume_config, run_config

GATES = ("min_retention", "max_latency_ms", "max_size_mb")  # the report settings `distill report` also takes


def gate_failures(report, gates: Mapping[str, float | None]) -> int:
    """Print each missed quality gate of ``report`` (a RunReport or report.json's content); 1 if any, else 0."""
    from distill.report.render import check_gates

    if not report:  # a secondary process of a multi-process run: the main one scores and gates
        return 0
    failures = check_gates(report, **gates)
    for line in failures:
        print(line, file=sys.stderr)
    return 1 if failures else 0


def cmd_run(args: argparse.Namespace) -> int:
    from distill.pipeline import run

    resume = bool(getattr(args, "resume", None))
    cfg = resume_config(args) if resume else run_config(args)
    report = cfg.report  # the gates of the run's settings (recipe or flags)
    return gate_failures(run(cfg, resume=resume), {k: getattr(report, k) for k in GATES})


def cmd_report(args: argparse.Namespace) -> int:
    from distill.core.console import out
    from distill.report.compare import report_runs
    from distill.report.render import render_table

    result = report_runs(args.run_dirs, args.output_dir, **{k: getattr(args, k, None) for k in GATES})
    for report in result.reports.values():
        out.print(render_table(report))
    for line in result.failures:
        print(line, file=sys.stderr)
    return 1 if result.failures else 0


def cmd_prune(args: argparse.Namespace) -> int:
    from distill.pipeline import prune_only

    cfg = run_config(args, need_teacher=False, student=args.model_dir, recover_epochs=value(args, "epochs"))
    prune_only(cfg, args.model_dir)
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from distill.pipeline import quantize_only

    quantize_only(run_config(args, need_teacher=False, teacher="", student=args.model_dir), args.model_dir)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from distill.core.artifacts import write_json
    from distill.pipeline import eval_only

    report = eval_only(run_config(args), args.models)
    if args.json_out:
        write_json(args.json_out, report.to_json())
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from compress.bundle import export_bundle, resolve_export_source
    from distill.core.console import info
    from distill.pipeline.checks import check_output_dir

    resolve_export_source(args.source)  # a bad source is named before the output dir
    check_output_dir(Path(args.output_dir), args.overwrite)
    out = export_bundle(args.source, args.output_dir)
    info(f"bundle written to {out} (see its README.md)")
    return 0


def cmd_finetune_teacher(args: argparse.Namespace) -> int:
    from distill.pipeline import finetune_only

    finetune_only(run_config(args, teacher_lr=value(args, "lr"), teacher_epochs=value(args, "epochs")))
    return 0


# commands with nothing to train: under `accelerate launch` the main process runs them alone
MAIN_ONLY = (cmd_quantize, cmd_eval, cmd_report, cmd_presets, cmd_env, cmd_export, cmd_check)

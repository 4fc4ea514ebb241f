"""``distill run`` and ``distill finetune-teacher``: the only place that orders the stages.

teacher(s) → [augment] → [general] → distil → [prune + recover] → [QAT] → [INT8] → score → report. Training stages
run on every process of a multi-process launch; INT8, scoring and the report on the main one.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from distill.core import interrupts
from distill.core.console import info, out
from distill.core.dist import end_secondary_process, is_main_process, leave_process_group
from distill.core.errors import NonFiniteLoss, RunError
from distill.evaluate import collapse
from distill.pipeline.config import RunConfig
from distill.pipeline.context import STAGES_FILE, Context, timed
from distill.pipeline.prepare import start
from distill.pipeline.results import RunReport
from distill.pipeline.stages.general import stage_general
from distill.pipeline.stages.prune import stage_prune
from distill.pipeline.stages.quantize import stage_qat, stage_quantize
from distill.pipeline.stages.score import score_sharded_teacher, stage_score
from distill.pipeline.stages.student import stage_student
from distill.pipeline.stages.teacher import stage_augment, stage_teacher, stage_teachers
from distill.report.render import as_json, render_table, write_report
from distill.train.checkpoint import write_error
from distill.train.tracking import stop_tracking


def run(cfg: RunConfig, resume: bool = False) -> RunReport | None:
    """Run every stage and return the report (also written to ``OUTPUT/report.json``, ``.md`` and ``.html``);
    None on the secondary processes of a multi-process launch (the main one scores and reports).

    Training stages write checkpoints; ``resume`` continues an interrupted run in ``cfg.output.dir`` (finished
    stages are loaded, the interrupted one continues from its newest intact checkpoint). A failed write, a
    non-finite loss or SIGINT/SIGTERM raise ``RunError``/``Interrupted`` naming the command that resumes.
    """
    from distill.pipeline.lm_run import is_lm_run, run_lm

    if is_lm_run(cfg):  # causal LMs have their own stage order (distill.pipeline.lm_run)
        return run_lm(cfg, resume=resume)
    begin = time.perf_counter()
    out_dir = Path(cfg.output.dir)
    if resume and finished(out_dir):
        info(f"{out_dir} holds a finished run: nothing to resume")
        data = json.loads((out_dir / "report.json").read_text())
        out.print(render_table(data))
        return RunReport.from_json(data)
    ctx = start(cfg, resume=resume, checkpointing=True)
    command = f"distill run --resume {out_dir}"
    try:
        report = run_stages(ctx, begin)
        leave_process_group()  # every collective is behind us (main: after its report)
        end_secondary_process()  # a secondary process is done: no interpreter teardown with gloo threads alive
        return report
    except RunError as exc:
        exc.resume = exc.resume or command + (" --skip-nonfinite" if isinstance(exc, NonFiniteLoss) else "")
        raise
    except interrupts.Interrupted as exc:
        exc.resume = exc.resume or command
        raise
    except OSError as exc:
        error = write_error(exc, Path(exc.filename or out_dir))
        if isinstance(error, RunError):
            error.resume = command
            raise error from None
        raise


def finished(out_dir: Path) -> bool:
    """``out_dir`` holds a run that got as far as its report."""
    stages = out_dir / STAGES_FILE
    return (out_dir / "report.json").is_file() and stages.is_file() and "score" in json.loads(stages.read_text())


def _train(ctx: Context, report: RunReport) -> object | None:
    """The training stages, on every process: teachers, augmentation, distillation, pruning, QAT. Fills ``report``
    and returns what QAT trained (None without ``--qat``)."""
    cfg = ctx.cfg
    with timed(ctx, "teacher"):
        report.teacher = stage_teachers(ctx)
    teachers = report.teacher.live
    if cfg.data.augment:
        with timed(ctx, "augment"):
            report.augment = stage_augment(ctx)
    if cfg.student.general_data:
        with timed(ctx, "general"):
            report.general = stage_general(ctx, teachers)
    with timed(ctx, "distil"):
        report.distil = stage_student(ctx, teachers, report.general.built if report.general else None)
    if cfg.prune.enabled:
        with timed(ctx, "prune"):
            report.prune = stage_prune(ctx, report.distil.model, teachers, report.distil.lr)
    if cfg.quantize.enabled and cfg.quantize.qat:  # training: every process takes part
        with timed(ctx, "qat"):
            return stage_qat(ctx, _final_model(report), teachers, report.distil.lr)
    return None


def _final_model(report: RunReport):
    """The last trained model: pruned when pruning ran, else the student."""
    return report.prune.model if report.prune else report.distil.model


def run_stages(ctx: Context, begin: float) -> RunReport | None:
    """The stages of ``run`` in order, then the report (main process; None on the others)."""
    cfg = ctx.cfg
    if cfg.train.teacher_shard == "fsdp" and not ctx.sharded:
        info("  note: --teacher-shard fsdp needs several processes (`accelerate launch --num_processes N -m distill "
             "run ...`); this single process holds the whole teacher")
    report = RunReport(settings=cfg.flat(), resumed=ctx.resume)
    qat = _train(ctx, report)
    teacher = report.teacher.primary
    scored_teacher = score_sharded_teacher(ctx, teacher.model) if ctx.sharded else None
    if not is_main_process():
        return None  # export, INT8, scoring and the report are the main process's
    models: dict = {"student": report.distil.model}
    if report.prune:
        models["pruned"] = report.prune.model
    if cfg.quantize.enabled:
        with timed(ctx, "quantize"):
            report.quantize = stage_quantize(ctx, _final_model(report), report.teacher.live, report.distil.lr, qat)
        models["int8"] = report.quantize.path
    with timed(ctx, "score"):
        model, outputs = scored_teacher if scored_teacher is not None else (teacher.model, None)
        report.scores = stage_score(ctx, model, teacher.path, models, outputs)
    report.teacher_caches = [c.summary() for c in ctx.teacher_caches]
    report.stage_seconds, report.skipped_nonfinite = ctx.seconds, ctx.skipped_nonfinite
    report.training = ctx.training
    report.wall_seconds = round(time.perf_counter() - begin, 2)
    _write(ctx, report)
    return report


def _write(ctx: Context, report: RunReport) -> None:
    """report.json/.md/.html, the INT8 bundle's README, then the run is marked finished and its checkpoints go."""
    out_dir = ctx.out
    write_report(out_dir, report)
    if report.quantize:
        from compress.bundle import write_bundle

        row = report.final
        write_bundle(out_dir / "int8", numbers={ctx.task.main_metric: round(row.metric, 4),
                                                "retention": round(row.retention, 4), "size_mb": row.size_mb,
                                                "latency_ms (batch 1, CPU)": row.latency_ms,
                                                "target": report.quantize.report.get("target")},
                     id2label=getattr(_final_model(report).config, "id2label", None))
    ctx.mark_done("score")
    if is_main_process():
        shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)  # every stage is saved: checkpoints are spent
    stop_tracking()
    out.print(render_table(report))
    collapse.print_lines(as_json(report))
    if ctx.skipped_nonfinite:
        info(f"[yellow]warning:[/] batches skipped for a non-finite loss: {ctx.skipped_nonfinite}")
    info(f"report written to {out_dir / 'report.md'} ({report.wall_seconds:.0f} s)")


def finetune_only(cfg: RunConfig) -> Path:
    """``distill finetune-teacher``: fine-tune the teacher(s) on the task and save to ``OUTPUT/teacher`` (and
    ``teacher_2``, ... for several)."""
    ctx = start(cfg, need_student=False)
    with timed(ctx, "teacher"):
        for i in range(len(ctx.teachers)):
            stage_teacher(ctx, i, force=True)
    stop_tracking()
    info(f"fine-tuned teacher written to {ctx.out / 'teacher'}")
    return ctx.out / "teacher"

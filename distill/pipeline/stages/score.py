"""The score stage: every stage (teacher, student, pruned, INT8) on the dev set against the teacher, with its
parameters, size on disk and CPU latency; also what ``distill eval`` runs on any model dirs and ONNX files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compress.measure import OnnxClassifier, count_params, onnx_latency_ms, onnx_param_count, torch_latency_ms
from distill.core.artifacts import dir_size_mb
from distill.core.console import info
from distill.core.dist import is_main_process
from distill.evaluate import collapse
from distill.evaluate.agreement import dev_predictions
from distill.evaluate.predict import predict
from distill.evaluate.scoring import StageScore, score_stage
from distill.pipeline.context import Context
from distill.pipeline.results import ScoreReport
from distill.pipeline.stages.teaching import live_teacher


def score_sharded_teacher(ctx: Context, teacher) -> tuple | None:
    """A sharded teacher's dev logits (every process runs it) and a whole CPU copy of it on the main process (for
    its size and latency); None elsewhere. Collective."""
    from distill.core.dist import get_accelerator
    from distill.train.sharding import unsharded_copy

    teacher = live_teacher(ctx, teacher)
    outputs = predict(teacher, ctx.teacher_dev_loader or ctx.dev_loader, get_accelerator(ctx.cfg.train.device).device)
    plain = unsharded_copy(teacher)
    return (plain, outputs) if is_main_process() else None


def _measure(ctx: Context, name: str, obj, teacher_path: str, t_logits: np.ndarray, vocab: int) -> tuple:
    """(dev logits, params, size MB, latency ms, report path) of one stage: a model or an ONNX file."""
    report = ctx.cfg.report
    lat = {"seq": report.latency_seq, "threads": report.latency_threads, "runs": report.latency_runs}
    if isinstance(obj, Path):
        logits, _ = predict(OnnxClassifier(obj, threads=report.latency_threads), ctx.dev_loader)
        path = str(obj.parent.relative_to(ctx.out)) if obj.parent.is_relative_to(ctx.out) else str(obj)
        return (logits, onnx_param_count(obj), dir_size_mb(obj), onnx_latency_ms(obj, vocab_size=vocab, **lat),
                path)
    logits = t_logits if name == "teacher" else predict(obj, ctx.dev_loader, ctx.cfg.train.device)[0]
    obj.to("cpu")
    params = count_params(obj)
    path = teacher_path if name == "teacher" else name
    on_disk = ctx.out / path if not Path(path).is_absolute() else Path(path)
    if not on_disk.is_dir():  # scored in place (distill eval): the dir it was loaded from
        on_disk = Path(getattr(obj.config, "_name_or_path", "") or "")
    size = dir_size_mb(on_disk) if on_disk.is_dir() and str(on_disk) else params * 4 / 1e6
    return logits, params, size, torch_latency_ms(obj, **lat), path


def stage_score(ctx: Context, teacher, teacher_path: str, models: dict,
                teacher_outputs: tuple | None = None) -> ScoreReport:
    """Score the teacher and ``models`` ({name: model or ONNX path}) on dev; measure size and CPU latency of each.

    ``teacher_outputs``: the teacher's (dev logits, labels) when computed already (a sharded teacher)."""
    cfg, task = ctx.cfg, ctx.task
    vocab = teacher.config.vocab_size
    if ctx.cross:  # ONNX stages are students: random ids must fit the student's vocabulary
        vocab = min(vocab, len(ctx.tokenizer))
    t_logits, labels = teacher_outputs or predict(teacher, ctx.teacher_dev_loader or ctx.dev_loader,
                                                  cfg.train.device)
    ctx.trivial = ctx.trivial or collapse.trivial_baseline(
        task, collapse.split_labels(task, ctx.splits.train), labels)
    rows: list[StageScore] = []
    predictions: dict[str, list] = {}
    teacher_metric = None
    for name, obj in [("teacher", teacher), *models.items()]:
        logits, params, size, latency, path = _measure(ctx, name, obj, teacher_path, t_logits, vocab)
        row = score_stage(name, task, logits, labels, t_logits, teacher_metric, params=params, size_mb=size,
                          latency_ms=latency, path=path, trivial_metric=ctx.trivial["trivial_metric"],
                          margin=ctx.trivial.get("collapse_margin", collapse.MARGIN))
        row.latencies_ms = {"onnxruntime" if isinstance(obj, Path) else "torch": row.latency_ms}
        predictions[name] = dev_predictions(task, logits, labels)  # token tasks: one tag per word
        teacher_metric = row.metric if teacher_metric is None else teacher_metric
        info(f"  {name}: {task.main_metric} {row.metric:.4f}, {row.latency_ms:.2f} ms")
        rows.append(row)
    report = cfg.report
    return ScoreReport(task.name, task.main_metric, rows, predictions, list(task.label_names), report.latency_seq,
                       report.latency_threads, report.latency_runs, dict(ctx.trivial))

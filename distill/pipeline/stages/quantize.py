"""The INT8 stage: ONNX export and ONNX Runtime INT8 (dynamic, static with calibration, accuracy-aware with
``--max-int8-drop``, or quantization-aware distillation with ``--qat``) into ``OUTPUT/int8``, then a speed check of
INT8 against FP32 ONNX."""

from __future__ import annotations

import copy
import json
import tempfile
import warnings
from pathlib import Path

from compress.measure import OnnxClassifier
from distill.core.artifacts import staged_dir
from distill.core.console import info
from distill.evaluate.predict import compute_metrics, evaluator, gathered_evaluator, predict
from distill.pipeline.context import STAGES_FILE, Context
from distill.pipeline.results import QuantizeResult, RetentionTarget
from distill.pipeline.stages.teaching import live_teacher, objective_for
from distill.train.loop import fit, set_loader_epoch


def onnx_metric(ctx: Context):
    """Dev-set metric of an ONNX file, for accuracy-aware quantization."""

    def metric(path: Path) -> float:
        logits, labels = predict(OnnxClassifier(path, threads=ctx.cfg.report.latency_threads), ctx.dev_loader)
        return compute_metrics(ctx.task, logits, labels)[ctx.task.main_metric]

    return metric


def stage_qat(ctx: Context, model, teacher, lr: float | None) -> tuple[object, list[dict]]:
    """Quantization-aware distillation: fake-quantize the Linear layers and distil again at a tenth of ``lr`` (when
    post-training INT8 loses too much). Returns the QAT model and its epochs. Every process trains."""
    from compress.quantize.qat import prepare_qat

    cfg = ctx.cfg
    teacher = live_teacher(ctx, teacher)
    qat_model = prepare_qat(copy.deepcopy(model).to("cpu"), target=cfg.quantize.target)
    result = fit(qat_model, objective_for(ctx, qat_model, teacher), ctx.train_loader,
                 cfg.train.fit_config(epochs=max(cfg.prune.recover_epochs, 1.0), lr=(lr or 1e-4) / 10),
                 teacher=teacher, evaluate=gathered_evaluator(ctx.task, ctx.dev_loader, cfg.train.device),
                 metric=ctx.task.main_metric, description="QAT", checkpoints=ctx.checkpoints("qat"))
    ctx.fitted("qat", result)
    return qat_model, result.history


def _write_int8(ctx: Context, model, out: Path, qat_model) -> dict:
    """The INT8 model in ``out`` by the configured method; returns compress's report of it."""
    from compress import quantize_model

    cfg = ctx.cfg
    plan = cfg.quantize.plan()
    batches = ctx.train_loader if plan.mode == "static" else None
    if batches is not None:
        set_loader_epoch(ctx.train_loader, ctx.train_loader, cfg.train.seed, 0)  # calibrate on the same batches
    length = cfg.data.max_seq_length
    if qat_model is not None:
        from compress.quantize.int8 import save_config
        from compress.quantize.qat import export_qat_onnx

        with staged_dir(out) as tmp:
            export_qat_onnx(qat_model.to("cpu").eval(), tmp / "model.onnx", max_seq_length=length)
            save_config(model, tmp)
            ctx.tokenizer.save_pretrained(tmp)
        return {"mode": "qat", "target": plan.target}
    if cfg.quantize.max_drop is not None:
        from compress.quantize.tolerance import quantize_with_tolerance

        tol = quantize_with_tolerance(model, out, plan, evaluate=onnx_metric(ctx), max_drop=cfg.quantize.max_drop,
                                      tokenizer=ctx.tokenizer, max_seq_length=length, calibration_batches=batches)
        info(f"  accuracy-aware INT8: {len(tol.quantize.fp32_nodes)} nodes kept in FP32")
        return tol.to_dict()
    report = quantize_model(model, out, plan, tokenizer=ctx.tokenizer, max_seq_length=length,
                            calibration_batches=batches, kind=ctx.task.kind)
    info(f"  {plan.mode} INT8 for {plan.target}: ONNX FP32 {report.onnx_fp32_mb:.1f} MB → "
         f"INT8 {report.onnx_int8_mb:.1f} MB")
    return report.to_dict()


def _reference(ctx: Context, model) -> float:
    """The distilled student's dev metric --target-retention is relative to: the prune stage's (it measured the
    student before pruning), else ``model``'s own (no pruning: ``model`` is the student). Main process only, so
    the evaluation is not gathered across processes."""
    stages = ctx.out / STAGES_FILE  # the prune stage's record, written when it finished (this run or resumed)
    record = json.loads(stages.read_text()).get("prune") if ctx.cfg.prune.enabled and stages.is_file() else None
    done = ((record or {}).get("history") or {}).get("prune_target") or {}
    if done.get("reference") is not None:
        return float(done["reference"])
    return evaluator(ctx.task, ctx.dev_loader, "cpu")(model)[ctx.task.main_metric]


def _held_to_target(ctx: Context, model, out: Path, report: dict) -> tuple[dict, RetentionTarget]:
    """Hold the INT8 model in ``out`` to --target-retention: when it misses and the FP32 model keeps it, quantize
    again keeping the most sensitive layers FP32 (accuracy-aware INT8, at worst all of them: FP32 kept instead of
    INT8); when the FP32 model misses too, the plain INT8 stays and the note says so."""
    from compress.prune.search import keeps, retention, threshold
    from compress.quantize.tolerance import quantize_with_tolerance

    cfg, name = ctx.cfg, ctx.task.main_metric
    r, reference = cfg.prune.target_retention, _reference(ctx, model)
    floor = threshold(reference, r)
    line = f"{r:.0%} of the student's {name} ({reference:.4f}, ≥ {floor:.4f})"

    def held(metric: float, met: bool, kept: str, note: str) -> RetentionTarget:
        return RetentionTarget("int8", r, reference, floor, metric, met, kept, note)

    int8 = onnx_metric(ctx)(out / "model.onnx")
    if keeps(int8, reference, r):
        return report, held(int8, True, "INT8", f"INT8 keeps {line}: {name} {int8:.4f} "
                                                  f"({_share(retention(int8, reference))})")
    fp32 = evaluator(ctx.task, ctx.dev_loader, "cpu")(model)[name]
    if not keeps(fp32, reference, r):
        return report, held(int8, False, "INT8", f"target not reachable by INT8: the model before INT8 already "
                                                 f"misses {line} ({name} {fp32:.4f}); kept instead: plain INT8 "
                                                 f"({name} {int8:.4f})")
    plan = cfg.quantize.plan()
    batches = ctx.train_loader if plan.mode == "static" else None
    tol = quantize_with_tolerance(model, out, plan, evaluate=onnx_metric(ctx), max_drop=max(0.0, fp32 - floor),
                                  tokenizer=ctx.tokenizer, max_seq_length=cfg.data.max_seq_length,
                                  calibration_batches=batches)
    kept = ("FP32 (every layer kept FP32)" if tol.fp32_layers and len(tol.fp32_layers) == len(tol.sensitivity)
            else f"INT8 with {len(tol.fp32_layers)} layer(s) FP32 ({', '.join(tol.fp32_layers)})")
    met = keeps(tol.final_metric, reference, r)
    note = (f"plain INT8 misses {line} ({name} {int8:.4f}); kept instead: {kept}, {name} {tol.final_metric:.4f}"
            + ("" if met else " (still below the target)"))
    info(f"  accuracy-aware INT8 for --target-retention: {len(tol.fp32_nodes)} nodes kept in FP32")
    return tol.to_dict(), held(tol.final_metric, met, kept, note)


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def speed(ctx: Context, model, int8: Path) -> dict:
    """INT8 against FP32 ONNX latency of the same model (a warning when INT8 is not faster)."""
    from compress import export_onnx
    from compress.quantize.speed import speed_check

    cfg = ctx.cfg
    with tempfile.TemporaryDirectory(prefix="distill-fp32-") as tmp:
        fp32 = export_onnx(model, Path(tmp) / "model.onnx", max_seq_length=cfg.data.max_seq_length, kind=ctx.task.kind)
        found = speed_check(fp32, int8, threads=cfg.report.latency_threads, runs=cfg.report.latency_runs)
    if found.get("warning"):
        warnings.warn(found["warning"], stacklevel=3)
        info(f"  [yellow]warning:[/] {found['warning']}")
    return found


def stage_quantize(ctx: Context, model, teacher, lr: float | None = None,
                   qat: tuple[object, list[dict]] | None = None) -> QuantizeResult:
    """INT8 of ``model`` through ONNX Runtime, then a speed check (the main process's alone).

    ``qat``: (model, epochs) that ``stage_qat`` already trained on every process; with ``--qat`` and none given,
    QAT runs here (distilling at a tenth of ``lr``).
    """
    out = ctx.out / "int8"
    done = ctx.done("quantize")
    if done is not None and (out / "model.onnx").is_file():
        info(f"  finished earlier: {out / 'model.onnx'}")
        ctx.skipped_nonfinite.update(done.get("skipped_nonfinite", {}))
        return QuantizeResult.from_history(done["history"], out / "model.onnx")
    model = model.to("cpu").eval()
    if ctx.cfg.quantize.qat and qat is None:
        qat = stage_qat(ctx, model, teacher, lr)
    report = _write_int8(ctx, model, out, qat[0] if qat else None)
    target = None
    if not qat and ctx.cfg.quantize.max_drop is None:  # an explicit --max-int8-drop or QAT is the user's choice
        report, target = _held_to_target(ctx, model, out, report)
        info(f"  {target.note}")
    result = QuantizeResult(report, speed(ctx, model, out / "model.onnx"), qat[1] if qat else None,
                            out / "model.onnx", target)
    ctx.mark_done("quantize", {"history": result.history(), "skipped_nonfinite": ctx.skipped("qat")},
                  checkpoints=("qat",))
    return result

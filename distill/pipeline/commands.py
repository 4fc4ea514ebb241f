"""The single-stage commands on any model dir: ``distill prune`` (with optional recovery from a teacher),
``distill quantize`` (an INT8 bundle) and ``distill eval`` (score model dirs and ONNX files against a teacher)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from compress.measure import OnnxClassifier
from distill.core.artifacts import staged_dir, write_json
from distill.core.console import info, out
from distill.core.dist import is_main_process
from distill.core.errors import ConfigError, DataError, DistillError, ModelError
from distill.data import Splits, make_loader, tokenize
from distill.evaluate import collapse
from distill.pipeline.checks import check_output_dir, clear_output_dir
from distill.pipeline.config import RunConfig
from distill.pipeline.context import Context
from distill.pipeline.prepare import dev_loader, load_data
from distill.pipeline.results import ScoreReport
from distill.pipeline.stages.prune import prune_and_recover
from distill.pipeline.stages.score import stage_score
from distill.report.render import render_table


def load_any(model_dir: str):
    """A model dir as written by any stage (plain HF layout or per-layer widths) and its tokenizer."""
    from transformers import AutoTokenizer

    from compress import load_pruned
    from teachers.loading import check_model_dir

    check_model_dir(Path(model_dir))
    try:
        return load_pruned(model_dir).eval(), AutoTokenizer.from_pretrained(model_dir)
    except DistillError:
        raise
    except Exception as exc:
        raise ModelError(f"cannot load '{model_dir}' ({exc.__class__.__name__})",
                         "pass a Hugging Face model directory with safetensors weights and a tokenizer") from None


def local_loaders(cfg: RunConfig, tokenizer) -> tuple[Splits, object, object] | None:
    """(splits, train loader, dev loader) of ``--task``/``--data``, or None when neither is given."""
    if not (cfg.data.task or cfg.data.path):
        return None
    splits = load_data(cfg)
    length, train = cfg.data.max_seq_length, cfg.train
    loader = make_loader(tokenize(splits.train, tokenizer, length), tokenizer, train.batch_size, shuffle=True,
                         seed=train.seed)
    return splits, loader, dev_loader(cfg, splits.dev, tokenizer)


def _check_prune_inputs(cfg: RunConfig, plan) -> bool:
    """Refuse importance criteria and recovery without the data they read; returns whether there is data."""
    has_data = bool(cfg.data.task or cfg.data.path)
    if plan.importance != "magnitude" and not has_data:
        raise ConfigError(f"--importance {plan.importance} needs gradients from task data",
                          "pass --task/--data, or use --importance magnitude")
    if cfg.teacher.name and not has_data:
        raise ConfigError("recovery from --teacher needs training data", "pass --task/--data, or drop --teacher")
    if plan.importance == "distillation" and not cfg.teacher.name:
        raise ConfigError("--importance distillation needs a --teacher", "pass --teacher DIR or use taylor")
    return has_data


def _prune_with_data(cfg: RunConfig, model, tokenizer, plan, model_dir: str) -> tuple[dict, dict]:
    """Prune with task batches (and recovery from ``--teacher`` when given); returns (report, history)."""
    from distill.data.pairs import same_vocabulary
    from teachers import load_teacher

    splits, train, dev = local_loaders(cfg, tokenizer)
    teacher = None
    if cfg.teacher.name:
        loaded = load_teacher(cfg.teacher.name, splits.task)
        if not same_vocabulary(loaded.tokenizer, tokenizer):
            raise ModelError(f"'{model_dir}' and teacher '{cfg.teacher.name}' use different tokenizers, and "
                             "recovery here feeds the teacher the model's token ids",
                             "recover with `distill run` (each model tokenizes the text), or drop --teacher")
        teacher = loaded.model
    ctx = Context(cfg, splits.task, splits, tokenizer, Path(cfg.output.dir), train_loader=train, dev_loader=dev)
    result = prune_and_recover(ctx, model, teacher, plan, cfg.prune.steps, lr=cfg.train.lr or 1e-4)
    return result.report, result.history()


def prune_only(cfg: RunConfig, model_dir: str) -> dict:
    """``distill prune``: prune any HF model dir (bare encoder or task model), optionally recovering from a teacher.

    ``cfg.teacher.name`` empty means no recovery; taylor importance and recovery read the task data.
    """
    from compress import plan_steps, prune_model, save_pruned
    from compress.prune.layout import measure
    from distill.core.families import arch_of
    from teachers.loading import check_model_dir

    check_model_dir(Path(model_dir))
    plan = cfg.prune.plan()
    has_data = _check_prune_inputs(cfg, plan)
    model, tokenizer = load_any(model_dir)
    plan_steps(plan, cfg.prune.steps, measure(model, arch_of(model)))  # ratios that fail at any step
    out_dir = Path(cfg.output.dir)
    check_output_dir(out_dir, cfg.output.overwrite)
    if has_data:
        report, history = _prune_with_data(cfg, model, tokenizer, plan, model_dir)
    else:
        example = dict(tokenizer(["a short example sentence .", "another one"], padding=True, return_tensors="pt"))
        report, history = prune_model(model.eval(), plan, example).to_dict(), {}
    if not is_main_process():
        return report  # under accelerate launch the main process writes
    if cfg.output.overwrite:
        clear_output_dir(out_dir, keep=())
    with staged_dir(out_dir) as tmp:
        save_pruned(model.to("cpu"), tmp, tokenizer)
        write_json(tmp / "prune_report.json", {**report, "history": history, "source": model_dir})
    info(f"pruned {report['params_before']:,} → {report['params_after']:,} params; written to {out_dir}")
    return report


def quantize_only(cfg: RunConfig, model_dir: str) -> dict:
    """``distill quantize``: INT8 bundle of any model dir; static mode calibrates on ``--calibration-data``."""
    from compress import export_onnx, quantize_model
    from compress.bundle import write_bundle
    from compress.quantize.speed import speed_check

    plan = cfg.quantize.plan()
    model, tokenizer = load_any(model_dir)
    loaders = local_loaders(cfg, tokenizer)
    if plan.mode == "static" and loaders is None:
        raise ConfigError("static quantization needs calibration data",
                          "pass --calibration-data DIR (and --task for GLUE files), or use --mode dynamic")
    out_dir, length = Path(cfg.output.dir), cfg.data.max_seq_length
    check_output_dir(out_dir, cfg.output.overwrite)
    if cfg.output.overwrite:
        clear_output_dir(out_dir, keep=())
    report = quantize_model(model, out_dir, plan, tokenizer=tokenizer, max_seq_length=length,
                            calibration_batches=loaders[1] if loaders else None)
    with tempfile.TemporaryDirectory(prefix="distill-fp32-") as tmp:
        fp32 = export_onnx(model, Path(tmp) / "model.onnx", max_seq_length=length)
        speed = speed_check(fp32, out_dir / "model.onnx", threads=cfg.report.latency_threads,
                            runs=cfg.report.latency_runs)
    if speed.get("warning"):
        info(f"[yellow]warning:[/] {speed['warning']}")
    numbers = {"size_mb": report.onnx_int8_mb, "fp32_onnx_mb": report.onnx_fp32_mb, "target": report.target,
               **{k: v for k, v in speed.items() if k.endswith("_ms") or k == "speedup"}}
    if getattr(model.config, "id2label", None) and hasattr(model, "classifier"):
        write_bundle(out_dir, numbers=numbers, id2label=model.config.id2label)
    write_json(out_dir / "quantize_report.json", {**report.to_dict(), "speed": speed, "source": model_dir})
    info(f"INT8 ({report.mode}, {report.target}): {report.onnx_fp32_mb:.1f} → {report.onnx_int8_mb:.1f} MB; "
         f"written to {out_dir}")
    return {**report.to_dict(), "speed": speed}


def eval_only(cfg: RunConfig, paths: list[str]) -> ScoreReport:
    """``distill eval``: score model dirs and ONNX files against a teacher on the task's dev set."""
    from distill.data.pairs import same_vocabulary
    from teachers import load_teacher

    if not (cfg.data.task or cfg.data.path):
        raise DataError("no --task and no --data given", "pass --task sst2 and/or --data DIR")
    splits = load_data(cfg)  # every train label: the trivial predictor's majority class or mean
    teacher = load_teacher(cfg.teacher.name, splits.task)
    models: dict = {}
    for path in paths:
        p = Path(path)
        if p.suffix == ".onnx":
            OnnxClassifier(p)  # a missing or invalid file fails here, before anything is scored
            models[p.parent.name] = p
            continue
        models[p.name], own = load_any(path)
        if not same_vocabulary(own, teacher.tokenizer):
            raise ModelError(f"'{path}' has its own tokenizer, and `distill eval` scores every model with the "
                             "teacher's", "score it in its run's report (`distill report RUN_DIR`)")
    ctx = Context(cfg, splits.task, splits, teacher.tokenizer, Path(cfg.output.dir))
    ctx.dev_loader = dev_loader(cfg, splits.dev, teacher.tokenizer)
    report = stage_score(ctx, teacher.model, teacher.source, models)
    out.print(render_table(report))
    collapse.print_lines(report.to_json())
    return report

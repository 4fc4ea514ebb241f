"""The teacher stage: each teacher used as is when its head is trained, else fine-tuned on the task (or reloaded
from an earlier fine-tuning with the same fingerprint); several teachers are scored alone and as an ensemble.
Also ``--augment``, which rewrites the training rows with a masked LM once the teachers are ready."""

from __future__ import annotations

import json
import shutil

from distill.core.console import info
from distill.core.dist import is_main_process
from distill.core.runtime import process_count
from distill.evaluate.predict import compute_metrics, gathered_evaluator, predict
from distill.pipeline.context import TEACHER_MARKER, Context, save_model, teacher_dir
from distill.pipeline.prepare import train_loader
from distill.pipeline.results import AugmentResult, ReadyTeacher, TeacherResult, TeacherScore


def _cached_teacher(ctx: Context, key: str, fingerprint: str) -> ReadyTeacher | None:
    """The teacher fine-tuned earlier into ``OUTPUT/<key>`` with this fingerprint, or None."""
    cached = ctx.out / key
    marker = cached / TEACHER_MARKER
    if not marker.is_file():
        return None
    recorded = json.loads(marker.read_text())
    if recorded.get("fingerprint") != fingerprint:
        return None
    info(f"  reusing the fine-tuned teacher cached in {cached}")
    model = ctx.task.kind.model_class().from_pretrained(cached, use_safetensors=True)
    history = recorded.get("history") if ctx.checkpointing else None
    return ReadyTeacher("", key, key, history, model.eval().requires_grad_(False))


def _length_settings(cfg) -> dict:
    """What decides a budgeted fine-tune's length (part of the fingerprint when ``--teacher-epochs`` is not given)."""
    t = cfg.train
    if cfg.teacher.epochs is not None and t.patience is None:
        return {}
    return {"patience": t.patience, "budget_steps": t.budget_steps, "min_epochs": t.min_epochs,
            "max_epochs": t.max_epochs}


def stage_teacher(ctx: Context, index: int = 0, force: bool = False) -> ReadyTeacher:
    """Teacher ``index`` ready: as is when its head is trained (unless ``force``); otherwise fine-tuned (or reused).

    Teacher ``index`` > 0 (several teachers) is cached in ``teacher_<index+1>`` and fine-tuned with seed + index.
    """
    from teachers import finetune_teacher, teacher_fingerprint

    cfg, teacher = ctx.cfg, ctx.teachers[index]
    name, key, seed = cfg.teacher.all_names[index], teacher_dir(index), cfg.train.seed + index
    if teacher.head_trained and not force:
        return ReadyTeacher(name, key, teacher.source, model=teacher.model)
    fp = teacher_fingerprint(source=teacher.source, task=ctx.task.name, data=ctx.splits.source,
                             n_train=len(ctx.splits.train), max_len=cfg.data.max_seq_length, lr=cfg.teacher.lr,
                             epochs=cfg.teacher.epochs, batch=cfg.train.batch_size, seed=seed,
                             **_length_settings(cfg), head="centred")
    reused = _cached_teacher(ctx, key, fp)
    if reused is not None:
        reused.name = name
        return reused
    if not teacher.head_trained:
        info(f"  '{name}' has no trained {ctx.task.name} head: fine-tuning it first"
             + (f" (sharded over {process_count()} processes)" if ctx.sharded else ""))
    train, dev = ctx.teacher_train_loader or ctx.train_loader, ctx.teacher_dev_loader or ctx.dev_loader
    config = cfg.train.fit_config(lr=cfg.teacher.lr, epochs=cfg.teacher.epochs, seed=seed, shard_model=ctx.sharded,
                                  learned_above=ctx.learned_above)
    result = finetune_teacher(teacher.model, train, config, kind=ctx.task.kind.output_loss,
                              evaluate=gathered_evaluator(ctx.task, dev, cfg.train.device),
                              metric=ctx.task.main_metric, checkpoints=ctx.checkpoints(key),
                              fresh_head=not teacher.head_trained)
    ctx.fitted(key, result)
    model = teacher.model
    if ctx.sharded:  # trained sharded: gather it on the main process to save it, then every process reloads it
        from distill.train.sharding import unsharded_copy

        model = unsharded_copy(model)
    save_model(model.to("cpu") if model is not None else None, ctx.teacher_tokenizer or ctx.tokenizer, ctx.out / key,
               {"fingerprint": fp, "source": teacher.source, "history": result.history}, cfg.train.device)
    ctx.mark_done(key, {"skipped_nonfinite": result.skipped_nonfinite}, checkpoints=(key,))
    if ctx.sharded:  # whole again on every process: the student is initialised from it, then it is sharded anew
        model = ctx.task.kind.model_class().from_pretrained(ctx.out / key, use_safetensors=True)
        model = model.eval().requires_grad_(False)
    return ReadyTeacher(name, key, key, result.history, model)


def stage_teachers(ctx: Context) -> TeacherResult:
    """Every teacher ready (fine-tuned when needed); several are scored alone and as their weighted ensemble."""
    ready = []
    for i in range(len(ctx.teachers)):
        one = stage_teacher(ctx, i)
        if one.path != one.key and is_main_process():  # a trained teacher is used in place: drop a stale copy
            shutil.rmtree(ctx.out / one.key, ignore_errors=True)
        ready.append(one)
    result = TeacherResult(ready)
    if len(ready) > 1:
        result.scores = score_teachers(ctx, [t.model for t in ready])
    return result


def score_teachers(ctx: Context, models: list) -> list[TeacherScore]:
    """Dev metric of each teacher and of their weighted ensemble (the report itself compares to the first)."""
    import torch

    from distill.objective.ensemble import ensemble_logits, normalise_weights
    from distill.objective.objective import OUTPUT_LOSSES

    loader = ctx.teacher_dev_loader or ctx.dev_loader
    weights = normalise_weights(ctx.cfg.teacher.weights, len(models))
    rows, logits = [], []
    for name, model, w in zip(ctx.cfg.teacher.all_names, models, weights, strict=True):
        out, labels = predict(model, loader, ctx.cfg.train.device)
        logits.append(torch.as_tensor(out))
        rows.append(TeacherScore(name, w, compute_metrics(ctx.task, out, labels)))
    as_scores = OUTPUT_LOSSES.get(ctx.task.kind.output_loss).mixes_scores  # regression: weighted mean of scores
    mixed = ensemble_logits(logits, weights, 1.0, regression=as_scores).numpy()
    rows.append(TeacherScore("ensemble", 1.0, compute_metrics(ctx.task, mixed, labels)))
    for row in rows:
        info(f"  {row.teacher} (weight {row.weight:.2f}): {ctx.task.main_metric} "
             f"{row.metrics[ctx.task.main_metric]:.4f}")
    return rows


def stage_augment(ctx: Context) -> AugmentResult:
    """``--augment N``: N rewrites (masked LM, or embedding neighbours) of every training row (label -100: soft
    targets only) join the training set of distillation and recovery; the teacher was fine-tuned on the original
    rows."""
    from teachers.augment import augment_dataset

    cfg = ctx.cfg
    rows = augment_dataset(ctx.splits.train, ctx.mlm, cfg.data.augment, seed=cfg.train.seed,
                           max_length=cfg.data.max_seq_length, device=cfg.train.device)
    result = AugmentResult(cfg.data.augment, len(rows) - len(ctx.splits.train), ctx.mlm.source, ctx.mlm.method)
    ctx.labelled_loader = ctx.train_loader
    ctx.train_loader = train_loader(ctx, rows)
    ctx.mlm = None  # free its memory
    return result

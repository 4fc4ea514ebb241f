"""The student stage: build (or load) the student, initialise it from the primary teacher, distil it from the
teacher(s) and save it to ``OUTPUT/student``."""

from __future__ import annotations

import copy

from compress.measure import count_params
from distill.core.console import info
from distill.core.errors import ModelError
from distill.core.runtime import seed_everything
from distill.evaluate.predict import gathered_evaluator
from distill.objective.objective import REGRESSION
from distill.pipeline.context import Context, save_model
from distill.pipeline.results import DistilResult
from distill.pipeline.stages.teaching import objective_for, primary, teacher_source
from distill.train.heads import centre_regression_head
from distill.train.loop import fit


def default_student_lr(pretrained: bool, hidden_size: int) -> float:
    """Distillation lr when none is given: 1e-4 for layers copied or cut from a teacher (or a pretrained student);
    layers trained from scratch need a larger step, 1e-3 at width 128 and shrinking as 1/width above it.

    Measured on SST-2 with all-MiniLM-L6 (experiments/README.md): ``tiny`` (H128) trains well at 1e-3; ``small``
    (H512) at 1e-3 diverged in its second epoch (dev accuracy 0.654 → 0.509) and reached 0.80 after one epoch at 3e-4.
    """
    return 1e-4 if pretrained else 1e-3 * min(1.0, 128 / max(hidden_size, 1))


def pruned_student(ctx: Context, teacher) -> tuple[object, dict]:
    """``--init teacher-pruned``: a copy of the teacher cut to the preset's layers (chosen by --layer-selection),
    hidden and FFN widths by structured pruning (magnitude; the head size is kept, so heads = hidden / head size;
    the hidden width is never cut under ``students.presets.MIN_CUT_HIDDEN`` of a teacher that wide).
    Returns the student and what was cut (report history ``init_pruned``)."""
    from compress import PruneConfig, prune_model
    from distill.core.families import family_of
    from distill.data.pairs import student_view
    from students import PRESETS
    from students.init import pruned_shape

    settings = ctx.cfg.student
    shape = pruned_shape(PRESETS.get(settings.name), teacher.config, settings.layer_selection)
    student = copy.deepcopy(teacher).to("cpu").eval()
    batch = student_view(next(iter(ctx.labelled_loader or ctx.train_loader)))
    example = {k: v[:2] for k, v in batch.items() if k != "idx"}
    report = prune_model(student, PruneConfig(heads=shape.heads_ratio, ffn=shape.ffn_ratio, layers=shape.layers,
                                              importance="magnitude"), example)
    w = family_of(student).widths(student.config)  # DistilBERT names them dim/n_heads/hidden_dim
    got = (w.layers, w.hidden, w.heads, w.ffn)
    want = (len(shape.layers), shape.hidden, shape.heads, shape.ffn)
    if got != want:
        raise ModelError(f"pruning the teacher gave L{got[0]}/H{got[1]}/A{got[2]}/FFN{got[3]}, not "
                         f"L{want[0]}/H{want[1]}/A{want[2]}/FFN{want[3]}", "use --init auto or random")
    return student.requires_grad_(True).train(), {"teacher_layers": shape.layers, **report.to_dict()}


def build(ctx: Context, teacher) -> tuple[object, bool, dict | None]:
    """The initialised student, whether its layers come pretrained (copied or cut), and the ``init_pruned`` record."""
    from students import PRESETS, build_student, init_from_teacher, load_student
    from students.build import student_source_is_preset
    from teachers import resolve_model_source

    settings = ctx.cfg.student
    if settings.init == "teacher-pruned":
        student, cut = pruned_student(ctx, teacher)
        info(f"  student '{settings.name}' pruned from the teacher: {count_params(student):,} params, teacher "
             f"layers {cut['teacher_layers']}, hidden {student.config.hidden_size}, "
             f"{student.config.num_attention_heads} heads")
        return student, True, cut
    if student_source_is_preset(settings.name):
        student = build_student(settings.name, teacher.config, kind=ctx.task.kind, family=settings.family,
                                layer_selection=settings.layer_selection)
        report = init_from_teacher(student, teacher, settings.init, settings.layer_selection)
        info(f"  student '{settings.name}': {count_params(student):,} params, init {report.strategy}")
        if ctx.task.kind.output_loss == REGRESSION:  # a preset's head is new (never copied): start at the label mean
            centre_regression_head(student, ctx.labelled_loader or ctx.train_loader)
        return student, report.strategy == "teacher-layers", None
    student = load_student(resolve_model_source(settings.name, "student", PRESETS), teacher.config,
                           kind=ctx.task.kind)
    info(f"  student '{settings.name}': {count_params(student):,} params")
    return student, True, None


def _fresh_layers(ctx: Context, teacher, pretrained: bool) -> dict | None:
    """For a preset student whose layers started from scratch: its init and the presets ``--init auto`` would build
    from this teacher's own layers (``students.init.cut_presets``); None otherwise."""
    from students.build import student_source_is_preset
    from students.init import cut_presets

    settings = ctx.cfg.student
    if pretrained or not student_source_is_preset(settings.name):
        return None
    return {"init": settings.init, "cut_presets": cut_presets(teacher.config, settings.layer_selection)}


def _finished(ctx: Context, done: dict) -> DistilResult:
    """The student a finished run saved, with what stages.json recorded of its distillation."""
    info(f"  finished earlier: loading {ctx.out / 'student'}")
    ctx.skipped_nonfinite.update(done.get("skipped_nonfinite", {}))
    model = ctx.task.kind.model_class().from_pretrained(ctx.out / "student", use_safetensors=True).eval()
    return DistilResult.from_record(done, model)


def stage_student(ctx: Context, teacher, built: tuple | None = None) -> DistilResult:
    """Build (or load) the student, initialise it, distil it from ``teacher`` (a model or a list) and save it;
    ``built`` is ``build``'s result when an earlier stage (general distillation) built and trained it."""
    cfg = ctx.cfg
    done = ctx.done("distil")
    if done is not None and (ctx.out / "student").is_dir():
        return _finished(ctx, done)
    seed_everything(cfg.train.seed)
    student, pretrained, cut = built or build(ctx, primary(teacher))
    lr = cfg.train.lr or default_student_lr(pretrained, student.config.hidden_size)
    objective = objective_for(ctx, student, teacher)
    result = fit(student, objective, ctx.train_loader, cfg.train.fit_config(lr=lr, learned_above=ctx.learned_above),
                 teacher=teacher_source(ctx, teacher, objective),
                 evaluate=gathered_evaluator(ctx.task, ctx.dev_loader, cfg.train.device),
                 metric=ctx.task.main_metric, description="distil", checkpoints=ctx.checkpoints("distil"))
    ctx.fitted("distil", result)
    save_model(student.to("cpu"), ctx.tokenizer, ctx.out / "student", device=cfg.train.device)
    distil = DistilResult(result.history, lr, cut, model=student, fresh_layers=_fresh_layers(ctx, primary(teacher),
                                                                                            pretrained))
    ctx.mark_done("distil", {**distil.record(), "skipped_nonfinite": ctx.skipped("distil")}, checkpoints=("distil",))
    return distil

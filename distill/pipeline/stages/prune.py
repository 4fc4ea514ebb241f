"""The prune stage: structured pruning of a copy of the student in steps, each followed by recovery distillation,
saved to ``OUTPUT/pruned``. Each step's model is checkpointed, so an interrupted run continues after the last one.

By default the stage *searches* (``search_and_recover``): it prunes along ``--prune-search`` (cumulative ratios of
heads and FFN neurons; default 0.5,0.75), recovers after each step for ``--recover-epochs`` (so the first step is
exactly one fixed prune at 0.5, and each step costs one recovery and one dev pass), and keeps the smallest model
whose recovered dev metric keeps its share of the distilled student's: ``--target-retention`` R, or 1 - (1 - R)/2
when INT8 follows (0.985 for 0.97: INT8 is held to R itself and needs the rest of the allowed loss), and never no
better than the trivial predictor. A step that cut the hidden width with the heads and fell below is tried once
more at the same ratio on the FFN alone (heads and width kept; later steps then prune the FFN alone too): on the
2,000-row benchmark every ``mini`` first step missed through the width cut (experiments/README.md). The first step
that falls below after that ends the search. (A first try that split ``--recover-epochs`` over 0.25,0.5,0.75
rejected 0.5 on the README run, where one full epoch keeps it.)
No step that keeps it: the unpruned student is kept, and the report says so. Fixed ratios (any ``--prune-heads``,
``--prune-ffn``, ``--prune-hidden`` or ``--prune-layers``) prune to them as given (``prune_and_recover``), and the
report still says whether the result keeps the target.

``distill prune`` (``commands.prune_only``) runs the same ``prune_and_recover`` on any model dir.
"""

from __future__ import annotations

import copy
import json
import shutil
from functools import partial
from itertools import islice
from typing import TYPE_CHECKING

from distill.core.artifacts import staged_dir, write_json
from distill.core.console import info
from distill.evaluate.predict import gathered_evaluator
from distill.objective.losses import soft_target_kl
from distill.pipeline.context import Context, on_main
from distill.pipeline.results import PruneResult, PruneStep, RetentionTarget
from distill.pipeline.stages.teaching import objective_for, primary, teacher_source
from distill.train.loop import fit, set_loader_epoch

if TYPE_CHECKING:
    from compress import PruneConfig


def _importance_inputs(ctx: Context, plan: PruneConfig, teacher) -> tuple[list[dict], dict, object]:
    """The batches the importance criterion reads, a 2-row example for tracing, and the loss of distillation-guided
    importance: the KL to the primary teacher's soft targets at the run's temperature (None for other criteria)."""
    from compress import kd_loss_fn
    from distill.data.pairs import student_view

    cfg = ctx.cfg
    rows = ctx.labelled_loader or ctx.train_loader  # augmented rows have no labels for taylor importance
    set_loader_epoch(rows, rows, cfg.train.seed, 0)  # the same batches whatever ran before
    batches = [student_view(b) for b in islice(iter(rows), cfg.prune.importance_batches)]
    example = {k: v[:2] for k, v in batches[0].items()}
    kd = partial(soft_target_kl, temperature=cfg.distill.temperature)
    loss_fn = kd_loss_fn(primary(teacher), kd) if plan.importance == "distillation" else None
    return batches, example, loss_fn


def _recover(ctx: Context, model, teacher, i: int, epochs: float, lr: float | None, evaluate,
             description: str) -> list[dict]:
    """Recovery distillation after step ``i`` for ``epochs``; returns its epochs. With ``--cache-teacher`` every
    step reads the same cached teacher outputs (built once)."""
    objective = objective_for(ctx, model, teacher)
    result = fit(model, objective, ctx.train_loader, ctx.cfg.train.fit_config(epochs=epochs, lr=lr),
                 teacher=teacher_source(ctx, teacher, objective), evaluate=evaluate, metric=ctx.task.main_metric,
                 description=description, checkpoints=ctx.checkpoints(f"recover-{i}"))
    ctx.fitted("prune", result)
    return result.history


def prune_and_recover(ctx: Context, model, teacher, plan: PruneConfig, steps: int = 1, lr: float | None = None,
                      resumed: PruneResult | None = None, n_layers: int | None = None) -> PruneResult:
    """Prune ``model`` in ``steps`` steps from 0 to ``plan``, each followed by distillation recovery from
    ``teacher`` (None: no recovery). ``resumed`` holds the steps already done (a resumed run: ``model`` is their
    result, ``n_layers`` the original depth). With checkpoints on, the model after each step is saved to
    ``OUTPUT/checkpoints/prune/step-<i>``. Returns every step's widths and dev metric, and the last step's report.
    """
    from compress import prune_model, step_configs

    batches, example, loss_fn = _importance_inputs(ctx, plan, teacher)
    evaluate = gathered_evaluator(ctx.task, ctx.dev_loader, ctx.cfg.train.device)
    result = resumed or PruneResult()
    result.model = model
    configs = step_configs(plan, steps, n_layers=n_layers or model.config.num_hidden_layers)
    for i, step in enumerate(configs, 1):
        if i <= len(result.steps):
            continue
        model.to("cpu").eval()
        report = prune_model(model, step, example, batches=batches, loss_fn=loss_fn)
        record = _step_record(i, f"step {i}/{steps}", report)
        if ctx.cfg.prune.recover_epochs > 0 and teacher is not None:
            epochs = ctx.cfg.prune.recover_epochs / steps
            result.recovery = (result.recovery or []) + _recover(ctx, model, teacher, i, epochs, lr, evaluate,
                                                                 f"recover {i}/{steps}")
        record.metric = evaluate(model)[ctx.task.main_metric]
        result.steps.append(record)
        result.report = report.to_dict()
        if ctx.checkpointing:
            _save_step(ctx, result, i)
    return result


def _step_record(i: int, label: str, report) -> PruneStep:
    """Log a step's widths (compress's ``PruneReport``) and return its record (dev metric filled after recovery)."""
    for note in report.notes:
        info(f"  note: {note}")
    info(f"  {label}: {report.params_before:,} → {report.params_after:,} params (layers "
         f"{report.layers_before}→{report.layers_after}, heads {report.heads_before}→{report.heads_after}, "
         f"hidden {report.hidden_before}→{report.hidden_after}, FFN {report.ffn_before}→{report.ffn_after})")
    return PruneStep(i, report.params_after, report.per_layer)


def search_and_recover(ctx: Context, model, teacher, lr: float | None, reference: float, original,
                       resumed: PruneResult | None = None) -> PruneResult:
    """The retention search: prune ``model`` (the unpruned student, or ``resumed.model`` after the kept steps of an
    interrupted run) along ``--prune-search`` (ratios of ``original``, the student's compress ``Layout``),
    recovering after each step, until a step's recovered dev metric misses its share of ``reference`` (``_share``).
    A step that cut the hidden width and missed is tried again at the same ratio on the FFN alone (heads and width
    kept), and later steps then prune the FFN alone too. A step no better than the trivial predictor misses even
    when it holds the target share (``_at_trivial``). Returns every step tried and its recovery epochs, with
    ``model`` and ``report`` those of the last kept step (the unpruned student and no report when none kept it).
    Only kept steps are checkpointed (a resumed run tries the steps after the last kept one again)."""
    settings = ctx.cfg.prune
    batches, example, loss_fn = _importance_inputs(ctx, settings.plan(), teacher)
    evaluate = gathered_evaluator(ctx.task, ctx.dev_loader, ctx.cfg.train.device)
    trial = partial(_search_trial, ctx, teacher, lr, reference, original, (example, batches, loss_fn, evaluate))
    result = resumed or PruneResult()
    result.model, result.reference = model, reference
    done = [s for s in result.steps if s.kept]
    scope = "ffn" if any(s.scope == "ffn" for s in done) else "all"
    for ratio in settings.search:
        if done and ratio <= done[-1].ratio:
            continue
        pruned, report = trial(result, ratio, scope)
        if not result.steps[-1].kept and scope == "all" and report.hidden_after < report.hidden_before:
            scope = "ffn"
            info(f"  ratio {ratio:g} cut the hidden width and missed: trying it again on the FFN alone")
            pruned, report = trial(result, ratio, scope)
        if not result.steps[-1].kept:
            break
        result.model, result.report = pruned, report.to_dict()
        if ctx.checkpointing:
            _save_step(ctx, result, len(result.steps))
    return result


def _search_trial(ctx: Context, teacher, lr: float | None, reference: float, original, inputs: tuple,
                  result: PruneResult, ratio: float, scope: str):
    """One step of the search: prune a copy of ``result.model`` to ``ratio`` (``scope``: ``all`` or ``ffn``), recover,
    score; appends its record (and recovery epochs) to ``result`` and returns the pruned copy and its report.
    ``inputs``: (example, importance batches, loss function, dev evaluator), built once per search."""
    from compress import prune_model
    from compress.prune.layout import measure
    from compress.prune.search import keeps, retention, search_step
    from distill.core.families import arch_of

    settings, metric = ctx.cfg.prune, ctx.task.main_metric
    example, batches, loss_fn, evaluate = inputs
    i = len(result.steps) + 1
    model = copy.deepcopy(result.model).to("cpu").eval()
    step = search_step(ratio, original, measure(model, arch_of(model)), settings.importance, scope)
    report = prune_model(model, step, example, batches=batches, loss_fn=loss_fn)
    what = "" if scope == "all" else ", FFN only"
    record = _step_record(i, f"search step {i} (ratio {ratio:g}{what})", report)
    record.ratio, record.scope = ratio, scope
    if settings.recover_epochs > 0 and teacher is not None:
        recovery = _recover(ctx, model, teacher, i, settings.recover_epochs, lr, evaluate, f"recover step {i}")
        result.recovery = (result.recovery or []) + recovery if recovery else result.recovery
    record.metric = evaluate(model)[metric]
    record.retention = retention(record.metric, reference)
    trivial = _at_trivial(ctx, record.metric, reference)
    record.kept = keeps(record.metric, reference, _share(ctx)) and not trivial
    result.steps.append(record)
    verdict = "kept" if record.kept else "no better than the trivial predictor" if trivial else "below the target"
    info(f"  step {i} (ratio {ratio:g}{what}): {metric} {record.metric:.4f} = {_percent(record.retention)} of the "
         f"student's → {verdict}")
    return model, report


def _share(ctx: Context) -> float:
    """What a pruning step must keep of the student's metric: ``--target-retention``, or with only half its allowed
    loss when INT8 follows (``compress.prune.search.pruning_share``: 0.985 for 0.97)."""
    from compress.prune.search import pruning_share

    return pruning_share(ctx.cfg.prune.target_retention, ctx.cfg.quantize.enabled)


def _at_trivial(ctx: Context, metric: float, reference: float) -> bool:
    """A step that took a student that learned (``reference`` above ``ctx.learned_above``, the trivial predictor's
    dev score plus the collapse margin) down to that floor: not kept, whatever share of the reference it holds (an
    F1 target of 97% can sit below the majority class's F1)."""
    floor = ctx.learned_above
    return floor is not None and reference > floor and metric <= floor


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def prune_target(ctx: Context, result: PruneResult, student_params: int) -> RetentionTarget:
    """How the pruned result stands against ``--target-retention`` (one line for the report)."""
    from compress.prune.search import keeps, threshold

    settings, name = ctx.cfg.prune, ctx.task.main_metric
    r, share, reference = settings.target_retention, _share(ctx), result.reference
    half = f" (half the {1 - r:.0%} that --target-retention {r:g} allows: INT8 has the rest)" if share != r else ""
    bar = threshold(reference, share)
    line = f"{share:.1%} of the student's {name}{half} ({reference:.4f}, ≥ {bar:.4f})"
    if settings.fixed:
        last = result.steps[-1].metric if result.steps else reference
        met = keeps(last, reference, share)
        note = (f"pruning (fixed ratios, no search) {'keeps' if met else 'misses'} {line}: {name} {last:.4f}"
                + ("" if met else "; drop the --prune-* ratios to search for a size that keeps it"))
        return RetentionTarget("pruned", r, reference, bar, last, met, "fixed ratios", note)
    kept = [s for s in result.steps if s.kept]
    if not kept:
        tried = "; ".join(_outcome(ctx, s, reference) for s in result.steps)
        note = (f"target not reachable: no pruning step kept {line}{f' ({tried})' if tried else ''}; kept instead: "
                f"the unpruned student ({student_params:,} params)")
        return RetentionTarget("pruned", r, reference, bar, reference, False, "the unpruned student", note)
    best, last = kept[-1], result.steps[-1]
    stop = "the schedule's last ratio kept it" if last.kept else f"stopped at {_outcome(ctx, last, reference)}"
    note = (f"pruning keeps {line}: kept {_step_name(best)} ({best.params:,} of {student_params:,} params, "
            f"{name} {best.metric:.4f}); {stop}")
    return RetentionTarget("pruned", r, reference, bar, best.metric, True, _step_name(best), note)


def _outcome(ctx: Context, step: PruneStep, reference: float) -> str:
    """``ratio 0.5: f1 0.8306`` (+ ``, no better than the trivial predictor`` when that is why it missed)."""
    trivial = ", no better than the trivial predictor" if _at_trivial(ctx, step.metric, reference) else ""
    return f"{_step_name(step)}: {ctx.task.main_metric} {step.metric:.4f}{trivial}"


def _step_name(step: PruneStep) -> str:
    """A search step as the report names it: ``ratio 0.5``, or ``ratio 0.5, FFN only`` (heads and width kept)."""
    return f"ratio {step.ratio:g}" + (", FFN only" if step.scope == "ffn" else "")


def _save_step(ctx: Context, result: PruneResult, i: int) -> None:
    """The model after pruning step ``i`` and its recovery, with the history so far; older steps are dropped."""
    from compress import save_pruned

    root = ctx.out / "checkpoints" / "prune"
    with staged_dir(root / f"step-{i}") as tmp:
        save_pruned(copy.deepcopy(result.model).to("cpu"), tmp)
        write_json(tmp / "prune_state.json", {"step": i, "skipped_nonfinite": ctx.skipped_nonfinite,
                                              "reference": result.reference, **result.history()})
    for old in root.glob("step-*"):
        if old.name != f"step-{i}":
            shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(ctx.out / "checkpoints" / f"recover-{i}", ignore_errors=True)


def _resumed_step(ctx: Context) -> PruneResult | None:
    """The steps an interrupted run finished (with the model after the newest one), or None."""
    from compress import load_pruned

    root = ctx.out / "checkpoints" / "prune"
    found = sorted(root.glob("step-*"), key=lambda p: int(p.name.split("-")[1])) if ctx.resume else []
    if not found:
        return None
    state = json.loads((found[-1] / "prune_state.json").read_text())
    ctx.skipped_nonfinite.update(state.get("skipped_nonfinite", {}))
    info(f"  resuming after pruning step {state['step']} ({found[-1]})")
    result = PruneResult.from_history(state, model=load_pruned(found[-1]).to("cpu").eval())
    result.reference = state.get("reference")
    return result


def stage_prune(ctx: Context, student, teacher, lr: float | None) -> PruneResult:
    """Prune a copy of the student (a retention search by default, else the fixed ratios), recover at ``lr``, save;
    the result says how it stands against ``--target-retention``."""
    from compress import load_pruned, save_pruned

    done = ctx.done("prune")
    if done is not None and (ctx.out / "pruned").is_dir():
        info(f"  finished earlier: loading {ctx.out / 'pruned'}")
        ctx.skipped_nonfinite.update(done.get("skipped_nonfinite", {}))
        return PruneResult.from_history(done["history"], model=load_pruned(ctx.out / "pruned").to("cpu").eval())
    resumed = _resumed_step(ctx)
    model = copy.deepcopy(student).to("cpu").eval() if resumed is None else resumed.model
    settings = ctx.cfg.prune
    reference = resumed.reference if resumed is not None and resumed.reference is not None else \
        gathered_evaluator(ctx.task, ctx.dev_loader, ctx.cfg.train.device)(student)[ctx.task.main_metric]
    if settings.fixed:
        result = prune_and_recover(ctx, model, teacher, settings.plan(), settings.steps, lr=lr, resumed=resumed,
                                   n_layers=student.config.num_hidden_layers)
        result.reference = reference
    else:
        info(f"  searching {','.join(f'{r:g}' for r in settings.search)} for the smallest model keeping "
             f"{_share(ctx):.1%} of the student's {ctx.task.main_metric} ({reference:.4f})")
        from compress.prune.layout import measure
        from distill.core.families import arch_of

        result = search_and_recover(ctx, model, teacher, lr, reference, measure(student, arch_of(student)), resumed)
    result.target = prune_target(ctx, result, sum(p.numel() for p in student.parameters()))
    info(f"  {result.target.note}")

    def write() -> None:
        with staged_dir(ctx.out / "pruned") as tmp:
            save_pruned(result.model.to("cpu"), tmp, ctx.tokenizer)

    on_main(ctx.cfg.train.device, write)
    ctx.mark_done("prune", {"history": result.history(), "skipped_nonfinite": ctx.skipped("prune")},
                  checkpoints=("prune",))
    return result

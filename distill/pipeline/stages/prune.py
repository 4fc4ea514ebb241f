"""The prune stage: structured pruning of a copy of the student in steps, each followed by recovery distillation,
saved to ``OUTPUT/pruned``. Each step's model is checkpointed, so an interrupted run continues after the last one.

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
from distill.pipeline.results import PruneResult, PruneStep
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


def _recover(ctx: Context, model, teacher, i: int, steps: int, lr: float | None, evaluate) -> list[dict]:
    """Recovery distillation after step ``i``: its share of ``--recover-epochs``; returns its epochs."""
    objective = objective_for(ctx, model, teacher)
    result = fit(model, objective, ctx.train_loader,
                 ctx.cfg.train.fit_config(epochs=ctx.cfg.prune.recover_epochs / steps, lr=lr),
                 teacher=teacher_source(ctx, teacher, objective), evaluate=evaluate, metric=ctx.task.main_metric,
                 description=f"recover {i}/{steps}", checkpoints=ctx.checkpoints(f"recover-{i}"))
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
        for note in report.notes:
            info(f"  note: {note}")
        info(f"  step {i}/{steps}: {report.params_before:,} → {report.params_after:,} params (layers "
             f"{report.layers_before}→{report.layers_after}, heads {report.heads_before}→{report.heads_after}, "
             f"hidden {report.hidden_before}→{report.hidden_after}, FFN {report.ffn_before}→{report.ffn_after})")
        record = PruneStep(i, report.params_after, report.per_layer)
        if ctx.cfg.prune.recover_epochs > 0 and teacher is not None:
            result.recovery = (result.recovery or []) + _recover(ctx, model, teacher, i, steps, lr, evaluate)
        record.metric = evaluate(model)[ctx.task.main_metric]
        result.steps.append(record)
        result.report = report.to_dict()
        if ctx.checkpointing:
            _save_step(ctx, result, i)
    return result


def _save_step(ctx: Context, result: PruneResult, i: int) -> None:
    """The model after pruning step ``i`` and its recovery, with the history so far; older steps are dropped."""
    from compress import save_pruned

    root = ctx.out / "checkpoints" / "prune"
    with staged_dir(root / f"step-{i}") as tmp:
        save_pruned(copy.deepcopy(result.model).to("cpu"), tmp)
        write_json(tmp / "prune_state.json", {"step": i, "skipped_nonfinite": ctx.skipped_nonfinite,
                                              **result.history()})
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
    return PruneResult.from_history(state, model=load_pruned(found[-1]).to("cpu").eval())


def stage_prune(ctx: Context, student, teacher, lr: float | None) -> PruneResult:
    """Prune a copy of the student (heads with hidden width and FFN neurons by default), recover at ``lr``, save."""
    from compress import load_pruned, save_pruned

    done = ctx.done("prune")
    if done is not None and (ctx.out / "pruned").is_dir():
        info(f"  finished earlier: loading {ctx.out / 'pruned'}")
        ctx.skipped_nonfinite.update(done.get("skipped_nonfinite", {}))
        return PruneResult.from_history(done["history"], model=load_pruned(ctx.out / "pruned").to("cpu").eval())
    resumed = _resumed_step(ctx)
    model = copy.deepcopy(student).to("cpu").eval() if resumed is None else resumed.model
    settings = ctx.cfg.prune
    result = prune_and_recover(ctx, model, teacher, settings.plan(), settings.steps, lr=lr, resumed=resumed,
                               n_layers=student.config.num_hidden_layers)

    def write() -> None:
        with staged_dir(ctx.out / "pruned") as tmp:
            save_pruned(result.model.to("cpu"), tmp, ctx.tokenizer)

    on_main(ctx.cfg.train.device, write)
    ctx.mark_done("prune", {"history": result.history(), "skipped_nonfinite": ctx.skipped("prune")},
                  checkpoints=("prune",))
    return result

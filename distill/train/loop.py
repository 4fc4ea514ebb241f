"""The one training loop: distillation, teacher fine-tuning and pruning recovery all run through ``fit``.

AdamW with linear warm-up/decay (``optim``), dynamic padding (done by the loader), gradient accumulation, bf16
autocast on CUDA, the teachers as ``distill.train.teacher.TeacherSource`` objects (live under
``torch.inference_mode``, optionally cast to bf16/fp16 on GPU, sharded, or a ``teachers.CachedTeacher``), optional
``torch.compile``, evaluation on dev after each epoch with the best epoch's weights kept (``scoring``), a length
fixed in epochs or derived from the data size with early stopping (``config.plan_epochs``, ``patience``), and
checkpoints with exact resume (``state.LoopState``). Launched with ``accelerate launch`` (more than one process) the
same loop runs data-parallel through ``accelerate.Accelerator`` (DDP); a single process never builds one, so CPU
runs stay as they were.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from transformers import get_linear_schedule_with_warmup

from distill.core import interrupts
from distill.core.console import info, progress_text, track
from distill.core.dist import get_accelerator, is_main_process
from distill.core.errors import ConfigError, DistillError, NonFiniteLoss
from distill.core.runtime import autocast, resolve_device, seed_everything
from distill.data.pairs import teacher_view
from distill.objective.capture import capture_qkv, eager_attention
from distill.objective.objective import Objective, ObjectiveBase
from distill.train.checkpoint import Checkpoints
from distill.train.config import FitResult, TrainConfig, plan_epochs
from distill.train.optim import build_optimizer, optimizer_step
from distill.train.scoring import mean_over_processes, score_epoch
from distill.train.sharding import shard
from distill.train.state import EpochStats, LoopState
from distill.train.teacher import TEACHER_DTYPES, TeacherSource, as_teachers, run_model
from distill.train.tracking import Tracker, tracker

__all__ = ["TEACHER_DTYPES", "FitResult", "TrainConfig", "fit", "set_loader_epoch",
           "teacher_layers_needed"]

OOM_FIX = ("use --cache-teacher, --teacher-dtype bf16, or a smaller --batch-size (with --grad-accum to keep the "
           "effective batch)")


def teacher_layers_needed(objective: Objective) -> list[int]:
    """The teacher ``hidden_states`` indices the objective reads (-1 = the last layer): what a cache must hold."""
    return objective.teacher_layers


def set_loader_epoch(loader: DataLoader, prepared: Iterable, seed: int, epoch: int) -> None:
    """The shuffle order depends only on (seed, epoch): repeatable and resumable, for every sampler kind."""
    sampler = getattr(loader, "batch_sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    generator = getattr(loader, "generator", None)
    if generator is not None:
        generator.manual_seed(seed * 1_000_003 + epoch)
    if prepared is not loader and hasattr(prepared, "set_epoch"):
        prepared.set_epoch(epoch)


# ---- the loop ----------------------------------------------------------------------------------------------

def fit(model: nn.Module, objective: ObjectiveBase, train_loader: DataLoader, config: TrainConfig, *,
        teacher: nn.Module | TeacherSource | Sequence[nn.Module | TeacherSource] | None = None,
        evaluate: Callable[[nn.Module], dict] | None = None, metric: str | None = None,
        description: str = "train", checkpoints: Checkpoints | None = None) -> FitResult:
    """Train ``model`` (in place) on ``objective``; with ``evaluate``, keep the weights of the best dev epoch.

    ``teacher`` is one teacher or a list of them (``distill.train.teacher.as_teachers``: modules, sharded modules,
    ``teachers.CachedTeacher``, whose batches must carry ``idx``), one per part of the objective (several need a
    ``distill.objective.ensemble.MultiTeacherObjective``); none to fine-tune. Batches tokenized for both models
    (``teacher_*`` columns, see ``distill.data.pairs``) feed each teacher its own token ids. With ``checkpoints``
    the loop writes one every ``checkpoints.every`` steps and at each epoch end, continues from the newest intact
    one when ``checkpoints.resume``, and on SIGINT/SIGTERM (``distill.core.interrupts``) writes one after the
    current step and raises ``Interrupted``.
    """
    seed_everything(config.seed)
    run = _setup(model, objective, train_loader, config, as_teachers(teacher), description, evaluate, metric)
    state = LoopState(model, objective, run.raw_optimizer, run.scheduler, run.total_steps, description,
                      _usable_checkpoints(checkpoints, run))
    state.restore(announce=run.main)
    result = state.result
    result.epochs, result.planned_steps, result.patience = run.epochs, run.total_steps, run.patience
    result.budget = config.epochs is None
    if run.main and result.budget and not state.resumed:
        info(f"  {description}: {run.epochs:g} epochs ({run.total_steps} steps) from the step budget"
             + (f", stopping after {run.patience} epochs without a better dev score" if run.patience else ""))
    with interrupts.deferred():
        for epoch in range(state.first_epoch, run.n_epochs):
            if _no_progress(run, result):
                result.stopped_early = True
                if run.main:
                    info(f"  {description}: stopped early after epoch {epoch} ({run.patience} epochs without a "
                         f"better dev {metric or 'score'}); keeping epoch {result.best_epoch}")
                break
            stats = _run_epoch(run, state, epoch)
            _end_epoch(run, state, epoch, stats)
    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    model.eval()
    result.steps, result.seconds = state.step, time.perf_counter() - run.start
    if result.skipped_nonfinite and run.main:
        info(f"  [yellow]warning:[/] {description}: skipped {result.skipped_nonfinite} batches with a non-finite loss")
    return result


@dataclass
class _Run:
    """What stays fixed during one ``fit``: models, teachers, optimiser, schedule, loader and sizes."""

    model: nn.Module
    objective: ObjectiveBase
    teachers: list[TeacherSource]
    config: TrainConfig
    description: str
    evaluate: Callable[[nn.Module], dict] | None
    metric: str | None
    acc: Any  # accelerate.Accelerator under `accelerate launch`, else None
    device: torch.device
    step_module: nn.Module  # student + objective (DDP-wrapped under accelerate)
    optimizer: Any  # what steps (accelerate's wrapper under accelerate)
    raw_optimizer: torch.optim.Optimizer  # what the scheduler and checkpoints see
    scheduler: Any
    params: list[torch.Tensor]
    train_loader: Any
    loader: Any  # what is iterated (accelerate's shard of it under accelerate)
    total_steps: int
    epochs: float  # planned (config.epochs, or the step budget's)
    patience: int  # evaluations without a new best before stopping (0 = never)
    hidden: bool  # run the models with output_hidden_states
    attentions: bool  # ... and with attention maps
    start: float
    log: Tracker

    @property
    def main(self) -> bool:
        return is_main_process()

    @property
    def accum(self) -> int:
        return self.config.grad_accum_steps

    @property
    def micro_per_epoch(self) -> int:
        return len(self.loader)

    @property
    def n_epochs(self) -> int:
        return math.ceil(self.epochs)


def _no_progress(run: _Run, result: FitResult) -> bool:
    """Early stopping: the last ``run.patience`` dev evaluations brought no new best (read from the history, so a
    resumed run decides the same), once the best is above ``config.learned_above`` (the trivial predictor's)."""
    if not run.patience or run.evaluate is None or not result.history or result.best_epoch < 1:
        return False
    if result.history[-1]["epoch"] - result.best_epoch < run.patience:
        return False
    floor = run.config.learned_above
    if floor is not None and not result.best_metric > floor:
        if run.main and result.history[-1]["epoch"] - result.best_epoch == run.patience:
            info(f"  {run.description}: no better dev {run.metric or 'score'} for {run.patience} epochs, but still at "
                 f"the trivial predictor's ({result.best_metric:.4f} ≤ {floor:.4f}): not stopping early")
        return False
    return True


def _setup(model: nn.Module, objective: ObjectiveBase, train_loader: DataLoader, config: TrainConfig,
           teachers: list[TeacherSource], description: str, evaluate, metric) -> _Run:
    """Place the models, check the teachers against the objective, build the optimiser, schedule and (under
    ``accelerate launch``) the data-parallel wrappers."""
    acc = get_accelerator(config.device)
    device = acc.device if acc is not None else resolve_device(config.device)
    sharded = acc is not None and config.shard_model
    if sharded:  # FSDP: each process keeps 1/N of the weights (moved to its device block by block)
        shard(model, device)
    model.to(device).train()
    objective.to(device).train()
    for one in teachers:
        one.prepare(device, config.teacher_dtype)
    _check_teachers(teachers, objective)
    optimizer, params = build_optimizer(model, objective, config)
    compiled = torch.compile(model, dynamic=True) if config.compile else None
    step_module = _StudentLoss(model, objective, compiled)
    loader, raw_optimizer = train_loader, optimizer
    if acc is not None:
        _align_length_groups(train_loader, acc.num_processes)
        if sharded:  # FSDP reduce-scatters the gradients itself: no DDP wrapper
            optimizer, loader = acc.prepare(optimizer, train_loader)
        else:
            step_module, optimizer, loader = acc.prepare(step_module, optimizer, train_loader)
    steps_per_epoch = math.ceil(len(loader) / config.grad_accum_steps)
    epochs = plan_epochs(config, steps_per_epoch)
    total_steps = max(1, math.ceil(steps_per_epoch * epochs))
    scheduler = get_linear_schedule_with_warmup(raw_optimizer, int(config.warmup_ratio * total_steps), total_steps)
    if acc is not None and config.skip_nonfinite:  # one process skipping a backward would hang the others
        raise ConfigError("--skip-nonfinite works in single-process runs only", "run without `accelerate launch`")
    return _Run(model=model, objective=objective, teachers=teachers, config=config, description=description,
                evaluate=evaluate, metric=metric, acc=acc, device=device, step_module=step_module,
                optimizer=optimizer, raw_optimizer=raw_optimizer, scheduler=scheduler, params=params,
                train_loader=train_loader, loader=loader, total_steps=total_steps, epochs=epochs,
                patience=config.early_stopping,
                hidden=objective.needs_hidden_states, attentions=objective.needs_attentions and bool(teachers),
                start=time.perf_counter(), log=tracker() if is_main_process() else Tracker())


def _check_teachers(teachers: list[TeacherSource], objective: ObjectiveBase) -> None:
    """One teacher per part of the objective, each able to give its part what it needs."""
    if not teachers:
        return
    if len(objective.parts) != len(teachers):
        raise ConfigError(f"{len(teachers)} teachers need an objective with one part per teacher",
                          "build a distill.objective.ensemble.MultiTeacherObjective with one Objective per teacher")
    for one, part in zip(teachers, objective.parts, strict=True):
        one.check(part)


def _usable_checkpoints(checkpoints: Checkpoints | None, run: _Run) -> Checkpoints | None:
    """Checkpoints are single-process only: under ``accelerate launch`` the run says so and writes none."""
    if run.acc is not None and checkpoints is not None:
        if run.main:
            info(f"  note: {run.description} writes no checkpoints under `accelerate launch` (single-process runs "
                 "only)")
        return None
    return checkpoints


def _run_epoch(run: _Run, state: LoopState, epoch: int) -> EpochStats:
    """One pass over the loader (the rest of it when resuming mid-epoch), stopping at the last optimiser step."""
    set_loader_epoch(run.train_loader, run.loader, run.config.seed, epoch)
    sums, seen, skip = state.resume_point(epoch)
    batches = iter(run.loader)
    if skip:  # replay the epoch's order up to where the checkpoint was taken, then its RNG states
        for _ in itertools.islice(batches, skip):
            pass
        state.replayed()
    stats = EpochStats(sums, seen)
    if run.main:
        remaining = (run.total_steps - state.step) * run.accum
        batches = track(batches, f"{run.description} {epoch + 1}/{run.n_epochs}",
                        total=max(0, min(run.micro_per_epoch - skip, remaining)),
                        postfix=lambda: progress_text(stats.last, stats.speed))
    with contextlib.ExitStack() as stack:  # hooks and eager attention are undone even on errors
        qkv = _watch(stack, run)
        for i, batch in enumerate(batches, start=skip):
            if state.step >= run.total_steps:
                break
            _train_batch(run, state, stats, _to_device(batch, run.device), i, epoch, qkv)
    return stats


def _train_batch(run: _Run, state: LoopState, stats: EpochStats, batch: dict, i: int, epoch: int,
                 qkv: tuple) -> None:
    """Micro-batch ``i``: forward and backward, an optimiser step at an accumulation boundary, the step logged,
    and a checkpoint when one is due or a signal asks the run to stop."""
    boundary = (i + 1) % run.accum == 0 or i + 1 == run.micro_per_epoch
    run.objective.set_progress(state.step / run.total_steps)
    sync = contextlib.nullcontext() if run.acc is None or boundary else run.acc.no_sync(run.step_module)
    try:
        with sync:
            loss, terms, finite = _micro_step(run, batch, qkv)
        if not finite:
            where = f"{run.description} step {state.step + 1} (epoch {epoch + 1}, batch {i + 1})"
            if not run.config.skip_nonfinite:
                raise _nonfinite_error(loss, terms, where, state.checkpoints)
            state.result.skipped_nonfinite += 1
        if boundary:
            optimizer_step(run.params, run.optimizer, run.scheduler, run.config.max_grad_norm)
            state.step += 1
    except torch.OutOfMemoryError:
        raise _oom(batch) from None
    stats.add(len(batch["labels"]), float(loss.detach()) if finite else None, terms)
    if not boundary:
        return
    run.log.log_step(run.description, state.step, {**stats.last, "lr": run.scheduler.get_last_lr()[0]})
    if i + 1 < run.micro_per_epoch and state.step < run.total_steps:  # epoch ends save in _end_epoch
        saved = state.save(epoch, i + 1, stats) if state.due() else None
        if interrupts.requested():
            raise state.stop(saved or state.save(epoch, i + 1, stats))


def _end_epoch(run: _Run, state: LoopState, epoch: int, stats: EpochStats) -> None:
    """The epoch's record (mean loss terms, dev metrics, the best weights kept), logged, and a checkpoint."""
    means = stats.means()
    record = {"epoch": epoch + 1, "step": state.step, **(mean_over_processes(run.acc, means) if run.acc else means)}
    if run.evaluate is not None:
        try:
            best = score_epoch(run.model, run.evaluate, run.metric, record, state.result)
            state.best_state = best or state.best_state
        except torch.OutOfMemoryError:
            raise _oom(where=" while scoring the dev set") from None
    state.result.history.append(record)
    run.log.log_epoch(run.description, epoch + 1, record)
    if run.main:
        info(f"  {run.description} epoch {epoch + 1}: " + ", ".join(f"{k} {v:.4f}" for k, v in record.items()
                                                                    if isinstance(v, float))
             + f", {stats.rate():.0f} samples/s")
    saved = state.save(epoch + 1, 0)
    if interrupts.requested():
        raise state.stop(saved)


# ---- one step ----------------------------------------------------------------------------------------------

def _to_device(batch: dict, device: torch.device) -> dict:
    """Move the batch to ``device``; ``idx`` stays where it is (a teacher cache reads it on the CPU)."""
    return {k: v if k == "idx" else v.to(device, non_blocking=True) for k, v in batch.items()}


class _StudentLoss(nn.Module):
    """Student and objective as one module: DDP then also syncs the objective's projections, and the student's
    forward may go through its compiled version while ``state_dict`` stays the plain model's."""

    def __init__(self, model: nn.Module, objective: ObjectiveBase, compiled: Callable | None = None) -> None:
        super().__init__()
        self.model = model
        self.objective = objective
        self._run = [compiled or model]  # a list, so the compiled wrapper is not registered twice

    def forward(self, batch: dict, teacher_outs: list | None, hidden: bool, attentions: bool,
                qkv: tuple = (None, None)) -> tuple[torch.Tensor, dict[str, float]]:
        student_out = run_model(self._run[0], batch, hidden, attentions)
        student_qkv, teacher_qkv = qkv
        return self.objective.loss(student_out, batch["labels"], teacher_outs, batch.get("attention_mask"),
                                   student_qkv=student_qkv() if student_qkv else None,
                                   teacher_qkv=teacher_qkv() if teacher_qkv else None)


def _watch(stack: contextlib.ExitStack, run: _Run) -> tuple:
    """Turn on, for the epoch, what the objective needs from the models: eager attention maps and Q/K/V capture.

    Returns (student Q/K/V, per-teacher Q/K/V) as callables that read the capture after the forwards, or
    (None, None) without capture.
    """
    if run.attentions:
        stack.enter_context(eager_attention(run.model))
    capture = run.objective.needs_qkv and bool(run.teachers)
    s, t = run.objective.qkv_layers
    caught = [one.watch(stack, run.attentions, t if capture else None) for one in run.teachers]
    if not capture:
        return None, None
    student = stack.enter_context(capture_qkv(run.model, [s]))
    return (lambda: student[s]), (lambda: [c[t] for c in caught])


def _teacher_outputs(teachers: list[TeacherSource], batch: dict, hidden: bool, attentions: bool) -> list | None:
    """Each teacher's outputs on the batch (its own columns when the batch was tokenized for both); None without
    teachers."""
    if not teachers:
        return None
    view = teacher_view(batch)
    return [one.outputs(view, hidden, attentions) for one in teachers]


def _micro_step(run: _Run, batch: dict, qkv: tuple) -> tuple[torch.Tensor, dict[str, float], bool]:
    """Teacher and student forward, the loss checked, and its backward (scaled by 1/accum when accumulating).

    A non-finite loss gets no backward; the third value says whether the loss was finite.
    """
    with autocast(run.device):
        teacher_outs = _teacher_outputs(run.teachers, batch, run.hidden, run.attentions)
        loss, terms = run.step_module(batch, teacher_outs, run.hidden, run.attentions, qkv)
    if not torch.isfinite(loss):
        return loss, terms, False
    scaled = loss / run.accum if run.accum > 1 else loss
    if run.acc is not None:
        run.acc.backward(scaled)
    else:
        scaled.backward()
    return loss, terms, True


def _nonfinite_error(loss: torch.Tensor, terms: dict[str, float], where: str,
                     checkpoints: Checkpoints | None) -> NonFiniteLoss:
    """Which loss terms went non-finite, where, and which checkpoint is still good."""
    bad = [f"{k}={v}" for k, v in terms.items() if not math.isfinite(v)] or ["the weighted total"]
    kept = ""
    if checkpoints is not None and checkpoints.last_saved is not None:
        kept = f"; the last good checkpoint (step {checkpoints.last_saved}) is kept in {checkpoints.directory}"
    return NonFiniteLoss(f"the training loss became {float(loss.detach())} at {where} (non-finite: {', '.join(bad)})",
                         f"lower --lr or --temperature, or pass --skip-nonfinite to skip such batches{kept}")


def _oom(batch: dict | None = None, where: str = "") -> DistillError:
    """The one-line error for CUDA out-of-memory, naming the batch size (or the stage) and the usual fixes."""
    size = f" at batch size {len(next(iter(batch.values())))}" if batch else ""
    return DistillError(f"out of GPU memory{where}{size}", OOM_FIX)


def _align_length_groups(loader, processes: int) -> None:
    """Tell a length-grouped batch sampler how many processes step together (see ``LengthGroupedBatchSampler``)."""
    sampler = getattr(loader, "batch_sampler", None)
    if hasattr(sampler, "num_processes"):
        sampler.num_processes = processes

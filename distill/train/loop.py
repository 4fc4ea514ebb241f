"""The one training loop: distillation, teacher fine-tuning and pruning recovery all run through ``fit``.

AdamW with linear warm-up/decay, dynamic padding (done by the loader), gradient accumulation, bf16 autocast on
CUDA, the teacher under ``torch.inference_mode`` (optionally cast to bf16/fp16 on GPU, or replaced by a
``teachers.CachedTeacher``), optional ``torch.compile``, evaluation on dev after each epoch, and the best epoch's
weights kept. Launched with ``accelerate launch`` (more than one process) the same loop runs data-parallel
through ``accelerate.Accelerator`` (DDP); a single process never builds one, so CPU runs stay as they were.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import get_linear_schedule_with_warmup

from distill.core import interrupts
from distill.core.console import info, progress_text, track
from distill.core.dist import get_accelerator, is_main_process
from distill.core.errors import ConfigError, DistillError, NonFiniteLoss
from distill.core.runtime import autocast, resolve_device, seed_everything
from distill.data.pairs import TEACHER_PREFIX, teacher_view
from distill.objective.capture import capture_qkv, eager_attention
from distill.objective.objective import Objective
from distill.train.checkpoint import Checkpoints, restore_rng, restore_training, save_training
from distill.train.sharding import is_sharded, shard
from distill.train.tracking import Tracker, tracker

TEACHER_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
OOM_FIX = ("use --cache-teacher, --teacher-dtype bf16, or a smaller --batch-size (with --grad-accum to keep the "
           "effective batch)")
STRIPPED = ("labels", "idx")  # batch columns the models never see


@dataclass
class TrainConfig:
    """Optimiser and schedule settings shared by every training stage.

    ``grad_accum_steps`` micro-batches make one optimiser step; ``compile`` runs the student through
    ``torch.compile``; ``teacher_dtype`` casts (a copy of) the teacher on GPU only; ``skip_nonfinite`` skips
    batches whose loss is NaN/inf (counted) instead of stopping; ``shard_model`` trains the model FSDP-sharded
    across the launched processes (teacher fine-tuning with ``--teacher-shard fsdp``, see ``distill.train.sharding``)
    instead of replicating it (DDP).
    """

    lr: float = 1e-4
    epochs: float = 3.0
    batch_size: int = 32
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 42
    device: str = "auto"
    grad_accum_steps: int = 1
    compile: bool = False
    teacher_dtype: str = "fp32"
    skip_nonfinite: bool = False
    shard_model: bool = False

    def __post_init__(self) -> None:
        if not self.epochs > 0:
            raise ConfigError(f"--epochs {self.epochs} must be > 0", "use e.g. --epochs 3")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size {self.batch_size} must be ≥ 1", "use e.g. --batch-size 32")
        if not self.lr > 0:
            raise ConfigError(f"--lr {self.lr} must be > 0", "use e.g. --lr 1e-4")
        if self.grad_accum_steps < 1:
            raise ConfigError(f"--grad-accum {self.grad_accum_steps} must be ≥ 1", "use e.g. --grad-accum 2")
        if self.teacher_dtype not in TEACHER_DTYPES:
            raise ConfigError(f"--teacher-dtype '{self.teacher_dtype}' is unknown",
                              f"choose one of: {', '.join(TEACHER_DTYPES)}")


@dataclass
class FitResult:
    """What happened: per-epoch history (loss terms, dev metrics), the best epoch, the wall time, and how many
    batches were skipped for a non-finite loss (``TrainConfig.skip_nonfinite``)."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_metric: float = float("-inf")
    steps: int = 0
    seconds: float = 0.0
    skipped_nonfinite: int = 0
    resumed_from: int | None = None


# ---- processes ---------------------------------------------------------------------------------------------



def gathered_evaluator(task, loader, device: str | torch.device = "auto"):
    """``evaluation.evaluator``, except that under ``accelerate launch`` each process scores its shard of the dev
    set and the logits are gathered (``gather_for_metrics``), so every process sees the whole set's metrics."""
    from distill.evaluate.predict import compute_metrics, evaluator

    acc = get_accelerator(device if isinstance(device, str) else device.type)
    if acc is None:
        return evaluator(task, loader, device)
    shard = acc.prepare_data_loader(loader)

    def run(model) -> dict[str, float]:
        was_training = model.training
        model.eval()
        logits, labels = [], []
        for batch in shard:
            gold = batch.pop("labels")
            inputs = {k: v.to(acc.device) for k, v in batch.items() if k not in STRIPPED}
            with torch.inference_mode(), autocast(acc.device):
                out = model(**inputs).logits.float()
            out, gold = acc.gather_for_metrics((out, gold.to(acc.device)))
            logits.append(out.cpu())
            labels.append(gold.cpu())
        model.train(was_training)
        return compute_metrics(task, torch.cat(logits).numpy(), torch.cat(labels).numpy())

    return run


# ---- one step ----------------------------------------------------------------------------------------------

def _to_device(batch: dict, device: torch.device) -> dict:
    """Move the batch to ``device``; ``idx`` stays where it is (a teacher cache reads it on the CPU)."""
    return {k: v if k == "idx" else v.to(device, non_blocking=True) for k, v in batch.items()}


def _forward(model, batch: dict, hidden: bool, attentions: bool = False):
    inputs = {k: v for k, v in batch.items() if k not in STRIPPED and not k.startswith(TEACHER_PREFIX)}
    if attentions:
        inputs["output_attentions"] = True
    return model(**inputs, output_hidden_states=hidden)


class _StudentLoss(nn.Module):
    """Student and objective as one module: DDP then also syncs the objective's projections, and the student's
    forward may go through its compiled version while ``state_dict`` stays the plain model's."""

    def __init__(self, model: nn.Module, objective: Objective, compiled: Callable | None = None) -> None:
        super().__init__()
        self.model = model
        self.objective = objective
        self._run = [compiled or model]  # a list, so the compiled wrapper is not registered twice

    def forward(self, batch: dict, teacher_out, hidden: bool, attentions: bool, qkv=(None, None)):
        student_out = _forward(self._run[0], batch, hidden, attentions)
        s_qkv, t_qkv = qkv
        extra = {}
        if s_qkv is not None:
            (s_layer,) = s_qkv
            if isinstance(t_qkv, list):  # several teachers: one capture each
                extra = {"student_qkv": s_qkv[s_layer], "teacher_qkv": [t[next(iter(t))] for t in t_qkv]}
            else:
                (t_layer,) = t_qkv
                extra = {"student_qkv": s_qkv[s_layer], "teacher_qkv": t_qkv[t_layer]}
        return self.objective(student_out, batch["labels"], teacher_out, batch.get("attention_mask"), **extra)


def _loss_context(stack: contextlib.ExitStack, model, teacher, objective: Objective):
    """Turn on what the objective needs for the training loop: eager attention maps and Q/K/V capture hooks.

    ``teacher`` may be a list (several teachers): each gets eager attention and its own capture.
    """
    teachers = teacher if isinstance(teacher, list) else [teacher]
    attentions = objective.needs_attentions and teacher is not None
    if attentions:
        stack.enter_context(eager_attention(model))
        for t in teachers:
            stack.enter_context(eager_attention(t))
    captured = (None, None)
    if objective.needs_qkv and teacher is not None:
        s, t = objective.qkv_layers
        caught = [stack.enter_context(capture_qkv(one, [t])) for one in teachers]
        captured = (stack.enter_context(capture_qkv(model, [s])), caught if isinstance(teacher, list) else caught[0])
    return attentions, captured


def teacher_layers_needed(objective: Objective) -> list[int]:
    """The teacher ``hidden_states`` indices the objective reads (-1 = the last layer): what a cache must hold."""
    layers = {j for _, j in objective.layer_map}
    if objective.config.embedding_weight > 0:
        layers.add(0)
    if objective.config.cosine_weight > 0:
        layers.add(-1)
    return sorted(layers)


def _prepare_teacher(teacher, device: torch.device, dtype_name: str):
    """The module to run as teacher: on ``device``, in eval mode, cast (as a copy) on GPU when asked.

    A non-module callable (a ``teachers.CachedTeacher``) is returned as is; a list is prepared item by item.
    """
    if isinstance(teacher, list):
        return [_prepare_teacher(t, device, dtype_name) for t in teacher]
    if teacher is None or not isinstance(teacher, nn.Module) or is_sharded(teacher):
        return teacher  # a sharded teacher is already cast and placed (distill.train.sharding.shard)
    dtype = TEACHER_DTYPES[dtype_name]
    if device.type == "cuda" and dtype != torch.float32:
        return copy.deepcopy(teacher.to("cpu")).to(device=device, dtype=dtype).eval()
    return teacher.to(device).eval()


def _check_cached_teacher(teacher, objective: Objective) -> None:
    """A cached teacher has logits and some hidden states only: refuse objectives that need more.

    Several teachers (a list) are checked against their own parts of a ``MultiTeacherObjective``.
    """
    if isinstance(teacher, list):
        parts = getattr(objective, "parts", None)
        if parts is None or len(parts) != len(teacher):
            raise ConfigError(f"{len(teacher)} teachers need an objective with one part per teacher",
                              "build a distill.objective.ensemble.MultiTeacherObjective with one Objective per teacher")
        for one, part in zip(teacher, parts, strict=True):
            _check_cached_teacher(one, part)
        return
    if teacher is None or isinstance(teacher, nn.Module):
        return
    if objective.needs_attentions or objective.needs_qkv:
        raise ConfigError("the teacher cache holds no attention maps or query/key/value",
                          "drop --cache-teacher, or use --attention-weight 0 and --relation-weight 0")
    require = getattr(teacher, "require_layers", None)
    if require is not None:
        require(teacher_layers_needed(objective))


def _teacher_outputs(teacher, batch: dict, hidden: bool, attentions: bool):
    """The teacher's outputs as constants: a module runs under inference mode, a cache looks rows up by ``idx``.

    A list of teachers gives a list of outputs; a batch tokenized for both models feeds the teacher its own columns.
    """
    if isinstance(teacher, list):
        return [_teacher_outputs(t, batch, hidden, attentions) for t in teacher]
    batch = teacher_view(batch)
    if not isinstance(teacher, nn.Module):
        if "idx" not in batch:
            raise DistillError("the training batches carry no 'idx' column, so the teacher cache cannot find rows",
                               "tokenize the training set with tokenize(..., index=True)")
        return teacher(batch)
    with torch.inference_mode():
        out = _forward(teacher, batch, hidden, attentions)
    return _as_constants(out)


def set_loader_epoch(loader, prepared, seed: int, epoch: int) -> None:
    """The shuffle order depends only on (seed, epoch): repeatable and resumable, for every sampler kind."""
    sampler = getattr(loader, "batch_sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    generator = getattr(loader, "generator", None)
    if generator is not None:
        generator.manual_seed(seed * 1_000_003 + epoch)
    if prepared is not loader and hasattr(prepared, "set_epoch"):
        prepared.set_epoch(epoch)


def _optimizer(model: nn.Module, objective: Objective, config: TrainConfig):
    """AdamW without decay on biases and norms; the fused kernel where PyTorch has one for these parameters.

    On CPU the default AdamW updates one tensor at a time: 55% of a cached distillation step went there
    (experiments/README.md, profile); the fused kernel is 4-7× faster on the same parameters."""
    params = [p for p in list(model.parameters()) + list(objective.parameters()) if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, fused=_can_fuse(params)), params


def _can_fuse(params: list[torch.Tensor]) -> bool:
    """Fused AdamW takes plain floating-point tensors on one CPU or CUDA device (not FSDP's DTensors)."""
    return bool(params) and all(
        not hasattr(p, "to_local") and p.dtype in (torch.float32, torch.float16, torch.bfloat16)
        and p.device.type in ("cpu", "cuda") and p.device == params[0].device for p in params)


def _micro_step(step_module, teacher, batch: dict, needs: tuple, device: torch.device, acc,
                accum: int) -> tuple[torch.Tensor, dict[str, float], bool]:
    """Teacher and student forward, the loss checked, and its backward (scaled by 1/accum when accumulating).

    A non-finite loss gets no backward; the third value says whether the loss was finite.
    """
    hidden, attentions, qkv = needs
    with autocast(device):
        teacher_out = _teacher_outputs(teacher, batch, hidden, attentions) if teacher is not None else None
        loss, terms = step_module(batch, teacher_out, hidden, attentions, qkv)
    if not torch.isfinite(loss):
        return loss, terms, False
    scaled = loss / accum if accum > 1 else loss
    if acc is not None:
        acc.backward(scaled)
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


def _optimizer_step(params: list, optimizer, scheduler, max_grad_norm: float) -> None:
    """Clip, step, schedule, clear."""
    torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def _score_epoch(model, evaluate: Callable, metric: str | None, record: dict, result: FitResult) -> dict | None:
    """Score on dev into ``record``; a CPU copy of the weights when this epoch is the best so far, else None."""
    model.eval()
    scores = evaluate(model)
    model.train()
    record.update({f"dev_{k}": v for k, v in scores.items()})
    key = metric or next(iter(scores))
    if scores[key] > result.best_metric:
        result.best_metric, result.best_epoch = scores[key], record["epoch"]
        return {k: v.detach().clone() if hasattr(v, "to_local") else v.detach().to("cpu", copy=True)
                for k, v in model.state_dict().items()}  # FSDP shards (DTensors) stay where they are
    return None


def _mean_over_processes(acc, values: dict[str, float]) -> dict[str, float]:
    """Average per-process epoch means, so the history describes the whole epoch on every process."""
    if not values:
        return values
    keys = list(values)  # the same order on every process
    mean = acc.reduce(torch.tensor([values[k] for k in keys], dtype=torch.float64, device=acc.device), "mean")
    return dict(zip(keys, mean.tolist(), strict=True))


def _oom(batch: dict | None = None, where: str = "") -> DistillError:
    """The one-line error for CUDA out-of-memory, naming the batch size (or the stage) and the usual fixes."""
    size = f" at batch size {len(next(iter(batch.values())))}" if batch else ""
    return DistillError(f"out of GPU memory{where}{size}", OOM_FIX)


def _align_length_groups(loader, processes: int) -> None:
    """Tell a length-grouped batch sampler how many processes step together (see ``LengthGroupedBatchSampler``)."""
    sampler = getattr(loader, "batch_sampler", None)
    if hasattr(sampler, "num_processes"):
        sampler.num_processes = processes


# ---- the loop ----------------------------------------------------------------------------------------------

def fit(model: torch.nn.Module, objective: Objective, train_loader, config: TrainConfig, *,
        teacher: torch.nn.Module | Callable | list | None = None,
        evaluate: Callable[[torch.nn.Module], dict] | None = None, metric: str | None = None,
        description: str = "train", checkpoints: Checkpoints | None = None) -> FitResult:
    """Train ``model`` (in place) on ``objective``; with ``evaluate``, keep the weights of the best dev epoch.

    ``teacher`` is a module or a ``teachers.CachedTeacher`` (then the batches must carry ``idx``), or a list of
    them with a ``distill.objective.ensemble.MultiTeacherObjective``. Batches tokenized for both models (``teacher_*``
    columns, see ``distill.data.pairs``) feed the teacher its own token ids. With ``checkpoints`` the loop
    writes one every ``checkpoints.every`` steps and at each epoch end, continues from the newest intact one when
    ``checkpoints.resume``, and on SIGINT/SIGTERM (``distill.core.interrupts``) writes one after the current step and
    raises ``Interrupted``.
    """
    seed_everything(config.seed)
    acc = get_accelerator(config.device)
    device = acc.device if acc is not None else resolve_device(config.device)
    main = is_main_process()
    sharded = acc is not None and config.shard_model
    if sharded:  # FSDP: each process keeps 1/N of the weights (moved to its device block by block)
        shard(model, device)
    model.to(device).train()
    objective.to(device).train()
    teacher = _prepare_teacher(teacher, device, config.teacher_dtype)
    _check_cached_teacher(teacher, objective)
    optimizer, params = _optimizer(model, objective, config)
    compiled = torch.compile(model, dynamic=True) if config.compile else None
    step_module = _StudentLoss(model, objective, compiled)
    loader, raw_optimizer = train_loader, optimizer
    if acc is not None:
        _align_length_groups(train_loader, acc.num_processes)
        if sharded:  # FSDP reduce-scatters the gradients itself: no DDP wrapper
            optimizer, loader = acc.prepare(optimizer, train_loader)
        else:
            step_module, optimizer, loader = acc.prepare(step_module, optimizer, train_loader)
    accum = config.grad_accum_steps
    micro_per_epoch = len(loader)
    steps_per_epoch = math.ceil(micro_per_epoch / accum)
    total_steps = max(1, math.ceil(steps_per_epoch * config.epochs))
    scheduler = get_linear_schedule_with_warmup(raw_optimizer, int(config.warmup_ratio * total_steps), total_steps)
    hidden = objective.needs_hidden_states
    result, best_state, step, start = FitResult(), None, 0, time.perf_counter()
    n_epochs = math.ceil(config.epochs)
    if acc is not None and config.skip_nonfinite:  # one process skipping a backward would hang the others
        raise ConfigError("--skip-nonfinite works in single-process runs only", "run without `accelerate launch`")
    if acc is not None and checkpoints is not None:
        if main:
            info(f"  note: {description} writes no checkpoints under `accelerate launch` (single-process runs only)")
        checkpoints = None
    if checkpoints is not None and not checkpoints.resume:
        checkpoints.clear()  # a fresh run: older checkpoints there would outrank its own
    ckpt = checkpoints.load_latest() if checkpoints is not None and checkpoints.resume else None
    first_epoch = first_batch = 0
    if ckpt is not None:
        if ckpt.state.get("total_steps") != total_steps:
            raise ConfigError(f"checkpoint {ckpt.path} belongs to a run of {ckpt.state.get('total_steps')} steps, "
                              f"this one has {total_steps}", "resume with the settings the run started with")
        best_state = _restore(ckpt, model, objective, raw_optimizer, scheduler, result)
        step, first_epoch, first_batch = ckpt.state["step"], ckpt.state["epoch"], ckpt.state["batch"]
        checkpoints.last_saved = result.resumed_from = step
        if main:
            info(f"  {description}: resuming from step {step} of {total_steps} ({ckpt.path})")

    def save(epoch: int, batch: int, sums: dict, seen: int) -> str | None:
        if checkpoints is None:
            return None
        state = {"step": step, "epoch": epoch, "batch": batch, "sums": sums, "seen": seen,
                 "history": result.history, "best_epoch": result.best_epoch,
                 "best_metric": None if result.best_metric == float("-inf") else result.best_metric,
                 "skipped_nonfinite": result.skipped_nonfinite, "total_steps": total_steps,
                 "loss_schedule": {"progress": objective.progress, "temperature": objective.temperature,
                                   "alpha": objective.alpha, "feature_scale": objective.feature_scale}}
        return str(save_training(checkpoints, step, modules={"model": model, "objective": objective},
                                 optimizer=raw_optimizer, scheduler=scheduler,
                                 extra={"best": best_state} if best_state is not None else None, state=state))

    def stop(saved: str | None) -> interrupts.Interrupted:
        return interrupts.Interrupted(interrupts.take(), f"{description} step {step}/{total_steps}", saved)

    log = tracker() if main else Tracker()
    with interrupts.deferred():
        for epoch in range(first_epoch, n_epochs):
            set_loader_epoch(train_loader, loader, config.seed, epoch)
            resuming = ckpt is not None and epoch == first_epoch
            sums: dict[str, float] = dict(ckpt.state["sums"]) if resuming else {}
            seen = ckpt.state["seen"] if resuming else 0
            skip = first_batch if resuming else 0
            if resuming and not skip:
                restore_rng(ckpt)
            batches = iter(loader)
            if skip:  # replay the epoch's order up to where the checkpoint was taken, then its RNG states
                for _ in itertools.islice(batches, skip):
                    pass
                restore_rng(ckpt)
            last = {"loss": float("nan")}
            speed = {"samples": 0, "start": time.perf_counter()}  # throughput of this epoch, for the progress line
            remaining = (total_steps - step) * accum
            if main:
                batches = track(batches, f"{description} {epoch + 1}/{n_epochs}",
                                total=max(0, min(micro_per_epoch - skip, remaining)),
                                postfix=lambda last=last, speed=speed: progress_text(last, speed))
            with contextlib.ExitStack() as stack:  # hooks and eager attention are undone even on errors
                attentions, qkv = _loss_context(stack, model, teacher, objective)
                for i, batch in enumerate(batches, start=skip):
                    if step >= total_steps:
                        break
                    batch = _to_device(batch, device)
                    boundary = (i + 1) % accum == 0 or i + 1 == micro_per_epoch
                    objective.set_progress(step / total_steps)
                    sync = contextlib.nullcontext() if acc is None or boundary else acc.no_sync(step_module)
                    try:
                        with sync:
                            loss, terms, finite = _micro_step(step_module, teacher, batch,
                                                              (hidden, attentions, qkv), device, acc, accum)
                        if not finite:
                            where = f"{description} step {step + 1} (epoch {epoch + 1}, batch {i + 1})"
                            if not config.skip_nonfinite:
                                raise _nonfinite_error(loss, terms, where, checkpoints)
                            result.skipped_nonfinite += 1
                        if boundary:
                            _optimizer_step(params, optimizer, scheduler, config.max_grad_norm)
                            step += 1
                    except torch.OutOfMemoryError:
                        raise _oom(batch) from None
                    speed["samples"] += len(batch["labels"])
                    if finite:
                        seen += 1
                        last.update(loss=float(loss.detach()), **terms)
                        for k, v in {"loss": last["loss"], **terms}.items():
                            sums[k] = sums.get(k, 0.0) + v
                    if boundary:
                        log.log_step(description, step, {**last, "lr": scheduler.get_last_lr()[0]})
                    if boundary and i + 1 < micro_per_epoch and step < total_steps:  # epoch ends save below
                        saved = save(epoch, i + 1, sums, seen) if checkpoints and checkpoints.due(step) else None
                        if interrupts.requested():
                            raise stop(saved or save(epoch, i + 1, sums, seen))
            means = {k: v / max(seen, 1) for k, v in sums.items()}
            record = {"epoch": epoch + 1, "step": step, **(_mean_over_processes(acc, means) if acc else means)}
            if evaluate is not None:
                try:
                    best_state = _score_epoch(model, evaluate, metric, record, result) or best_state
                except torch.OutOfMemoryError:
                    raise _oom(where=" while scoring the dev set") from None
            result.history.append(record)
            log.log_epoch(description, epoch + 1, record)
            if main:
                rate = speed["samples"] / max(time.perf_counter() - speed["start"], 1e-9)
                info(f"  {description} epoch {epoch + 1}: " + ", ".join(f"{k} {v:.4f}" for k, v in record.items()
                                                                          if isinstance(v, float))
                     + f", {rate:.0f} samples/s")
            saved = save(epoch + 1, 0, {}, 0)
            if interrupts.requested():
                raise stop(saved)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    result.steps, result.seconds = step, time.perf_counter() - start
    if result.skipped_nonfinite and main:
        info(f"  [yellow]warning:[/] {description}: skipped {result.skipped_nonfinite} batches with a non-finite loss")
    return result


def _restore(ckpt, model, objective, optimizer, scheduler, result: FitResult) -> dict | None:
    """Load a checkpoint into the loop's objects and ``result``; returns the best epoch's weights, if any."""
    restore_training(ckpt, modules={"model": model, "objective": objective}, optimizer=optimizer,
                     scheduler=scheduler)
    state = ckpt.state
    result.history = list(state["history"])
    result.best_epoch = state["best_epoch"]
    result.best_metric = float("-inf") if state["best_metric"] is None else state["best_metric"]
    result.skipped_nonfinite = state.get("skipped_nonfinite", 0)
    objective.set_progress(state["loss_schedule"]["progress"])
    return ckpt.tensors.get("best")


def _as_constants(output):
    """Clone inference-mode tensors (logits, hidden states, attentions) so autograd may save them for backward."""
    for key in ("logits", "hidden_states", "attentions"):
        value = getattr(output, key, None)
        if isinstance(value, torch.Tensor):
            setattr(output, key, value.clone())
        elif isinstance(value, tuple) and value:
            setattr(output, key, tuple(v.clone() for v in value))
    return output

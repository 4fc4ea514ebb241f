"""Where a training loop is and what it has kept, and how that goes into and comes back from a checkpoint.

``LoopState`` holds the optimiser-step count, the result so far (history, best epoch, skipped batches) and the
best epoch's weights; ``save`` writes them with the weights, optimiser, scheduler and RNG states
(``distill.train.checkpoint.save_training``), ``restore`` reads the newest intact checkpoint back, so a resumed run
replays the interrupted epoch's order and continues with identical weights. ``EpochStats`` sums one epoch's loss
terms (the history's means) and counts its samples (the progress line's throughput).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from distill.core import interrupts
from distill.core.console import info
from distill.core.errors import ConfigError
from distill.train.checkpoint import Checkpoint, Checkpoints, restore_rng, restore_training, save_training
from distill.train.config import FitResult


@dataclass
class EpochStats:
    """One epoch so far: sums of the finite batches' loss terms, how many there were, the last batch's values and
    the samples seen since ``start`` (every batch, for throughput)."""

    sums: dict[str, float] = field(default_factory=dict)
    seen: int = 0
    last: dict[str, float] = field(default_factory=lambda: {"loss": float("nan")})
    speed: dict[str, float] = field(default_factory=lambda: {"samples": 0, "start": time.perf_counter()})

    def add(self, samples: int, loss: float | None, terms: dict[str, float]) -> None:
        """Count a batch of ``samples``; its loss (None when non-finite and skipped) and terms go into the sums."""
        self.speed["samples"] += samples
        if loss is None:
            return
        self.seen += 1
        self.last.update(loss=loss, **terms)
        for k, v in {"loss": loss, **terms}.items():
            self.sums[k] = self.sums.get(k, 0.0) + v

    def means(self) -> dict[str, float]:
        return {k: v / max(self.seen, 1) for k, v in self.sums.items()}

    def rate(self) -> float:
        """Samples per second since the epoch started."""
        return self.speed["samples"] / max(time.perf_counter() - self.speed["start"], 1e-9)


@dataclass
class LoopState:
    """The loop's progress for one ``fit``: see the module docstring. ``first_epoch``/``first_batch`` say where a
    resumed run continues (0/0 for a fresh one)."""

    model: nn.Module
    objective: nn.Module
    optimizer: Any
    scheduler: Any
    total_steps: int
    description: str
    checkpoints: Checkpoints | None = None
    result: FitResult = field(default_factory=FitResult)
    step: int = 0
    best_state: dict | None = None
    resumed: Checkpoint | None = None
    first_epoch: int = 0
    first_batch: int = 0

    def due(self) -> bool:
        """Whether a checkpoint is due after the current optimiser step."""
        return self.checkpoints is not None and self.checkpoints.due(self.step)

    def save(self, epoch: int, batch: int, stats: EpochStats | None = None) -> str | None:
        """Write a checkpoint at (``epoch``, ``batch``: where to continue) with the epoch's sums so far; None when
        the run keeps no checkpoints."""
        if self.checkpoints is None:
            return None
        r, o = self.result, self.objective
        state = {"step": self.step, "epoch": epoch, "batch": batch, "sums": stats.sums if stats else {},
                 "seen": stats.seen if stats else 0, "history": r.history, "best_epoch": r.best_epoch,
                 "best_metric": None if r.best_metric == float("-inf") else r.best_metric,
                 "skipped_nonfinite": r.skipped_nonfinite, "total_steps": self.total_steps,
                 "loss_schedule": {"progress": o.progress, "temperature": o.temperature, "alpha": o.alpha,
                                   "feature_scale": o.feature_scale}}
        best = {"best": self.best_state} if self.best_state is not None else None
        return str(save_training(self.checkpoints, self.step, modules={"model": self.model, "objective": o},
                                 optimizer=self.optimizer, scheduler=self.scheduler, extra=best, state=state))

    def stop(self, saved: str | None) -> interrupts.Interrupted:
        """The error that ends the run after a signal, naming the step and the checkpoint just written."""
        return interrupts.Interrupted(interrupts.take(), f"{self.description} step {self.step}/{self.total_steps}",
                                      saved)

    def restore(self, announce: bool = True) -> None:
        """Continue from the newest intact checkpoint when the run resumes; a fresh run clears older ones first
        (they would outrank its own)."""
        cp = self.checkpoints
        if cp is not None and not cp.resume:
            cp.clear()
        ckpt = cp.load_latest() if cp is not None and cp.resume else None
        if ckpt is None:
            return
        s = ckpt.state
        if s.get("total_steps") != self.total_steps:
            raise ConfigError(f"checkpoint {ckpt.path} belongs to a run of {s.get('total_steps')} steps, "
                              f"this one has {self.total_steps}", "resume with the settings the run started with")
        restore_training(ckpt, modules={"model": self.model, "objective": self.objective}, optimizer=self.optimizer,
                         scheduler=self.scheduler)
        r = self.result
        r.history, r.best_epoch = list(s["history"]), s["best_epoch"]
        r.best_metric = float("-inf") if s["best_metric"] is None else s["best_metric"]
        r.skipped_nonfinite = s.get("skipped_nonfinite", 0)
        self.objective.set_progress(s["loss_schedule"]["progress"])
        self.best_state = ckpt.tensors.get("best")
        self.step, self.first_epoch, self.first_batch = s["step"], s["epoch"], s["batch"]
        cp.last_saved = r.resumed_from = self.step
        self.resumed = ckpt
        if announce:
            info(f"  {self.description}: resuming from step {self.step} of {self.total_steps} ({ckpt.path})")

    def resume_point(self, epoch: int) -> tuple[dict[str, float], int, int]:
        """For the resumed epoch: its loss sums and batch count so far, and how many batches to replay; the RNG
        states come back now when it resumes at its start (else after the replay: ``replayed``). ({}, 0, 0) for any
        other epoch."""
        if self.resumed is None or epoch != self.first_epoch:
            return {}, 0, 0
        if not self.first_batch:
            restore_rng(self.resumed)
        s = self.resumed.state
        return dict(s["sums"]), s["seen"], self.first_batch

    def replayed(self) -> None:
        """The resumed epoch's batches before the checkpoint were drawn again: put the RNG states back."""
        restore_rng(self.resumed)


"""The training loop's settings (``TrainConfig``) and what it returns (``FitResult``); no torch import, so settings
and ``--help`` stay cheap to build."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from distill.core.errors import ConfigError

TEACHER_DTYPE_NAMES = ("fp32", "bf16", "fp16")  # distill.train.teacher.TEACHER_DTYPES maps them to torch dtypes


@dataclass
class TrainConfig:
    """Optimiser and schedule settings shared by every training stage.

    ``grad_accum_steps`` micro-batches make one optimiser step; ``compile`` runs the student through
    ``torch.compile``; ``teacher_dtype`` casts (a copy of) the teacher on GPU only; ``skip_nonfinite`` skips
    batches whose loss is NaN/inf (counted) instead of stopping; ``shard_model`` trains the model FSDP-sharded
    across the launched processes (teacher fine-tuning with ``--teacher-shard fsdp``, see ``distill.train.sharding``)
    instead of replicating it (DDP).

    Length: ``epochs`` fixes it; ``epochs=None`` derives it from the data size (``plan_epochs``: about
    ``budget_steps`` optimiser steps, clamped to [``min_epochs``, ``max_epochs``] epochs). ``patience`` stops after
    that many dev evaluations (one per epoch) without a new best, the best epoch's weights kept; None means 2 with a
    derived length and off with fixed ``epochs``. ``learned_above`` (the trivial predictor's dev score plus the
    collapse margin, set by the pipeline) holds early stopping off until the best dev score exceeds it: a run still
    at the majority class or the mean label has not started learning (MRPC `tiny`: F1 0.812 = majority class for
    three epochs), and stopping it there ships a model that learned nothing.
    """

    lr: float = 1e-4
    epochs: float | None = 3.0
    patience: int | None = None
    budget_steps: int = 4000
    min_epochs: float = 2.0
    max_epochs: float = 10.0
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
    learned_above: float | None = None

    def __post_init__(self) -> None:
        if self.epochs is not None and not self.epochs > 0:
            raise ConfigError(f"--epochs {self.epochs} must be > 0", "use e.g. --epochs 3, or drop it for the "
                                                                     "step budget")
        if self.patience is not None and self.patience < 0:
            raise ConfigError(f"--patience {self.patience} is negative", "use e.g. --patience 2, or 0 for no early "
                                                                         "stopping")
        if self.budget_steps < 1:
            raise ConfigError(f"--budget-steps {self.budget_steps} must be ≥ 1", "use e.g. --budget-steps 400")
        if not 0 < self.min_epochs <= self.max_epochs:
            raise ConfigError(f"--min-epochs {self.min_epochs} / --max-epochs {self.max_epochs} do not make a range",
                              "use 0 < --min-epochs ≤ --max-epochs, e.g. 2 and 10")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size {self.batch_size} must be ≥ 1", "use e.g. --batch-size 32")
        if not self.lr > 0:
            raise ConfigError(f"--lr {self.lr} must be > 0", "use e.g. --lr 1e-4")
        if self.grad_accum_steps < 1:
            raise ConfigError(f"--grad-accum {self.grad_accum_steps} must be ≥ 1", "use e.g. --grad-accum 2")
        if self.teacher_dtype not in TEACHER_DTYPE_NAMES:
            raise ConfigError(f"--teacher-dtype '{self.teacher_dtype}' is unknown",
                              f"choose one of: {', '.join(TEACHER_DTYPE_NAMES)}")


    @property
    def early_stopping(self) -> int:
        """Evaluations without a new best before stopping (0 = never): ``patience``, else 2 for a derived length."""
        if self.patience is not None:
            return self.patience
        return DEFAULT_PATIENCE if self.epochs is None else 0


DEFAULT_PATIENCE = 2


def plan_epochs(config: TrainConfig, steps_per_epoch: int) -> float:
    """The epochs to run: ``config.epochs`` when given, else the step budget's.

    Budget rule: ceil(budget_steps / steps_per_epoch) epochs, clamped to [min_epochs, max_epochs]. With the defaults
    (4,000 steps, 2-10 epochs, batch 32) every set up to 12,800 rows gets 10 epochs (2,000 rows: 63 steps each),
    all 14,041 CoNLL-2003 sentences 10, 40,000 rows 4 and all 67,349 SST-2 rows 2. Small sets need many passes
    (SST-2 at 500 rows: the teacher leaves the majority class in epoch 3 and still gains at 8; CoNLL-2003 `mini`
    still gains at epoch 10 of 14k sentences); full SST-2 learns in two (tiny: 0.799, 0.821). Early stopping
    trims the rest: see experiments/README.md, "Training length".
    """
    if config.epochs is not None:
        return float(config.epochs)
    wanted = math.ceil(config.budget_steps / max(steps_per_epoch, 1))
    return float(min(max(wanted, config.min_epochs), config.max_epochs))


@dataclass
class FitResult:
    """What happened: per-epoch history (loss terms, dev metrics), the best epoch, the wall time, and how many
    batches were skipped for a non-finite loss (``TrainConfig.skip_nonfinite``); the length planned (``epochs``,
    ``planned_steps``, whether it came from the step ``budget``) and whether early stopping cut it
    (``stopped_early``, after ``patience`` evaluations without a new best)."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_metric: float = float("-inf")
    steps: int = 0
    seconds: float = 0.0
    skipped_nonfinite: int = 0
    resumed_from: int | None = None
    epochs: float = 0.0
    planned_steps: int = 0
    budget: bool = False
    patience: int = 0
    stopped_early: bool = False

    def summary(self) -> dict:
        """What report.json's ``training`` records of one training stage: its length, planned and run, and the best
        epoch."""
        return {"epochs": self.epochs, "planned_steps": self.planned_steps, "steps": self.steps,
                "epochs_run": len(self.history), "best_epoch": self.best_epoch, "budget": self.budget,
                "patience": self.patience, "stopped_early": self.stopped_early}

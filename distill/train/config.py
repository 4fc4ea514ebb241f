"""The training loop's settings (``TrainConfig``) and what it returns (``FitResult``); no torch import, so settings
and ``--help`` stay cheap to build."""

from __future__ import annotations

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
        if self.teacher_dtype not in TEACHER_DTYPE_NAMES:
            raise ConfigError(f"--teacher-dtype '{self.teacher_dtype}' is unknown",
                              f"choose one of: {', '.join(TEACHER_DTYPE_NAMES)}")


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

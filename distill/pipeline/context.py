"""What the stages of a run share (``Context``), the names of the output dir's parts, and the ``stages.json``
bookkeeping that lets an interrupted run skip its finished stages."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distill.core.artifacts import staged_dir, write_json
from distill.core.console import info
from distill.core.dist import is_main_process, wait_for_everyone
from distill.core.runtime import process_count
from distill.data import Splits
from distill.data.tasks import Task
from distill.evaluate import collapse
from distill.pipeline.config import RunConfig
from distill.train.checkpoint import Checkpoints

if TYPE_CHECKING:
    from torch.utils.data import DataLoader
    from transformers import PreTrainedTokenizerBase

    from teachers.augment import MaskedLM
    from teachers.loading import LoadedTeacher

TEACHER_MARKER = "distill_teacher.json"  # in a teacher dir fine-tuned here: its fingerprint, source and history
STAGES_FILE = "stages.json"  # finished stages and what later stages need from them (history, learning rate)


def teacher_dir(index: int) -> str:
    """Where teacher ``index`` (0 = the primary) is cached when fine-tuned here: teacher, teacher_2, ..."""
    return "teacher" if index == 0 else f"teacher_{index + 1}"


def cache_dir(index: int) -> str:
    """Where teacher ``index``'s output cache lives: teacher_cache, teacher_cache_2, ..."""
    return "teacher_cache" if index == 0 else f"teacher_cache_{index + 1}"


@dataclass
class Context:
    """What the stages share: settings, task, data loaders, tokenizers, loaded teachers and the output directory.

    ``teacher_*`` loaders hold the teacher's tokenization when the student has its own vocabulary (else None: the
    student's loaders serve both); ``labelled_loader`` holds the training rows before ``--augment`` added more.
    """

    cfg: RunConfig
    task: Task
    splits: Splits
    tokenizer: PreTrainedTokenizerBase
    out: Path
    train_loader: DataLoader | None = None
    dev_loader: DataLoader | None = None
    teacher_tokenizer: PreTrainedTokenizerBase | None = None
    teacher_train_loader: DataLoader | None = None
    teacher_dev_loader: DataLoader | None = None
    labelled_loader: DataLoader | None = None
    teachers: list[LoadedTeacher] = field(default_factory=list)  # primary first
    mlm: MaskedLM | None = None  # the masked LM of --augment (dropped once used)
    checkpointing: bool = False  # training stages write checkpoints (``distill run``)
    resume: bool = False  # ... and continue from them
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per stage
    skipped_nonfinite: dict[str, int] = field(default_factory=dict)  # batches skipped per training stage
    teacher_caches: list[Any] = field(default_factory=list)  # every teacher-output cache used, in order
    training: dict[str, dict] = field(default_factory=dict)  # FitResult.summary() per training stage (report.json)
    trivial: dict[str, Any] | None = None  # the task's trivial predictor on dev (evaluate.collapse.trivial_baseline)

    @property
    def learned_above(self) -> float | None:
        """The dev score a training stage must beat before early stopping may end it: the trivial predictor's plus
        the collapse margin (``TrainConfig.learned_above``); None before the baseline is known."""
        if not self.trivial:
            return None
        return collapse.learned_floor(self.trivial)

    @property
    def cross(self) -> bool:
        """Student and teacher tokenize the text each with their own tokenizer."""
        return self.teacher_tokenizer is not None and self.teacher_tokenizer is not self.tokenizer

    @property
    def sharded(self) -> bool:
        """The teacher is split across the launched processes (``--teacher-shard``, see ``distill.train.sharding``)."""
        from distill.train.sharding import resolve_shard

        return resolve_shard(self.cfg.train.teacher_shard, process_count())

    def checkpoints(self, name: str) -> Checkpoints | None:
        """The checkpoints of training stage ``name`` (None when this command writes none)."""
        if not self.checkpointing:
            return None
        train = self.cfg.train
        return Checkpoints(self.out / "checkpoints" / name, every=train.checkpoint_every,
                           keep=train.keep_checkpoints, resume=self.resume)

    def done(self, stage: str) -> dict | None:
        """What a finished stage recorded in ``stages.json`` (only when resuming), else None."""
        if not self.resume or not (self.out / STAGES_FILE).is_file():
            return None
        return json.loads((self.out / STAGES_FILE).read_text()).get(stage)

    def mark_done(self, stage: str, record: dict | None = None, checkpoints: tuple[str, ...] = ()) -> None:
        """Record ``stage`` as finished (after its output is in place), then drop the named checkpoints."""
        if not self.checkpointing or not is_main_process():
            return
        path = self.out / STAGES_FILE
        stages = json.loads(path.read_text()) if path.is_file() else {}
        stages[stage] = record or {}
        write_json(path, stages)
        for name in checkpoints:
            shutil.rmtree(self.out / "checkpoints" / name, ignore_errors=True)

    def fitted(self, name: str, result) -> None:
        """Note what a finished training run of stage ``name`` skipped and how long it ran (a repeated name, e.g.
        recovery after each pruning step, is kept as ``name_2``, ...); warn at once when it collapsed."""
        key, n = name, 1
        while key in self.training:
            n += 1
            key = f"{name}_{n}"
        if hasattr(result, "summary"):
            self.training[key] = result.summary()
        if result.skipped_nonfinite:
            self.skipped_nonfinite[name] = self.skipped_nonfinite.get(name, 0) + result.skipped_nonfinite
        if self.trivial and is_main_process() and (line := collapse.fit_warning(self.task, name, result, self.trivial)):
            info(f"  [yellow]warning:[/] {line}")

    def skipped(self, name: str) -> dict[str, int]:
        """``{name: batches skipped}`` for a stage's ``stages.json`` record (empty when none were)."""
        return {k: v for k, v in self.skipped_nonfinite.items() if k == name}


def on_main(device: str, write: Callable[[], object]) -> None:
    """Write on the main process only, then hold every process until it is done (they may read what it wrote)."""
    if is_main_process():
        write()
    wait_for_everyone(device)


def save_model(model, tokenizer, final: Path, extra: dict | None = None, device: str = "auto") -> None:
    """``save_pretrained`` model and tokenizer into ``final`` atomically (main process), ``extra`` as the
    teacher marker."""
    def write() -> None:
        with staged_dir(final) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            if extra:
                write_json(tmp / TEACHER_MARKER, extra)

    on_main(device, write)


@contextmanager
def timed(ctx: Context, name: str) -> Iterator[None]:
    """Announce stage ``name`` and record its wall time in ``ctx.seconds`` (also when it fails)."""
    start = time.perf_counter()
    info(f"[bold cyan]── {name}[/]")
    try:
        yield
    finally:
        ctx.seconds[name] = round(time.perf_counter() - start, 2)

"""Before a run writes anything: load and check the data, the teachers, the student's source and tokenizer, the
``--init`` choice, the shapes (``preflight``), the masked LM of ``--augment``, the output dir and the free disk.
Then, and only then, ``start`` creates the output dir, records the settings and builds the ``Context``."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from distill.core.artifacts import write_json, write_yaml
from distill.core.console import info
from distill.core.dist import is_main_process, wait_for_everyone
from distill.core.errors import ConfigError, DataError
from distill.core.runtime import environment_info, process_count, seed_everything
from distill.data import Splits, load_splits, make_loader, tokenize
from distill.data.tasks import get_task
from distill.evaluate import collapse
from distill.pipeline.checks import (
    augment_mlm,
    check_output_dir,
    check_teachers,
    clear_output_dir,
    estimate_run_bytes,
    student_tokenizer,
)
from distill.pipeline.config import RunConfig
from distill.pipeline.context import Context, cache_dir, on_main, teacher_dir
from distill.pipeline.recipe import dump_recipe
from distill.train.checkpoint import check_free_space, check_writable
from distill.train.tracking import start_tracking

if TYPE_CHECKING:
    from torch.utils.data import DataLoader
    from transformers import PreTrainedTokenizerBase

    from teachers.augment import MaskedLM
    from teachers.loading import LoadedTeacher


@dataclass
class Prepared:
    """What ``prepare`` checked and loaded: the data, the teachers, the student's own tokenizer, the MLM."""

    splits: Splits
    teachers: list[LoadedTeacher]
    student_tokenizer: PreTrainedTokenizerBase | None = None  # None: the student reads the teacher's token ids
    mlm: MaskedLM | None = None


def load_data(cfg: RunConfig, max_train_samples: int | None = None) -> Splits:
    """The task's train and dev rows (``--task`` and/or ``--data``)."""
    data = cfg.data
    task = get_task(data.task) if data.task else None
    if task is None and not data.path:
        raise DataError("no --task and no --data given", "pass --task sst2 (Hub) or --data DIR (local files)")
    return load_splits(task, data.path, text_columns=tuple(data.text_columns) if data.text_columns else None,
                       label_column=data.label_column, max_train_samples=max_train_samples or data.max_train_samples,
                       seed=cfg.train.seed)


def _check_student(cfg: RunConfig, teacher: LoadedTeacher, splits: Splits) -> PreTrainedTokenizerBase | None:
    """The student's own tokenizer (None: the teacher's); resolves ``--init auto``; checks init and shapes."""
    from distill.pipeline.preflight import check_shapes
    from students import PRESETS
    from students.build import student_source_is_preset
    from students.init import pruned_shape, resolve_auto
    from teachers import resolve_model_source

    student = cfg.student
    preset = student_source_is_preset(student.name)
    student_tok = None
    if not preset:
        source = resolve_model_source(student.name, kind="student", registry=PRESETS)
        student_tok = student_tokenizer(cfg, source, teacher.tokenizer, splits.task)
    if student.init == "auto" and student_tok is None and preset:
        student.init = resolve_auto(PRESETS.get(student.name), teacher.model.config, student.layer_selection,
                                    family=student.family)
        info(f"  --init auto: {student.init}")  # the resolved choice is what config.yaml records
    if student.init == "teacher-pruned":
        if not preset:
            raise ConfigError(f"--init teacher-pruned needs a preset student (its widths are the target), not "
                              f"'{student.name}'", f"use one of: {', '.join(PRESETS.names())}")
        pruned_shape(PRESETS.get(student.name), teacher.model.config, student.layer_selection)
    check_shapes(cfg, teacher.model.config)
    return student_tok


def prepare(cfg: RunConfig, need_student: bool = True, resume: bool = False, checkpointing: bool = False) -> Prepared:
    """Validate everything before writing: task, data, teachers, student source, tokenizers, init, augmentation,
    the output dir, and (for ``distill run``) that the disk has room for the checkpoints and stage outputs."""
    from teachers import load_teacher

    splits = load_data(cfg)
    seed_everything(cfg.train.seed)  # a new task head starts from the same weights in every run and every process
    names = cfg.teacher.all_names
    teachers = [load_teacher(name, splits.task) for name in names]
    check_teachers(teachers, names)
    teacher = teachers[0]
    student_tok = _check_student(cfg, teacher, splits) if need_student else None
    mlm = augment_mlm(cfg, teacher, splits.task) if need_student and cfg.data.augment else None
    out_dir = Path(cfg.output.dir)
    if not resume:
        check_output_dir(out_dir, cfg.output.overwrite)
    check_writable(out_dir)
    if checkpointing:
        check_free_space(out_dir, estimate_run_bytes(cfg, teacher))
    return Prepared(splits, teachers, student_tok, mlm)


def train_loader(ctx: Context, rows) -> DataLoader:
    """Shuffled, length-grouped training batches of ``rows``; tokenized for both models when their tokenizers
    differ (``teacher_*`` columns)."""
    from distill.data.pairs import PairedPadCollator, tokenize_two

    cfg, length, kind = ctx.cfg.train, ctx.cfg.data.max_seq_length, ctx.task.kind
    if ctx.cross:
        data = tokenize_two(rows, ctx.tokenizer, ctx.teacher_tokenizer, length, index=cfg.cache_teacher, kind=kind)
        collate = PairedPadCollator(ctx.tokenizer, ctx.teacher_tokenizer)
    else:
        data, collate = tokenize(rows, ctx.tokenizer, length, index=cfg.cache_teacher, kind=kind), None
    return make_loader(data, ctx.tokenizer, cfg.batch_size, shuffle=True, seed=cfg.seed,
                       group_by_length=cfg.group_by_length, collate_fn=collate, kind=kind)


def dev_loader(cfg: RunConfig, rows, tokenizer) -> DataLoader:
    """Dev batches in order, twice the training batch size."""
    return make_loader(tokenize(rows, tokenizer, cfg.data.max_seq_length), tokenizer, cfg.train.batch_size * 2,
                       shuffle=False)


def _write_start(cfg: RunConfig, prepared: Prepared, resume: bool) -> None:
    """(Main process.) Clear or tidy the output dir, then write config.yaml and env.json."""
    out_dir = Path(cfg.output.dir)
    if cfg.output.overwrite and not resume:  # fine-tuned teachers and teacher caches are validated by fingerprint
        keep = [name for i in range(len(prepared.teachers)) for name in (teacher_dir(i), cache_dir(i))]
        clear_output_dir(out_dir, keep=tuple(keep))
    if resume:  # temporary dirs of writes cut short by the interruption
        patterns = (".*.tmp-*", ".*.old-*", ".*.json.*", ".*.yaml.*", ".*.md.*", ".*.html.*")
        for stale in [p for pattern in patterns for p in out_dir.glob(pattern)]:
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_yaml(out_dir / "config.yaml", dump_recipe(cfg))
    write_json(out_dir / "env.json", {**environment_info(cfg.train.seed, cfg.train.device),
                                      "processes": process_count()})


def start(cfg: RunConfig, need_student: bool = True, resume: bool = False, checkpointing: bool = False) -> Context:
    """Validate, then (and only then) create the output dir, record settings and build the data loaders.

    ``resume`` keeps what the output dir holds (finished stages, checkpoints) instead of refusing or clearing it.
    """
    prepared = prepare(cfg, need_student, resume=resume, checkpointing=checkpointing)
    splits, teacher = prepared.splits, prepared.teachers[0]
    out_dir = Path(cfg.output.dir)
    wait_for_everyone(cfg.train.device)  # every process has checked the output dir before the main one writes to it
    on_main(cfg.train.device, lambda: _write_start(cfg, prepared, resume))
    start_tracking(cfg.output.tensorboard and is_main_process(), out_dir / "tensorboard")
    tokenizer = prepared.student_tokenizer or teacher.tokenizer
    ctx = Context(cfg, splits.task, splits, tokenizer, out_dir, teacher_tokenizer=teacher.tokenizer,
                  teachers=prepared.teachers, mlm=prepared.mlm, checkpointing=checkpointing, resume=resume)
    ctx.trivial = collapse.trivial_baseline(splits.task, collapse.split_labels(splits.task, splits.train),
                                            collapse.split_labels(splits.task, splits.dev))
    ctx.train_loader = train_loader(ctx, splits.train)
    ctx.dev_loader = dev_loader(cfg, splits.dev, tokenizer)
    if ctx.cross:
        t_tok, train = teacher.tokenizer, cfg.train
        info(f"  note: the student has its own tokenizer ({len(tokenizer)} tokens, the teacher {len(t_tok)}): "
             "each tokenizes the raw text, and only the label and logit terms apply")
        ctx.teacher_train_loader = make_loader(tokenize(splits.train, t_tok, cfg.data.max_seq_length), t_tok,
                                               train.batch_size, shuffle=True, seed=train.seed,
                                               group_by_length=train.group_by_length)
        ctx.teacher_dev_loader = dev_loader(cfg, splits.dev, t_tok)
    return ctx

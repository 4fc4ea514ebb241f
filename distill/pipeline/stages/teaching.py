"""How a student is taught, shared by distillation, recovery and QAT: the objective for a (list of) teacher(s),
the teacher sharded across processes when asked, and the teacher's outputs cached on disk (``--cache-teacher``)."""

from __future__ import annotations

import copy
from typing import Any

from distill.core.console import info
from distill.core.errors import ConfigError
from distill.core.runtime import process_count
from distill.objective.objective import Objective, disable_unsupported, supported_losses, uniform_layer_map
from distill.pipeline.context import Context, cache_dir


def primary(teacher: Any) -> Any:
    """The first teacher of a list (several teachers), or the teacher itself."""
    return teacher[0] if isinstance(teacher, list) else teacher


def objective_for(ctx: Context, student, teacher) -> Objective:
    """The loss for distilling ``teacher`` (or a list of teachers: ``MultiTeacherObjective``) into ``student``, with
    unsupported terms turned off (and said so)."""
    said: set[str] = set()
    parts = []
    for one in teacher if isinstance(teacher, list) else [teacher]:
        layers = uniform_layer_map(student.config.num_hidden_layers, one.config.num_hidden_layers)
        support = supported_losses(student.config, one.config, same_tokenizer=not ctx.cross,
                                   token=ctx.task.kind.per_token)
        config, messages = disable_unsupported(copy.copy(ctx.cfg.distill), support)
        for message in messages:
            if message not in said:
                said.add(message)
                info(f"  note: {message}")
        parts.append(Objective(config, kind=ctx.task.kind.output_loss, student_width=student.config.hidden_size,
                               teacher_width=one.config.hidden_size, layer_map=layers,
                               student_heads=student.config.num_attention_heads))
    if not isinstance(teacher, list):
        return parts[0]
    from distill.objective.ensemble import MultiTeacherObjective

    return MultiTeacherObjective(parts, ctx.cfg.teacher.weights)


def live_teacher(ctx: Context, teacher):
    """The teacher(s) to run: first sharded across the launched processes when ``--teacher-shard`` asks (in place,
    once; after the student has been initialised from the whole teacher)."""
    if not ctx.sharded:
        return teacher
    from distill.core.dist import get_accelerator
    from distill.train.loop import TEACHER_DTYPES
    from distill.train.sharding import is_sharded, local_parameters, shard

    train = ctx.cfg.train
    device = get_accelerator(train.device).device
    dtype = TEACHER_DTYPES[train.teacher_dtype] if device.type == "cuda" else None  # as --teacher-dtype unsharded
    several = isinstance(teacher, list)
    for i, one in enumerate(teacher if several else [teacher]):
        if not is_sharded(one):
            shard(one, device, dtype)
            held, total = local_parameters(one)
            name = f"teacher {i + 1}" if several else "teacher"
            info(f"  {name} sharded (FSDP) over {process_count()} processes: {held:,} of its {total:,} parameters "
                 "held by each")
    return teacher


def teacher_source(ctx: Context, teacher, objective):
    """The live teacher, or (``--cache-teacher``) its outputs cached on disk, built once and reused by later runs.

    Several teachers (a list) get one cache each (``teacher_cache``, ``teacher_cache_2``, ...); every cache used is
    noted in ``ctx.teacher_caches`` for the report.
    """
    teacher = live_teacher(ctx, teacher)
    if not ctx.cfg.train.cache_teacher:
        return teacher
    if not ctx.task.kind.teacher_cache:
        raise ConfigError(f"--cache-teacher does not support {ctx.task.kind.name} yet", "drop --cache-teacher")
    from distill.data.pairs import teacher_columns
    from distill.train.loop import teacher_layers_needed
    from teachers.cache import cache_teacher_outputs

    data = ctx.train_loader.dataset
    if ctx.cross:
        data = teacher_columns(data)
    caches = []
    parts = objective.parts if isinstance(teacher, list) else [objective]
    for i, (one, part) in enumerate(zip(teacher if isinstance(teacher, list) else [teacher], parts, strict=True)):
        cache = cache_teacher_outputs(one, data, ctx.out / cache_dir(i), top_k=ctx.cfg.train.cache_top_k,
                                      hidden_layers=teacher_layers_needed(part),
                                      tokenizer=ctx.teacher_tokenizer or ctx.tokenizer,
                                      max_length=ctx.cfg.data.max_seq_length, device=ctx.cfg.train.device)
        ctx.teacher_caches.append(cache)
        caches.append(cache)
    return caches if isinstance(teacher, list) else caches[0]

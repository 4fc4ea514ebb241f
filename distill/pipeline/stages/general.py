"""The general stage (``--general-data``; TinyBERT/MiniLM's first stage): after the student is built and before
task distillation, its encoder body learns the teacher's encoder body (the model without its task head, so a
fine-tuned teacher teaches through the same body) on unlabelled text, from hidden states and self-attention
relations (``distill.objective.general``). No head, no labels. The trained body is saved to
``OUTPUT/general-student`` (loads with plain ``AutoModel.from_pretrained``, and as ``--student DIR`` of another
run), and task distillation continues from it.

Text: ``--general-data PATH`` (``distill.pipeline.general_text``: passages cut into pieces of at most
``--max-seq-length`` tokens, each with the tokenizer's special tokens), or ``task``: the task's training texts,
labels unused. The loss before and after is measured on a probe no step trains on: the dev texts for ``task``,
the last passages (held out) for a PATH.
"""

from __future__ import annotations

import contextlib
import math

import torch

from distill.core.console import info
from distill.core.errors import ConfigError
from distill.core.runtime import resolve_device, seed_everything
from distill.data import make_loader
from distill.objective.capture import capture_qkv, eager_attention
from distill.objective.general import GeneralObjective
from distill.pipeline.context import Context, save_model
from distill.pipeline.general_text import read_passages
from distill.pipeline.results import GeneralResult
from distill.pipeline.stages.student import build, default_student_lr
from distill.pipeline.stages.teaching import primary
from distill.train.loop import fit
from distill.train.teacher import run_model

GENERAL_DIR = "general-student"
MIN_TOKENS = 4  # shorter pieces (a lone heading word, a paragraph's last few tokens) are dropped
PROBE_ROWS = 64  # rows of the before/after probe


def passage_dataset(passages: list[str], tokenizer, max_length: int):
    """Rows of at most ``max_length`` tokens: each passage cut into consecutive pieces of text that fill a row
    (found from the word pieces' character offsets), each piece tokenized with the tokenizer's special tokens;
    ``labels`` is 0 (the loop counts rows by it; nothing reads it). A tokenizer without offsets (not a fast one)
    gives each passage truncated instead."""
    from datasets import Dataset

    room = max_length - tokenizer.num_special_tokens_to_add(pair=False)
    texts = passages
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(passages, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        texts = [text[piece[0][0]:piece[-1][1]] for text, offsets in zip(passages, enc["offset_mapping"], strict=True)
                 for piece in (offsets[i:i + room] for i in range(0, len(offsets), room))
                 if len(piece) >= MIN_TOKENS]
    rows = dict(tokenizer(texts, truncation=True, max_length=max_length)) if texts else {"input_ids": []}
    return Dataset.from_dict({**rows, "labels": [0] * len(rows["input_ids"])})


def general_data(ctx: Context) -> tuple[object, object, object]:
    """(training rows, probe rows, task kind for the collator or None) of ``--general-data``."""
    source = ctx.cfg.student.general_data
    if source == "task":
        return ctx.train_loader.dataset, ctx.dev_loader.dataset, ctx.task.kind
    rows = passage_dataset(read_passages(source), ctx.tokenizer, ctx.cfg.data.max_seq_length)
    if len(rows) == 0:
        raise ConfigError(f"--general-data '{source}' gives no piece of {MIN_TOKENS}+ tokens", "give more text")
    if len(rows) > 4 * PROBE_ROWS:  # hold the last passages out for the probe
        return rows.select(range(len(rows) - PROBE_ROWS)), rows.select(range(len(rows) - PROBE_ROWS, len(rows))), None
    return rows, rows.select(range(min(PROBE_ROWS, len(rows)))), None


@torch.no_grad()
def probe_loss(objective: GeneralObjective, student, teacher, loader, device) -> dict[str, float]:
    """The objective's mean terms and ``total`` over ``loader`` (models in eval mode: no dropout)."""
    student.to(device).eval()
    teacher.to(device).eval()
    objective.to(device).eval()
    hidden, attentions = objective.needs_hidden_states, objective.needs_attentions
    s_layer, t_layer = objective.qkv_layers
    sums: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        if attentions:
            stack.enter_context(eager_attention(student))
            stack.enter_context(eager_attention(teacher))
        s_qkv = stack.enter_context(capture_qkv(student, [s_layer])) if objective.needs_qkv else None
        t_qkv = stack.enter_context(capture_qkv(teacher, [t_layer])) if objective.needs_qkv else None
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items() if k != "idx"}
            s_out, t_out = run_model(student, batch, hidden, attentions), run_model(teacher, batch, hidden, attentions)
            total, terms = objective.loss(s_out, batch["labels"], [t_out], batch.get("attention_mask"),
                                          student_qkv=s_qkv[s_layer] if s_qkv else None,
                                          teacher_qkv=[t_qkv[t_layer]] if t_qkv else None)
            for name, value in {**terms, "total": float(total)}.items():
                sums[name] = sums.get(name, 0.0) + value * len(batch["labels"])
    n = max(1, len(loader.dataset))
    return {k: round(v / n, 6) for k, v in sums.items()}


def _epochs(ctx: Context, loader) -> float:
    """``--general-epochs``, else the fraction of passes that makes exactly ``--general-steps`` optimiser steps."""
    settings, accum = ctx.cfg.student, ctx.cfg.train.grad_accum_steps
    if settings.general_epochs is not None:
        return settings.general_epochs
    per_epoch = math.ceil(len(loader) / accum)
    return (settings.general_steps - 1e-6) / per_epoch


def _resumed(ctx: Context, done: dict, student, pretrained: bool, cut) -> GeneralResult:
    """The body a finished general stage saved, loaded into the freshly built student."""
    info(f"  finished earlier: loading {ctx.out / GENERAL_DIR}")
    body = type(student.base_model).from_pretrained(ctx.out / GENERAL_DIR, use_safetensors=True)
    student.base_model.load_state_dict(body.state_dict())
    return GeneralResult.from_json(done, built=(student, True, cut))


def stage_general(ctx: Context, teacher) -> GeneralResult:
    """Build the student, distil its body from the (primary) teacher's body on the general text, save it to
    ``OUTPUT/general-student``; the result carries the built student on to task distillation."""
    cfg, settings = ctx.cfg, ctx.cfg.student
    if ctx.cross:
        raise ConfigError("--general-data needs a student that reads the teacher's tokens (hidden states and "
                          "relations line up token by token)", "drop --general-data, or use a preset student")
    if isinstance(teacher, list):
        info("  note: general distillation learns from the first teacher only")
    teacher = primary(teacher)
    seed_everything(cfg.train.seed)
    student, pretrained, cut = build(ctx, teacher)
    done = ctx.done("general")
    if done is not None and (ctx.out / GENERAL_DIR).is_dir():
        return _resumed(ctx, done, student, pretrained, cut)
    rows, probe_rows, kind = general_data(ctx)
    train = cfg.train
    loader = make_loader(rows, ctx.tokenizer, train.batch_size, shuffle=True, seed=train.seed,
                         group_by_length=train.group_by_length, kind=kind)
    probe = make_loader(probe_rows.select(range(min(PROBE_ROWS, len(probe_rows)))), ctx.tokenizer,
                        train.batch_size * 2, shuffle=False, kind=kind)
    lr = settings.general_lr or default_student_lr(pretrained, student.config.hidden_size)
    objective = GeneralObjective.between(cfg.distill, settings.general_terms, student.config, teacher.config)
    s_body, t_body, device = student.base_model, teacher.base_model, resolve_device(train.device)
    info(f"  general distillation on {settings.general_data}: {len(rows):,} rows of ≤ {cfg.data.max_seq_length} "
         f"tokens, terms {','.join(objective.terms)}, lr {lr:g}")
    before = probe_loss(objective, s_body, t_body, probe, device)
    result = fit(s_body, objective, loader, train.fit_config(lr=lr, epochs=_epochs(ctx, loader)), teacher=t_body,
                 description="general", checkpoints=ctx.checkpoints("general"))
    after = probe_loss(objective, s_body, t_body, probe, device)
    ctx.fitted("general", result)
    info(f"  general: probe loss {before['total']:.4f} → {after['total']:.4f} in {result.steps} steps")
    student.to("cpu")
    save_model(s_body, ctx.tokenizer, ctx.out / GENERAL_DIR, device=train.device)
    general = GeneralResult(str(settings.general_data), len(rows), result.steps, round(result.seconds, 2), lr,
                            list(objective.terms), before, after, result.history, built=(student, True, cut))
    ctx.mark_done("general", general.to_json(), checkpoints=("general",))
    return general

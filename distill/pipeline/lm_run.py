"""``distill run --task causal-lm``: teacher (scored as is, no fine-tuning) → student distilled token by token →
[width-pruned + recovered] → INT8 and/or INT4 weight-only ONNX with KV cache (``--lm-precision``) → every stage
scored against the teacher → report.

Pruning searches ``--prune-search`` for the smallest decoder whose recovered dev perplexity keeps
``--target-retention`` of the distilled student's (retention = student perplexity / stage perplexity), unless fixed
``--prune-*`` ratios are given (``stages.lm_prune``); report.json carries the path as ``prune_search``.

Everything is checked before anything is written (``prepare_lm``): the task and data (an empty file, no text), a
teacher that is a causal LM (GGUF files through ``teachers.gguf``), its tokenizer's EOS (it marks document
boundaries), a block size within the model's context, the student source, the output dir. Data: train blocks
packed from the train documents (``--block-size``, default ``--max-seq-length``; ``--max-train-samples`` caps the
blocks), the dev text as one token stream without EOS or BOS (raw text as the file has it) scored in windows of
the block size (``--eval-blocks N``: N evenly spaced windows). ``--cache-teacher``: the teacher's top-k
next-token log-probabilities (``--cache-top-k``) over the train blocks are computed once into
``OUTPUT/teacher_cache`` (kept by ``--overwrite``, reused while its fingerprint matches) and distillation and
recovery read them (``lm_stages.teacher_cache``); the training facts record the cache.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from pathlib import Path

from distill.core.artifacts import write_json, write_yaml
from distill.core.console import console, info, out
from distill.core.errors import ConfigError
from distill.core.runtime import environment_info, seed_everything
from distill.data.lm import sampled_windows
from distill.pipeline.config import RunConfig
from distill.pipeline.context import STAGES_FILE


@dataclass
class LMPrepared:
    """What ``prepare_lm`` checked and loaded."""

    teacher: object  # teachers.loading.LoadedTeacher
    train: object  # datasets.Dataset of packed blocks
    eval_ids: list[int]
    block_size: int
    source: str
    eval_windows: int
    dev_windows: int


def is_lm_run(cfg: RunConfig) -> bool:
    """The run asks for a causal LM: ``--task causal-lm``, an LM demo (``wikitext-2-demo``), or a WikiText folder."""
    from distill.data.demo import resolve_demo
    from distill.data.kinds import kind_for_data
    from distill.data.lm_kind import CAUSAL_LM
    from distill.data.tasks import get_task

    data = cfg.data
    if data.task:
        return get_task(data.task).kind == CAUSAL_LM
    demo = resolve_demo(data.path) if data.path else None
    if demo is not None:
        return get_task(demo.task).kind == CAUSAL_LM
    return bool(data.path) and kind_for_data(data.path) == CAUSAL_LM


def prepare_lm(cfg: RunConfig) -> LMPrepared:
    """Check and load everything a causal-LM run needs; writes nothing."""
    from distill.data.lm import check_block_size, eos_token_id, token_stream
    from distill.data.lm_kind import HUB_WIKITEXT, LM_TASK, load_lm_text, tokenize_lm
    from distill.data.load import load_splits
    from distill.pipeline.checks import check_output_dir
    from distill.pipeline.stages.lm_stages import check_cache_objective, check_student_source
    from distill.train.checkpoint import check_writable
    from teachers.lm import load_lm_teacher

    if cfg.teacher.names:
        raise ConfigError("several teachers are not supported for --task causal-lm yet", "pass one --teacher")
    unsupported = {"--augment": cfg.data.augment,
                   "--general-data": bool(cfg.student.general_data),
                   "--qat": cfg.quantize.enabled and cfg.quantize.qat,
                   "--quantize-mode static": cfg.quantize.enabled and cfg.quantize.mode != "dynamic"}
    for flag, given in unsupported.items():
        if given:
            raise ConfigError(f"{flag} is not supported for --task causal-lm yet", f"drop {flag.split()[0]}")
    if not cfg.teacher.name:
        raise ConfigError("no --teacher given", "pass e.g. --teacher smollm2-135m-pip or --teacher FILE.gguf")
    block = cfg.data.block_size or cfg.data.max_seq_length
    teacher = load_lm_teacher(cfg.teacher.name)
    eos_token_id(teacher.tokenizer)
    check_block_size(block, teacher.model.config)
    if cfg.data.path in HUB_WIKITEXT and not Path(cfg.data.path).exists():  # the Hub copy (needs internet)
        splits = load_lm_text(LM_TASK, cfg.data.path)
    else:
        splits = load_splits(LM_TASK, cfg.data.path)
    train = tokenize_lm(splits.train, teacher.tokenizer, block)
    if cfg.data.max_train_samples and cfg.data.max_train_samples < len(train):
        train = train.shuffle(seed=cfg.train.seed).select(range(cfg.data.max_train_samples))
    if cfg.train.cache_teacher:  # after selecting: the cache looks blocks up by row number
        check_cache_objective(cfg)
        train = train.add_column("idx", list(range(len(train))))
    dev_ids = token_stream(list(splits.dev["text"]), teacher.tokenizer, eos=False)
    eval_ids, total = sampled_windows(dev_ids, block, cfg.data.eval_blocks)
    if len(eval_ids) < block:
        raise ConfigError(f"the dev text gives {len(dev_ids)} tokens, fewer than one window of {block}",
                          "give more dev text or a smaller --block-size")
    check_student_source(cfg.student.name, teacher.model)
    out_dir = Path(cfg.output.dir)
    check_output_dir(out_dir, cfg.output.overwrite)
    check_writable(out_dir)
    return LMPrepared(teacher, train, eval_ids, block, splits.source, len(eval_ids) // block, total)


def _start(cfg: RunConfig) -> Path:
    """Clear (``--overwrite``; a teacher cache is kept: its fingerprint decides whether it is reused) and create the
    output dir, then write config.yaml and env.json."""
    from distill.pipeline.checks import clear_output_dir
    from distill.pipeline.context import cache_dir
    from distill.pipeline.recipe import dump_recipe

    out_dir = Path(cfg.output.dir)
    if cfg.output.overwrite:
        clear_output_dir(out_dir, keep=(cache_dir(0),) if cfg.train.cache_teacher else ())
    out_dir.mkdir(parents=True, exist_ok=True)
    write_yaml(out_dir / "config.yaml", dump_recipe(cfg))
    write_json(out_dir / "env.json", environment_info(cfg.train.seed, cfg.train.device))
    return out_dir


def _timed(seconds: dict, name: str, fn, *args, **kwargs):
    info(f"[bold cyan]── {name}[/]")
    begin = time.perf_counter()
    try:
        return fn(*args, **kwargs)
    finally:
        seconds[name] = round(time.perf_counter() - begin, 2)


def run_lm(cfg: RunConfig, resume: bool = False) -> dict:
    """Run every causal-LM stage and write report.json/.md/.html; returns report.json's content."""
    from distill.data import make_loader
    from distill.data.lm_kind import CAUSAL_LM_KIND, unigram_perplexity
    from distill.pipeline.stages import lm_prune, lm_stages
    from distill.pipeline.stages.lm_score import stage_rows

    if resume:
        raise ConfigError("--resume is not supported for --task causal-lm yet", "start the run again")
    begin = time.perf_counter()
    prep = prepare_lm(cfg)
    seed_everything(cfg.train.seed)
    out_dir = _start(cfg)
    teacher, tokenizer, seconds, notes = prep.teacher.model, prep.teacher.tokenizer, {}, []
    loader = make_loader(prep.train, tokenizer, cfg.train.batch_size, shuffle=True, seed=cfg.train.seed,
                         kind=CAUSAL_LM_KIND)
    teacher_path = _timed(seconds, "teacher", lm_stages.save_teacher, teacher, tokenizer, out_dir, prep.teacher.source,
                          cfg.train.device)
    teaching = None  # distil from the live teacher unless its outputs are cached
    if cfg.train.cache_teacher:
        teaching = _timed(seconds, "teacher cache", lm_stages.teacher_cache, cfg, teacher, prep.train, out_dir)
    stages = [_timed(seconds, "distil", lm_stages.stage_student, cfg, teacher, tokenizer, loader, out_dir,
                     teaching=teaching)]
    if cfg.prune.enabled:
        pruned = _timed(seconds, "prune", lm_prune.stage_prune, cfg, stages[0].model, teacher, tokenizer, loader,
                        out_dir, eval_ids=prep.eval_ids, block_size=prep.block_size, teaching=teaching)
        if pruned is None:
            notes.append("structured pruning of decoders is not installed here: the pruned stage is skipped")
        else:
            stages.append(pruned)
    if cfg.quantize.enabled:
        stages += _quantized(cfg, stages[-1], out_dir, seconds)
    report = cfg.report
    rows, texts = _timed(seconds, "score", stage_rows, teacher, teacher_path, stages, tokenizer, prep.eval_ids,
                         prep.block_size, threads=report.latency_threads, runs=max(1, min(3, report.latency_runs)))
    data = {
        "kind": "causal-lm", "task": "causal-lm", "teacher": cfg.teacher.name, "teacher_source": prep.teacher.source,
        "student": cfg.student.name, "data": prep.source, "settings": cfg.flat(), "stages": rows,
        "perplexity_convention": texts.pop("convention") + " (dev text: documents joined without EOS or BOS)",
        "eval": {"block_size": prep.block_size, "windows_scored": prep.eval_windows, "windows_in_dev": prep.dev_windows,
                 "tokens": len(prep.eval_ids)},
        "trivial_predictor": "unigram model of the training text (add-one smoothed)",
        "trivial_perplexity": round(unigram_perplexity(prep.train["labels"], prep.eval_ids,
                                                       teacher.config.vocab_size), 2),
        "training": {s.name: s.facts for s in stages}, "continuations": texts, "notes": notes,
        "stage_seconds": seconds, "wall_seconds": round(time.perf_counter() - begin, 2),
        "machine": platform.processor() or platform.machine(),
    }
    data.update(retention_parts(stages))
    mark_collapsed(data)
    _write(out_dir, data)
    return data


def retention_parts(stages: list) -> dict:
    """report.json's ``prune_search`` (the pruned stage's search path and target line) and ``retention_target``
    (the encoder report's summary of it), or nothing when no prune stage ran."""
    search = next((s.search for s in stages if s.search), None)
    if search is None:
        return {}
    target = search["prune_target"]
    return {"prune_search": search, "retention_target": {
        "target": target["target"], "relative_to": target["relative_to"], "reference": target["reference"],
        "met": target["met"], "notes": [target["note"]], "metric_name": search["metric_name"],
        "convention": search["convention"]}}


def _quantized(cfg: RunConfig, final, out_dir: Path, seconds: dict) -> list:
    """One ONNX bundle per ``--lm-precision`` (int8, int4), each exported from the same final torch stage; the
    stage time of int8 is ``quantize`` (as before int4 existed), of int4 ``quantize-int4``."""
    from distill.pipeline.stages import lm_stages

    bundles = []
    for precision in cfg.quantize.lm_precision:
        name = "quantize" if precision == "int8" else f"quantize-{precision}"
        stage = _timed(seconds, name, lm_stages.stage_quantize, final.path, out_dir, precision)
        stage.facts["params"] = sum(p.numel() for p in final.model.parameters())
        stage.facts["from"] = final.name
        bundles.append(stage)
    return bundles


def mark_collapsed(data: dict) -> None:
    """Every stage no better than the unigram model of the training text (its perplexity at or above
    ``trivial_perplexity``) gets ``"collapsed": true`` and one line saying why and what to change."""
    floor = data["trivial_perplexity"]
    for row in data["stages"]:
        row["collapsed"] = bool(row["perplexity"] is not None and row["perplexity"] >= floor)
        if row["collapsed"]:
            line = (f"{row['name']} has COLLAPSED: perplexity {row['perplexity']:,.1f} is no better than the unigram "
                    f"model of the training text ({floor:,.1f}); train longer (more --max-train-samples or --epochs, "
                    "on a GPU for real models) or keep more of the teacher (a larger --student)")
            data["notes"].append(line)
            console.print(line, style="yellow", highlight=False, markup=False, soft_wrap=True)  # also under --quiet


def _write(out_dir: Path, data: dict) -> None:
    """report.json/.md/.html, the stages marked finished, the table printed."""
    from distill.report.lm import render_lm_table, write_lm_report

    write_lm_report(out_dir, data)
    write_json(out_dir / STAGES_FILE, {"score": {}})
    out.print(render_lm_table(data))
    info(f"report written to {out_dir / 'report.md'} ({data['wall_seconds']:.0f} s)")

"""The prune stage of a causal-LM run: decoder width pruning (``compress.prune.decoder.prune_decoder``: query heads
with their K/V groups, FFN neurons, and for GPT-2 the hidden width with the heads) with recovery distillation,
saved to ``OUTPUT/pruned``.

By default it *searches*, as the encoder prune stage does (``distill.pipeline.stages.prune``): for each ratio of
``--prune-search`` in order (cumulative shares of the student's heads and FFN neurons; default 0.5,0.75) it prunes
the last kept model further, recovers for ``--recover-epochs`` and scores it; a step whose recovered perplexity
keeps ``--target-retention`` R of the distilled student's is kept, the first that misses ends the search. When no
step keeps R the unpruned student is kept as the "pruned" stage (and is what the quantize stage exports); the
report says the target was not reachable and what was kept instead. Fixed ``--prune-*`` ratios prune once to
them, and the report still says whether the result keeps R.

Perplexity is lower-is-better, so retention is ``student perplexity / stage perplexity``: 1.0 is as good as the
distilled student, and R = 0.97 allows a perplexity up to ``student / 0.97`` (about 3% higher). The search scores
on the run's dev windows (``--eval-blocks``), at most ``SEARCH_WINDOWS`` of them, evenly spaced.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from distill.core.console import info
from distill.pipeline.config import RunConfig
from distill.pipeline.context import save_model
from distill.pipeline.results import RetentionTarget
from distill.pipeline.stages.lm_stages import LMStage, calibration_batches, decoder_pruner, distil

SEARCH_WINDOWS = 64  # dev windows each search evaluation reads at most (evenly spaced)
EPS = 1e-9  # retention differences below this are float noise
METRIC = "perplexity"
CONVENTION = ("retention = student perplexity / stage perplexity (lower perplexity is better; 1.0 = as good as the "
              "distilled student, R = 0.97 allows about 3% higher perplexity)")


@dataclass
class LMSearch:
    """What the prune stage found: every step tried (report rows), the student's perplexity on the search windows,
    the kept model with its prune report (None: nothing kept) and its recovery facts."""

    reference: float
    windows: int
    steps: list[dict] = field(default_factory=list)
    model: object | None = None
    report: object | None = None  # compress PruneReport of the kept model (cumulative widths from the student)
    recovery: dict | None = None


def retention(ppl: float, reference: float) -> float:
    """How much of the student's quality a perplexity keeps: ``reference / ppl`` (module docstring)."""
    return reference / ppl


def threshold(reference: float, target: float) -> float:
    """The highest perplexity that keeps ``target`` of the student's (``reference``)."""
    return reference / target


def keeps(ppl: float, reference: float, target: float) -> bool:
    return retention(ppl, reference) >= target - EPS


def search_ids(ids: list[int], block: int) -> tuple[list[int], int]:
    """The dev windows the search scores on: at most ``SEARCH_WINDOWS`` evenly spaced ones, and their count."""
    from distill.data.lm import sampled_windows

    chosen, _ = sampled_windows(ids, block, SEARCH_WINDOWS)
    return chosen, len(chosen) // block


def perplexity(cfg: RunConfig, model, ids: list[int], block: int) -> float:
    """Perplexity of ``ids`` in windows of ``block``, on the training device (the model is left on the CPU)."""
    from distill.core.runtime import resolve_device
    from distill.evaluate.lm import sliding_perplexity

    try:
        return sliding_perplexity(model.to(resolve_device(cfg.train.device)).eval(), ids, window=block).perplexity
    finally:
        model.to("cpu")


def _widths(model):
    from distill.core.families import family_of

    return family_of(model, "structured pruning").widths(model.config)


def step_plan(cfg: RunConfig, ratio: float, original, current):
    """The ``PruneConfig`` taking a model of ``current`` widths to ``ratio`` of ``original``'s heads and FFN
    neurons removed (each keeping at least one; a ratio already reached prunes nothing more)."""
    heads = max(1, round(original.heads * (1 - ratio)))
    ffn = max(1, round(original.ffn * (1 - ratio)))
    return replace(cfg.prune.plan(ratio), heads=max(0.0, 1 - heads / current.heads),
                   ffn=max(0.0, 1 - ffn / current.ffn))


def _try_step(cfg: RunConfig, base, ratio: float, original, teacher, loader, teaching, label: str):
    """A copy of ``base`` pruned to ``ratio`` (of ``original``) and recovered; (model, report, recovery facts)."""
    model = copy.deepcopy(base)
    report = decoder_pruner()(model, step_plan(cfg, ratio, original, _widths(model)), calibration_batches(loader))
    recovery = None
    if cfg.prune.recover_epochs > 0:
        recovery = distil(cfg, model, teacher, loader, epochs=cfg.prune.recover_epochs, description=label,
                          teaching=teaching)
    return model, report, recovery


def search(cfg: RunConfig, student, teacher, loader, ids: list[int], block: int, teaching=None) -> LMSearch:
    """The retention search along ``--prune-search`` (module docstring); stops at the first step that misses."""
    dev, windows = search_ids(ids, block)
    found = LMSearch(perplexity(cfg, student, dev, block), windows)
    target, original, n = cfg.prune.target_retention, _widths(student), len(cfg.prune.search)
    info(f"  searching {','.join(f'{r:g}' for r in cfg.prune.search)} for the smallest decoder keeping "
         f"{target:.0%} retention of the student's perplexity {found.reference:,.2f} (on {windows} dev windows)")
    base = student
    for i, ratio in enumerate(cfg.prune.search, 1):
        model, report, recovery = _try_step(cfg, base, ratio, original, teacher, loader, teaching, f"recover {i}/{n}")
        ppl = perplexity(cfg, model, dev, block)
        kept = keeps(ppl, found.reference, target)
        found.steps.append(_row(i, ratio, model, report, ppl, found.reference, kept, recovery))
        info(f"  step {i} (ratio {ratio:g}): perplexity {ppl:,.2f}, retention {retention(ppl, found.reference):.1%}"
             f" → {'kept' if kept else 'below the target: stop'}")
        if not kept:
            break
        base = found.model = model
        found.report = _cumulative(report, found.report)
        found.recovery = recovery
    return found


def _row(i: int, ratio: float, model, report, ppl: float, reference: float, kept: bool, recovery) -> dict:
    """One row of the search path; key names as the encoder's ``history.prune_steps`` (``metric`` = perplexity)."""
    return {"step": i, "ratio": ratio, "params": sum(p.numel() for p in model.parameters()),
            "heads": report.heads_after, "ffn": report.ffn_after, "hidden": report.hidden_after,
            "metric": round(ppl, 4), "retention": round(retention(ppl, reference), 4), "kept": kept,
            "recovery_steps": (recovery or {}).get("steps", 0), "recovery_seconds": (recovery or {}).get("seconds", 0)}


def _cumulative(report, first):
    """The step's prune report with the "before" widths of the first kept step (student → kept model)."""
    if first is None:
        return report
    report.params_before, report.heads_before = first.params_before, first.heads_before
    report.ffn_before, report.hidden_before = first.ffn_before, first.hidden_before
    report.notes = list(first.notes) + list(report.notes)
    return report


def target_of(cfg: RunConfig, found: LMSearch, student_params: int) -> RetentionTarget:
    """How the kept model stands against ``--target-retention``: one line for the report, as the encoder's."""
    r, ref = cfg.prune.target_retention, found.reference
    line = f"{r:.0%} retention of the student's perplexity {ref:,.2f} (perplexity ≤ {threshold(ref, r):,.2f})"
    make = partial(RetentionTarget, "pruned", r, ref, threshold(ref, r))  # + metric, met, kept, note
    if cfg.prune.fixed:
        ppl = found.steps[-1]["metric"]
        met = keeps(ppl, ref, r)
        note = (f"pruning (fixed ratios, no search) {'keeps' if met else 'misses'} {line}: perplexity {ppl:,.2f}"
                + ("" if met else "; drop the --prune-* ratios to search for a size that keeps it"))
        return make(ppl, met, "fixed ratios", note)
    kept = [s for s in found.steps if s["kept"]]
    if not kept:
        first = found.steps[0]
        note = (f"target not reachable: no pruning step kept {line}: ratio {first['ratio']:g} gave perplexity "
                f"{first['metric']:,.2f}; kept instead: the unpruned student ({student_params:,} params)")
        return make(ref, False, "the unpruned student", note)
    best, last = kept[-1], found.steps[-1]
    stop = "every step kept it" if last["kept"] else f"ratio {last['ratio']:g} rose to perplexity {last['metric']:,.2f}"
    note = (f"pruning keeps {line}: kept ratio {best['ratio']:g} ({best['params']:,} of {student_params:,} params, "
            f"perplexity {best['metric']:,.2f}); {stop}")
    return make(best["metric"], True, f"ratio {best['ratio']:g}", note)


def fixed(cfg: RunConfig, student, teacher, loader, ids: list[int], block: int, teaching=None) -> LMSearch:
    """Today's single prune to the fixed ``--prune-*`` ratios with recovery, scored against the target."""
    dev, windows = search_ids(ids, block)
    found = LMSearch(perplexity(cfg, student, dev, block), windows)
    model = copy.deepcopy(student)
    found.report = decoder_pruner()(model, cfg.prune.plan(), calibration_batches(loader))
    if cfg.prune.recover_epochs > 0:
        found.recovery = distil(cfg, model, teacher, loader, epochs=cfg.prune.recover_epochs,
                                description="recover", teaching=teaching)
    ppl = perplexity(cfg, model, dev, block)
    found.model = model
    found.steps.append({"step": 1, "params": sum(p.numel() for p in model.parameters()), "metric": round(ppl, 4),
                        "retention": round(retention(ppl, found.reference), 4)})
    return found


def _facts(found: LMSearch, student) -> dict:
    """The pruned stage's training facts: its widths against the student's, notes, recovery."""
    model, report = student if found.model is None else found.model, found.report
    if found.model is None:  # nothing kept: the unpruned student
        w = _widths(student)
        facts = {"notes": ["no pruning step kept the target: this is the unpruned student"],
                 "heads": [w.heads, w.heads], "ffn": [w.ffn, w.ffn], "hidden": [w.hidden, w.hidden]}
    else:
        facts = {"notes": list(report.notes), "heads": [report.heads_before, report.heads_after],
                 "ffn": [report.ffn_before, report.ffn_after], "hidden": [report.hidden_before, report.hidden_after]}
    facts = {"params": sum(p.numel() for p in model.parameters()), **facts}
    if found.recovery is not None:
        facts["recovery"] = found.recovery
    return facts


def search_record(found: LMSearch, target: RetentionTarget, searched: bool) -> dict:
    """report.json's ``prune_search``: encoder key names (``prune_steps``, ``prune_target``) plus what the
    metric is and how retention is read for it."""
    return {"metric_name": METRIC, "convention": CONVENTION, "searched": searched, "windows": found.windows,
            "prune_steps": found.steps if searched else [], "prune_target": target.to_json()}


def stage_prune(cfg: RunConfig, student, teacher, tokenizer, loader, out: Path, *, eval_ids: list[int],
                block_size: int, teaching=None) -> LMStage | None:
    """Prune a copy of the student (a retention search, else the fixed ratios), recover by distillation from
    ``teaching`` (the teacher cache) or ``teacher``, save the kept model to ``OUTPUT/pruned``; the stage's
    ``search`` is report.json's ``prune_search``. None (with a note) when the decoder pruner is not installed."""
    if decoder_pruner() is None:
        info("  note: structured pruning of decoders is not installed here (compress.prune.decoder): skipped")
        return None
    run = fixed if cfg.prune.fixed else search
    found = run(cfg, student, teacher, loader, eval_ids, block_size, teaching=teaching)
    target = target_of(cfg, found, sum(p.numel() for p in student.parameters()))
    info(f"  {target.note}")
    facts = _facts(found, student)
    model = copy.deepcopy(student) if found.model is None else found.model
    info(f"  pruned: heads {facts['heads'][0]} → {facts['heads'][1]}, FFN {facts['ffn'][0]} → {facts['ffn'][1]}, "
         f"hidden {facts['hidden'][0]} → {facts['hidden'][1]}, {facts['params'] / 1e6:.1f}M parameters")
    save_model(model, tokenizer, out / "pruned", device=cfg.train.device)
    return LMStage("pruned", model, out / "pruned", facts, search=search_record(found, target, not cfg.prune.fixed))

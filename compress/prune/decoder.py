"""Structured pruning of decoders (causal LMs: llama, mistral, qwen2, gpt2), Minitron style: activation importance
on calibration batches (``distill.core.families.decoder_importance``), then a cut to widths that are the same in
every layer (``distill.core.families.decoder_cut``), so the result saves with ``save_pretrained`` and reloads with
plain ``AutoModelForCausalLM.from_pretrained`` with the same logits. No torch-pruning graph: decoders are cut by
the family's module paths.

``PruneConfig`` is read as for encoders, with what a plain decoder config can express:

- ``heads``: fraction of query heads removed (one float). Under grouped-query attention the kept count is the
  nearest that groups evenly (``gqa_shape``): whole K/V groups go with their query heads, or query heads go evenly
  from every group; ``kv_heads`` fixes the K/V head count.
- ``ffn``: fraction of FFN neurons removed (gate and up rows with the down columns).
- ``hidden``: fraction of residual channels removed (embeddings, norms, lm_head, tied or not). ``None``: kept for
  rotary families; for GPT-2 (heads x head size = hidden) it shrinks with the heads.
- ``layers`` / ``layer_selection``: blocks kept (a count or indices); ``importance`` keeps the blocks that turn
  their input most (1 - cosine), ``uniform`` spreads them evenly.
``importance`` (the encoders' gradient criteria) does not apply: decoder scores are always activation-based.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from compress.prune.config import PruneConfig
from compress.prune.pruner import PruneReport
from distill.core.errors import ConfigError
from distill.core.families import Family, family_of
from distill.core.families.decoder_cut import DecoderKeep, cut_decoder
from distill.core.families.decoder_importance import DecoderImportance, DecoderTarget, keep_for, measure_importance

if TYPE_CHECKING:
    from torch import nn

IMPORTANCE_NAME = "activation"


def is_decoder(model: Any) -> bool:
    """True for a model of a registered causal-LM family (pruned here rather than by the torch-pruning path)."""
    from distill.core.families import find_family

    family = find_family(model)
    return family is not None and family.causal


def _one(name: str, ratio: Any) -> float:
    if isinstance(ratio, (list, tuple, dict)):
        raise ConfigError(f"--prune-{name} {ratio!r} gives per-layer ratios for a decoder",
                          "give one ratio: a plain decoder config has one width for every layer")
    return float(ratio or 0.0)


def decoder_target(model: nn.Module, config: PruneConfig, *, kv_heads: int | None = None,
                   family: Family | None = None) -> DecoderTarget:
    """The shape ``config``'s ratios ask of ``model`` (counts rounded to the nearest, at least one kept)."""
    family = family or family_of(model, "structured pruning")
    w = family.widths(model.config)
    heads = max(1, round(w.heads * (1 - _one("heads", config.heads))))
    ffn = max(1, round(w.ffn * (1 - _one("ffn", config.ffn))))
    if config.hidden is not None:
        hidden = max(1, round(w.hidden * (1 - config.hidden)))
    elif family.head_dim_key is None:  # GPT-2: the hidden width follows the heads (heads x head size)
        hidden = heads * w.head_dim
    else:
        hidden = w.hidden
    layers = config.layers
    count = len(layers) if isinstance(layers, list) else layers
    if count is not None and not 0 < count <= w.layers:
        raise ConfigError(f"--prune-layers {count}: the model has {w.layers} layers", f"keep 1..{w.layers} layers")
    selection: str | list[int] = layers if isinstance(layers, list) else config.layer_selection
    return DecoderTarget(layers=count, hidden=hidden, heads=heads, kv_heads=kv_heads, ffn=ffn,
                         layer_selection=selection)


def prune_decoder(model: nn.Module, config: PruneConfig, batches: Iterable[dict[str, Any]], *,
                  kv_heads: int | None = None, importance: DecoderImportance | None = None) -> PruneReport:
    """Prune a causal LM in place to ``config`` by activation importance over ``batches`` (dicts with
    ``input_ids`` and ``attention_mask``); returns the report. ``importance`` reuses scores already measured.
    Config errors are raised before the model changes."""
    family = family_of(model, "structured pruning")
    started = time.perf_counter()
    before, params_before = family.widths(model.config), _params(model)
    target = decoder_target(model, config, kv_heads=kv_heads, family=family)
    needs_scores = (target.hidden, target.heads, target.ffn) != (before.hidden, before.heads, before.ffn) \
        or target.layer_selection == "importance"
    imp = importance or (measure_importance(model, batches, family) if needs_scores else None)
    keep = keep_for(model, target, imp, family)
    sources = keep.layers if keep.layers is not None else list(range(before.layers))
    cut_decoder(model, keep, family)
    after = family.widths(model.config)
    notes = _notes(before, after, keep, imp, config, time.perf_counter() - started)
    per_layer = [{"layer": i, "source": s, "heads": after.heads, "ffn": after.ffn, "heads_before": before.heads,
                  "ffn_before": before.ffn, "kv_heads": after.kv_heads,
                  "kept_heads": keep.heads[i] if keep.heads else None}
                 for i, s in enumerate(sources)]
    return PruneReport(params_before=params_before, params_after=_params(model), heads_before=before.heads,
                       heads_after=after.heads, hidden_before=before.hidden, hidden_after=after.hidden,
                       ffn_before=before.ffn, ffn_after=after.ffn, notes=notes, layers_before=before.layers,
                       layers_after=after.layers, per_layer=per_layer, hf_loadable=True)


def _notes(before: Any, after: Any, keep: DecoderKeep, imp: DecoderImportance | None, config: PruneConfig,
           seconds: float) -> list[str]:
    notes = []
    if imp is not None:
        notes.append(f"{IMPORTANCE_NAME} importance over {imp.tokens} calibration tokens ({seconds:.1f} s)")
    if config.importance != "magnitude":
        notes.append(f"decoders are scored by {IMPORTANCE_NAME} importance; '{config.importance}' does not apply")
    if (after.heads, after.kv_heads) != (before.heads, before.kv_heads):
        notes.append(f"attention: {before.heads} query / {before.kv_heads} K/V heads -> {after.heads} / "
                     f"{after.kv_heads} (kept heads grouped by K/V head)")
    if after.head_dim != before.head_dim:
        notes.append(f"head size {before.head_dim} -> {after.head_dim} (heads x head size = hidden)")
    if keep.layers is not None:
        notes.append(f"kept layers {keep.layers} of {before.layers}")
    if after == before:
        notes.append("nothing to prune: model unchanged")
    return notes


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())

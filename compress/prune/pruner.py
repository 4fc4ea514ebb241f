"""Structured pruning of HF encoders with torch-pruning, in place: heads, FFN neurons, hidden width, whole layers.

Heads are always removed whole and the head size never changes. ``hidden`` is the residual stream shared by every
block; by default it shrinks with the heads (head count x head size, as in a plain HF config). Ratios are global
(one float) or per layer (a list, or a dict layer -> ratio over the layers as they are before pruning).

Model structure comes from the family (``distill.core.families``): the heads of a fused [q; k; v] projection
are cut by slicing (``compress.prune.fused``), a fused GLU's input and gate rows go in pairs, tables the blocks share
(DeBERTa's relative positions) lose the hidden columns cut, and a family's special first block is always kept.
What to cut is scored in ``compress.prune.select``.

Only this package's functions import ``torch_pruning``, so ``import compress`` stays light. Recovery (distilling
the pruned student back) is the caller's job; nothing here trains. Save results with ``compress.save_pruned``
and reload them with ``compress.load_pruned``; the report's ``hf_loadable`` says when plain ``from_pretrained``
suffices.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from compress.prune import fused
from compress.prune.config import LAYER_SELECTIONS as LAYER_SELECTIONS
from compress.prune.config import PruneConfig as PruneConfig
from compress.prune.config import Ratio as Ratio
from compress.prune.config import check_loss_available
from compress.prune.config import check_ratio as check_ratio
from compress.prune.config import check_ratios as check_ratios
from compress.prune.config import parse_ratio as parse_ratio
from compress.prune.importance import IMPORTANCES as IMPORTANCES
from compress.prune.importance import Batch, LossFn, Scorer
from compress.prune.importance import ImportanceFactory as ImportanceFactory
from compress.prune.layout import LayerWidths, Layout, measure, sync_config
from compress.prune.plan import hidden_target, layer_targets, selection_name, width_notes
from compress.prune.plan import plan_widths as plan_widths
from compress.prune.select import (
    build_graph,
    by_importance,
    channel_scores,
    choose_layers,
    ffn_scores,
    lowest,
    make_scorer,
    out_channels,
)
from distill.core.errors import ModelError
from distill.core.families import Family, arch_of


@dataclass
class PruneReport:
    """What pruning did. Scalar widths are per layer (the largest layer's when layers differ); ``per_layer`` has
    one dict per kept block: ``layer``, ``source`` (index before pruning), ``heads``, ``ffn``, ``heads_before``,
    ``ffn_before``. ``hf_loadable`` is False when only ``compress.load_pruned`` can rebuild the shapes."""

    params_before: int
    params_after: int
    heads_before: int
    heads_after: int
    hidden_before: int
    hidden_after: int
    ffn_before: int
    ffn_after: int
    notes: list[str] = field(default_factory=list)
    layers_before: int = 0
    layers_after: int = 0
    per_layer: list[dict] = field(default_factory=list)
    hf_loadable: bool = True

    def to_dict(self) -> dict:
        """Plain JSON-ready dict, for run artifacts and reports."""
        return asdict(self)


@dataclass(frozen=True)
class _Cut:
    """One planned removal: drop ``idxs`` from ``module``'s output channels (and everything coupled to them).

    ``shared`` are modules of a side path of hidden width that the graph cannot tie to the residual stream:
    DeBERTa's relative-position table (read as a tensor, never called), its norm, and the position projections
    that read it (coupled to the stream only through ``query_proj``/``key_proj`` with ``share_att_key``). Those
    the graph left at the old width lose the same hidden columns.
    """

    module: torch.nn.Module
    idxs: list[int]
    shared: tuple[torch.nn.Module, ...] = ()


def prune_model(
    model: torch.nn.Module,
    config: PruneConfig,
    example_inputs: Batch,
    *,
    batches: Iterable[Batch] | None = None,
    loss_fn: LossFn | None = None,
) -> PruneReport:
    """Prune ``model`` in place, fix its attention modules and config, and report.

    ``example_inputs`` (a tokenized batch; ``labels`` allowed) is used to trace the model. Gradient criteria run
    ``batches`` (default: ``[example_inputs]``; pass a few, they are kept in memory) through ``loss_fn(model,
    batch)`` (default: the task loss from ``labels``; ``compress.kd_loss_fn(teacher)`` for distillation).
    Importance is estimated once, on the model as given, before anything changes; ``.grad`` is left cleared.
    Config errors (ratios that do not fit the model, a criterion without its loss) leave the model untouched.
    """
    spec = arch_of(model)
    if spec.causal:
        raise ModelError(f"prune_model prunes encoders; '{spec.model_type}' is a causal LM",
                         "prune decoders with compress.prune.prune_decoder (what `distill run --task causal-lm` uses)")
    inputs = _to_device(example_inputs, model)
    batches = list(batches) if batches is not None else None
    check_loss_available(config, inputs, batches, loss_fn)
    before = measure(model, spec)
    params_before = _count_params(model)
    heads_r, ffn_r, keep_heads, keep_ffn, n_keep = layer_targets(config, before)
    notes = width_notes(before, config, heads_r, ffn_r, keep_heads, keep_ffn)
    with _modes_kept(model), _grads_dropped(model):
        kept, changed = _cut(model, spec, config, inputs, batches, loss_fn, (keep_heads, keep_ffn, n_keep), notes)
    after = measure(model, spec)
    sync_config(model, spec, after)
    if not changed:
        notes.append("nothing to prune: model unchanged")
    if not after.expressible:
        notes.append(
            "per-layer widths or attention narrower than hidden: save with compress.save_pruned and reload with "
            "compress.load_pruned (plain from_pretrained cannot express this layout)"
        )
    return _report(before, after, kept, params_before, _count_params(model), notes)


def _cut(
    model: torch.nn.Module,
    spec: Family,
    config: PruneConfig,
    inputs: Batch,
    batches: list | None,
    loss_fn: LossFn | None,
    targets: tuple[list[int], list[int], int],
    notes: list[str],
) -> tuple[list[int], bool]:
    """Drop layers, then cut heads, FFN neurons and hidden width; (indices of the blocks kept, whether changed)."""
    keep_heads, keep_ffn, n_keep = targets
    trace = {k: v for k, v in inputs.items() if k != "labels"}
    before = measure(model, spec)
    n = len(before.layers)
    kept, changed = list(range(n)), False
    may_cut = (config.hidden or 0) > 0 or any(
        k < w.heads or f < w.ffn for w, k, f in zip(before.layers, keep_heads, keep_ffn, strict=True)
    )
    # one importance estimate on the model as given, before anything changes (a failing criterion leaves the
    # model intact); it ranks the blocks and, on the blocks kept, the heads and channels
    scorer = None
    if may_cut or by_importance(config, n_keep, n):
        scorer = make_scorer(model, config, inputs, batches, loss_fn)
    if n_keep < n:
        kept = choose_layers(model, spec, config, trace, scorer, n_keep)
        spec.keep_blocks(model, kept)
        how = "as listed" if isinstance(config.layers, list) else f"by {selection_name(config)}"
        notes.append(f"kept layers {kept} of {n} ({how})")
        changed = True
    current = measure(model, spec)
    heads_k, ffn_k = [keep_heads[i] for i in kept], [keep_ffn[i] for i in kept]
    keep_hidden = hidden_target(current, config, heads_k, notes)
    if keep_hidden < current.hidden or any(
        k < w.heads or f < w.ffn for w, k, f in zip(current.layers, heads_k, ffn_k, strict=True)
    ):
        dg = build_graph(model, trace)
        cuts = _plan(model, spec, dg, scorer, current, heads_k, ffn_k, keep_hidden)
        _clear_grads(model)
        _apply(dg, cuts)
        _fix_attention(model, spec, current)
        changed = True
    if changed:
        _check_forward(model, trace)
    return kept, changed


def _report(
    before: Layout, after: Layout, kept: list[int], params_before: int, params_after: int, notes: list[str]
) -> PruneReport:
    """The report of one prune: widths before and after, and one row per kept block with its source index."""
    return PruneReport(
        params_before=params_before,
        params_after=params_after,
        heads_before=before.max_heads,
        heads_after=after.max_heads,
        hidden_before=before.hidden,
        hidden_after=after.hidden,
        ffn_before=before.max_ffn,
        ffn_after=after.max_ffn,
        notes=notes,
        layers_before=len(before.layers),
        layers_after=len(after.layers),
        per_layer=[
            {
                "layer": i,
                "source": src,
                "heads": w.heads,
                "ffn": w.ffn,
                "heads_before": before.layers[src].heads,
                "ffn_before": before.layers[src].ffn,
            }
            for i, (src, w) in enumerate(zip(kept, after.layers, strict=True))
        ],
        hf_loadable=after.expressible,
    )


# ----------------------------------------------------------------------------------------------- mechanics


def _count_params(model: torch.nn.Module) -> int:
    """Number of parameters, counting tied weights once."""
    return sum(p.numel() for p in model.parameters())


def _to_device(example_inputs: Batch, model: torch.nn.Module) -> Batch:
    """Example inputs moved to the model's device, so tracing works whatever the caller passed."""
    if not isinstance(example_inputs, dict) or not example_inputs:
        raise ModelError("pruning needs example inputs as a non-empty dict of tensors", "pass a tokenized batch")
    device = next(model.parameters()).device
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in example_inputs.items()}


@contextlib.contextmanager
def _modes_kept(model: torch.nn.Module) -> Iterator[None]:
    """Restore each module's train/eval flag and each parameter's requires_grad afterwards (tracing changes both).

    Keyed by module and local name: pruning swaps Parameter objects, dropping layers renames them.
    """
    modes = {m: m.training for m in model.modules()}
    grads = {(m, name): p.requires_grad for m in model.modules() for name, p in m.named_parameters(recurse=False)}
    try:
        yield
    finally:
        for m in model.modules():  # modules created meanwhile (the new layer list) follow the model's flag
            m.training = modes.get(m, modes[model])
        for m in model.modules():
            for name, p in m.named_parameters(recurse=False):
                p.requires_grad_(grads.get((m, name), True))


@contextlib.contextmanager
def _grads_dropped(model: torch.nn.Module) -> Iterator[None]:
    """Whatever happens, leave no gradient behind (a gradient criterion fills them; they are stale after)."""
    try:
        yield
    finally:
        _clear_grads(model)


def _clear_grads(model: torch.nn.Module) -> None:
    """Drop gradients left by a gradient criterion (they would be stale after pruning)."""
    for p in model.parameters():
        p.grad = None


def _plan(
    model: torch.nn.Module,
    spec: Family,
    dg: Any,
    scorer: Scorer,
    current: Layout,
    keep_heads: list[int],
    keep_ffn: list[int],
    keep_hidden: int,
) -> list[_Cut | fused.FusedHeadCut]:
    """Choose every channel to remove, scoring all groups on the unpruned weights before anything changes."""
    cuts = []
    blocks = spec.blocks(model)
    for block, w, kh, kf in zip(blocks, current.layers, keep_heads, keep_ffn, strict=True):
        if kf < w.ffn:
            ffn_in = spec.ffn(block)["in"]
            cuts.append(_Cut(ffn_in, lowest(ffn_scores(dg, scorer, spec, ffn_in), w.ffn - kf)))
        if kh < w.heads and fused.is_fused(spec):
            cuts.append(fused.head_cut(spec, block, scorer, w.head_size, w.heads - kh))
        elif kh < w.heads:
            cuts.append(_head_cut(dg, scorer, spec.qkv(block)["query"], w, kh))
    if keep_hidden < current.hidden:
        removed = current.hidden - keep_hidden
        first_out = spec.attention_output(blocks[0])
        side = (*spec.shared_modules(model).values(), *(m for b in blocks for m in spec.attention_extra(b)))
        cuts.append(_Cut(first_out, lowest(channel_scores(dg, scorer, first_out), removed), side))
        cuts.extend(_Cut(m, lowest(channel_scores(dg, scorer, m), removed)) for m in spec.square_head_modules(model))
        cuts.extend(_embedding_cut(model, spec, dg, scorer, current.hidden, keep_hidden))
    return cuts


def _embedding_cut(model: torch.nn.Module, spec: Family, dg: Any, scorer: Scorer, hidden: int,
                   keep_hidden: int) -> list[_Cut]:
    """Embeddings narrower than the hidden width (ELECTRA, DeBERTa with ``embedding_size``) shrink in proportion
    with it and stay narrower: a config whose embedding width equals the hidden width builds no projection, so a
    square one could not be reloaded."""
    projection = spec.embedding_projection_module(model)
    if projection is None:
        return []
    width = projection.in_features
    keep = max(1, min(round(width * keep_hidden / hidden), keep_hidden - 1))
    if keep >= width:
        return []
    word = spec.embedding_tables(model)["word"]
    return [_Cut(word, lowest(channel_scores(dg, scorer, word), width - keep))]


def _head_cut(dg: Any, scorer: Scorer, query: torch.nn.Linear, w: LayerWidths, keep_heads: int) -> _Cut:
    """Remove whole heads: score q/k/v/out channels together, average per head, drop the weakest heads."""
    per_head = channel_scores(dg, scorer, query).view(w.heads, w.head_size).mean(dim=1)
    heads = lowest(per_head, w.heads - keep_heads)
    return _Cut(query, [h * w.head_size + i for h in heads for i in range(w.head_size)])


def _apply(dg: Any, cuts: list[_Cut | fused.FusedHeadCut]) -> None:
    """Carry out the planned cuts through the dependency graph, so every coupled layer shrinks with them (heads of
    a fused Q/K/V by slicing: they cut other dimensions than the graph's groups, so the order does not matter)."""

    with torch.no_grad():
        for cut in cuts:
            if isinstance(cut, fused.FusedHeadCut):
                cut.apply()
                continue
            group = dg.get_pruning_group(cut.module, out_channels(cut.module)[0], cut.idxs)
            if not dg.check_pruning_group(group):
                raise ModelError(
                    "torch-pruning refused a pruning group (it would empty a layer)", "use smaller ratios"
                )
            group.prune()
            for module in cut.shared:
                _cut_side_path(module, cut.idxs, out_channels(cut.module)[1] + len(cut.idxs))


def _cut_side_path(module: torch.nn.Module, idxs: list[int], old_width: int) -> None:
    """Drop hidden columns ``idxs`` from a side-path module still ``old_width`` wide (see ``_Cut.shared``)."""
    import torch_pruning as tp

    if isinstance(module, torch.nn.Embedding) and module.weight.shape[1] == old_width:
        tp.prune_embedding_out_channels(module, idxs)
    elif isinstance(module, torch.nn.LayerNorm) and module.normalized_shape[0] == old_width:
        tp.prune_layernorm_out_channels(module, idxs)
    elif isinstance(module, torch.nn.Linear) and module.in_features == old_width:
        tp.prune_linear_in_channels(module, idxs)


def _fix_attention(model: torch.nn.Module, spec: Family, before: Layout) -> None:
    """Set the head count, widths and scaling torch-pruning leaves stale on every self-attention module."""
    for block, w in zip(spec.blocks(model), before.layers, strict=True):
        inner = spec.attention_width(block)
        spec.set_attention_widths(spec.self_attention(block), inner // w.head_size, w.head_size)


def _check_forward(model: torch.nn.Module, inputs: Batch) -> None:
    """Run the pruned model once in eval mode, so a broken prune fails here and not in the caller's training."""
    model.eval()
    try:
        with torch.no_grad():
            model(**inputs)
    except Exception as exc:
        raise ModelError(f"the pruned model no longer runs: {type(exc).__name__}: {exc}", "report this bug") from exc

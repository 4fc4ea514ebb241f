"""What a prune removes, before anything changes: torch-pruning's dependency graph of the model, one score per
channel (pooled over its whole group), per FFN neuron (a fused GLU's two rows as one), per head and per block, and
the blocks kept (as listed, evenly spaced, or the most important; a family's special first block always kept)."""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch

from compress.prune import fused
from compress.prune.config import PruneConfig
from compress.prune.importance import IMPORTANCES, Batch, LossFn, Scorer
from compress.prune.layout import LayerWidths, measure
from distill.core.errors import ConfigError, ModelError
from distill.core.families import Family


def graph_outputs(out: Any) -> list[torch.Tensor]:
    """Every tensor a forward returns (logits, last_hidden_state, pooler_output...), so the graph sees all heads."""
    if isinstance(out, torch.Tensor):
        return [out]
    if hasattr(out, "to_tuple"):
        out = out.to_tuple()
    elif isinstance(out, dict):
        out = list(out.values())
    return [t for v in out for t in graph_outputs(v)] if isinstance(out, (list, tuple)) else []


def build_graph(model: torch.nn.Module, inputs: Batch) -> Any:
    """Trace the model into torch-pruning's dependency graph (needs autograd, so parameters must require grad)."""
    import torch_pruning as tp

    for p in model.parameters():
        p.requires_grad_(True)
    try:
        with torch.enable_grad():
            return tp.DependencyGraph().build_dependency(model, example_inputs=inputs, output_transform=graph_outputs)
    except Exception as exc:  # torch-pruning raises many kinds; the user needs one clear line
        raise ModelError(
            f"torch-pruning could not trace {type(model).__name__}: {type(exc).__name__}: {exc}",
            "prune with heads=0 hidden=0 (FFN and layers only), or skip pruning",
        ) from exc


def make_scorer(
    model: torch.nn.Module, config: PruneConfig, inputs: Batch, batches: list | None, loss_fn: LossFn | None
) -> Scorer:
    """Call the configured importance factory (older two-argument factories are still accepted)."""
    factory = IMPORTANCES.get(config.importance)
    params = inspect.signature(factory).parameters
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if takes_kwargs or {"batches", "loss_fn"} <= set(params):
        return factory(model, inputs, batches=batches, loss_fn=loss_fn)
    return factory(model, inputs)


def lowest(scores: torch.Tensor, n: int) -> list[int]:
    """Indices of the ``n`` lowest scores, ties broken by position so the choice is deterministic."""
    order = torch.argsort(scores.detach().float().cpu(), stable=True)
    return sorted(order[:n].tolist())


def out_channels(module: torch.nn.Module) -> tuple[Any, int]:
    """torch-pruning's function removing output channels of ``module`` (a Linear, or an Embedding's columns) and
    how many it has."""
    import torch_pruning as tp

    if isinstance(module, torch.nn.Embedding):
        return tp.prune_embedding_out_channels, module.embedding_dim
    return tp.prune_linear_out_channels, module.out_features


def channel_scores(dg: Any, scorer: Scorer, module: torch.nn.Module) -> torch.Tensor:
    """Importance of each output channel of ``module``, pooled over its whole dependency group."""
    prune_fn, width = out_channels(module)
    group = dg.get_pruning_group(module, prune_fn, list(range(width)))
    scores = scorer(group)
    if scores is None or scores.numel() != width:
        raise ModelError(f"importance gave no usable scores for {type(module).__name__}", "use importance=magnitude")
    return scores


def by_importance(config: PruneConfig, n_keep: int, n: int) -> bool:
    return n_keep < n and config.layer_selection == "importance" and not isinstance(config.layers, list)


def choose_layers(
    model: torch.nn.Module, spec: Family, config: PruneConfig, trace: Batch, scorer: Scorer | None, n_keep: int
) -> list[int]:
    """Indices of the blocks to keep, in order: as listed, evenly spaced (last kept), or the most important.

    A block's importance is the criterion summed over its FFN neurons and attention channels.
    """
    n = len(spec.blocks(model))
    first = spec.first_block_norm is not None  # the family's block 0 differs: it is always kept
    if isinstance(config.layers, list):
        if first and 0 not in config.layers:
            raise ConfigError(f"{spec.model_type} builds its first layer without {spec.first_block_norm}, so a "
                              f"pruned model must keep layer 0 (--prune-layers {config.layers})",
                              "list layer 0 among the layers kept, or give a number of layers")
        return list(config.layers)
    if config.layer_selection == "uniform" or scorer is None:
        if first and n_keep > 1:
            return [0] + [math.ceil((i + 1) * (n - 1) / (n_keep - 1)) for i in range(n_keep - 1)]
        return [0] if first else [math.ceil((i + 1) * n / n_keep) - 1 for i in range(n_keep)]
    dg = build_graph(model, trace)
    layout = measure(model, spec)
    scores = torch.stack(
        [
            channel_scores(dg, scorer, spec.ffn(block)["in"]).float().sum()
            + attention_score(dg, scorer, spec, block, w)
            for block, w in zip(spec.blocks(model), layout.layers, strict=True)
        ]
    )
    if first:
        scores[0] = float("inf")
    dropped = set(lowest(scores, n - n_keep))
    return [i for i in range(n) if i not in dropped]


def ffn_scores(dg: Any, scorer: Scorer, spec: Family, ffn_in: torch.nn.Linear) -> torch.Tensor:
    """One score per FFN neuron; a fused GLU's [input; gate] halves are scored as one neuron (the graph removes
    the gate row with its input row)."""
    scores = channel_scores(dg, scorer, ffn_in)
    return scores.view(2, -1).sum(0) if spec.ffn_glu_fused else scores


def attention_score(dg: Any, scorer: Scorer, spec: Family, block: torch.nn.Module, w: LayerWidths) -> torch.Tensor:
    """A block's attention importance: the criterion summed over its attention channels."""
    if fused.is_fused(spec):
        return fused.head_scores(spec, block, scorer, w.head_size).sum() * w.head_size
    return channel_scores(dg, scorer, spec.qkv(block)["query"]).float().sum()

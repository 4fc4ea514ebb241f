"""What HF outputs do not carry: each layer's query/key/value projections (for MiniLMv2 relations), captured by
forward hooks, and attention maps that are usable as targets (eager attention, no attention dropout)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from distill.core.errors import ConfigError, ModelError

QKV = ("query", "key", "value")

_ROLES = {"query": "query", "q_lin": "query", "q_proj": "query", "query_proj": "query", "q": "query",
          "key": "key", "k_lin": "key", "k_proj": "key", "key_proj": "key", "k": "key",
          "value": "value", "v_lin": "value", "v_proj": "value", "value_proj": "value", "v": "value"}


_LAYER = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")


def find_qkv(model: nn.Module) -> list[dict[str, nn.Linear]]:
    """Per encoder layer (in order), the query/key/value ``nn.Linear`` found by name (BERT, DistilBERT, ...)."""
    found: dict[int, dict[str, nn.Linear]] = {}
    for name, module in model.named_modules():
        role = _ROLES.get(name.rsplit(".", 1)[-1])
        layer = _LAYER.search(name)
        if role and layer and isinstance(module, nn.Linear):
            found.setdefault(int(layer.group(1)), {}).setdefault(role, module)  # first one: self-attention
    return [found[i] for i in sorted(found) if len(found[i]) == len(QKV)]


@contextmanager
def capture_qkv(model: nn.Module, layers: Sequence[int]) -> Iterator[dict[int, dict[str, torch.Tensor]]]:
    """Within the block every forward of ``model`` stores ``captured[layer] = {"query", "key", "value"}`` (B, L, D).

    ``layers`` are 0-based encoder-layer indices (negative from the end); hooks are removed on exit.
    """
    qkv = find_qkv(model)
    if not qkv:
        raise ModelError(f"cannot find the query/key/value projections of {type(model).__name__}",
                         "use --relation-weight 0 with this model")
    captured: dict[int, dict[str, torch.Tensor]] = {}
    handles = []
    try:
        for layer in layers:
            if not -len(qkv) <= layer < len(qkv):
                raise ConfigError(f"layer {layer} is out of range: {type(model).__name__} has {len(qkv)} layers",
                                  "check --relation-layer")
            store = captured.setdefault(layer, {})
            for role, module in qkv[layer].items():
                handles.append(module.register_forward_hook(_storer(store, role)))
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def _storer(store: dict[str, torch.Tensor], role: str):
    def hook(module, args, output):
        store[role] = output
    return hook


def _attention_dropouts(model: nn.Module) -> list[nn.Dropout]:
    """The dropout modules of every self-attention (a module with a query Linear child and a Dropout child)."""
    found = []
    for module in model.modules():
        children = dict(module.named_children())
        if any(_ROLES.get(n) == "query" and isinstance(c, nn.Linear) for n, c in children.items()):
            found += [c for c in children.values() if isinstance(c, nn.Dropout)]
    return found


@contextmanager
def eager_attention(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block ``model`` returns usable attention maps: eager attention and no attention dropout.

    transformers 5 returns no maps with sdpa, and eager returns them after dropout (rows no longer sum to 1);
    both are restored on exit, and neither is saved by ``save_pretrained``.
    """
    previous = getattr(model.config, "_attn_implementation", None)
    dropouts = [(d, d.p) for d in _attention_dropouts(model)]
    if previous not in (None, "eager"):
        model.set_attn_implementation("eager")
    for d, _ in dropouts:
        d.p = 0.0
    try:
        yield model
    finally:
        for d, p in dropouts:
            d.p = p
        if previous not in (None, "eager"):
            model.set_attn_implementation(previous)

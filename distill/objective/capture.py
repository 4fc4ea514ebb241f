"""What HF outputs do not carry: each layer's query/key/value projections (for MiniLMv2 relations), captured by
forward hooks, and attention maps that are usable as targets (eager attention, no attention dropout).

Where Q/K/V and the attention dropout live comes from the model's family (``distill.core.families``): separate
projections (DeBERTa's ``query_proj``/``key_proj``/``value_proj`` too, of which only the call on the tokens is kept),
or a fused one ([q; k; v], ModernBERT's ``Wqkv``) split in thirds in the hook; ModernBERT's Q/K are taken before
its rotary embedding. Models of an unregistered family fall back to finding them by their usual names (``query``,
``q_lin``, ``q_proj``, ...): every encoder family users bring has an entry now (issue 16), and the fallback stays
for unregistered BERT-shaped models (CamemBERT, ...).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from distill.core.errors import ConfigError, ModelError
from distill.core.families import FUSED_QKV, QKV_ROLES, find_family

QKV = QKV_ROLES


def find_qkv(model: nn.Module) -> list[dict[str, nn.Module]]:
    """Per layer (in order), the model's ``{"query", "key", "value"}`` projections, or ``{"qkv": fused}`` for a
    family whose projection outputs [q; k; v]."""
    family = find_family(model)
    if family is None:
        return _guess_qkv(model)
    if not family.has_qkv:
        return []
    return [family.qkv(block) for block in family.blocks(model)]


@contextmanager
def capture_qkv(model: nn.Module, layers: Sequence[int]) -> Iterator[dict[int, dict[str, torch.Tensor]]]:
    """Within the block every forward of ``model`` stores ``captured[layer] = {"query", "key", "value"}`` (B, L, D).

    ``layers`` are 0-based encoder-layer indices (negative from the end); hooks are removed on exit. Each
    projection's first call in its self-attention's forward is kept: DeBERTa calls ``query_proj``/``key_proj``
    again on the relative-position table (``share_att_key``), which is not the tokens' Q/K.
    """
    qkv = find_qkv(model)
    if not qkv:
        raise ModelError(f"cannot find the query/key/value projections of {type(model).__name__}",
                         "use --relation-weight 0 with this model")
    family = find_family(model)
    blocks = family.blocks(model) if family is not None else None
    captured: dict[int, dict[str, torch.Tensor]] = {}
    handles = []
    try:
        for layer in layers:
            if not -len(qkv) <= layer < len(qkv):
                raise ConfigError(f"layer {layer} is out of range: {type(model).__name__} has {len(qkv)} layers",
                                  "check --relation-layer")
            store = captured.setdefault(layer, {})
            if blocks is not None:  # a new forward of this self-attention: forget the previous one's Q/K/V
                attn = family.self_attention(blocks[layer])
                handles.append(attn.register_forward_pre_hook(lambda module, args, store=store: store.clear()))
            for role, module in qkv[layer].items():
                hook = _splitter(store, model) if role == FUSED_QKV else _storer(store, role, first=blocks is not None)
                handles.append(module.register_forward_hook(hook))
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def _storer(store: dict[str, torch.Tensor], role: str, first: bool = False) -> Callable:
    """A hook storing a projection's output under ``role`` (only its first call since ``store`` was cleared, when
    ``first``)."""
    def hook(module, args, output):
        if not first or role not in store:
            store[role] = output
    return hook


def _splitter(store: dict[str, torch.Tensor], model: nn.Module) -> Callable:
    """A hook that splits a fused [q; k; v] output along its last dimension into the three roles."""
    family = find_family(model)

    def hook(module, args, output):
        sizes = family.fused_qkv_sizes(model.config, output.shape[-1])
        store.update(zip(QKV, output.split(list(sizes), dim=-1), strict=True))
    return hook


def _attention_dropouts(model: nn.Module) -> list[tuple[Any, str]]:
    """(owner, attribute) of every attention-probability dropout rate, from the family or by name."""
    family = find_family(model)
    if family is None:
        return [(d, "p") for d in _guess_attention_dropouts(model)]
    return family.attention_dropouts(model)


@contextmanager
def eager_attention(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block ``model`` returns usable attention maps: eager attention and no attention dropout.

    transformers 5 returns no maps with sdpa, and eager returns them after dropout (rows no longer sum to 1);
    both are restored on exit, and neither is saved by ``save_pretrained``.
    """
    previous = getattr(model.config, "_attn_implementation", None)
    dropouts = [(owner, attr, getattr(owner, attr)) for owner, attr in _attention_dropouts(model)]
    if previous not in (None, "eager"):
        model.set_attn_implementation("eager")
    for owner, attr, _ in dropouts:
        setattr(owner, attr, 0.0)
    try:
        yield model
    finally:
        for owner, attr, rate in dropouts:
            setattr(owner, attr, rate)
        if previous not in (None, "eager"):
            model.set_attn_implementation(previous)


# ---- fallback for families without an entry: find Q/K/V by their usual names --------------------------------

_ROLES = {"query": "query", "q_lin": "query", "q_proj": "query", "query_proj": "query", "q": "query",
          "key": "key", "k_lin": "key", "k_proj": "key", "key_proj": "key", "k": "key",
          "value": "value", "v_lin": "value", "v_proj": "value", "value_proj": "value", "v": "value"}

_LAYER = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")


def _guess_qkv(model: nn.Module) -> list[dict[str, nn.Module]]:
    """Per layer (in order), the query/key/value ``nn.Linear`` found by name (the first of each: self-attention)."""
    found: dict[int, dict[str, nn.Module]] = {}
    for name, module in model.named_modules():
        role = _ROLES.get(name.rsplit(".", 1)[-1])
        layer = _LAYER.search(name)
        if role and layer and isinstance(module, nn.Linear):
            found.setdefault(int(layer.group(1)), {}).setdefault(role, module)
    return [found[i] for i in sorted(found) if len(found[i]) == len(QKV)]


def _guess_attention_dropouts(model: nn.Module) -> list[nn.Dropout]:
    """The dropout modules of every self-attention (a module with a query Linear child and a Dropout child)."""
    found = []
    for module in model.modules():
        children = dict(module.named_children())
        if any(_ROLES.get(n) == "query" and isinstance(c, nn.Linear) for n, c in children.items()):
            found += [c for c in children.values() if isinstance(c, nn.Dropout)]
    return found

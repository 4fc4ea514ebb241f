"""Cut a decoder (causal LM) to given layers, heads, KV heads, FFN neurons and hidden channels, in place, so that
``save_pretrained`` writes a checkpoint plain ``AutoModelForCausalLM.from_pretrained`` rebuilds with the same
logits: every width is uniform over the layers and the config is rewritten through the family's keys.

``DecoderKeep`` names what stays, as indices into the model as it is. Which indices to keep (activation-based
importance, Minitron style) is ``distill.core.families.decoder_importance``; pruning (``compress.prune.decoder``)
and students (``students.decoders``) both go through here.

- Attention under grouped-query attention: query head ``h`` reads K/V head ``h // groups``. ``kv_heads`` keeps
  whole K/V heads and ``heads`` the query heads, listed group by group with the same count in every kept group
  (drop whole groups with their query heads, or query heads evenly per group); the attention's
  ``num_key_value_groups`` is rewritten. Rotary families keep the head size (rotary pairs its channels).
- GPT-2: fused ``c_attn`` ([q; k; v], ``Conv1D`` weight stored (in, out)); its config has no head-size key, so
  heads x head size must equal the hidden width: ``head_dims`` keeps the same channels of q, k and v inside every
  kept head, and q is scaled by sqrt(new / old head size) so the reloaded model's 1/sqrt(head size) gives the
  scores the old scale gave.
- Hidden channels are cut through every block's norms and residual projections, the final norm, the embedding
  tables (word, and GPT-2's positions) and ``lm_head``; tied embeddings stay one tensor. Norm statistics then
  run over fewer channels, so a hidden cut changes the function (the other cuts remove exactly what they drop).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from distill.core.errors import ModelError
from distill.core.families.family import FUSED_QKV, Family, family_of, get_path

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass
class DecoderKeep:
    """What to keep. ``layers`` indexes the blocks; the per-layer lists index the *kept* blocks, in order.

    ``kv_heads[l]``: K/V heads kept in layer l; ``heads[l]``: query heads kept, grouped by kept K/V head (each
    group the same size); ``head_dims[l][i]``: channels kept inside the i-th kept head (GPT-2 only); ``ffn[l]``:
    FFN neurons kept; ``hidden``: residual channels kept. ``None``: keep all of that kind.
    """

    layers: list[int] | None = None
    heads: list[list[int]] | None = None
    kv_heads: list[list[int]] | None = None
    head_dims: list[list[list[int]]] | None = None
    ffn: list[list[int]] | None = None
    hidden: list[int] | None = None


def cut_decoder(model: nn.Module, keep: DecoderKeep, family: Family | None = None) -> nn.Module:
    """Cut ``model`` (a ``*ForCausalLM`` of a registered decoder family) to ``keep``, in place; returns it.

    ModelError (one line) when the cut cannot be written as a plain config: widths differing between layers,
    query heads not grouped evenly by K/V head, a head-size cut on a rotary family, GPT-2 heads x head size not
    equal to the hidden width.
    """
    import torch

    family = family or family_of(model, "cutting a decoder")
    _check_shape(model, family, keep)
    with torch.no_grad():
        if keep.layers is not None:
            family.keep_blocks(model, list(keep.layers))
        for i, block in enumerate(family.blocks(model)):
            _cut_attention(model, family, block, keep, i)
            if keep.ffn is not None:
                _cut_ffn(family, block, keep.ffn[i])
        if keep.hidden is not None:
            _cut_hidden(model, family, list(keep.hidden))
    _rewrite_config(model, family)
    return model


# ---- checks ------------------------------------------------------------------------------------------------

def _uniform(name: str, lists: list | None) -> None:
    if lists is not None and len({len(x) for x in lists}) > 1:
        raise ModelError(f"the {name} kept differ in number between layers",
                         "keep the same number in every layer: a plain config holds one width for all layers")


def _check_shape(model: nn.Module, family: Family, keep: DecoderKeep) -> None:
    n = len(keep.layers) if keep.layers is not None else len(family.blocks(model))
    for name in ("heads", "kv_heads", "head_dims", "ffn"):
        lists = getattr(keep, name)
        if lists is not None and len(lists) != n:
            raise ModelError(f"{name} to keep is given for {len(lists)} layers, the cut model has {n}",
                             "give one list per kept layer")
        _uniform(name, lists)
    if keep.head_dims is not None:
        if family.head_dim_key is not None:
            raise ModelError(f"a {family.model_type} head size cannot be cut (rotary positions pair its channels)",
                             "cut heads, K/V heads, FFN or hidden instead")
        _uniform("head channels", [dims for layer in keep.head_dims for dims in layer])
    if keep.kv_heads is not None and family.kv_heads_key is None:
        raise ModelError(f"{family.model_type} has no grouped-query attention", "cut query heads (heads) only")
    if keep.heads is not None:
        groups = _groups(family, family.self_attention(family.blocks(model)[0]))
        for i, heads in enumerate(keep.heads):
            kv = keep.kv_heads[i] if keep.kv_heads is not None else sorted({h // groups for h in heads})
            if groups > 1 or family.kv_heads_key:
                _check_groups(list(heads), list(kv), groups)
    if family.head_dim_key is None:  # GPT-2: no head-size key, so heads x head size must stay the hidden width
        w = family.widths(model.config)
        heads = len(keep.heads[0]) if keep.heads else w.heads
        dim = len(keep.head_dims[0][0]) if keep.head_dims else w.head_dim
        hidden = len(keep.hidden) if keep.hidden is not None else w.hidden
        if heads * dim != hidden:
            raise ModelError(f"{family.model_type} needs heads x head size = hidden width, the cut gives "
                             f"{heads} x {dim} != {hidden}", "cut the head size (head_dims) with the hidden width")


def _groups(family: Family, attn: nn.Module) -> int:
    return int(getattr(attn, family.kv_groups_attr, 1)) if family.kv_groups_attr else 1


def _check_groups(heads: list[int], kv_heads: list[int], groups: int) -> int:
    """Query heads listed group by group, the same count per kept K/V head: the new group size."""
    if len(heads) % len(kv_heads):
        raise ModelError(f"{len(heads)} query heads cannot be shared evenly by {len(kv_heads)} K/V heads",
                         "keep the same number of query heads in every kept K/V group")
    new = len(heads) // len(kv_heads)
    for i, h in enumerate(heads):
        if h // groups != kv_heads[i // new]:
            raise ModelError(f"query head {h} does not read K/V head {kv_heads[i // new]}",
                             "list the kept query heads group by group, in the order of the kept K/V heads")
    return new


# ---- weight slicing (nn.Linear: weight (out, in); Conv1D: weight (in, out)) -------------------------------

def _is_conv1d(module: nn.Module) -> bool:
    return hasattr(module, "nf") and hasattr(module, "nx")


def keep_out(module: nn.Module, idx: torch.Tensor) -> None:
    """Keep output features ``idx`` of a Linear or Conv1D."""
    import torch

    conv = _is_conv1d(module)
    module.weight = torch.nn.Parameter(module.weight.data[:, idx].clone() if conv else module.weight.data[idx].clone())
    if getattr(module, "bias", None) is not None:
        module.bias = torch.nn.Parameter(module.bias.data[idx].clone())
    if conv:
        module.nf = len(idx)
    else:
        module.out_features = len(idx)


def keep_in(module: nn.Module, idx: torch.Tensor) -> None:
    """Keep input features ``idx`` of a Linear or Conv1D."""
    import torch

    conv = _is_conv1d(module)
    module.weight = torch.nn.Parameter(module.weight.data[idx].clone() if conv else module.weight.data[:, idx].clone())
    if conv:
        module.nx = len(idx)
    else:
        module.in_features = len(idx)


def _keep_norm(norm: nn.Module, idx: torch.Tensor) -> None:
    import torch

    norm.weight = torch.nn.Parameter(norm.weight.data[idx].clone())
    if getattr(norm, "bias", None) is not None:
        norm.bias = torch.nn.Parameter(norm.bias.data[idx].clone())
    if hasattr(norm, "normalized_shape"):
        norm.normalized_shape = (len(idx),)


def _channels(heads: list[int], head_dim: int, dims: list[list[int]] | None = None) -> list[int]:
    """Channel indices of the kept heads (and of the kept channels inside each, when given)."""
    out = []
    for i, h in enumerate(heads):
        out += [h * head_dim + d for d in (dims[i] if dims is not None else range(head_dim))]
    return out


# ---- the cuts ----------------------------------------------------------------------------------------------

def _cut_attention(model: nn.Module, family: Family, block: nn.Module, keep: DecoderKeep, i: int) -> None:
    import torch

    attn = family.self_attention(block)
    w = family.widths(model.config)
    heads_now, groups = family.attention_heads(block), _groups(family, attn)
    kv_now = heads_now // groups
    kv = list(keep.kv_heads[i]) if keep.kv_heads is not None else None
    heads = list(keep.heads[i]) if keep.heads is not None else None
    dims = keep.head_dims[i] if keep.head_dims is not None else None
    if kv is None and heads is None and dims is None:
        return
    if heads is None:  # whole K/V groups (or all heads): their query heads come along
        heads = [h for k in (kv if kv is not None else range(kv_now)) for h in range(k * groups, (k + 1) * groups)]
    if kv is None:
        kv = sorted({h // groups for h in heads}) if groups > 1 else list(heads)
    new_groups = _check_groups(heads, kv, groups) if groups > 1 or family.kv_heads_key else 1
    q_idx = torch.tensor(_channels(heads, w.head_dim, dims))
    if FUSED_QKV in family.qkv(block):
        _cut_fused(family, block, attn, heads, dims, w.head_dim, q_idx)
    else:
        qkv = family.qkv(block)
        kv_idx = torch.tensor(_channels(kv, w.head_dim))
        keep_out(qkv["query"], q_idx)
        keep_out(qkv["key"], kv_idx)
        keep_out(qkv["value"], kv_idx)
        keep_in(family.attention_output(block), q_idx)
        if family.kv_groups_attr:
            setattr(attn, family.kv_groups_attr, new_groups)


def _cut_fused(family: Family, block: nn.Module, attn: nn.Module, heads: list[int],
               dims: list[list[int]] | None, head_dim: int, q_idx: torch.Tensor) -> None:
    """GPT-2's [q; k; v] Conv1D: the same channels in each third; q rescaled when the head size shrinks."""
    import torch

    fused = family.qkv(block)[FUSED_QKV]
    width = family.attention_width(block)
    new_dim = len(dims[0]) if dims is not None else head_dim
    idx = torch.cat([q_idx, q_idx + width, q_idx + 2 * width])
    keep_out(fused, idx)
    if new_dim != head_dim:  # the reloaded model scales scores by new_dim ** -0.5: keep head_dim ** -0.5
        n = len(q_idx)
        scale = (new_dim / head_dim) ** 0.5
        fused.weight.data[:, :n] *= scale
        fused.bias.data[:n] *= scale
    keep_in(family.attention_output(block), q_idx)
    family.set_attention_widths(attn, len(heads), new_dim)
    if hasattr(attn, "split_size"):
        attn.split_size = len(heads) * new_dim


def _cut_ffn(family: Family, block: nn.Module, neurons: list[int]) -> None:
    import torch

    idx = torch.tensor(list(neurons))
    parts = family.ffn(block)
    keep_out(parts["in"], idx)
    if "gate" in parts:
        keep_out(parts["gate"], idx)
    keep_in(parts["out"], idx)


def _cut_hidden(model: nn.Module, family: Family, channels: list[int]) -> None:
    """Residual channels: embeddings, every block's norms and residual projections, the final norm, lm_head."""
    import torch

    idx = torch.tensor(channels)
    for table in family.embedding_tables(model).values():
        table.weight = torch.nn.Parameter(table.weight.data[:, idx].clone())
        table.embedding_dim = len(idx)
    for block in family.blocks(model):
        for norm in family.norms:
            _keep_norm(get_path(block, norm), idx)
        for proj in family.qkv(block).values():
            keep_in(proj, idx)
        keep_out(family.attention_output(block), idx)
        parts = family.ffn(block)
        keep_in(parts["in"], idx)
        if "gate" in parts:
            keep_in(parts["gate"], idx)
        keep_out(parts["out"], idx)
    if family.final_norm is not None:
        _keep_norm(get_path(model.base_model, family.final_norm), idx)
    head = model.get_output_embeddings()
    word = family.embedding_tables(model)["word"]
    if head is not None:
        if _tied(model):
            head.weight = word.weight
            head.in_features = len(idx)
        else:
            keep_in(head, idx)


def _tied(model: nn.Module) -> bool:
    config = model.config
    tied = getattr(config, "tie_word_embeddings", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return bool(tied if tied is not None else getattr(text, "tie_word_embeddings", False))


def _rewrite_config(model: nn.Module, family: Family) -> None:
    """Widths read back from the modules into the config (uniform by construction), head size kept explicit."""
    blocks = family.blocks(model)
    block = blocks[0]
    attn = family.self_attention(block)
    hidden = family.embedding_width(model)
    if family.head_dim_key is not None:
        head_dim = int(getattr(attn, family.head_size_attr))
        heads = family.attention_width(block) // head_dim
        kv = heads // _groups(family, attn)
    else:
        heads = family.attention_heads(block)
        kv, head_dim = None, family.attention_width(block) // heads
        if heads * head_dim != hidden:
            raise ModelError(f"{family.model_type} needs heads x head size = hidden width, the cut gives "
                             f"{heads} x {head_dim} != {hidden}", "cut the head size (head_dims) with the hidden width")
    family.set_widths(model.config, layers=len(blocks), hidden=hidden, heads=heads, kv_heads=kv,
                      head_dim=head_dim if family.head_dim_key else None, ffn=family.ffn_width(block))

"""Whole heads of a fused [q; k; v] projection (ModernBERT's ``Wqkv``), scored and cut by slicing.

torch-pruning's graph cannot follow such a projection: its output is viewed as (3, heads, head size) and unbound,
then rotary embeddings rotate halves of each head, so the group it builds from ``Wqkv`` neither holds the key and
value thirds nor maps the heads onto the output projection. The layout is known from the family, so the cut is
done here: head ``h`` is rows ``t·A + h·d ... t·A + (h+1)·d`` of ``Wqkv`` in each third ``t`` (``A`` = heads x head
size ``d``) and the same columns of the attention output projection. Scores follow torch-pruning's magnitude and
Taylor criteria over those slices; other criteria cannot score them and say so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from distill.core.errors import ModelError
from distill.core.families import FUSED_QKV, Family


@dataclass(frozen=True)
class FusedHeadCut:
    """Remove ``heads`` (indices) from one block's fused Q/K/V projection and its attention output projection."""

    qkv: torch.nn.Linear
    out: torch.nn.Linear
    heads: list[int]
    head_size: int

    def apply(self) -> None:
        """Slice the weights in place (rows of the fused projection, columns of the output projection)."""
        import torch_pruning as tp

        width = self.out.in_features
        cols = channels(self.heads, self.head_size)
        tp.prune_linear_out_channels(self.qkv, [t * width + c for t in range(3) for c in cols])
        tp.prune_linear_in_channels(self.out, cols)


def channels(heads: list[int], head_size: int) -> list[int]:
    """The attention channels of ``heads`` (head-major, as every family lays them out)."""
    return [h * head_size + i for h in heads for i in range(head_size)]


def is_fused(spec: Family) -> bool:
    return spec.qkv_fused is not None


def head_scores(spec: Family, block: torch.nn.Module, scorer: Any, head_size: int) -> torch.Tensor:
    """One score per head of ``block``: the criterion over its rows of [q; k; v] and its output columns."""
    import torch_pruning as tp

    qkv, out = spec.qkv(block)[FUSED_QKV], spec.attention_output(block)
    width = out.in_features
    if isinstance(scorer, tp.importance.GroupTaylorImportance):
        def local(weight: torch.Tensor) -> torch.Tensor:
            if weight.grad is None:
                raise ModelError("taylor importance found no gradient on the fused query/key/value",
                                 "use importance='magnitude'")
            return (weight.detach() * weight.grad).abs()
    elif isinstance(scorer, tp.importance.GroupMagnitudeImportance):
        def local(weight: torch.Tensor) -> torch.Tensor:
            return weight.detach().abs().pow(scorer.p)
    else:
        raise ModelError(f"importance {type(scorer).__name__} cannot score the heads of a fused query/key/value "
                         f"projection ({spec.model_type})", "use importance='magnitude' or 'taylor'")
    rows = local(qkv.weight).sum(1).view(3, width).sum(0)  # per attention channel, q + k + v
    cols = local(out.weight).sum(0)
    return (rows + cols).view(-1, head_size).mean(1).float()


def head_cut(spec: Family, block: torch.nn.Module, scorer: Any, head_size: int, remove: int) -> FusedHeadCut:
    """Drop the ``remove`` weakest heads of ``block`` (ties broken by position)."""
    scores = head_scores(spec, block, scorer, head_size)
    order = torch.argsort(scores.cpu(), stable=True)
    heads = sorted(order[:remove].tolist())
    return FusedHeadCut(spec.qkv(block)[FUSED_QKV], spec.attention_output(block), heads, head_size)

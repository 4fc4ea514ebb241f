"""Which parts of a decoder matter, measured on calibration text (Minitron-style activation importance), and the
``DecoderKeep`` a target shape keeps from it. No gradients: one forward pass per batch with hooks.

Scores, summed over the real tokens (``attention_mask``) of every batch:

- query head h of a layer: ``|| W_o[:, h] · a_h ||_2``, the norm of what the head adds to the residual stream
  (``a_h``: the head's attention output, the input of ``o_proj``/``c_proj``); a K/V head scores the sum of the
  query heads that read it.
- FFN neuron i: ``|x_i| · ||W_down[:, i]||_2`` (``x``: the input of the down projection, after the gate).
- hidden channel c: ``|n_c|`` summed over the outputs ``n`` of every norm (the blocks' and the final one).
- channel d inside head h (GPT-2 head-size cuts): ``mean|q_d| · mean|k_d|`` (its share of the scores) plus the
  ``a_h`` term of that channel, each normalised to sum 1 per head.
- block l: ``1 - cos(x_in, x_out)`` of its input and output hidden states (ShortGPT's block influence): a block
  that barely turns its input matters least.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from distill.core.errors import ConfigError
from distill.core.families.decoder_cut import DecoderKeep
from distill.core.families.family import FUSED_QKV, Family, family_of, get_path

if TYPE_CHECKING:
    import torch
    from torch import nn

LAYER_SELECTIONS = ("uniform", "importance")


@dataclass
class DecoderImportance:
    """Per-layer scores (tensors on CPU, float64), over ``tokens`` calibration tokens."""

    heads: list[Any] = field(default_factory=list)  # (heads,) per layer
    head_dims: list[Any] = field(default_factory=list)  # (heads, head size) per layer
    ffn: list[Any] = field(default_factory=list)  # (ffn,) per layer
    hidden: Any = None  # (hidden,)
    blocks: Any = None  # (layers,) 1 - cos(in, out)
    tokens: int = 0


def _weight_in_out(module: nn.Module) -> torch.Tensor:
    """The weight as (in, out) for a Linear (stored (out, in)) or a Conv1D (stored (in, out))."""
    return module.weight if hasattr(module, "nf") else module.weight.t()


def _first(value: Any) -> torch.Tensor:
    return value[0] if isinstance(value, (tuple, list)) else value


class _Recorder:
    """The hooks of one measurement; ``mask`` is the current batch's real-token mask (B, T) as bool."""

    def __init__(self, model: nn.Module, family: Family) -> None:
        import torch

        self.model, self.family, self.mask = model, family, None
        blocks = family.blocks(model)
        w = family.widths(model.config)
        self.head_dim = w.head_dim
        self.imp = DecoderImportance(
            heads=[torch.zeros(family.attention_heads(b), dtype=torch.float64) for b in blocks],
            head_dims=[torch.zeros(family.attention_heads(b), w.head_dim, dtype=torch.float64) for b in blocks],
            ffn=[torch.zeros(family.ffn_width(b), dtype=torch.float64) for b in blocks],
            hidden=torch.zeros(family.embedding_width(model), dtype=torch.float64),
            blocks=torch.zeros(len(blocks), dtype=torch.float64))
        self.qk = [torch.zeros(family.attention_heads(b), w.head_dim, 2, dtype=torch.float64) for b in blocks]

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(N, width): the real tokens of a (B, T, width) activation."""
        return x.detach().reshape(-1, x.shape[-1])[self.mask.reshape(-1)].double()

    def hooks(self, stack: ExitStack) -> None:
        family = self.family
        for i, block in enumerate(family.blocks(self.model)):
            out = family.attention_output(block)
            stack.callback(out.register_forward_pre_hook(self._attention(i, out)).remove)
            down = family.ffn(block)["out"]
            stack.callback(down.register_forward_pre_hook(self._ffn(i, down)).remove)
            qkv = family.qkv(block)
            if FUSED_QKV in qkv:
                stack.callback(qkv[FUSED_QKV].register_forward_hook(self._fused_qk(i)).remove)
            for norm in family.norms:
                stack.callback(get_path(block, norm).register_forward_hook(self._norm).remove)
            stack.callback(block.register_forward_hook(self._block(i), with_kwargs=True).remove)
        if family.final_norm is not None:
            final = get_path(self.model.base_model, family.final_norm)
            stack.callback(final.register_forward_hook(self._norm).remove)

    def _attention(self, i: int, out: nn.Module):
        import torch

        def hook(module, args) -> None:
            a = self.tokens(args[0])
            heads = a.shape[-1] // self.head_dim
            w = _weight_in_out(out).detach().double().reshape(heads, self.head_dim, -1)
            a = a.reshape(-1, heads, self.head_dim)
            self.imp.heads[i] += torch.einsum("nhd,hdo->nho", a, w).norm(dim=-1).sum(0)
            self.imp.head_dims[i] += a.abs().sum(0) * w.norm(dim=-1)
        return hook

    def _ffn(self, i: int, down: nn.Module):
        def hook(module, args) -> None:
            x = self.tokens(args[0])
            self.imp.ffn[i] += x.abs().sum(0) * _weight_in_out(down).detach().double().norm(dim=-1)
        return hook

    def _fused_qk(self, i: int):
        def hook(module, args, output) -> None:
            x = self.tokens(output)
            q, k, _ = x.split(x.shape[-1] // 3, dim=-1)
            heads = q.shape[-1] // self.head_dim
            self.qk[i][..., 0] += q.abs().sum(0).reshape(heads, self.head_dim)
            self.qk[i][..., 1] += k.abs().sum(0).reshape(heads, self.head_dim)
        return hook

    def _norm(self, module, args, output) -> None:
        self.imp.hidden += self.tokens(_first(output)).abs().sum(0)

    def _block(self, i: int):
        import torch

        def hook(module, args, kwargs, output) -> None:
            x_in = self.tokens(args[0] if args else kwargs["hidden_states"])
            x_out = self.tokens(_first(output))
            self.imp.blocks[i] += (1 - torch.nn.functional.cosine_similarity(x_in, x_out, dim=-1)).sum()
        return hook

    def finish(self) -> DecoderImportance:
        """Divide by the token count; fold GPT-2's q/k channel share into ``head_dims``."""
        imp, n = self.imp, max(self.imp.tokens, 1)
        for i, qk in enumerate(self.qk):
            if qk.any():
                share = (qk[..., 0] / n) * (qk[..., 1] / n)
                imp.head_dims[i] = _per_head(share) + _per_head(imp.head_dims[i])
        imp.heads = [h / n for h in imp.heads]
        imp.ffn = [f / n for f in imp.ffn]
        imp.hidden, imp.blocks = imp.hidden / n, imp.blocks / n
        return imp


def _per_head(x: torch.Tensor) -> torch.Tensor:
    return x / x.sum(-1, keepdim=True).clamp_min(1e-12)


def measure_importance(model: nn.Module, batches: Iterable[dict[str, Any]],
                       family: Family | None = None) -> DecoderImportance:
    """Activation importance of every head, head channel, FFN neuron, hidden channel and block of ``model`` over
    ``batches`` (dicts with ``input_ids`` and optionally ``attention_mask``), without gradients."""
    import torch

    family = family or family_of(model, "measuring decoder importance")
    rec = _Recorder(model, family)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with ExitStack() as stack, torch.no_grad():
        rec.hooks(stack)
        for batch in batches:
            ids = batch["input_ids"].to(device)
            mask = batch.get("attention_mask")
            mask = torch.ones_like(ids) if mask is None else mask.to(device)
            rec.mask = mask.bool()
            rec.imp.tokens += int(rec.mask.sum())
            model(input_ids=ids, attention_mask=mask, use_cache=False)
    model.train(was_training)
    if rec.imp.tokens == 0:
        raise ConfigError("the calibration batches hold no tokens", "give calibration text")
    return rec.finish()


# ---- what a target shape keeps -------------------------------------------------------------------------------

def top(scores: torch.Tensor, n: int) -> list[int]:
    """The ``n`` highest-scoring indices, in increasing order (ties: the lower index)."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return sorted(order[:n])


def uniform_layers(total: int, keep: int) -> list[int]:
    """``keep`` layer indices spread evenly over ``total``, first and last included."""
    if keep >= total:
        return list(range(total))
    if keep == 1:
        return [total - 1]
    return sorted({round(i * (total - 1) / (keep - 1)) for i in range(keep)})


def choose_layers(total: int, keep: int, selection: str | list[int], imp: DecoderImportance | None) -> list[int]:
    """Layers kept: ``uniform``, ``importance`` (the highest block influence 1 - cos) or an explicit list."""
    if not isinstance(selection, str):
        layers = sorted(int(i) for i in selection)
        if len(layers) != len(set(layers)) or any(not 0 <= i < total for i in layers):
            raise ConfigError(f"layers {selection} are not distinct layers of 0..{total - 1}",
                              "give distinct indices of the teacher's layers")
        return layers
    if selection == "uniform":
        return uniform_layers(total, keep)
    if selection == "importance":
        if imp is None:
            raise ConfigError("layer selection 'importance' needs calibration text", "give calibration batches")
        return top(imp.blocks, keep)
    raise ConfigError(f"unknown layer selection '{selection}'", f"use one of {', '.join(LAYER_SELECTIONS)} or indices")


def gqa_shape(heads: int, kv_heads: int, target_heads: int, target_kv: int | None = None) -> tuple[int, int]:
    """(query heads, K/V heads) closest to ``target_heads`` that groups evenly: at most ``kv_heads`` K/V heads,
    at most ``heads // kv_heads`` query heads per K/V head; ties keep more K/V heads."""
    groups = heads // kv_heads
    options = [(k * g, k) for k in range(1, kv_heads + 1) for g in range(1, groups + 1)
               if target_kv is None or k == target_kv]
    if not options:
        raise ConfigError(f"{target_kv} K/V heads: the model has {kv_heads}", f"keep 1..{kv_heads} K/V heads")
    return min(options, key=lambda hk: (abs(hk[0] - target_heads), -hk[1], hk[0]))


def select_heads(scores: torch.Tensor, groups: int, n_heads: int, n_kv: int) -> tuple[list[int], list[int]]:
    """The ``n_kv`` K/V heads whose query heads score most, and the best ``n_heads // n_kv`` query heads of each,
    listed group by group."""
    per = n_heads // n_kv
    group_scores = scores.reshape(-1, groups).sum(-1)
    kv = top(group_scores, n_kv)
    heads = [k * groups + j for k in kv for j in top(scores[k * groups:(k + 1) * groups], per)]
    return heads, kv


@dataclass
class DecoderTarget:
    """A target shape; ``None`` keeps that width. ``layer_selection``: uniform, importance or indices."""

    layers: int | None = None
    hidden: int | None = None
    heads: int | None = None
    kv_heads: int | None = None
    ffn: int | None = None
    layer_selection: str | list[int] = "uniform"


def keep_for(model: nn.Module, target: DecoderTarget, imp: DecoderImportance | None,
             family: Family | None = None) -> DecoderKeep:
    """The ``DecoderKeep`` that cuts ``model`` to ``target``, keeping what ``imp`` scores highest (width cuts
    need ``imp``; a uniform depth cut does not)."""
    family = family or family_of(model, "cutting a decoder")
    w = family.widths(model.config)
    layers_n = target.layers or w.layers
    explicit = not isinstance(target.layer_selection, str)
    layers = choose_layers(w.layers, layers_n, target.layer_selection, imp) if explicit or layers_n < w.layers \
        else None
    kept = layers if layers is not None else list(range(w.layers))
    keep = DecoderKeep(layers=layers)
    changed = [(t, now) for t, now in ((target.hidden, w.hidden), (target.heads, w.heads),
                                         (target.kv_heads, w.kv_heads), (target.ffn, w.ffn)) if t not in (None, now)]
    if not changed:
        return keep
    if imp is None:
        raise ConfigError("width cuts need calibration text for importance", "give calibration batches")
    heads = target.heads or (w.heads if target.kv_heads is None else target.kv_heads * (w.heads // w.kv_heads))
    if heads != w.heads or (target.kv_heads or w.kv_heads) != w.kv_heads:
        n_heads, n_kv = (gqa_shape(w.heads, w.kv_heads, heads, target.kv_heads) if family.kv_heads_key
                         else (heads, heads))
        picks = [select_heads(imp.heads[i], w.heads // w.kv_heads if family.kv_heads_key else 1, n_heads, n_kv)
                 for i in kept]
        keep.heads = [h for h, _ in picks]
        keep.kv_heads = [k for _, k in picks] if family.kv_heads_key else None
    if target.ffn is not None and target.ffn != w.ffn:
        keep.ffn = [top(imp.ffn[i], target.ffn) for i in kept]
    if target.hidden is not None and target.hidden != w.hidden:
        keep.hidden = top(imp.hidden, target.hidden)
    if family.head_dim_key is None and (keep.hidden is not None or keep.heads is not None):
        _gpt2_head_dims(keep, imp, kept, target.hidden or w.hidden, w)
    return keep


def _gpt2_head_dims(keep: DecoderKeep, imp: DecoderImportance, kept: list[int], hidden: int, w: Any) -> None:
    """GPT-2: heads x head size = hidden, so the head size follows the hidden width and the head count."""
    n_heads = len(keep.heads[0]) if keep.heads else w.heads
    if hidden % n_heads or hidden // n_heads > w.head_dim:
        raise ConfigError(f"a gpt2 hidden width of {hidden} does not split into {n_heads} heads of at most "
                          f"{w.head_dim} channels", "pick a hidden width that is heads x a head size")
    dim = hidden // n_heads
    if dim == w.head_dim:
        return
    if keep.heads is None:
        keep.heads = [list(range(w.heads)) for _ in kept]
    keep.head_dims = [[top(imp.head_dims[i][h], dim) for h in keep.heads[j]] for j, i in enumerate(kept)]

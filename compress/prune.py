"""Structured pruning of HF encoders with torch-pruning: whole heads + hidden width, and FFN neurons, in place.

Only this module imports ``torch_pruning``, and only inside functions, so ``import compress`` stays light.
Recovery (distilling the pruned student back) is the caller's job; nothing here trains.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from compress.arch import ArchSpec, arch_of, get_path, layers_of, square_heads_of
from distill.core.errors import ConfigError, ModelError
from distill.core.registry import Registry

# An importance factory takes (model, example_inputs) and returns a scorer: torch-pruning Group -> 1-D tensor,
# one score per channel of the group's root (higher = keep). Factories may run the model (e.g. Taylor needs grads).
ImportanceFactory = Callable[[torch.nn.Module, dict[str, torch.Tensor]], Callable[[Any], torch.Tensor]]
IMPORTANCES: Registry[ImportanceFactory] = Registry("pruning importance")


@IMPORTANCES.register("magnitude")
def magnitude_importance(model: torch.nn.Module, example_inputs: dict[str, torch.Tensor]) -> Callable:
    """L2 norm of each channel's weights across its whole dependency group; data-free and deterministic."""
    import torch_pruning as tp

    return tp.importance.GroupMagnitudeImportance(p=2)


_FLAGS = {"heads": "--prune-heads", "ffn": "--prune-ffn"}


@dataclass
class PruneConfig:
    """How much to prune: fractions of heads (with hidden width) and FFN neurons removed in every layer."""

    heads: float = 0.5
    ffn: float = 0.5
    importance: str = "magnitude"

    def __post_init__(self) -> None:
        """Reject ratios outside [0, 1) and unknown importance names up front, before any model is touched."""
        for name, flag in _FLAGS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{flag} {value!r} is not a number", "give the fraction to remove, e.g. 0.5")
            if not 0.0 <= float(value) < 1.0:
                what = "heads" if name == "heads" else "FFN neurons"
                raise ConfigError(
                    f"{flag} {value} is outside [0, 1)", f"give the fraction of {what} to remove, e.g. 0.5"
                )
            setattr(self, name, float(value))
        IMPORTANCES.get(self.importance)


@dataclass
class PruneReport:
    """What pruning did: sizes before/after (heads, hidden and FFN are per layer) and human-readable notes."""

    params_before: int
    params_after: int
    heads_before: int
    heads_after: int
    hidden_before: int
    hidden_after: int
    ffn_before: int
    ffn_after: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Plain JSON-ready dict, for run artifacts and reports."""
        return asdict(self)


@dataclass(frozen=True)
class _Widths:
    """Per-layer widths of an encoder, read from its modules (not its config, which pruning leaves stale)."""

    heads: int
    head_size: int
    hidden: int
    ffn: int


@dataclass(frozen=True)
class _Cut:
    """One planned removal: drop ``idxs`` from ``module``'s output channels (and everything coupled to them)."""

    module: torch.nn.Module
    idxs: list[int]


def prune_model(model: torch.nn.Module, config: PruneConfig, example_inputs: dict[str, torch.Tensor]) -> PruneReport:
    """Prune ``model`` in place to uniform smaller widths, fix its attention modules and config, and report."""
    spec = arch_of(model)
    before = _measure(model, spec)
    params_before = _count_params(model)
    keep_heads, keep_ffn = _targets(before, config)
    notes = _notes(before, config, keep_heads, keep_ffn)
    if keep_heads < before.heads or keep_ffn < before.ffn:
        inputs = _to_device(example_inputs, model)
        with _modes_kept(model):
            dg = _build_graph(model, inputs)
            scorer = IMPORTANCES.get(config.importance)(model, inputs)
            cuts = _plan(model, spec, dg, scorer, before, keep_heads, keep_ffn)
            _apply(dg, cuts)
            _fix_attention(model, spec, before.head_size)
            _check_forward(model, inputs)
    after = _measure(model, spec)
    _rewrite_config(model, spec, after)
    return PruneReport(
        params_before=params_before,
        params_after=_count_params(model),
        heads_before=before.heads,
        heads_after=after.heads,
        hidden_before=before.hidden,
        hidden_after=after.hidden,
        ffn_before=before.ffn,
        ffn_after=after.ffn,
        notes=notes,
    )


def _targets(before: _Widths, config: PruneConfig) -> tuple[int, int]:
    """Heads and FFN neurons to keep per layer: ``max(1, round(n * (1 - ratio)))``, never a partial head."""
    keep_heads = max(1, round(before.heads * (1 - config.heads)))
    keep_ffn = max(1, round(before.ffn * (1 - config.ffn)))
    return keep_heads, keep_ffn


def _notes(before: _Widths, config: PruneConfig, keep_heads: int, keep_ffn: int) -> list[str]:
    """Explain every place where the result differs from what the ratios literally asked for."""
    notes = []
    if config.heads > 0 and before.heads == 1:
        notes.append("model has one attention head per layer: pruned FFN only")
    elif config.heads > 0 and keep_heads == before.heads:
        notes.append(f"heads={config.heads:g} of {before.heads} heads per layer rounds to none removed: heads kept")
    elif config.heads > 0 and abs((before.heads - keep_heads) / before.heads - config.heads) > 1e-9:
        removed = before.heads - keep_heads
        notes.append(f"heads={config.heads:g} removes {removed} of {before.heads} heads per layer")
    if config.ffn > 0 and keep_ffn == before.ffn:
        notes.append(f"ffn={config.ffn:g} of {before.ffn} FFN neurons rounds to none removed: FFN kept")
    if keep_heads == before.heads and keep_ffn == before.ffn:
        notes.append("nothing to prune: model unchanged")
    return notes


def _measure(model: torch.nn.Module, spec: ArchSpec) -> _Widths:
    """Read per-layer widths from the modules; ModelError if layers disagree (pruning must keep them uniform)."""
    rows = set()
    for layer in layers_of(model, spec):
        attn = get_path(layer, spec.attention)
        query = get_path(attn, spec.query)
        heads = getattr(attn, spec.heads_attr)
        rows.add(
            (
                heads,
                query.out_features // heads,
                get_path(layer, spec.attn_out).out_features,
                get_path(layer, spec.ffn_in).out_features,
            )
        )
    if len(rows) != 1:
        raise ModelError(
            f"encoder layers have different widths: {sorted(rows)} (heads, head size, hidden, ffn)",
            "prune with uniform ratios; per-layer widths cannot be saved in one HF config",
        )
    return _Widths(*rows.pop())


def _count_params(model: torch.nn.Module) -> int:
    """Number of parameters, counting tied weights once."""
    return sum(p.numel() for p in model.parameters())


def _to_device(example_inputs: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Example inputs moved to the model's device, so tracing works whatever the caller passed."""
    if not isinstance(example_inputs, dict) or not example_inputs:
        raise ModelError("pruning needs example inputs as a non-empty dict of tensors", "pass a tokenized batch")
    device = next(model.parameters()).device
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in example_inputs.items()}


@contextlib.contextmanager
def _modes_kept(model: torch.nn.Module) -> Iterator[None]:
    """Restore each module's train/eval flag and each parameter's requires_grad afterwards (tracing changes both)."""
    modes = {m: m.training for m in model.modules()}
    grads = {name: p.requires_grad for name, p in model.named_parameters()}  # by name: pruning swaps Parameters
    try:
        yield
    finally:
        for m, training in modes.items():
            m.training = training
        for name, p in model.named_parameters():
            p.requires_grad_(grads.get(name, True))


def _outputs(out: Any) -> list[torch.Tensor]:
    """Every tensor a forward returns (logits, last_hidden_state, pooler_output...), so the graph sees all heads."""
    if isinstance(out, torch.Tensor):
        return [out]
    if hasattr(out, "to_tuple"):
        out = out.to_tuple()
    elif isinstance(out, dict):
        out = list(out.values())
    return [t for v in out for t in _outputs(v)] if isinstance(out, (list, tuple)) else []


def _build_graph(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> Any:
    """Trace the model into torch-pruning's dependency graph (needs autograd, so parameters must require grad)."""
    import torch_pruning as tp

    for p in model.parameters():
        p.requires_grad_(True)
    try:
        with torch.enable_grad():
            return tp.DependencyGraph().build_dependency(model, example_inputs=inputs, output_transform=_outputs)
    except Exception as exc:  # torch-pruning raises many kinds; the user needs one clear line
        raise ModelError(
            f"torch-pruning could not trace {type(model).__name__}: {type(exc).__name__}: {exc}",
            "prune a BERT or RoBERTa model, or skip pruning",
        ) from exc


def _lowest(scores: torch.Tensor, n: int) -> list[int]:
    """Indices of the ``n`` lowest scores, ties broken by position so the choice is deterministic."""
    order = torch.argsort(scores.detach().float().cpu(), stable=True)
    return sorted(order[:n].tolist())


def _scores(dg: Any, scorer: Callable, module: torch.nn.Linear) -> torch.Tensor:
    """Importance of each output channel of ``module``, pooled over its whole dependency group."""
    import torch_pruning as tp

    group = dg.get_pruning_group(module, tp.prune_linear_out_channels, list(range(module.out_features)))
    scores = scorer(group)
    if scores is None or scores.numel() != module.out_features:
        raise ModelError(f"importance gave no usable scores for {type(module).__name__}", "use importance=magnitude")
    return scores


def _plan(
    model: torch.nn.Module,
    spec: ArchSpec,
    dg: Any,
    scorer: Callable,
    before: _Widths,
    keep_heads: int,
    keep_ffn: int,
) -> list[_Cut]:
    """Choose every channel to remove, scoring all groups on the unpruned weights before anything changes."""
    if keep_heads < before.heads and before.hidden != before.heads * before.head_size:
        raise ModelError(
            f"hidden width {before.hidden} is not heads x head size ({before.heads} x {before.head_size})",
            "prune FFN only (heads=0) for this model",
        )
    cuts = []
    for layer in layers_of(model, spec):
        if keep_ffn < before.ffn:
            ffn_in = get_path(layer, spec.ffn_in)
            cuts.append(_Cut(ffn_in, _lowest(_scores(dg, scorer, ffn_in), before.ffn - keep_ffn)))
        if keep_heads < before.heads:
            cuts.append(
                _head_cut(dg, scorer, get_path(get_path(layer, spec.attention), spec.query), before, keep_heads)
            )
    if keep_heads < before.heads:
        removed = before.hidden - keep_heads * before.head_size
        first_out = get_path(layers_of(model, spec)[0], spec.attn_out)
        cuts.append(_Cut(first_out, _lowest(_scores(dg, scorer, first_out), removed)))
        cuts.extend(_Cut(m, _lowest(_scores(dg, scorer, m), removed)) for m in square_heads_of(model, spec))
    return cuts


def _head_cut(dg: Any, scorer: Callable, query: torch.nn.Linear, before: _Widths, keep_heads: int) -> _Cut:
    """Remove whole heads: score q/k/v/out channels together, average per head, drop the weakest heads."""
    per_head = _scores(dg, scorer, query).view(before.heads, before.head_size).mean(dim=1)
    heads = _lowest(per_head, before.heads - keep_heads)
    return _Cut(query, [h * before.head_size + i for h in heads for i in range(before.head_size)])


def _apply(dg: Any, cuts: list[_Cut]) -> None:
    """Carry out the planned cuts through the dependency graph, so every coupled layer shrinks with them."""
    import torch_pruning as tp

    with torch.no_grad():
        for cut in cuts:
            group = dg.get_pruning_group(cut.module, tp.prune_linear_out_channels, cut.idxs)
            if not dg.check_pruning_group(group):
                raise ModelError(
                    "torch-pruning refused a pruning group (it would empty a layer)", "use smaller ratios"
                )
            group.prune()


def _fix_attention(model: torch.nn.Module, spec: ArchSpec, head_size: int) -> None:
    """Set the head count, widths and scaling torch-pruning leaves stale on every self-attention module."""
    for layer in layers_of(model, spec):
        attn = get_path(layer, spec.attention)
        all_heads = get_path(attn, spec.query).out_features
        setattr(attn, spec.heads_attr, all_heads // head_size)
        setattr(attn, spec.head_size_attr, head_size)
        setattr(attn, spec.all_head_attr, all_heads)
        if hasattr(attn, spec.scaling_attr):
            setattr(attn, spec.scaling_attr, head_size**-0.5)


def _check_forward(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> None:
    """Run the pruned model once in eval mode, so a broken prune fails here and not in the caller's training."""
    model.eval()
    try:
        with torch.no_grad():
            model(**inputs)
    except Exception as exc:
        raise ModelError(f"the pruned model no longer runs: {type(exc).__name__}: {exc}", "report this bug") from exc


def _rewrite_config(model: torch.nn.Module, spec: ArchSpec, after: _Widths) -> None:
    """Write the new widths into ``model.config`` so save_pretrained/from_pretrained rebuild the same shapes."""
    setattr(model.config, spec.hidden_key, after.hidden)
    setattr(model.config, spec.heads_key, after.heads)
    setattr(model.config, spec.ffn_key, after.ffn)

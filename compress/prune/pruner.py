"""Structured pruning of HF encoders with torch-pruning, in place: heads, FFN neurons, hidden width, whole layers.

Heads are always removed whole and the head size never changes. ``hidden`` is the residual stream shared by every
block; by default it shrinks with the heads (head count x head size, as in a plain HF config). Ratios are global
(one float) or per layer (a list, or a dict layer -> ratio over the layers as they are before pruning).

Only this package's functions import ``torch_pruning``, so ``import compress`` stays light. Recovery (distilling
the pruned student back) is the caller's job; nothing here trains. Save results with ``compress.save_pruned``
and reload them with ``compress.load_pruned``; the report's ``hf_loadable`` says when plain ``from_pretrained``
suffices.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from compress.prune.importance import IMPORTANCES as IMPORTANCES
from compress.prune.importance import NEEDS_TEACHER, Batch, LossFn, Scorer
from compress.prune.importance import ImportanceFactory as ImportanceFactory
from compress.prune.layout import LayerWidths, Layout, measure, sync_config
from distill.core.errors import ConfigError, ModelError
from distill.core.families import Family, arch_of

Ratio = float | list[float] | dict[int, float]

_FLAGS = {
    "heads": "--prune-heads",
    "ffn": "--prune-ffn",
    "hidden": "--prune-hidden",
    "layers": "--prune-layers",
    "target": "target ratio",
}
_WHAT = {"heads": "heads", "ffn": "FFN neurons", "hidden": "hidden channels", "target": "channels"}
LAYER_SELECTIONS = ("importance", "uniform")


@dataclass
class PruneConfig:
    """How much to prune. Ratios are fractions removed, in [0, 1): one float for all layers, or per layer.

    - ``heads``: attention heads removed in each layer (whole heads; a layer never loses all of them).
    - ``ffn``: FFN neurons removed in each layer.
    - ``hidden``: residual width removed (one float: every layer shares it). ``None`` (default) shrinks it with the
      heads, by heads removed x head size, when every layer loses the same number (HF-expressible); ``0.0`` keeps
      it (heads without hidden: attention narrower than the residual stream).
    - ``layers``: transformer blocks kept (an int K, or the exact indices to keep); ``None`` keeps all.
    - ``layer_selection``: ``importance`` (sum of the criterion over each block's heads and FFN neurons) or
      ``uniform`` (evenly spaced, last block always kept). Ignored when ``layers`` lists indices.
    - ``importance``: a name in ``IMPORTANCES`` (magnitude, taylor, distillation, ...).
    """

    heads: Ratio = 0.5
    ffn: Ratio = 0.5
    importance: str = "magnitude"
    hidden: float | None = None
    layers: int | list[int] | None = None
    layer_selection: str = "importance"

    def __post_init__(self) -> None:
        """Reject malformed ratios and unknown names up front, before any model is touched."""
        self.heads = check_ratios("heads", self.heads)
        self.ffn = check_ratios("ffn", self.ffn)
        if isinstance(self.hidden, (list, tuple, dict)):
            raise ConfigError(
                f"{_FLAGS['hidden']} {self.hidden!r} gives per-layer ratios",
                "give one ratio: the hidden width is the residual stream shared by every layer",
            )
        if self.hidden is not None:
            self.hidden = check_ratio("hidden", self.hidden)
        self.layers = _check_layers(self.layers)
        if self.layer_selection not in LAYER_SELECTIONS:
            raise ConfigError(
                f"unknown layer selection {self.layer_selection!r}", f"choose one of: {', '.join(LAYER_SELECTIONS)}"
            )
        IMPORTANCES.get(self.importance)


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
    """One planned removal: drop ``idxs`` from ``module``'s output channels (and everything coupled to them)."""

    module: torch.nn.Module
    idxs: list[int]


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
    inputs = _to_device(example_inputs, model)
    trace = {k: v for k, v in inputs.items() if k != "labels"}
    batches = list(batches) if batches is not None else None
    _precheck(config, inputs, batches, loss_fn)
    before = measure(model, spec)
    params_before = _count_params(model)
    n = len(before.layers)
    heads_r, ffn_r = _per_layer("heads", config.heads, n), _per_layer("ffn", config.ffn, n)
    keep_heads = [_keep_heads(w, r, i) for i, (w, r) in enumerate(zip(before.layers, heads_r, strict=True))]
    keep_ffn = [max(1, round(w.ffn * (1 - r))) for w, r in zip(before.layers, ffn_r, strict=True)]
    n_keep = _layer_count(config.layers, n)
    notes = _width_notes(before, config, heads_r, ffn_r, keep_heads, keep_ffn)
    kept = list(range(n))
    changed = False
    may_cut = (config.hidden or 0) > 0 or any(
        k < w.heads or f < w.ffn for w, k, f in zip(before.layers, keep_heads, keep_ffn, strict=True)
    )
    with _modes_kept(model), _grads_dropped(model):
        # one importance estimate on the model as given, before anything changes (a failing criterion leaves
        # the model intact); it ranks the blocks and, on the blocks kept, the heads and channels
        scorer = None
        if may_cut or _by_importance(config, n_keep, n):
            scorer = _scorer(model, config, inputs, batches, loss_fn)
        if n_keep < n:
            kept = _choose_layers(model, spec, config, trace, scorer, n_keep)
            blocks = spec.blocks(model)
            spec.replace_blocks(model, [blocks[i] for i in kept])
            how = "as listed" if isinstance(config.layers, list) else f"by {_selection_name(config)}"
            notes.append(f"kept layers {kept} of {n} ({how})")
            changed = True
        current = measure(model, spec)
        heads_k, ffn_k = [keep_heads[i] for i in kept], [keep_ffn[i] for i in kept]
        keep_hidden = _hidden_target(current, config, heads_k, notes)
        widths_cut = keep_hidden < current.hidden or any(
            k < w.heads or f < w.ffn for w, k, f in zip(current.layers, heads_k, ffn_k, strict=True)
        )
        if widths_cut:
            dg = _build_graph(model, trace)
            cuts = _plan(model, spec, dg, scorer, current, heads_k, ffn_k, keep_hidden)
            _clear_grads(model)
            _apply(dg, cuts)
            _fix_attention(model, spec, current)
            changed = True
        if changed:
            _check_forward(model, trace)
    after = measure(model, spec)
    sync_config(model, spec, after)
    if not changed:
        notes.append("nothing to prune: model unchanged")
    if not after.expressible:
        notes.append(
            "per-layer widths or attention narrower than hidden: save with compress.save_pruned and reload with "
            "compress.load_pruned (plain from_pretrained cannot express this layout)"
        )
    return PruneReport(
        params_before=params_before,
        params_after=_count_params(model),
        heads_before=before.max_heads,
        heads_after=after.max_heads,
        hidden_before=before.hidden,
        hidden_after=after.hidden,
        ffn_before=before.max_ffn,
        ffn_after=after.max_ffn,
        notes=notes,
        layers_before=n,
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


def parse_ratio(text: str, name: str = "heads") -> Ratio:
    """A CLI ratio: ``0.5`` (all layers), ``0.5,0.25,0,0`` (one per layer) or ``0:0.5,3:0.25`` (layer:ratio)."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    try:
        if any(":" in p for p in parts):
            pairs = [p.split(":", 1) for p in parts]
            return check_ratios(name, {k.strip(): float(v) for k, v in pairs})
        values = [float(p) for p in parts]
    except ValueError:
        raise ConfigError(
            f"{_FLAGS[name]} {text!r} is not a ratio",
            "give 0.5, one per layer (0.5,0.25) or layer:ratio (0:0.5,3:0.25)",
        ) from None
    if len(values) == 1 and "," not in str(text):
        return check_ratio(name, values[0])
    return check_ratios(name, values)


def plan_widths(config: PruneConfig, layout: Layout) -> Layout:
    """The widths ``prune_model(model, config, ...)`` would leave on a model of ``layout``, without a model.

    Raises the same errors (every head of a layer removed, more layers kept than exist, no hidden width left), so
    callers can refuse a setting before training for hours. Layers dropped by importance are assumed to be the
    last ones (exact for uniform models, whose blocks all have the same widths).
    """
    n = len(layout.layers)
    heads_r, ffn_r = _per_layer("heads", config.heads, n), _per_layer("ffn", config.ffn, n)
    keep_heads = [_keep_heads(w, r, i) for i, (w, r) in enumerate(zip(layout.layers, heads_r, strict=True))]
    keep_ffn = [max(1, round(w.ffn * (1 - r))) for w, r in zip(layout.layers, ffn_r, strict=True)]
    n_keep = _layer_count(config.layers, n)
    kept = config.layers if isinstance(config.layers, list) else list(range(n_keep))
    current = Layout(layout.hidden, tuple(layout.layers[i] for i in kept))
    hidden = _hidden_target(current, config, [keep_heads[i] for i in kept], [])
    return Layout(hidden, tuple(LayerWidths(keep_heads[i], layout.layers[i].head_size, keep_ffn[i]) for i in kept))


# ----------------------------------------------------------------------------------------------- config checks


def check_ratio(name: str, value: Any, where: str = "") -> float:
    flag = _FLAGS[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{flag} {value!r}{where} is not a number", "give the fraction to remove, e.g. 0.5")
    if not 0.0 <= float(value) < 1.0:
        raise ConfigError(
            f"{flag} {value}{where} is outside [0, 1)", f"give the fraction of {_WHAT[name]} to remove, e.g. 0.5"
        )
    return float(value)


def check_ratios(name: str, value: Any) -> Ratio:
    """One ratio, a list (one per layer) or a dict layer -> ratio (keys may be strings, as from JSON/YAML)."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise ConfigError(f"{_FLAGS[name]} is an empty list", "give one ratio per layer, or one for all layers")
        return [check_ratio(name, v, f" (layer {i})") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for key, v in value.items():
            layer = _layer_index(key, _FLAGS[name])
            out[layer] = check_ratio(name, v, f" (layer {layer})")
        return out
    return check_ratio(name, value)


def _layer_index(key: Any, flag: str) -> int:
    if isinstance(key, bool) or not str(key).strip().isdigit():
        raise ConfigError(f"{flag} has layer key {key!r}", "use layer indices 0, 1, ... as keys")
    return int(str(key).strip())


def _check_layers(value: Any) -> int | list[int] | None:
    flag = _FLAGS["layers"]
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        idxs = [_layer_index(v, flag) for v in value]
        if not idxs or len(set(idxs)) != len(idxs):
            raise ConfigError(f"{flag} {list(value)} is empty or repeats a layer", "list each layer to keep once")
        return sorted(idxs)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{flag} {value!r} is not a number of layers", "give how many layers to keep, e.g. 4")
    if value < 1:
        raise ConfigError(f"{flag} {value} keeps no layer", "keep at least 1 layer")
    return value


def _per_layer(name: str, ratio: Ratio, n: int) -> list[float]:
    """The ratio of each of the model's ``n`` layers (dict keys missing -> 0)."""
    flag = _FLAGS[name]
    if isinstance(ratio, list):
        if len(ratio) != n:
            raise ConfigError(
                f"{flag} gives {len(ratio)} ratios for a model with {n} layers", "give one ratio per layer, or one"
            )
        return list(ratio)
    if isinstance(ratio, dict):
        bad = sorted(k for k in ratio if k >= n)
        if bad:
            raise ConfigError(f"{flag} names layer(s) {bad} of a model with {n} layers", f"use layers 0..{n - 1}")
        return [ratio.get(i, 0.0) for i in range(n)]
    return [float(ratio)] * n


def _keep_heads(w: LayerWidths, ratio: float, layer: int) -> int:
    """Heads kept in one layer: ``round(heads * (1 - ratio))``; ConfigError if that removes every head."""
    if ratio == 0 or w.heads == 1:
        return w.heads
    keep = round(w.heads * (1 - ratio))
    if keep < 1:
        raise ConfigError(
            f"{_FLAGS['heads']} {ratio:g} removes all {w.heads} heads of layer {layer}",
            f"use at most {(w.heads - 1) / w.heads:.4g} to keep one head",
        )
    return keep


def _layer_count(layers: int | list[int] | None, n: int) -> int:
    if layers is None:
        return n
    flag = _FLAGS["layers"]
    if isinstance(layers, list):
        if layers[-1] >= n:
            raise ConfigError(f"{flag} lists layer {layers[-1]} of a model with {n} layers", f"use 0..{n - 1}")
        return len(layers)
    if layers > n:
        raise ConfigError(f"{flag} {layers} keeps more layers than the model's {n}", f"give at most {n}")
    return layers


def _precheck(config: PruneConfig, inputs: Batch, batches: list | None, loss_fn: LossFn | None) -> None:
    """Fail before touching the model when a built-in gradient criterion cannot get its loss."""
    if loss_fn is not None:
        return
    if config.importance == "distillation":
        raise ConfigError(*NEEDS_TEACHER)
    if config.importance == "taylor" and batches is None and "labels" not in inputs:
        raise ConfigError(
            "importance 'taylor' needs labelled inputs (a 'labels' tensor), batches with labels, or a loss_fn",
            "add labels to the example batch, or use importance='magnitude'",
        )


# ----------------------------------------------------------------------------------------------- notes


def _width_notes(
    before: Layout,
    config: PruneConfig,
    heads_r: list[float],
    ffn_r: list[float],
    keep_heads: list[int],
    keep_ffn: list[int],
) -> list[str]:
    """Explain every place where the result differs from what the ratios literally asked for."""
    n = len(before.layers)
    found: dict[str, list[int]] = {}
    for i, w in enumerate(before.layers):
        r, k = heads_r[i], keep_heads[i]
        if r > 0 and w.heads == 1:
            found.setdefault("one attention head{where}: heads kept" + _ffn_only(config), []).append(i)
        elif r > 0 and k == w.heads:
            msg = f"heads={r:g} of {w.heads} heads{{where}} rounds to none removed: heads kept"
            found.setdefault(msg, []).append(i)
        elif r > 0 and abs((w.heads - k) / w.heads - r) > 1e-9:
            found.setdefault(f"heads={r:g} removes {w.heads - k} of {w.heads} heads{{where}}", []).append(i)
        if ffn_r[i] > 0 and keep_ffn[i] == w.ffn:
            msg = f"ffn={ffn_r[i]:g} of {w.ffn} FFN neurons{{where}} rounds to none removed: FFN kept"
            found.setdefault(msg, []).append(i)
    notes = []
    for msg, layers in found.items():
        where = " per layer" if len(layers) == n else f" in layer{'s' if len(layers) > 1 else ''} " + ", ".join(
            map(str, layers)
        )
        text = msg.format(where=where)
        notes.append("model has " + text if text.startswith("one attention head per layer") else text)
    return notes


def _ffn_only(config: PruneConfig) -> str:
    return ", pruned FFN only" if not config.hidden else ""


def _selection_name(config: PruneConfig) -> str:
    return "uniform spacing" if config.layer_selection == "uniform" else f"{config.importance} importance"


def _hidden_target(current: Layout, config: PruneConfig, keep_heads: list[int], notes: list[str]) -> int:
    """Residual width to keep: tied to the heads (default), or its own ratio."""
    if config.hidden is None:
        removed = {(w.heads - k) * w.head_size for w, k in zip(current.layers, keep_heads, strict=True)}
        if len(removed) > 1:
            notes.append("layers lose different numbers of heads: hidden width kept (give hidden= to prune it)")
            return current.hidden
        cut = removed.pop()
        if cut >= current.hidden:
            raise ModelError(
                f"removing {cut} hidden channels with the heads leaves none of {current.hidden}",
                "give hidden= explicitly (e.g. 0.0 to keep it)",
            )
        return current.hidden - cut
    keep = max(1, round(current.hidden * (1 - config.hidden)))
    if config.hidden > 0 and keep == current.hidden:
        notes.append(f"hidden={config.hidden:g} of {current.hidden} hidden channels rounds to none removed")
    return keep


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


def _outputs(out: Any) -> list[torch.Tensor]:
    """Every tensor a forward returns (logits, last_hidden_state, pooler_output...), so the graph sees all heads."""
    if isinstance(out, torch.Tensor):
        return [out]
    if hasattr(out, "to_tuple"):
        out = out.to_tuple()
    elif isinstance(out, dict):
        out = list(out.values())
    return [t for v in out for t in _outputs(v)] if isinstance(out, (list, tuple)) else []


def _build_graph(model: torch.nn.Module, inputs: Batch) -> Any:
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


def _scorer(
    model: torch.nn.Module, config: PruneConfig, inputs: Batch, batches: list | None, loss_fn: LossFn | None
) -> Scorer:
    """Call the configured importance factory (older two-argument factories are still accepted)."""
    factory = IMPORTANCES.get(config.importance)
    params = inspect.signature(factory).parameters
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if takes_kwargs or {"batches", "loss_fn"} <= set(params):
        return factory(model, inputs, batches=batches, loss_fn=loss_fn)
    return factory(model, inputs)


def _lowest(scores: torch.Tensor, n: int) -> list[int]:
    """Indices of the ``n`` lowest scores, ties broken by position so the choice is deterministic."""
    order = torch.argsort(scores.detach().float().cpu(), stable=True)
    return sorted(order[:n].tolist())


def _scores(dg: Any, scorer: Scorer, module: torch.nn.Linear) -> torch.Tensor:
    """Importance of each output channel of ``module``, pooled over its whole dependency group."""
    import torch_pruning as tp

    group = dg.get_pruning_group(module, tp.prune_linear_out_channels, list(range(module.out_features)))
    scores = scorer(group)
    if scores is None or scores.numel() != module.out_features:
        raise ModelError(f"importance gave no usable scores for {type(module).__name__}", "use importance=magnitude")
    return scores


def _by_importance(config: PruneConfig, n_keep: int, n: int) -> bool:
    return n_keep < n and config.layer_selection == "importance" and not isinstance(config.layers, list)


def _choose_layers(
    model: torch.nn.Module, spec: Family, config: PruneConfig, trace: Batch, scorer: Scorer | None, n_keep: int
) -> list[int]:
    """Indices of the blocks to keep, in order: as listed, evenly spaced (last kept), or the most important.

    A block's importance is the criterion summed over its FFN neurons and attention channels.
    """
    n = len(spec.blocks(model))
    if isinstance(config.layers, list):
        return list(config.layers)
    if config.layer_selection == "uniform" or scorer is None:
        return [math.ceil((i + 1) * n / n_keep) - 1 for i in range(n_keep)]
    dg = _build_graph(model, trace)
    scores = torch.stack(
        [
            _scores(dg, scorer, spec.ffn(block)["in"]).float().sum()
            + _scores(dg, scorer, spec.qkv(block)["query"]).float().sum()
            for block in spec.blocks(model)
        ]
    )
    dropped = set(_lowest(scores, n - n_keep))
    return [i for i in range(n) if i not in dropped]


def _plan(
    model: torch.nn.Module,
    spec: Family,
    dg: Any,
    scorer: Scorer,
    current: Layout,
    keep_heads: list[int],
    keep_ffn: list[int],
    keep_hidden: int,
) -> list[_Cut]:
    """Choose every channel to remove, scoring all groups on the unpruned weights before anything changes."""
    cuts = []
    blocks = spec.blocks(model)
    for block, w, kh, kf in zip(blocks, current.layers, keep_heads, keep_ffn, strict=True):
        if kf < w.ffn:
            ffn_in = spec.ffn(block)["in"]
            cuts.append(_Cut(ffn_in, _lowest(_scores(dg, scorer, ffn_in), w.ffn - kf)))
        if kh < w.heads:
            cuts.append(_head_cut(dg, scorer, spec.qkv(block)["query"], w, kh))
    if keep_hidden < current.hidden:
        removed = current.hidden - keep_hidden
        first_out = spec.attention_output(blocks[0])
        cuts.append(_Cut(first_out, _lowest(_scores(dg, scorer, first_out), removed)))
        cuts.extend(_Cut(m, _lowest(_scores(dg, scorer, m), removed)) for m in spec.square_head_modules(model))
    return cuts


def _head_cut(dg: Any, scorer: Scorer, query: torch.nn.Linear, w: LayerWidths, keep_heads: int) -> _Cut:
    """Remove whole heads: score q/k/v/out channels together, average per head, drop the weakest heads."""
    per_head = _scores(dg, scorer, query).view(w.heads, w.head_size).mean(dim=1)
    heads = _lowest(per_head, w.heads - keep_heads)
    return _Cut(query, [h * w.head_size + i for h in heads for i in range(w.head_size)])


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


def _fix_attention(model: torch.nn.Module, spec: Family, before: Layout) -> None:
    """Set the head count, widths and scaling torch-pruning leaves stale on every self-attention module."""
    for block, w in zip(spec.blocks(model), before.layers, strict=True):
        inner = spec.qkv(block)["query"].out_features
        spec.set_attention_widths(spec.self_attention(block), inner // w.head_size, w.head_size)


def _check_forward(model: torch.nn.Module, inputs: Batch) -> None:
    """Run the pruned model once in eval mode, so a broken prune fails here and not in the caller's training."""
    model.eval()
    try:
        with torch.no_grad():
            model(**inputs)
    except Exception as exc:
        raise ModelError(f"the pruned model no longer runs: {type(exc).__name__}: {exc}", "report this bug") from exc

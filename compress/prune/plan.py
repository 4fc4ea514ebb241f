"""What a prune leaves: the heads, FFN neurons, hidden width and layers each layer keeps (``plan_widths``, without a
model), and the notes that explain where rounding or the layout made the result differ from the ratios asked."""

from __future__ import annotations

from compress.prune.config import FLAGS, PruneConfig, layer_count, per_layer
from compress.prune.layout import LayerWidths, Layout
from distill.core.errors import ConfigError, ModelError


def layer_targets(config: PruneConfig, layout: Layout) -> tuple[list[float], list[float], list[int], list[int], int]:
    """Per layer of ``layout``: heads ratio, FFN ratio, heads kept and FFN neurons kept; and how many layers stay."""
    n = len(layout.layers)
    heads_r, ffn_r = per_layer("heads", config.heads, n), per_layer("ffn", config.ffn, n)
    keep_heads = [heads_to_keep(w, r, i) for i, (w, r) in enumerate(zip(layout.layers, heads_r, strict=True))]
    keep_ffn = [max(1, round(w.ffn * (1 - r))) for w, r in zip(layout.layers, ffn_r, strict=True)]
    return heads_r, ffn_r, keep_heads, keep_ffn, layer_count(config.layers, n)


def plan_widths(config: PruneConfig, layout: Layout) -> Layout:
    """The widths ``prune_model(model, config, ...)`` would leave on a model of ``layout``, without a model.

    Raises the same errors (every head of a layer removed, more layers kept than exist, no hidden width left), so
    callers can refuse a setting before training for hours. Layers dropped by importance are assumed to be the
    last ones (exact for uniform models, whose blocks all have the same widths).
    """
    _, _, keep_heads, keep_ffn, n_keep = layer_targets(config, layout)
    kept = config.layers if isinstance(config.layers, list) else list(range(n_keep))
    current = Layout(layout.hidden, tuple(layout.layers[i] for i in kept))
    hidden = hidden_target(current, config, [keep_heads[i] for i in kept], [])
    return Layout(hidden, tuple(LayerWidths(keep_heads[i], layout.layers[i].head_size, keep_ffn[i]) for i in kept))


def heads_to_keep(w: LayerWidths, ratio: float, layer: int) -> int:
    """Heads kept in one layer: ``round(heads * (1 - ratio))``; ConfigError if that removes every head."""
    if ratio == 0 or w.heads == 1:
        return w.heads
    keep = round(w.heads * (1 - ratio))
    if keep < 1:
        raise ConfigError(
            f"{FLAGS['heads']} {ratio:g} removes all {w.heads} heads of layer {layer}",
            f"use at most {(w.heads - 1) / w.heads:.4g} to keep one head",
        )
    return keep


def width_notes(
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


def selection_name(config: PruneConfig) -> str:
    return "uniform spacing" if config.layer_selection == "uniform" else f"{config.importance} importance"


def hidden_target(current: Layout, config: PruneConfig, keep_heads: list[int], notes: list[str]) -> int:
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

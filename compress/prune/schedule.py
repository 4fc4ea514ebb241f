"""Iterative pruning: reach the target in several smaller steps, with recovery distillation between them.

``ratio_schedule`` gives the cumulative fraction removed after each step (linear from 0 to the target);
``step_ratios`` turns it into what each ``prune_model`` call removes from the model as it then stands; and
``step_configs`` does both for a whole ``PruneConfig``. Each step rounds to whole heads and neurons, so an
intermediate width may differ by one unit from the exact linear value; the last step lands on the target
(up to that same rounding). Per-layer ratios are scheduled per layer.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from compress.prune.config import PruneConfig, Ratio, check_ratios
from compress.prune.layout import Layout
from compress.prune.plan import plan_widths
from distill.core.errors import ConfigError


def ratio_schedule(target: Ratio, steps: int) -> list[Ratio]:
    """Cumulative fractions removed after steps 1..``steps``: ``target * i / steps`` (per layer for lists/dicts)."""
    _check_steps(steps)
    target = check_ratios("target", target)  # [0, 1); per-layer lists and dicts allowed
    return [_map(target, lambda r, i=i: r * (i + 1) / steps) for i in range(steps)]


def step_ratios(target: Ratio, steps: int) -> list[Ratio]:
    """Fraction to remove at each step from the model as it stands then, so the total follows ``ratio_schedule``."""
    done: Ratio = _map(target, lambda r: 0.0)
    out = []
    for cumulative in ratio_schedule(target, steps):
        out.append(_zip(cumulative, done, lambda c, d: 1.0 - (1.0 - c) / (1.0 - d)))
        done = cumulative
    return out


def step_configs(config: PruneConfig, steps: int, n_layers: int | None = None) -> list[PruneConfig]:
    """One ``PruneConfig`` per step; applying them in order (with recovery between) reaches ``config``.

    Layers kept go down linearly from ``n_layers`` (needed when ``config.layers`` is a count); explicit layer
    indices are all dropped in the first step. Per-layer ratios cannot be combined with dropping layers over
    several steps (the indices would shift).
    """
    _check_steps(steps)
    per_layer = any(isinstance(r, (list, dict)) for r in (config.heads, config.ffn))
    if config.layers is not None and per_layer and steps > 1:
        raise ConfigError(
            "per-layer ratios and dropping layers cannot be spread over several steps",
            "drop layers in a separate prune first, or use steps=1",
        )
    layers: list[Any] = [None] * steps
    if isinstance(config.layers, list):
        layers[0] = config.layers
    elif isinstance(config.layers, int):
        if n_layers is None:
            raise ConfigError(f"scheduling layers={config.layers} needs the model's layer count", "pass n_layers")
        if n_layers < config.layers:
            raise ConfigError(f"--prune-layers {config.layers} keeps more layers than the model's {n_layers}",
                              f"give at most {n_layers}")
        counts = [n_layers - round((n_layers - config.layers) * (i + 1) / steps) for i in range(steps)]
        previous = n_layers
        for i, count in enumerate(counts):
            layers[i] = count if count < previous else None
            previous = count
    heads, ffn = step_ratios(config.heads, steps), step_ratios(config.ffn, steps)
    hidden = step_ratios(config.hidden, steps) if config.hidden is not None else [None] * steps
    return [
        dataclasses.replace(config, heads=heads[i], ffn=ffn[i], hidden=hidden[i], layers=layers[i])
        for i in range(steps)
    ]


def plan_steps(config: PruneConfig, steps: int, layout: Layout) -> list[Layout]:
    """The widths after each step of ``step_configs(config, steps)`` on a model of ``layout`` (see ``plan_widths``):
    a setting that fails at any step fails here, before any training."""
    plans = []
    for step in step_configs(config, steps, n_layers=len(layout.layers)):
        layout = plan_widths(step, layout)
        plans.append(layout)
    return plans


def _check_steps(steps: Any) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps {steps!r} is not a positive integer", "use e.g. 3")


def _map(ratio: Ratio, fn) -> Ratio:
    if isinstance(ratio, list):
        return [fn(r) for r in ratio]
    if isinstance(ratio, dict):
        return {k: fn(r) for k, r in ratio.items()}
    return fn(ratio)


def _zip(a: Ratio, b: Ratio, fn) -> Ratio:
    if isinstance(a, list):
        return [fn(x, y) for x, y in zip(a, b, strict=True)]
    if isinstance(a, dict):
        return {k: fn(a[k], b[k]) for k in a}
    return fn(a, b)

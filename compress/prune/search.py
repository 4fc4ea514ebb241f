"""Retention-targeted pruning: instead of cutting one fixed ratio, try a schedule of growing ratios, recovering after
each step, and keep the smallest model whose recovered metric keeps a target share of a reference metric.

This module holds the pure parts the pipeline's prune stage drives (``distill.pipeline.stages.prune``):

- ``check_target`` / ``check_search``: the ``--target-retention`` value and the ``--prune-search`` schedule.
- ``pruning_share(target, quantized)``: what pruning alone must keep. The target holds for the whole compression
  (pruning, then INT8, both measured against the same reference); when INT8 follows, pruning may spend half of the
  allowed loss ``1 - target`` and INT8 the rest (0.985 for 0.97). Spending it all on pruning left INT8 no room: on
  STS-B (2,000 rows) a step kept at 97.1% made plain INT8 miss by 0.001, and the INT8 stage then kept two layers
  in FP32 (22.1 MB against the unpruned student's 17.8 MB all-INT8).
- ``threshold(reference, target)``: the lowest metric that keeps the target, ``reference - (1 - target)·|reference|``
  (= ``target · reference`` for a positive reference; for a metric that can be ≤ 0, such as Pearson or MCC, the
  allowed loss is still ``(1 - target)`` of its magnitude, so the test never inverts).
- ``search_step(ratio, original, current, scope)``: the ``PruneConfig`` that takes the model as it stands
  (``current`` widths) to ``ratio`` of the *original* heads and FFN neurons removed, the residual width shrinking
  with the heads (scope ``all``), or to ``ratio`` of its FFN neurons alone, heads and width kept (scope ``ffn``: the
  search's retry at the same ratio when a step of scope ``all`` missed; the width feeds every layer, the embeddings
  and the head, so cutting it costs most, and an FFN-only model still loads with plain ``from_pretrained``, which a
  model with fewer heads than its width allows does not). A layer always keeps ≥ 1 head and neuron, so a schedule
  that asks too much on a narrow model (2 heads) stops shrinking instead of failing.
- ``plan_search``: the widths after each step, so a bad schedule fails before any training.
"""

from __future__ import annotations

from collections.abc import Sequence

from compress.prune.config import PruneConfig
from compress.prune.layout import Layout
from compress.prune.plan import plan_widths
from distill.core.errors import ConfigError

SEARCH_RATIOS = (0.5, 0.75)  # cumulative share of heads (with hidden width) and FFN neurons removed per step
TARGET_RANGE = (0.0, 1.5)  # (exclusive, inclusive): > 1 asks compression to improve on the reference
SCOPES = ("all", "ffn")  # what a search step prunes: heads with hidden width and FFN, or the FFN alone
EPS = 1e-9  # metric differences below this are float noise


def check_target(value: object, flag: str = "--target-retention") -> float:
    """``value`` as a retention target in (0, 1.5]; ConfigError (one line, exit 2) otherwise."""
    low, high = TARGET_RANGE
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ConfigError(f"{flag} {value!r} is not a number", "give the share of the metric to keep, e.g. 0.97")
    if not low < float(value) <= high:
        raise ConfigError(f"{flag} {value:g} is outside (0, {high:g}]",
                          "give the share of the student's metric to keep, e.g. 0.97 (97%)")
    return float(value)


def check_search(ratios: object, flag: str = "--prune-search") -> list[float]:
    """The search schedule: cumulative ratios in (0, 1), strictly increasing."""
    if isinstance(ratios, (int, float)) and not isinstance(ratios, bool):
        ratios = [ratios]
    if not isinstance(ratios, (list, tuple)) or not ratios:
        raise ConfigError(f"{flag} {ratios!r} is not a list of ratios", "give growing ratios, e.g. 0.25,0.5,0.75")
    out = []
    for r in ratios:
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.0 < float(r) < 1.0:
            raise ConfigError(f"{flag} has {r!r}, outside (0, 1)", "give growing ratios, e.g. 0.25,0.5,0.75")
        out.append(float(r))
    if any(b <= a for a, b in zip(out, out[1:], strict=False)):
        raise ConfigError(f"{flag} {','.join(f'{r:g}' for r in out)} does not grow", "list growing ratios, e.g. "
                          "0.25,0.5,0.75")
    return out


def pruning_share(target: float, quantized: bool) -> float:
    """The share of the reference a pruning step must keep (see the module docstring); ``target`` itself without a
    quantization stage after it, or when it asks for an improvement (> 1)."""
    return target if not quantized or target >= 1.0 else 1.0 - (1.0 - target) / 2.0


def threshold(reference: float, target: float) -> float:
    """The lowest metric that keeps ``target`` of ``reference`` (see the module docstring)."""
    return reference - (1.0 - target) * abs(reference)


def retention(metric: float | None, reference: float) -> float | None:
    """``metric / reference``; None when undefined (a reference ≤ 0, or no metric)."""
    return None if metric is None or reference <= 0 else metric / reference


def keeps(metric: float, reference: float, target: float) -> bool:
    """Whether ``metric`` keeps ``target`` of ``reference``."""
    return metric >= threshold(reference, target) - EPS


def _per_layer_ratio(keep: list[int], now: list[int]) -> float | list[float]:
    """Fractions that take each layer from ``now`` to ``keep`` units (one float when every layer agrees)."""
    ratios = [max(0.0, 1.0 - k / n) for k, n in zip(keep, now, strict=True)]
    return ratios[0] if len(set(ratios)) == 1 else ratios


def search_step(ratio: float, original: Layout, current: Layout, importance: str = "magnitude",
                scope: str = "all") -> PruneConfig:
    """The config that prunes a model of ``current`` widths to ``ratio`` of ``original``'s heads and FFN neurons
    removed, the hidden width following the heads (``scope="all"``), or its FFN neurons only (``scope="ffn"``), each
    layer keeping at least one head and one neuron."""
    if scope not in SCOPES:
        raise ConfigError(f"unknown pruning search scope {scope!r}", f"choose one of: {', '.join(SCOPES)}")
    if len(original.layers) != len(current.layers):
        raise ConfigError("the pruning search cannot drop layers", "use --prune-layers with fixed --prune-* ratios")
    pairs = list(zip(original.layers, current.layers, strict=True))
    heads = [max(1, min(c.heads, round(o.heads * (1 - ratio)))) for o, c in pairs]
    ffn = [max(1, min(c.ffn, round(o.ffn * (1 - ratio)))) for o, c in pairs]
    ffn_ratio = _per_layer_ratio(ffn, [w.ffn for w in current.layers])
    if scope == "ffn":
        return PruneConfig(heads=0.0, ffn=ffn_ratio, hidden=0.0, importance=importance)
    return PruneConfig(heads=_per_layer_ratio(heads, [w.heads for w in current.layers]), ffn=ffn_ratio,
                       importance=importance)


def plan_search(ratios: Sequence[float], layout: Layout, importance: str = "magnitude") -> list[Layout]:
    """The widths after each step of the search on a model of ``layout`` (fails before any training)."""
    plans, current = [], layout
    for r in check_search(list(ratios)):
        current = plan_widths(search_step(r, layout, current, importance), current)
        plans.append(current)
    return plans

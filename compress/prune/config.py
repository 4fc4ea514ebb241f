"""Pruning settings: how much to cut (``PruneConfig``), parsing the CLI's ratios, and checking ratios against the
model they will be applied to, so a bad setting fails before any model is touched."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from compress.prune.importance import IMPORTANCES, NEEDS_TEACHER, Batch, LossFn
from distill.core.errors import ConfigError

Ratio = float | list[float] | dict[int, float]

FLAGS = {
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
                f"{FLAGS['hidden']} {self.hidden!r} gives per-layer ratios",
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
            f"{FLAGS[name]} {text!r} is not a ratio",
            "give 0.5, one per layer (0.5,0.25) or layer:ratio (0:0.5,3:0.25)",
        ) from None
    if len(values) == 1 and "," not in str(text):
        return check_ratio(name, values[0])
    return check_ratios(name, values)


def check_ratio(name: str, value: Any, where: str = "") -> float:
    flag = FLAGS[name]
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
            raise ConfigError(f"{FLAGS[name]} is an empty list", "give one ratio per layer, or one for all layers")
        return [check_ratio(name, v, f" (layer {i})") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for key, v in value.items():
            layer = _layer_index(key, FLAGS[name])
            out[layer] = check_ratio(name, v, f" (layer {layer})")
        return out
    return check_ratio(name, value)


def _layer_index(key: Any, flag: str) -> int:
    if isinstance(key, bool) or not str(key).strip().isdigit():
        raise ConfigError(f"{flag} has layer key {key!r}", "use layer indices 0, 1, ... as keys")
    return int(str(key).strip())


def _check_layers(value: Any) -> int | list[int] | None:
    flag = FLAGS["layers"]
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


def per_layer(name: str, ratio: Ratio, n: int) -> list[float]:
    """The ratio of each of the model's ``n`` layers (dict keys missing -> 0)."""
    flag = FLAGS[name]
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


def layer_count(layers: int | list[int] | None, n: int) -> int:
    if layers is None:
        return n
    flag = FLAGS["layers"]
    if isinstance(layers, list):
        if layers[-1] >= n:
            raise ConfigError(f"{flag} lists layer {layers[-1]} of a model with {n} layers", f"use 0..{n - 1}")
        return len(layers)
    if layers > n:
        raise ConfigError(f"{flag} {layers} keeps more layers than the model's {n}", f"give at most {n}")
    return layers


def check_loss_available(config: PruneConfig, inputs: Batch, batches: list | None, loss_fn: LossFn | None) -> None:
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

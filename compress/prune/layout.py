"""The widths an encoder really has, read from its modules, and whether a plain HF config can describe them.

A HF config gives every layer the same ``heads``, ``ffn`` and a head size of ``hidden // heads``. Pruning can leave
layers that differ, or attention narrower than the residual stream (heads pruned, hidden kept); such a ``Layout``
is not ``expressible`` and is saved with a small widths file beside the weights (see ``compress.prune.io``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distill.core.errors import ModelError
from distill.core.families import Family

LAYOUT_FORMAT = "distill.pruned_widths"
LAYOUT_VERSION = 1


@dataclass(frozen=True)
class LayerWidths:
    """One transformer block: attention heads, per-head width and FFN neurons."""

    heads: int
    head_size: int
    ffn: int

    @property
    def attention(self) -> int:
        """Inner width of the attention (q/k/v outputs): heads x head size."""
        return self.heads * self.head_size


@dataclass(frozen=True)
class Layout:
    """The residual width shared by all blocks, and each block's own widths."""

    hidden: int
    layers: tuple[LayerWidths, ...]

    @property
    def uniform(self) -> bool:
        return len(set(self.layers)) == 1

    @property
    def expressible(self) -> bool:
        """True when ``hidden``/``heads``/``ffn``/``layers`` in a plain HF config rebuild exactly these shapes."""
        return self.uniform and self.layers[0].attention == self.hidden

    @property
    def max_heads(self) -> int:
        return max(w.heads for w in self.layers)

    @property
    def max_ffn(self) -> int:
        return max(w.ffn for w in self.layers)

    def to_json(self, model_type: str) -> dict:
        """The widths file's content: plain JSON, read back by ``Layout.from_json``."""
        return {
            "format": LAYOUT_FORMAT,
            "version": LAYOUT_VERSION,
            "model_type": model_type,
            "hidden": self.hidden,
            "layers": [{"heads": w.heads, "head_size": w.head_size, "ffn": w.ffn} for w in self.layers],
        }

    @classmethod
    def from_json(cls, data: dict, source: str = "widths file") -> Layout:
        """Parse and check a widths file; ModelError naming ``source`` when it is malformed."""
        try:
            if data.get("format") != LAYOUT_FORMAT or int(data.get("version", 0)) > LAYOUT_VERSION:
                raise ValueError(f"format {data.get('format')!r} version {data.get('version')!r}")
            layers = tuple(
                LayerWidths(int(w["heads"]), int(w["head_size"]), int(w["ffn"])) for w in data["layers"]
            )
            layout = cls(hidden=int(data["hidden"]), layers=layers)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ModelError(
                f"{source} is not a pruned-widths file ({exc})", "save the model with save_pruned"
            ) from exc
        if not layers or min(layout.hidden, *(min(w.heads, w.head_size, w.ffn) for w in layers)) < 1:
            raise ModelError(f"{source} has an empty width", "save the model with save_pruned")
        return layout


def measure(model: torch.nn.Module, spec: Family) -> Layout:
    """Read every block's widths from its modules (not the config, which pruning may leave stale)."""
    layers, hidden = [], set()
    for block in spec.blocks(model):
        heads, inner = spec.attention_heads(block), spec.attention_width(block)
        if heads < 1 or inner % heads:
            raise ModelError(
                f"attention of width {inner} does not split into {heads} heads", "the model's attention is corrupt"
            )
        layers.append(LayerWidths(heads, inner // heads, spec.ffn_width(block)))
        hidden.add(spec.attention_output(block).out_features)
    if len(hidden) != 1:
        raise ModelError(f"encoder layers disagree on the hidden width: {sorted(hidden)}", "the model is corrupt")
    return Layout(hidden=hidden.pop(), layers=tuple(layers))


def sync_config(model: torch.nn.Module, spec: Family, layout: Layout) -> None:
    """Write ``layout`` into ``model.config``: exact when expressible, else the largest per-layer widths; a
    factorised embedding width follows the word table (it shrinks with the hidden width when there is no
    projection between them)."""
    spec.set_widths(model.config, hidden=layout.hidden, heads=layout.max_heads, ffn=layout.max_ffn,
                    layers=len(layout.layers))
    if spec.embedding_size_key is not None:
        setattr(model.config, spec.embedding_size_key, spec.embedding_width(model))

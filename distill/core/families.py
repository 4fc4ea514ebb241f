"""Where each supported encoder family keeps its layers, attention and FFN, so pruning can find and fix them."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distill.core.errors import ModelError


@dataclass(frozen=True)
class ArchSpec:
    """Module paths, attention attributes and config keys of one ``config.model_type``.

    Paths are dotted attribute names: ``layers`` from ``model.base_model``, ``attention``/``attn_out``/``ffn_in``/
    ``ffn_out`` from one layer, ``query``/``key``/``value`` from the self-attention module, and ``square_heads``
    (hidden -> hidden projections in task heads, e.g. the pooler) as suffixes of names in ``model.named_modules()``.
    """

    model_type: str
    layers: str
    attention: str
    query: str
    key: str
    value: str
    attn_out: str
    ffn_in: str
    ffn_out: str
    heads_attr: str  # number of heads on the self-attention module
    head_size_attr: str  # per-head width on the self-attention module
    all_head_attr: str  # heads * head size on the self-attention module
    scaling_attr: str  # 1 / sqrt(head size) on the self-attention module (transformers 5)
    hidden_key: str  # config key of the residual width
    heads_key: str  # config key of the number of heads
    ffn_key: str  # config key of the FFN width
    square_heads: tuple[str, ...] = ()
    layers_key: str = "num_hidden_layers"  # config key of the number of transformer blocks


_BERT_LIKE = dict(
    layers="encoder.layer",
    attention="attention.self",
    query="query",
    key="key",
    value="value",
    attn_out="attention.output.dense",
    ffn_in="intermediate.dense",
    ffn_out="output.dense",
    heads_attr="num_attention_heads",
    head_size_attr="attention_head_size",
    all_head_attr="all_head_size",
    scaling_attr="scaling",
    hidden_key="hidden_size",
    heads_key="num_attention_heads",
    ffn_key="intermediate_size",
    square_heads=("pooler.dense", "classifier.dense"),
)

ARCHS: dict[str, ArchSpec] = {
    "bert": ArchSpec(model_type="bert", **_BERT_LIKE),
    "roberta": ArchSpec(model_type="roberta", **_BERT_LIKE),
    "distilbert": ArchSpec(
        model_type="distilbert",
        layers="transformer.layer",
        attention="attention",
        query="q_lin",
        key="k_lin",
        value="v_lin",
        attn_out="attention.out_lin",
        ffn_in="ffn.lin1",
        ffn_out="ffn.lin2",
        heads_attr="n_heads",
        head_size_attr="attention_head_size",
        all_head_attr="dim",
        scaling_attr="scaling",
        hidden_key="dim",
        heads_key="n_heads",
        ffn_key="hidden_dim",
        square_heads=("pre_classifier",),
        layers_key="n_layers",
    ),
}


def arch_of(model: torch.nn.Module) -> ArchSpec:
    """The ArchSpec for ``model.config.model_type``; ModelError when the family is not in the table."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in ARCHS:
        raise ModelError(
            f"structured pruning does not know the '{model_type}' architecture",
            f"use a model of type {', '.join(sorted(ARCHS))}, or add an ArchSpec for it in distill/core/families.py",
        )
    return ARCHS[model_type]


def get_path(root: torch.nn.Module, path: str) -> torch.nn.Module:
    """Follow a dotted attribute path (``"attention.self"``) from ``root``; ModelError if a step is missing."""
    module = root
    for part in path.split("."):
        if not hasattr(module, part):
            raise ModelError(
                f"{type(root).__name__} has no '{path}' module (stopped at '{part}')",
                "the ArchSpec in distill/core/families.py does not match this model class",
            )
        module = getattr(module, part)
    return module


def layers_of(model: torch.nn.Module, spec: ArchSpec) -> list[torch.nn.Module]:
    """The encoder's transformer layers, in order."""
    return list(get_path(model.base_model, spec.layers))


def square_heads_of(model: torch.nn.Module, spec: ArchSpec) -> list[torch.nn.Linear]:
    """Task-head Linear layers mapping hidden -> hidden, whose outputs must shrink with the hidden width."""
    return [
        m
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and any(name == s or name.endswith("." + s) for s in spec.square_heads)
    ]


def set_path(root: torch.nn.Module, path: str, module: torch.nn.Module) -> None:
    """Replace the module at dotted ``path`` below ``root`` (ModelError if the parent path is missing)."""
    parent, _, last = path.rpartition(".")
    setattr(get_path(root, parent) if parent else root, last, module)


def set_layers(model: torch.nn.Module, spec: ArchSpec, layers: list[torch.nn.Module]) -> None:
    """Make ``layers`` the encoder's blocks, renumber their ``layer_idx`` and rewrite the layer count in the config."""
    set_path(model.base_model, spec.layers, torch.nn.ModuleList(layers))
    for idx, layer in enumerate(layers):
        for module in layer.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = idx
    setattr(model.config, spec.layers_key, len(layers))


def set_attention_widths(attn: torch.nn.Module, spec: ArchSpec, heads: int, head_size: int) -> None:
    """Set the head count, head size, inner width and scaling of one self-attention module (forward reads these)."""
    setattr(attn, spec.heads_attr, heads)
    setattr(attn, spec.head_size_attr, head_size)
    setattr(attn, spec.all_head_attr, heads * head_size)
    if hasattr(attn, spec.scaling_attr):
        setattr(attn, spec.scaling_attr, head_size**-0.5)

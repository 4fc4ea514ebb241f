"""What a model-family adapter is (``Family``), the table of them (``FAMILIES``) and how a model finds its entry.

One ``Family`` per ``config.model_type`` says where the family keeps each part and which config keys hold its
widths, and offers the verbs every consumer needs (``blocks``, ``qkv``, ``widths``, ``set_widths``, ...).
Students (``students.init``), the objective (``distill.objective.capture``), pruning (``compress.prune``) and
export read the structure only through it, so adding a family is one ``register_family`` call (see
``distill.core.families.encoders``) plus its tests.

torch is imported inside the functions that build modules only: ``supports_qkv(config)`` and ``find_family``
work on a config without loading it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from distill.core.errors import ModelError
from distill.core.registry import Registry

if TYPE_CHECKING:
    from torch import nn

QKV_ROLES = ("query", "key", "value")
FUSED_QKV = "qkv"  # the role name ``Family.qkv`` gives a fused projection whose output is [q; k; v]


@dataclass(frozen=True)
class Widths:
    """The widths a config declares. ``kv_heads`` equals ``heads`` without grouped-query attention, and
    ``head_dim`` is ``hidden // heads`` unless the config sets it (llama, qwen2)."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int


@dataclass(frozen=True, kw_only=True)
class Family:
    """Where one model family keeps its parts, and which config keys hold its widths.

    Module paths are dotted attribute names: ``layers``, ``embeddings``, ``word_embeddings``,
    ``position_embeddings``, ``token_type_embeddings`` and ``final_norm`` from ``model.base_model``;
    ``attention``, ``attn_out``, ``ffn_in``, ``ffn_gate``, ``ffn_out`` and ``norms`` from one block;
    ``query``/``key``/``value``, ``qkv_fused`` and ``attn_dropout`` from the self-attention module;
    ``square_heads`` (hidden -> hidden Linear layers of task heads, e.g. the pooler) are suffixes of names in
    ``model.named_modules()``. ``None`` means the family has no such part.
    """

    model_type: str
    # ---- modules ----
    layers: str  # the ModuleList of transformer blocks
    attention: str  # the self-attention module of a block
    attn_out: str  # attention output projection (heads -> hidden)
    ffn_in: str  # FFN up projection (hidden -> ffn)
    ffn_out: str  # FFN down projection (ffn -> hidden)
    query: str | None = None  # separate Q/K/V projections (K/V narrower than Q with grouped-query attention)
    key: str | None = None
    value: str | None = None
    qkv_fused: str | None = None  # or one projection whose output is [q; k; v] (gpt2 c_attn, modernbert Wqkv)
    ffn_gate: str | None = None  # gate of a gated FFN kept apart (llama mlp.gate_proj)
    ffn_glu_fused: bool = False  # ffn_in's output is [input; gate] (modernbert mlp.Wi)
    attn_dropout: str | None = None  # the dropout on attention probabilities: an nn.Dropout or a float attribute
    norms: tuple[str, ...] = ()  # the block's LayerNorm/RMSNorm modules
    final_norm: str | None = None  # a norm after the last block (decoders)
    embeddings: str | None = "embeddings"  # the module holding the embedding tables, when there is one
    word_embeddings: str = "embeddings.word_embeddings"
    position_embeddings: str | None = None  # a learned position table (None: rotary or relative positions)
    token_type_embeddings: str | None = None
    position_offset: int = 0  # first position id used (RoBERTa: padding_idx + 1 = 2); usable positions = table - offset
    square_heads: tuple[str, ...] = ()
    first_block_norm: str | None = None  # a norm HF builds as Identity in block 0 only (modernbert attn_norm)
    embedding_projection: str | None = None  # Linear embedding width -> hidden (electra embeddings_project)
    shared: tuple[str, ...] = ()  # modules outside blocks/embeddings that every block reads (deberta rel_embeddings)
    qkv_extra: tuple[str, ...] = ()  # self-attention projections to the heads besides Q/K/V (deberta pos_key_proj)
    # ---- what the family supports (the features table is generated from these) ----
    token_types: bool = True  # forward takes token_type_ids (a student of this family can read a BERT tokenizer's)
    attention_maps: str | None = None  # None: eager attention returns usable maps; else why the attention term is off
    int8: str | None = None  # None: ONNX export and INT8 work (tests/families); else what fails and why
    # ---- attributes the self-attention's forward reads (None: the module does not keep it) ----
    heads_attr: str | None = None  # number of query heads
    head_size_attr: str | None = None  # per-head width
    all_head_attr: str | None = None  # heads x head size
    scaling_attr: str | None = "scaling"  # 1 / sqrt(head size) (transformers 5)
    kv_groups_attr: str | None = None  # query heads per K/V head (grouped-query attention)
    # ---- config keys ----
    layers_key: str = "num_hidden_layers"
    hidden_key: str = "hidden_size"
    heads_key: str = "num_attention_heads"
    ffn_key: str = "intermediate_size"
    ffn_default_multiple: int | None = None  # FFN width when the config leaves it None: this x hidden (gpt2 n_inner)
    kv_heads_key: str | None = None  # grouped-query attention (llama num_key_value_heads)
    head_dim_key: str | None = None  # an explicit head size (llama head_dim)
    layer_types_key: str | None = None  # per-layer attention kinds (modernbert/qwen2 local vs global layers)
    embedding_size_key: str | None = None  # a factorised embedding width (electra/deberta embedding_size)
    hidden_aliases: tuple[str, ...] = ()  # other config keys that must equal the hidden width (deberta pooler)
    causal: bool = False  # a decoder (causal LM)

    def __post_init__(self) -> None:
        """An entry names all three separate Q/K/V projections or one fused projection, not a mix (none at all:
        a family whose Q/K/V cannot be captured, e.g. with heads interleaved in one projection)."""
        given = sum(p is not None for p in (self.query, self.key, self.value))
        if given not in (0, 3) or (given and self.qkv_fused is not None):
            raise ValueError(f"family '{self.model_type}': give query, key and value, or qkv_fused alone")

    # ---- blocks ------------------------------------------------------------------------------------------

    def blocks(self, model: nn.Module) -> list[nn.Module]:
        """The transformer blocks, in order."""
        return list(get_path(model.base_model, self.layers))

    def keep_blocks(self, model: nn.Module, kept: list[int]) -> None:
        """Keep only the blocks at indices ``kept`` (in that order): renumber their ``layer_idx`` and rewrite the
        layer count, and the per-layer attention kinds where the family has them."""
        from torch import nn

        blocks = [self.blocks(model)[i] for i in kept]
        set_path(model.base_model, self.layers, nn.ModuleList(blocks))
        layer_types = getattr(model.config, self.layer_types_key, None) if self.layer_types_key else None
        if isinstance(layer_types, (list, tuple)):
            setattr(model.config, self.layer_types_key, [layer_types[i] for i in kept])
        for idx, block in enumerate(blocks):
            for module in block.modules():
                if isinstance(getattr(module, "layer_idx", None), int):
                    module.layer_idx = idx
        setattr(model.config, self.layers_key, len(blocks))

    def self_attention(self, block: nn.Module) -> nn.Module:
        """The block's self-attention module."""
        return get_path(block, self.attention)

    def qkv(self, block: nn.Module) -> dict[str, nn.Module]:
        """``{"query", "key", "value"}`` projections of the block, or ``{"qkv": fused}`` (output [q; k; v])."""
        attn = self.self_attention(block)
        if self.qkv_fused is not None:
            return {FUSED_QKV: get_path(attn, self.qkv_fused)}
        paths = (self.query, self.key, self.value)
        return {role: get_path(attn, path) for role, path in zip(QKV_ROLES, paths, strict=True)}

    def attention_width(self, block: nn.Module) -> int:
        """The block's query width, heads x head size (a third of a fused [q; k; v] projection)."""
        qkv = self.qkv(block)
        if FUSED_QKV in qkv:
            return out_features(qkv[FUSED_QKV]) // 3
        return out_features(qkv["query"])

    def attention_heads(self, block: nn.Module) -> int:
        """The block's query head count: the attribute forward reads, else its width over the head size."""
        attn = self.self_attention(block)
        if self.heads_attr is not None:
            return int(getattr(attn, self.heads_attr))
        return self.attention_width(block) // int(getattr(attn, self.head_size_attr))

    def attention_extra(self, block: nn.Module) -> list[nn.Module]:
        """Projections to the heads besides Q/K/V that this block has (DeBERTa's position projections)."""
        attn = self.self_attention(block)
        return [getattr(attn, name) for name in self.qkv_extra if getattr(attn, name, None) is not None]

    def attention_output(self, block: nn.Module) -> nn.Module:
        """The block's attention output projection (heads -> hidden)."""
        return get_path(block, self.attn_out)

    def fused_qkv_sizes(self, config: Any, width: int) -> tuple[int, int, int]:
        """How a fused projection of output ``width`` splits into q, k, v: thirds, or heads x head dim for q and
        KV heads x head dim for k and v under grouped-query attention (read from ``config``)."""
        w = self.widths(config)
        if w.kv_heads == w.heads and width % 3 == 0:
            return width // 3, width // 3, width // 3
        sizes = (w.heads * w.head_dim, w.kv_heads * w.head_dim, w.kv_heads * w.head_dim)
        if sum(sizes) != width:
            raise ModelError(f"a fused query/key/value of width {width} does not split into {sizes}",
                             "the config's heads/KV heads/head size disagree with the model")
        return sizes

    def ffn(self, block: nn.Module) -> dict[str, nn.Module]:
        """The block's FFN projections: ``in``, ``out`` and, for a gated FFN kept apart, ``gate``."""
        parts = {"in": get_path(block, self.ffn_in), "out": get_path(block, self.ffn_out)}
        if self.ffn_gate is not None:
            parts["gate"] = get_path(block, self.ffn_gate)
        return parts

    def ffn_width(self, block: nn.Module) -> int:
        """The block's FFN neuron count (half the up projection's outputs for a fused GLU)."""
        width = out_features(get_path(block, self.ffn_in))
        return width // 2 if self.ffn_glu_fused else width

    def attention_dropouts(self, model: nn.Module) -> list[tuple[Any, str]]:
        """(owner, attribute) of every attention-probability dropout: an ``nn.Dropout``'s ``p``, or a float."""
        if self.attn_dropout is None:
            return []
        parent_path, _, name = self.attn_dropout.rpartition(".")
        found = []
        for block in self.blocks(model):
            owner = get_path(self.self_attention(block), parent_path) if parent_path else self.self_attention(block)
            target = getattr(owner, name)
            found.append((target, "p") if hasattr(target, "p") else (owner, name))
        return found

    def set_attention_widths(self, attn: nn.Module, heads: int, head_size: int) -> None:
        """Set the head count, head size, inner width and scaling of one self-attention module (forward reads
        these; pruning leaves them stale)."""
        for attr, value in ((self.heads_attr, heads), (self.head_size_attr, head_size),
                            (self.all_head_attr, heads * head_size)):
            if attr is not None:
                setattr(attn, attr, value)
        if self.scaling_attr is not None and hasattr(attn, self.scaling_attr):
            setattr(attn, self.scaling_attr, head_size**-0.5)

    # ---- embeddings and task heads -----------------------------------------------------------------------

    def embedding_module(self, model: nn.Module) -> nn.Module:
        """The module holding the embedding tables (the word table itself when the family has no such module)."""
        return get_path(model.base_model, self.embeddings or self.word_embeddings)

    def embedding_tables(self, model: nn.Module) -> dict[str, nn.Module]:
        """The family's embedding tables by role: ``word``, and ``position``/``token_type`` where it has them."""
        paths = {"word": self.word_embeddings, "position": self.position_embeddings,
                 "token_type": self.token_type_embeddings}
        base = model.base_model
        tables = {role: get_path(base, path) for role, path in paths.items() if path is not None}
        return {role: table for role, table in tables.items() if table is not None}  # deberta: None when unused

    def embedding_width(self, model: nn.Module) -> int:
        """The width of the word embeddings (below the hidden width when the family factorises them)."""
        return int(self.embedding_tables(model)["word"].weight.shape[1])

    def embedding_projection_module(self, model: nn.Module) -> nn.Module | None:
        """The Linear from the embedding width to the hidden width, when this model has one."""
        if self.embedding_projection is None:
            return None
        parent, _, name = self.embedding_projection.rpartition(".")
        owner = get_path(model.base_model, parent) if parent else model.base_model
        return getattr(owner, name, None)

    def shared_modules(self, model: nn.Module) -> dict[str, nn.Module]:
        """Modules outside the blocks that every block reads, by path (those this model has)."""
        found = {}
        for path in self.shared:
            parent, _, name = path.rpartition(".")
            owner = get_path(model.base_model, parent) if parent else model.base_model
            if getattr(owner, name, None) is not None:
                found[path] = getattr(owner, name)
        return found

    def square_head_modules(self, model: nn.Module) -> list[nn.Module]:
        """Task-head Linear layers mapping hidden -> hidden, whose outputs must shrink with the hidden width."""
        from torch import nn

        return [m for name, m in model.named_modules()
                if isinstance(m, nn.Linear) and any(name == s or name.endswith("." + s) for s in self.square_heads)]

    # ---- config ------------------------------------------------------------------------------------------

    def widths(self, config: Any) -> Widths:
        """The widths ``config`` declares, read through this family's keys."""
        hidden, heads = int(getattr(config, self.hidden_key)), int(getattr(config, self.heads_key))
        kv_heads = getattr(config, self.kv_heads_key, None) if self.kv_heads_key else None
        head_dim = getattr(config, self.head_dim_key, None) if self.head_dim_key else None
        ffn = getattr(config, self.ffn_key)
        if ffn is None and self.ffn_default_multiple:
            ffn = self.ffn_default_multiple * hidden
        return Widths(layers=int(getattr(config, self.layers_key)), hidden=hidden, heads=heads,
                      kv_heads=int(kv_heads or heads), head_dim=int(head_dim or hidden // heads), ffn=int(ffn))

    def set_widths(self, config: Any, *, layers: int | None = None, hidden: int | None = None,
                   heads: int | None = None, kv_heads: int | None = None, head_dim: int | None = None,
                   ffn: int | None = None) -> None:
        """Write the given widths into ``config`` under this family's keys (``None``: leave that key alone)."""
        keys = ((self.layers_key, layers), (self.hidden_key, hidden), (self.heads_key, heads),
                (self.kv_heads_key, kv_heads), (self.head_dim_key, head_dim), (self.ffn_key, ffn),
                *((alias, hidden) for alias in self.hidden_aliases))
        for key, value in keys:
            if value is None:
                continue
            if key is None:
                raise ModelError(f"the {self.model_type} config has no key for this width",
                                 "set only the widths the family's config holds")
            setattr(config, key, value)

    @property
    def has_qkv(self) -> bool:
        """Q/K/V can be captured per layer (separate projections, or a fused [q; k; v] split in three)."""
        return self.query is not None or self.qkv_fused is not None


FAMILIES: Registry[Family] = Registry("model family")

# model types with no entry yet whose Q/K/V are fused or interleaved: the name-guessing capture cannot split them
_UNREGISTERED_FUSED_QKV = frozenset({"gpt2", "gpt_neox", "bloom", "falcon", "albert"})


def register_family(family: Family) -> Family:
    """Add ``family`` to ``FAMILIES`` under its ``model_type`` (ValueError if one is already there)."""
    return FAMILIES.register(family.model_type, family)


def _model_type(model_or_config: Any) -> str | None:
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    return model_type if isinstance(model_type, str) else None


def find_family(model_or_config: Any) -> Family | None:
    """The registered family of a model or config (by ``model_type``), or None."""
    model_type = _model_type(model_or_config)
    return FAMILIES.get(model_type) if model_type in FAMILIES else None


# model types that cannot have an entry, and why (the one-line error says so instead of "unknown")
UNSUPPORTED = {
    "albert": "its layers share one set of weights, so no layer can be kept, cut or copied alone",
}


def _names(causal: bool) -> list[str]:
    return sorted(name for name, family in FAMILIES.items() if family.causal == causal)


def family_of(model_or_config: Any, purpose: str = "this step") -> Family:
    """The registered family of a model or config; ModelError naming the supported ones when there is none."""
    family = find_family(model_or_config)
    if family is None:
        model_type = _model_type(model_or_config)
        why = f" ({UNSUPPORTED[model_type]})" if model_type in UNSUPPORTED else ""
        raise ModelError(f"{purpose} does not support the '{model_type}' architecture{why}",
                         f"use an encoder of type {', '.join(_names(causal=False))} (or a causal LM of type "
                         f"{', '.join(_names(causal=True))} with --task causal-lm), or register a Family for it "
                         "in distill/core/families")
    return family


def supports_qkv(config: Any) -> bool:
    """True when per-layer query/key/value can be captured from a model of ``config`` (MiniLMv2 relations).

    A registered family answers from its entry; an unregistered model type is assumed to have separate,
    guessable Q/K/V unless it is one of the known fused ones.
    """
    family = find_family(config)
    if family is not None:
        return family.has_qkv
    return _model_type(config) not in _UNREGISTERED_FUSED_QKV


def out_features(module: Any) -> int:
    """The output width of an ``nn.Linear`` or of a transformers ``Conv1D`` (GPT-2: ``nf``, weight (in, out))."""
    width = getattr(module, "out_features", None)
    return int(width if width is not None else module.nf)


def get_path(root: Any, path: str) -> Any:
    """Follow a dotted attribute path (``"attention.self"``) from ``root``; ModelError if a step is missing."""
    module = root
    for part in path.split("."):
        if not hasattr(module, part):
            raise ModelError(f"{type(root).__name__} has no '{path}' module (stopped at '{part}')",
                             "the Family entry in distill/core/families does not match this model class")
        module = getattr(module, part)
    return module


def set_path(root: Any, path: str, module: Any) -> None:
    """Replace the module at dotted ``path`` below ``root`` (ModelError if the parent path is missing)."""
    parent, _, last = path.rpartition(".")
    setattr(get_path(root, parent) if parent else root, last, module)

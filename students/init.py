"""Initialise a student from its teacher: embeddings plus every k-th encoder layer, when widths match.

Blocks and embedding tables are found through the model's family (``distill.core.families``); a model of an
unregistered but BERT-shaped family (ELECTRA, XLM-R, CamemBERT, ...) is read with the BERT layout, as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from distill.core.errors import ConfigError, UnknownNameError
from distill.core.families import FAMILIES, Family, Widths, find_family

INIT_CHOICES = ("auto", "random", "teacher-layers", "teacher-embeddings", "teacher-pruned")
LAYER_STRATEGIES = ("uniform", "first-k", "last-k")


@dataclass
class InitReport:
    """Which teacher layers were copied into which student layers (empty for random init)."""

    strategy: str
    layer_pairs: list[tuple[int, int]] = field(default_factory=list)
    copied_embeddings: bool = False


def parse_layer_selection(text: str | list[int] | tuple[int, ...]) -> str | list[int]:
    """``uniform``, ``first-k``, ``last-k``, or an explicit list of 0-based teacher layers (``"0,2,5"``)."""
    if isinstance(text, (list, tuple)):
        items = list(text)
    elif str(text).strip() in LAYER_STRATEGIES:
        return str(text).strip()
    else:
        items = [p.strip() for p in str(text).split(",") if p.strip()]
    fix = f"use {', '.join(LAYER_STRATEGIES)} or 0-based teacher layers in order, e.g. 0,2,5"
    if not items or not all(str(i).lstrip("-").isdigit() for i in items):
        raise ConfigError(f"--layer-selection '{text}' is not a strategy or a list of layers", fix)
    layers = [int(i) for i in items]
    if any(i < 0 for i in layers) or layers != sorted(set(layers)):
        raise ConfigError(f"--layer-selection {','.join(map(str, layers))} has a negative, repeated or "
                          "out-of-order layer", fix)
    return layers


def select_layers(n_student: int, n_teacher: int, strategy: str | list[int] = "uniform") -> list[int]:
    """0-based teacher layers for each student layer.

    ``uniform``: every k-th, ending at the teacher's last layer; ``first-k``/``last-k``: the teacher's first/last
    ``n_student`` layers; a list: exactly those layers (one per student layer).
    """
    strategy = parse_layer_selection(strategy)
    if isinstance(strategy, list):
        if len(strategy) != n_student:
            raise ConfigError(f"--layer-selection lists {len(strategy)} teacher layers for a student of {n_student}",
                              f"list exactly {n_student} layers, or use uniform, first-k or last-k")
        if strategy[-1] >= n_teacher:
            raise ConfigError(f"--layer-selection names layer {strategy[-1]} of a teacher with {n_teacher} layers",
                              f"use layers 0..{n_teacher - 1}")
        return strategy
    if n_student > n_teacher and strategy != "uniform":
        raise ConfigError(f"--layer-selection {strategy} needs a student with at most the teacher's {n_teacher} "
                          f"layers, not {n_student}", "use uniform, or a shallower student")
    if strategy == "first-k":
        return list(range(n_student))
    if strategy == "last-k":
        return list(range(n_teacher - n_student, n_teacher))
    return [max(0, round((i + 1) * n_teacher / n_student) - 1) for i in range(n_student)]


def family_layers(family: Family | None, n_student: int, n_teacher: int,
                  strategy: str | list[int] = "uniform") -> list[int]:
    """``select_layers``, except that a family whose first block differs (ModernBERT's has no attention norm)
    takes the teacher's first block first under a strategy (an explicit list is kept as given)."""
    layers = select_layers(n_student, n_teacher, strategy)
    if family is not None and family.first_block_norm is not None and isinstance(strategy, str) and layers[0]:
        layers[0] = 0
    return layers


def _blocks(model) -> list[torch.nn.Module]:
    """The model's transformer blocks (empty when it keeps none where its family, or BERT, keeps them)."""
    family = find_family(model)
    if family is not None:
        return family.blocks(model)
    encoder = getattr(model.base_model, "encoder", None)  # unregistered: where BERT-shaped families keep them
    return list(getattr(encoder, "layer", None) or [])


def _embeddings(model) -> tuple[torch.nn.Module, dict[str, torch.nn.Module]]:
    """The module holding the embedding tables, and the tables by role (``word``, ``position``, ``token_type``)."""
    family = find_family(model)
    if family is not None:
        return family.embedding_module(model), family.embedding_tables(model)
    module = model.base_model.embeddings  # unregistered: BERT's names
    tables = {role: getattr(module, f"{role}_embeddings", None) for role in ("word", "position", "token_type")}
    return module, {role: table for role, table in tables.items() if table is not None}


def _block_state(block: torch.nn.Module, family: Family | None) -> dict[str, torch.Tensor]:
    """A block's tensors, without the norm its family leaves out of the first block (it may be on one side)."""
    state = block.state_dict()
    skip = f"{family.first_block_norm}." if family is not None and family.first_block_norm else None
    return {k: v for k, v in state.items() if skip is None or not k.startswith(skip)}


def _same_shapes(a: torch.nn.Module, b: torch.nn.Module, family: Family | None = None) -> bool:
    sa, sb = _block_state(a, family), _block_state(b, family)
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape for k in sa)


def widths_match(student, teacher) -> bool:
    """True when a teacher layer can be loaded into a student layer as is (the same block tensors and shapes:
    also across families with BERT's blocks, e.g. a BERT student of a RoBERTa teacher)."""
    s_layers, t_layers = _blocks(student), _blocks(teacher)
    family = find_family(student)
    return bool(s_layers) and bool(t_layers) and _same_shapes(s_layers[-1], t_layers[-1], family)


def _copy_block(s_block: torch.nn.Module, t_block: torch.nn.Module, family: Family | None) -> None:
    """Load a teacher block into a student block (a first-block norm on one side only keeps the student's)."""
    s_block.load_state_dict(_block_state(t_block, family), strict=family is None or not family.first_block_norm)


def init_from_teacher(student, teacher, strategy: str = "auto",
                      layer_selection: str | list[int] = "uniform") -> InitReport:
    """Copy embeddings and selected layers (``teacher-layers``, layers chosen by ``layer_selection``), project the
    teacher's embeddings into a narrower student (``teacher-embeddings``), or keep random weights (``random``).

    ``auto`` copies layers when the widths match and projects the embeddings otherwise. ``teacher-pruned`` (a
    student pruned out of the teacher) is built by ``distill.pipeline``, not here.
    """
    if strategy not in INIT_CHOICES:
        raise UnknownNameError("--init", strategy, INIT_CHOICES)
    if strategy == "teacher-pruned":
        raise ConfigError("--init teacher-pruned builds the student by pruning the teacher, not by initialising one",
                          "call distill.pipeline (distill run --init teacher-pruned)")
    if strategy == "random":
        return InitReport("random")
    if strategy == "teacher-embeddings" or (strategy == "auto" and not widths_match(student, teacher)):
        return _project_embeddings(student, teacher)
    if not widths_match(student, teacher):
        raise ConfigError("--init teacher-layers needs the student's hidden size, heads and FFN width to equal "
                          "the teacher's", "use --init random, or a student of the teacher's width")
    s_layers, t_layers = _blocks(student), _blocks(teacher)
    family = find_family(student)
    pairs = list(enumerate(family_layers(family, len(s_layers), len(t_layers), layer_selection)))
    with torch.no_grad():
        for s, t in pairs:
            _copy_block(s_layers[s], t_layers[t], family)
        copied = _copy_embeddings(_embeddings(student)[0], _embeddings(teacher)[0])
        if family is not None:
            _copy_outside_blocks(student, teacher, family)
    return InitReport("teacher-layers", pairs, copied)


def _copy_outside_blocks(student, teacher, family: Family) -> None:
    """Copy what every block reads besides the embeddings when shapes match: DeBERTa's relative position table
    and its norm, ELECTRA's embedding projection, ModernBERT's final norm."""
    paths = [*family.shared, *(p for p in (family.final_norm, family.embedding_projection) if p)]
    for path in paths:
        s_mod, t_mod = _optional(student.base_model, path), _optional(teacher.base_model, path)
        if s_mod is not None and t_mod is not None and _same_shapes(s_mod, t_mod):
            s_mod.load_state_dict(t_mod.state_dict())


def _optional(root, path: str):
    for part in path.split("."):
        root = getattr(root, part, None)
        if root is None:
            return None
    return root


def _copy_embeddings(student_emb, teacher_emb) -> bool:
    """Copy every embedding tensor whose shape matches (position tables may be shorter in the student)."""
    t_state = teacher_emb.state_dict()
    copied = False
    for name, tensor in student_emb.state_dict().items():
        src = t_state.get(name)
        if src is None or src.ndim != tensor.ndim or src.shape[1:] != tensor.shape[1:]:
            continue
        n = min(src.shape[0], tensor.shape[0]) if src.ndim else None
        if src.ndim == 0:
            tensor.copy_(src)
        else:
            tensor[:n].copy_(src[:n])
        copied = True
    return copied


def _project_embeddings(student, teacher) -> InitReport:
    """Initialise the student's embedding tables with the teacher's, projected on their top principal directions
    (a narrower student) or lifted isometrically into the wider space (a wider one).

    A narrow student then starts from the teacher's lexical geometry instead of noise; on SST-2 with 2,000
    examples this took a random ``tiny`` student from 73% to 78% dev accuracy (experiments/README.md). A wider
    student (``small`` from a 384-wide teacher) gets the teacher's vectors through a random matrix with orthonormal
    rows, which keeps every length and inner product.
    """
    s_tables, t_tables = _embeddings(student)[1], _embeddings(teacher)[1]
    words = t_tables["word"].weight.detach().float()
    s_words = s_tables["word"].weight
    width = s_words.shape[1]
    if words.shape[0] != s_words.shape[0]:
        return InitReport("random")
    mean = words.mean(0, keepdim=True)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)  # pca_lowrank is randomised: fix it so the init does not depend on the global seed state
    if width <= min(words.shape):
        _, _, basis = torch.pca_lowrank(words - mean, q=width, center=False)
    elif width <= words.shape[1]:  # fewer words than dimensions (a tiny vocabulary): any orthonormal columns
        basis = torch.linalg.qr(torch.randn(words.shape[1], width))[0]
    else:
        basis = torch.linalg.qr(torch.randn(width, words.shape[1]))[0].T  # (teacher width, width), B Bᵀ = I
    torch.random.set_rng_state(generator_state)
    with torch.no_grad():
        s_words.copy_((words - mean) @ basis)
        for role in ("position", "token_type"):
            src, dst = t_tables.get(role), s_tables.get(role)
            if src is not None and dst is not None and src.weight.shape[1] == words.shape[1]:
                n = min(src.weight.shape[0], dst.weight.shape[0])
                dst.weight[:n].copy_(src.weight[:n].float() @ basis)
    return InitReport("teacher-embeddings", copied_embeddings=True)


@dataclass
class PrunedShape:
    """How to cut a teacher down to a preset: the teacher layers kept and the heads, FFN and hidden width left.

    The head size stays the teacher's, so the student gets ``hidden // head_size`` heads (not the preset's count).
    ``hidden`` is the preset's, except that a cut keeps at least ``students.presets.MIN_CUT_HIDDEN`` channels of a
    teacher that wide (``cut_hidden``): all-MiniLM-L6's H384 stays whole for ``mini`` (H256).
    """

    layers: list[int]
    heads: int
    hidden: int
    ffn: int
    heads_ratio: float
    ffn_ratio: float


def pruned_shape(preset, teacher_config, layer_selection: str | list[int] = "uniform") -> PrunedShape:
    """The cut from ``teacher_config`` to ``preset``'s layers, hidden and FFN widths; ConfigError if it cannot fit.

    Widths are read through the teacher's family (DistilBERT's ``dim``/``n_layers``, ...), BERT's names otherwise.
    """
    family = find_family(teacher_config)
    w = family.widths(teacher_config) if family is not None else _bert_widths(teacher_config)
    t_layers, t_hidden, t_heads, t_ffn, head_size = w.layers, w.hidden, w.heads, w.ffn, w.head_dim
    name = f"student {preset.describe()}"
    if preset.hidden > t_hidden or preset.ffn > t_ffn or preset.layers > t_layers:
        raise ConfigError(f"--init teacher-pruned cannot grow the teacher (L{t_layers}/H{t_hidden}/FFN{t_ffn}) into "
                          f"{name}", "pick a preset no larger than the teacher in layers, hidden and FFN width")
    if preset.hidden % head_size:
        raise ConfigError(f"--init teacher-pruned keeps the teacher's head size {head_size}, which does not divide "
                          f"the {name} hidden width {preset.hidden}",
                          f"pick a preset whose hidden width is a multiple of {head_size}")
    hidden = _kept_hidden(preset.hidden, t_hidden, head_size)
    heads = hidden // head_size
    layers = family_layers(family, preset.layers, t_layers, layer_selection)
    if family is not None and family.first_block_norm and layers[0] != 0:
        raise ConfigError(f"--init teacher-pruned keeps the teacher's first layer for a {family.model_type} teacher "
                          f"(its first block has no {family.first_block_norm}), not layers {layers}",
                          "list layer 0 first in --layer-selection, or use uniform, first-k or last-k")
    return PrunedShape(layers=layers, heads=heads,
                       hidden=hidden, ffn=preset.ffn, heads_ratio=1 - heads / t_heads,
                       ffn_ratio=1 - preset.ffn / t_ffn)


def _kept_hidden(preset_hidden: int, teacher_hidden: int, head_size: int) -> int:
    """The residual width the cut leaves: the preset's, or ``students.presets.cut_hidden``'s floor rounded up to
    whole heads (never above the teacher's width)."""
    from students.presets import cut_hidden

    hidden = cut_hidden(preset_hidden, teacher_hidden)
    if hidden == preset_hidden:
        return hidden
    return min(teacher_hidden, -(-hidden // head_size) * head_size)


_BLOCK_FIELDS = ("layers", "attention", "query", "key", "value", "qkv_fused", "qkv_extra", "attn_out", "ffn_in",
                 "ffn_gate", "ffn_glu_fused", "ffn_out", "norms", "first_block_norm")


def same_blocks(a: Family | None, b: Family | None) -> bool:
    """Whether blocks of families ``a`` and ``b`` are the same modules, so one's layers load into the other's (a
    BERT student of a RoBERTa, XLM-R or ELECTRA teacher)."""
    return a is not None and b is not None and all(getattr(a, f) == getattr(b, f) for f in _BLOCK_FIELDS)


def _bert_widths(config) -> Widths:
    """Widths of an unregistered model under BERT's config names (AttributeError when it has none)."""
    hidden, heads = int(config.hidden_size), int(config.num_attention_heads)
    return Widths(layers=int(config.num_hidden_layers), hidden=hidden, heads=heads, kv_heads=heads,
                  head_dim=hidden // heads, ffn=int(config.intermediate_size))


def resolve_auto(preset, teacher_config, layer_selection: str | list[int] = "uniform",
                 family: str | None = None) -> str:
    """What ``--init auto`` means for a preset student: ``teacher-layers`` when its widths equal the teacher's,
    ``teacher-pruned`` when the preset fits inside the teacher (head size kept) and keeps at least half its hidden
    width, else ``teacher-embeddings`` (projected onto fewer dimensions, or lifted into more).

    A student of another ``family`` than the teacher's takes its layers only when both families' blocks are the
    same modules (bert, roberta, xlm-roberta, electra), and is never cut from the teacher (that keeps the
    teacher's family).

    Measured on SST-2 with all-MiniLM-L6 (experiments/README.md): ``mini`` (H256 of 384) cut from the teacher
    matched it (0.838 vs 0.837 after 2 epochs on 67k rows) where projected embeddings gave 0.672 after one epoch;
    ``tiny`` (H128) cut from it lost to projected embeddings (0.742 vs 0.774, 4,000 rows): a cut to a third of
    the width destroys more than it keeps. The cut itself keeps ``students.presets.MIN_CUT_HIDDEN`` channels of a
    teacher that wide (``pruned_shape``): on STS-B (2,000 rows) ``mini`` cut to H256 reached Pearson 0.21, cut with
    H384 kept 0.76 of the teacher's 0.80.
    """
    try:
        teacher_family = find_family(teacher_config)
        own = family is None or family == getattr(teacher_config, "model_type", None)
        w = teacher_family.widths(teacher_config) if teacher_family is not None else _bert_widths(teacher_config)
        layers_fit = own or same_blocks(FAMILIES.get(family), teacher_family)
        if (preset.hidden, preset.heads, preset.ffn) == (w.hidden, w.heads, w.ffn) and preset.layers <= w.layers:
            if layers_fit:
                return "teacher-layers"
        elif own:
            pruned_shape(preset, teacher_config, layer_selection)
            if 2 * preset.hidden >= w.hidden:
                return "teacher-pruned"
    except (ConfigError, AttributeError, TypeError, KeyError):  # no fit, no BERT-style width names, no family
        pass
    return "teacher-embeddings"


def cut_presets(teacher_config, layer_selection: str | list[int] = "uniform") -> list[str]:
    """The presets ``--init auto`` would build from this teacher's own layers (copied or cut: ``resolve_auto``
    gives ``teacher-layers`` or ``teacher-pruned``), smallest first: what to suggest when a student whose layers
    started from scratch keeps too little of the teacher."""
    from students.presets import PRESETS

    found = [(name, preset) for name, preset in PRESETS.items()
             if resolve_auto(preset, teacher_config, layer_selection) in ("teacher-layers", "teacher-pruned")]
    return [name for name, _ in sorted(found, key=lambda item: (item[1].layers * item[1].hidden, item[1].ffn))]

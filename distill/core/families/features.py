"""What each family supports, read from its entry: the distillation terms, the pruning granularities and INT8.

``loss_term_support(config)`` answers for one model (the objective turns a term off with the reason);
``feature_rows()`` gives one row per registered family for the README and ``distill presets``, and
``features_markdown()`` renders them. Nothing here is written by hand per family: a new entry gets its row.
Every family can also prune heads without the hidden width; such a model reloads through the widths file
(``compress.load_pruned``), not plain ``from_pretrained``.
"""

from __future__ import annotations

from typing import Any

from distill.core.families.family import FAMILIES, Family, find_family, supports_qkv

FEATURE_TERMS = ("hidden", "embedding", "cosine", "attention", "relation")
GRANULARITIES = ("heads", "ffn", "hidden", "layers")
NO_QKV = "it has no query/key/value projections to capture"
FEATURE_COLUMNS = ("family", "distil terms", "pruning", "INT8", "notes")


def loss_term_support(config: Any) -> dict[str, str | None]:
    """For a model of ``config``: each feature term (hidden, embedding, cosine, attention, relation) -> None when
    its family gives what the term reads, else why not (one clause, for "--X-weight set to 0: <reason>").

    Hidden states are every encoder's; attention maps need eager attention (``Family.attention_maps``);
    relations need Q/K/V captured per layer (``supports_qkv``). An unregistered model is assumed BERT-like.
    """
    family = find_family(config)
    support: dict[str, str | None] = dict.fromkeys(FEATURE_TERMS)
    name = getattr(config, "model_type", "this model")
    if family is not None and family.attention_maps:
        support["attention"] = f"{name}: {family.attention_maps}"
    if not supports_qkv(config):
        support["relation"] = f"{name}: {NO_QKV}"
    return support


def pruning_support(family: Family) -> dict[str, str | None]:
    """Each pruning granularity -> None when the family supports it, else why not."""
    return {
        "heads": None if family.has_qkv else NO_QKV,
        "ffn": None,
        "hidden": None,
        "layers": None,
    }


def family_notes(family: Family) -> list[str]:
    """How the family differs where it matters to distillation, pruning or export (from its entry)."""
    notes = []
    if family.qkv_fused is not None:
        notes.append("fused Q/K/V: split in thirds for relations; heads cut by slicing")
    if family.ffn_glu_fused:
        notes.append("GLU FFN: input and gate rows cut in pairs")
    if family.ffn_gate is not None:
        notes.append("gated FFN: gate cut with the up projection")
    if family.layer_types_key is not None:
        notes.append(f"per-layer attention kinds ({family.layer_types_key}) follow the layers kept")
    if family.first_block_norm is not None:
        notes.append(f"layer 0 (no {family.first_block_norm}) is always kept")
    if family.embedding_projection is not None:
        notes.append("embeddings may be narrower than hidden (lifted by a projection)")
    if family.shared:
        notes.append("relative-position table (shared by all layers) cut with hidden")
    if family.position_offset:
        notes.append(f"positions start at {family.position_offset}")
    if not family.token_types:
        notes.append("no token types")
    return notes


def feature_rows() -> list[dict[str, str]]:
    """One row per registered family (sorted): ``family``, ``distil terms``, ``pruning``, ``INT8``, ``notes``."""
    rows = []
    for name in sorted(FAMILIES.names()):
        family = FAMILIES.get(name)
        config = _ConfigOf(family)
        terms = loss_term_support(config)
        prune = pruning_support(family)
        rows.append({
            "family": name,
            "distil terms": _listed(["ce", "kd"], terms),
            "pruning": _listed([], prune),
            "INT8": "yes" if family.int8 is None else f"no: {family.int8}",
            "notes": "; ".join(family_notes(family)),
        })
    return rows


def features_markdown(rows: list[dict[str, str]] | None = None) -> str:
    """``feature_rows()`` as a Markdown table (for the README)."""
    rows = feature_rows() if rows is None else rows
    lines = ["| " + " | ".join(FEATURE_COLUMNS) + " |", "|" + "---|" * len(FEATURE_COLUMNS)]
    lines += ["| " + " | ".join(row[c] for c in FEATURE_COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _listed(always: list[str], support: dict[str, str | None]) -> str:
    """``a, b, c`` for the supported names, then ``(no x: why)`` for the others."""
    yes = always + [k for k, why in support.items() if why is None]
    no = [f"no {k}: {why}" for k, why in support.items() if why is not None]
    return ", ".join(yes) + (f" ({'; '.join(no)})" if no else "")


class _ConfigOf:
    """The only thing ``loss_term_support`` reads from a config: its model type."""

    def __init__(self, family: Family) -> None:
        self.model_type = family.model_type

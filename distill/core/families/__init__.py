"""Model-family adapters: one registered ``Family`` per ``config.model_type`` says where the family keeps its
blocks, self-attention, Q/K/V (separate or fused), attention output, FFN (with its gate), norms and embeddings,
which config keys hold its widths, and what it supports. Students, the objective's Q/K/V capture, pruning and
export use it instead of guessing module names.

- ``family.py``: the ``Family`` dataclass and its verbs, ``FAMILIES``, ``find_family``/``family_of`` (one line
  naming the supported families, and why for known-unsupported ones such as ALBERT), ``supports_qkv``.
- ``encoders.py``: bert, roberta, xlm-roberta, electra, distilbert, deberta-v2 (v2/v3), modernbert.
- ``features.py``: what each family supports, generated from the entries: ``loss_term_support(config)`` for the
  objective, ``feature_rows()``/``features_markdown()`` for the README and ``distill presets``.

Adding a family is one entry plus tests: ``register_family(Family(model_type=..., ...))`` in ``encoders.py`` (or
a ``decoders.py``), then a tiny model of it in ``tests/family_factories.py``, which tests/families runs through
every check (paths, Q/K/V capture, students, pruning round trips, INT8). What a llama entry (issue 17:
grouped-query attention, gated MLP, rotary positions, a final norm) fills in, checked on a tiny LlamaForCausalLM
by tests/distill/test_families.py::

    Family(model_type="llama", layers="layers", attention="self_attn",
           query="q_proj", key="k_proj", value="v_proj", attn_out="self_attn.o_proj",
           ffn_in="mlp.up_proj", ffn_gate="mlp.gate_proj", ffn_out="mlp.down_proj",
           attn_dropout="attention_dropout",  # a float attribute, not an nn.Dropout
           norms=("input_layernorm", "post_attention_layernorm"), final_norm="norm",
           embeddings=None, word_embeddings="embed_tokens",  # no position table: rotary
           heads_attr=None, head_size_attr="head_dim", all_head_attr=None, kv_groups_attr="num_key_value_groups",
           kv_heads_key="num_key_value_heads", head_dim_key="head_dim", layer_types_key="layer_types",
           causal=True)

GPT-2 (fused Conv1D Q/K/V) is ``qkv_fused="c_attn"`` with ``layers="h"``, ``attention="attn"``,
``attn_out="attn.c_proj"``, ``ffn_in="mlp.c_fc"``, ``ffn_out="mlp.c_proj"``, ``word_embeddings="wte"``,
``position_embeddings="wpe"`` and the ``n_layer``/``n_embd``/``n_head``/``n_inner`` keys (``n_inner`` None means
4 x hidden: ``ffn_default_multiple=4``). Pruning heads of a fused projection (``compress.prune.fused``) assumes
ModernBERT's nn.Linear [q; k; v]; a Conv1D one needs its own cut.
"""

from __future__ import annotations

from typing import Any

import distill.core.families.decoders as decoders  # noqa: F401  (registers the decoder families)
import distill.core.families.encoders as encoders  # noqa: F401  (registers the encoder families)
from distill.core.families.family import FAMILIES as FAMILIES
from distill.core.families.family import FUSED_QKV as FUSED_QKV
from distill.core.families.family import QKV_ROLES as QKV_ROLES
from distill.core.families.family import UNSUPPORTED as UNSUPPORTED
from distill.core.families.family import Family as Family
from distill.core.families.family import Widths as Widths
from distill.core.families.family import family_of as family_of
from distill.core.families.family import find_family as find_family
from distill.core.families.family import get_path as get_path
from distill.core.families.family import register_family as register_family
from distill.core.families.family import set_path as set_path
from distill.core.families.family import supports_qkv as supports_qkv
from distill.core.families.features import FEATURE_COLUMNS as FEATURE_COLUMNS
from distill.core.families.features import feature_rows as feature_rows
from distill.core.families.features import features_markdown as features_markdown
from distill.core.families.features import loss_term_support as loss_term_support

ArchSpec = Family  # the name before the families package; kept for callers of arch_of


def arch_of(model: Any) -> Family:
    """The family of ``model`` for structured pruning; ModelError naming the supported families otherwise."""
    return family_of(model, "structured pruning")


def layers_of(model: Any, family: Family | None = None) -> list:
    """The model's transformer blocks, in order (``family`` defaults to the model's own)."""
    return (family or family_of(model)).blocks(model)

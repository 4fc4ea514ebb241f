"""Every encoder family's entry on a tiny model shaped like its checkpoint (tests/family_factories.py): paths and
widths resolve, Q/K/V capture gives the tokens' query/key/value (ModernBERT's fused Wqkv split in thirds,
DeBERTa's projections on their first call), eager attention gives usable maps, the features table comes from the
entries, and an unsupported family (ALBERT) is one line naming the supported ones."""

from __future__ import annotations

import pytest
import torch
from family_factories import FAMILY_NAMES, tiny_inputs, tiny_model

from distill.core.errors import ModelError
from distill.core.families import (
    FAMILIES,
    FUSED_QKV,
    family_of,
    feature_rows,
    features_markdown,
    loss_term_support,
    supports_qkv,
)
from distill.objective.capture import capture_qkv, eager_attention


def test_every_registered_family_has_a_tiny_model():
    # decoders (causal LMs) have theirs in tests/lm_factories.py, checked by tests/families/test_decoders.py
    encoders = [n for n in FAMILIES.names() if not FAMILIES.get(n).causal]
    assert sorted(FAMILY_NAMES) == sorted(encoders)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_entry_resolves_and_reads_the_widths(name):
    model = tiny_model(name)
    family = family_of(model)
    assert family.model_type == name == model.config.model_type
    w = family.widths(model.config)
    assert (w.layers, w.hidden, w.heads, w.head_dim, w.ffn) == (4, 64, 4, 16, 128)
    for block in family.blocks(model):
        assert family.attention_heads(block) == 4 and family.attention_width(block) == 64
        assert family.ffn_width(block) == 128 and family.attention_output(block).out_features == 64
        qkv = family.qkv(block)
        assert sorted(qkv) == ([FUSED_QKV] if family.qkv_fused else ["key", "query", "value"])
    tables = family.embedding_tables(model)
    assert tables["word"].weight.shape[0] == model.config.vocab_size
    assert ("position" in tables) == (name not in ("deberta-v2", "modernbert"))  # v3: relative; rotary
    assert ("token_type" in tables) == (name not in ("distilbert", "deberta-v2", "modernbert"))  # v3: none
    assert family.square_head_modules(model), "the task head's hidden -> hidden layer"
    assert len(family.attention_dropouts(model)) == 4
    assert supports_qkv(model.config)


def test_factorised_embeddings_and_shared_tables_are_found():
    electra, deberta = tiny_model("electra"), tiny_model("deberta-v2")
    e = family_of(electra)
    assert e.embedding_width(electra) == 32 and e.embedding_projection_module(electra).out_features == 64
    d = family_of(deberta)
    assert d.embedding_projection_module(deberta) is None  # embedding_size == hidden: no projection
    assert sorted(d.shared_modules(deberta)) == ["encoder.LayerNorm", "encoder.rel_embeddings"]


def _projection_inputs(model, layer: int) -> dict[str, torch.Tensor]:
    """The hidden states entering ``layer``'s Q/K/V projections on their first call (a plain forward hook)."""
    family = family_of(model)
    seen: dict[str, torch.Tensor] = {}

    def keep(role: str):
        def hook(module, args, output) -> None:
            seen.setdefault(role, args[0])
        return hook

    handles = [module.register_forward_hook(keep(role))
               for role, module in family.qkv(family.blocks(model)[layer]).items()]
    with torch.no_grad():
        model(**tiny_inputs(model.config.model_type))
    for handle in handles:
        handle.remove()
    return seen


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_qkv_capture_gives_the_tokens_query_key_value(name):
    model = tiny_model(name)
    family = family_of(model)
    inputs = tiny_inputs(name)
    with capture_qkv(model, [1, -1]) as captured, torch.no_grad():
        model(**inputs)
    assert sorted(captured) == [-1, 1]
    block = family.blocks(model)[1]
    x = next(iter(_projection_inputs(model, 1).values()))  # every projection reads the block's normed input
    with torch.no_grad():
        if family.qkv_fused:
            want = dict(zip(("query", "key", "value"), family.qkv(block)[FUSED_QKV](x).split(64, dim=-1),
                            strict=True))
        else:
            want = {role: module(x) for role, module in family.qkv(block).items()}
    for role in ("query", "key", "value"):
        assert captured[1][role].shape == (2, 12, 64)
        assert torch.allclose(captured[1][role], want[role], atol=1e-6), role


def test_deberta_capture_ignores_the_projection_of_the_position_table():
    """With share_att_key, query_proj/key_proj also run on the relative-position table after the tokens."""
    model = tiny_model("deberta-v2")
    calls = []
    query = family_of(model).qkv(model.deberta.encoder.layer[0])["query"]
    handle = query.register_forward_hook(lambda m, a, out: calls.append(tuple(out.shape)))
    with capture_qkv(model, [0]) as captured, torch.no_grad():
        model(**tiny_inputs("deberta-v2"))
    handle.remove()
    assert calls == [(2, 12, 64), (1, 32, 64)]  # tokens, then 2 x 16 position buckets
    assert captured[0]["query"].shape == captured[0]["key"].shape == (2, 12, 64)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_eager_attention_gives_maps_without_dropout(name):
    model = tiny_model(name, **({"attention_dropout": 0.3} if name == "modernbert" else {})).train()
    family = family_of(model)
    rates = [getattr(owner, attr) for owner, attr in family.attention_dropouts(model)]
    assert all(rate > 0 for rate in rates)
    with eager_attention(model):
        maps = model(**tiny_inputs(name), output_attentions=True).attentions
    assert len(maps) == 4 and maps[-1].shape == (2, 4, 12, 12)
    # training mode, yet every row sums to 1: no dropout on the probabilities while capturing
    assert torch.allclose(maps[-1].sum(-1), torch.ones(2, 4, 12), atol=1e-5)
    assert torch.allclose(maps[-1][0, :, :9, -3:], torch.zeros(4, 9, 3))  # tokens give padding no weight
    assert [getattr(owner, attr) for owner, attr in family.attention_dropouts(model)] == rates  # restored
    assert all(why is None for why in loss_term_support(model.config).values())


def test_modernbert_local_layers_attend_within_their_window():
    model = tiny_model("modernbert")  # local_attention 8: a token sees 4 on each side in sliding layers
    assert model.config.layer_types == ["full_attention", "sliding_attention", "sliding_attention", "full_attention"]
    with eager_attention(model), torch.no_grad():
        maps = model(**tiny_inputs("modernbert", pad=0), output_attentions=True).attentions
    assert maps[0][0, 0, 0, 11] > 0 and maps[1][0, 0, 0, 11] == 0


def test_unsupported_family_is_one_line_naming_the_supported_ones():
    from transformers import AlbertConfig

    with pytest.raises(ModelError) as err:
        family_of(AlbertConfig(hidden_size=32, num_attention_heads=4, intermediate_size=64), "structured pruning")
    line = err.value.line()
    assert "\n" not in line and "'albert'" in line and "share one set of weights" in line
    assert "bert, deberta-v2, distilbert, electra, modernbert, roberta, xlm-roberta" in line
    assert "causal LM of type gpt2, llama, mistral, qwen2" in line


def test_features_table_is_generated_from_the_entries():
    rows = {row["family"]: row for row in feature_rows()}
    assert sorted(rows) == sorted(FAMILIES.names())
    # the decoders' rows: tests/families/test_decoders.py
    rows = {name: row for name, row in rows.items() if name in FAMILY_NAMES}
    for row in rows.values():
        assert row["distil terms"] == "ce, kd, hidden, embedding, cosine, attention, relation"
        assert row["pruning"] == "heads, ffn, hidden, layers" and row["INT8"] == "yes"
    assert "GLU" in rows["modernbert"]["notes"] and "fused Q/K/V" in rows["modernbert"]["notes"]
    assert "positions start at 2" in rows["xlm-roberta"]["notes"]
    table = features_markdown()
    assert table.count("\n") == len(FAMILIES.names()) + 2 and table.startswith("| family | distil terms |")


def test_a_family_without_qkv_or_maps_gets_its_terms_turned_off(monkeypatch):
    from dataclasses import replace
    from types import SimpleNamespace

    bare = replace(FAMILIES.get("bert"), model_type="toy", query=None, key=None, value=None,
                   attention_maps="its attention kernel returns no probabilities", int8="the exporter fails")
    monkeypatch.setitem(FAMILIES._items, "toy", bare)
    support = loss_term_support(SimpleNamespace(model_type="toy"))
    assert support["relation"] == "toy: it has no query/key/value projections to capture"
    assert support["attention"] == "toy: its attention kernel returns no probabilities"
    assert support["hidden"] is None
    row = next(r for r in feature_rows() if r["family"] == "toy")
    assert row["pruning"].startswith("ffn, hidden, layers (no heads:") and row["INT8"] == "no: the exporter fails"

"""Structured pruning of every encoder family (tiny models shaped like their checkpoints): each granularity
(heads with the hidden width, FFN neurons, hidden width, whole layers) round-trips through ``save_pruned`` with
identical logits, through plain ``from_pretrained`` of the same model type where a config can express the result
and through ``load_pruned`` (widths file) where it cannot; heads and FFN neurons whose weights are zero are exactly
the ones removed (so fused Q/K/V thirds, GLU pairs and DeBERTa's position projections are cut together)."""

from __future__ import annotations

import copy

import pytest
import torch
from family_factories import FAMILY_NAMES, tiny_inputs, tiny_model
from transformers import AutoModelForSequenceClassification

from compress import WIDTHS_FILE, PruneConfig, load_pruned, prune_model, save_pruned
from distill.core.errors import ConfigError
from distill.core.families import FUSED_QKV, family_of

GRANULARITIES = {
    "heads": dict(heads=0.5, ffn=0.0),  # hidden shrinks with the heads (head size kept)
    "ffn": dict(heads=0.0, ffn=0.5),
    "hidden": dict(heads=0.0, ffn=0.0, hidden=0.25),  # attention 64 wide over a 48-wide stream: widths file
    "layers": dict(heads=0.0, ffn=0.0, layers=2),
}
# a config holds every result but the hidden cut alone (attention 64 wide over a 48-wide stream)
HF_LOADABLE = {"heads": True, "ffn": True, "hidden": False, "layers": True}


def _logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**inputs).logits


@pytest.mark.parametrize("granularity", sorted(GRANULARITIES))
@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_prune_round_trip(name, granularity, tmp_path):
    model, inputs = tiny_model(name), tiny_inputs(name)
    before = sum(p.numel() for p in model.parameters())
    report = prune_model(model, PruneConfig(**GRANULARITIES[granularity]), inputs)
    assert report.params_after < before == report.params_before
    expressible = HF_LOADABLE[granularity]
    assert report.hf_loadable is expressible
    logits = _logits(model, inputs)
    save_pruned(model, tmp_path)
    assert (tmp_path / WIDTHS_FILE).exists() is not expressible
    assert torch.allclose(_logits(load_pruned(tmp_path), inputs), logits, atol=1e-5)
    if expressible:
        again = AutoModelForSequenceClassification.from_pretrained(tmp_path)
        assert type(again) is type(model) and torch.allclose(_logits(again, inputs), logits, atol=1e-5)
    else:
        with pytest.raises((RuntimeError, ValueError)):
            AutoModelForSequenceClassification.from_pretrained(tmp_path)


def _zero_heads_and_neurons(model, heads: list[int], neurons: list[int]) -> None:
    """Zero every weight of ``heads`` (Q/K/V rows, position-projection rows, output columns) and of FFN ``neurons``
    (up rows, with the gate rows of a fused GLU, and down columns) in every block: they then add nothing."""
    family = family_of(model)
    with torch.no_grad():
        for block in family.blocks(model):
            size, width = 64 // 4, family.attention_width(block)
            cols = [h * size + i for h in heads for i in range(size)]
            rows = [t * width + c for t in range(3) for c in cols] if family.qkv_fused else cols
            for module in [*family.qkv(block).values(), *family.attention_extra(block)]:
                module.weight[rows] = 0
                if module.bias is not None:
                    module.bias[rows] = 0
            family.attention_output(block).weight[:, cols] = 0
            ffn = family.ffn(block)
            up = neurons + [128 + j for j in neurons] if family.ffn_glu_fused else neurons
            ffn["in"].weight[up] = 0
            if ffn["in"].bias is not None:
                ffn["in"].bias[up] = 0
            ffn["out"].weight[:, neurons] = 0


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_the_zeroed_heads_and_neurons_are_the_ones_removed(name, tmp_path):
    model, inputs = tiny_model(name), tiny_inputs(name)
    _zero_heads_and_neurons(model, heads=[0, 2], neurons=list(range(0, 128, 2)))
    before = _logits(model, inputs)
    report = prune_model(model, PruneConfig(heads=0.5, ffn=0.5, hidden=0.0), inputs)  # hidden kept: exact
    assert [(row["heads"], row["ffn"]) for row in report.per_layer] == [(2, 64)] * 4
    assert torch.allclose(_logits(model, inputs), before, atol=1e-5)
    save_pruned(model, tmp_path)  # heads without hidden: only the widths file describes it
    assert torch.allclose(_logits(load_pruned(tmp_path), inputs), before, atol=1e-5)


def test_deberta_v2_without_shared_keys_prunes_its_position_projections(tmp_path):
    """DeBERTa-v2 xlarge style: own pos_key_proj/pos_query_proj (cut with the heads and the hidden width), a
    convolution after the first layer, a position table and token types."""
    model = tiny_model("deberta-v2", share_att_key=False, conv_kernel_size=3, position_biased_input=True,
                       type_vocab_size=2)
    inputs = {**tiny_inputs("deberta-v2"), "token_type_ids": torch.zeros(2, 12, dtype=torch.long)}
    report = prune_model(model, PruneConfig(heads=0.5, ffn=0.5), inputs)
    attn = model.deberta.encoder.layer[0].attention.self
    assert report.hf_loadable and attn.pos_key_proj.weight.shape == attn.pos_query_proj.weight.shape == (32, 32)
    assert model.deberta.encoder.rel_embeddings.weight.shape == (32, 32)  # 2 x 16 buckets, hidden 32
    save_pruned(model, tmp_path)
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert torch.allclose(_logits(again, inputs), _logits(model, inputs), atol=1e-5)


def test_modernbert_keeps_its_first_layer_and_cuts_fused_heads_by_taylor():
    model, inputs = tiny_model("modernbert"), tiny_inputs("modernbert")
    labelled = {**inputs, "labels": torch.tensor([0, 1])}
    uniform = prune_model(copy.deepcopy(model), PruneConfig(heads=0, ffn=0, layers=2, layer_selection="uniform"),
                          inputs)
    assert [row["source"] for row in uniform.per_layer] == [0, 3]
    report = prune_model(model, PruneConfig(heads=0.5, ffn=0.25, layers=3, importance="taylor"), labelled)
    assert report.per_layer[0]["source"] == 0 and report.heads_after == 2 and report.hf_loadable
    assert family_of(model).qkv(family_of(model).blocks(model)[1])[FUSED_QKV].weight.shape == (96, 32)
    assert model.config.layer_types[0] == "full_attention" and len(model.config.layer_types) == 3
    fresh = tiny_model("modernbert")
    with pytest.raises(ConfigError, match="keep layer 0"):
        prune_model(fresh, PruneConfig(heads=0, ffn=0, layers=[1, 2]), inputs)
    assert len(family_of(fresh).blocks(fresh)) == 4  # refused before anything changed


@pytest.mark.parametrize("name", ["electra", "deberta-v2"])
def test_factorised_embeddings_shrink_with_the_hidden_width(name, tmp_path):
    """Embeddings narrower than the hidden width keep their ratio to it: 32 under 64 become 16 under 32. Cut to the
    hidden width, they would need a square projection that a config (embedding_size == hidden_size) leaves out."""
    model, inputs = tiny_model(name, embedding_size=32), tiny_inputs(name)
    report = prune_model(model, PruneConfig(heads=0.5, ffn=0.0), inputs)  # hidden 64 -> 32
    family = family_of(model)
    assert report.hf_loadable and family.embedding_width(model) == model.config.embedding_size == 16
    assert family.embedding_projection_module(model).weight.shape == (32, 16)
    save_pruned(model, tmp_path)
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert torch.allclose(_logits(again, inputs), _logits(model, inputs), atol=1e-5)

"""Structured pruning of decoders (compress.prune.decoder over distill.core.families.decoder_cut/_importance):
every family x granularity reloads with plain from_pretrained with the logits it had in memory, tied embeddings
stay tied, head/FFN cuts remove exactly what they drop, importance keeps what the activations say matters, and
shapes a plain config cannot hold fail in one line before the model changes."""

from __future__ import annotations

import pytest
import torch
from lm_factories import tiny_causal_lm
from transformers import AutoModelForCausalLM

from compress.prune.config import PruneConfig
from compress.prune.decoder import decoder_target, is_decoder, prune_decoder
from distill.core.errors import ConfigError, ModelError
from distill.core.families import family_of
from distill.core.families.decoder_cut import DecoderKeep, cut_decoder
from distill.core.families.decoder_importance import (
    DecoderTarget,
    gqa_shape,
    keep_for,
    measure_importance,
    uniform_layers,
)

FAMILIES = ("llama", "qwen2", "gpt2")
NONE = dict(heads=0.0, ffn=0.0, hidden=0.0)
GRANULARITIES = {
    "heads": dict(NONE, heads=0.5, hidden=None),  # gpt2: hidden follows the heads
    "ffn": dict(NONE, ffn=0.5),
    "hidden": dict(NONE, hidden=0.5),
    "layers": dict(NONE, layers=1, layer_selection="importance"),
    "all": dict(heads=0.5, ffn=0.5, hidden=0.5, layers=1, layer_selection="uniform"),
}


def batches(n: int = 2, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(1, 300, (2, 16), generator=g)
        mask = torch.ones_like(ids)
        mask[1, 12:] = 0  # padding is not scored
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


IDS = torch.randint(1, 300, (2, 12), generator=torch.Generator().manual_seed(7))


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


def reload(model, tmp_path):
    model.save_pretrained(tmp_path)
    return AutoModelForCausalLM.from_pretrained(tmp_path).eval()


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("name", FAMILIES)
def test_pruned_decoder_reloads_with_plain_from_pretrained(name, granularity, tmp_path):
    model = tiny_causal_lm(name)
    assert is_decoder(model)
    before = family_of(model).widths(model.config)
    report = prune_decoder(model, PruneConfig(**GRANULARITIES[granularity]), batches())
    after = family_of(model).widths(model.config)
    assert report.params_after < report.params_before and report.hf_loadable
    if granularity in ("heads", "all"):
        assert after.heads == before.heads // 2 and report.heads_after == after.heads
    if granularity in ("ffn", "all"):
        assert after.ffn == before.ffn // 2
    if granularity in ("hidden", "all") or (name == "gpt2" and granularity == "heads"):
        assert after.hidden == before.hidden // 2
    if granularity in ("layers", "all"):
        assert after.layers == 1 and len(report.per_layer) == 1
    in_memory = logits(model)
    loaded = reload(model, tmp_path)
    assert torch.allclose(logits(loaded), in_memory, atol=1e-5)
    assert family_of(loaded).widths(loaded.config) == after
    assert loaded.get_output_embeddings().weight is loaded.get_input_embeddings().weight  # still tied
    prompt = IDS[:1, :6]
    with torch.no_grad():
        cached = loaded.generate(prompt, max_new_tokens=4, do_sample=False, use_cache=True, pad_token_id=0)
        plain = loaded.generate(prompt, max_new_tokens=4, do_sample=False, use_cache=False, pad_token_id=0)
    assert torch.equal(cached, plain)


def _zeroed(model, keep_heads: list[int] | None = None, keep_ffn: list[int] | None = None):
    """The uncut model with the dropped heads' o_proj columns / dropped neurons' down columns set to zero."""
    family = family_of(model)
    w = family.widths(model.config)
    with torch.no_grad():
        for block in family.blocks(model):
            if keep_heads is not None:
                out = family.attention_output(block)
                for h in set(range(w.heads)) - set(keep_heads):
                    cols = slice(h * w.head_dim, (h + 1) * w.head_dim)
                    (out.weight[cols] if hasattr(out, "nf") else out.weight[:, cols]).zero_()
            if keep_ffn is not None:
                down = family.ffn(block)["out"]
                for i in set(range(w.ffn)) - set(keep_ffn):
                    (down.weight[i] if hasattr(down, "nf") else down.weight[:, i]).zero_()
    return model


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_head_and_ffn_cuts_remove_exactly_what_they_drop(name):
    model = tiny_causal_lm(name)
    w = family_of(model).widths(model.config)
    heads = [0, 1] if name == "llama" else [1, 3]  # llama: K/V group 0 whole; gpt2 keeps its hidden (no head cut)
    ffn = list(range(0, w.ffn, 3))
    reference = logits(_zeroed(tiny_causal_lm(name), heads if name == "llama" else None, ffn))
    keep = DecoderKeep(heads=[heads] * 2 if name == "llama" else None, ffn=[ffn] * 2)
    cut_decoder(model, keep)
    assert torch.allclose(logits(model), reference, atol=1e-5)
    if name == "llama":
        attn = family_of(model).self_attention(model.model.layers[0])
        assert model.config.num_key_value_heads == 1 and attn.num_key_value_groups == 2


def test_query_heads_go_evenly_from_every_kv_group():
    model = tiny_causal_lm("llama")  # 4 query heads, 2 K/V heads: groups {0, 1} and {2, 3}
    reference = logits(_zeroed(tiny_causal_lm("llama"), keep_heads=[1, 2]))
    cut_decoder(model, DecoderKeep(heads=[[1, 2], [1, 2]]))
    assert (model.config.num_attention_heads, model.config.num_key_value_heads) == (2, 2)
    assert model.model.layers[0].self_attn.num_key_value_groups == 1
    assert torch.allclose(logits(model), reference, atol=1e-5)


def test_importance_keeps_what_the_activations_use():
    model = tiny_causal_lm("llama", num_hidden_layers=3)
    family = family_of(model)
    with torch.no_grad():
        for block in family.blocks(model):
            block.self_attn.o_proj.weight[:, :32].mul_(1e-3)  # K/V group 0's query heads barely contribute
            block.mlp.down_proj.weight[:, 48:].zero_()  # the upper half of the FFN neurons is dead
        model.model.layers[1].self_attn.o_proj.weight.zero_()  # block 1 passes its input through unchanged
        model.model.layers[1].mlp.down_proj.weight.zero_()
    imp = measure_importance(model, batches())
    assert imp.tokens == 2 * (16 + 12)  # real tokens only
    assert float(imp.blocks[1]) < 1e-6 < float(imp.blocks[0])
    keep = keep_for(model, DecoderTarget(layers=2, heads=2, kv_heads=1, ffn=48, layer_selection="importance"), imp)
    assert keep.layers == [0, 2]
    assert keep.kv_heads == [[1], [1]] and keep.heads == [[2, 3], [2, 3]]
    assert keep.ffn == [list(range(48))] * 2


def test_gqa_shape_rounds_to_an_even_grouping():
    assert gqa_shape(9, 3, 4) == (4, 2)  # SmolLM2: half of 9 heads -> 2 K/V groups of 2
    assert gqa_shape(9, 3, 6) == (6, 3)  # ties keep more K/V heads
    assert gqa_shape(4, 2, 2, target_kv=1) == (2, 1)
    assert uniform_layers(30, 10) == [0, 3, 6, 10, 13, 16, 19, 23, 26, 29]


def test_untied_lm_head_loses_the_same_hidden_channels(tmp_path):
    model = tiny_causal_lm("llama", tie_word_embeddings=False)
    prune_decoder(model, PruneConfig(**dict(NONE, hidden=0.25)), batches())
    assert model.lm_head.weight.shape == (300, 48) and model.lm_head.weight is not model.model.embed_tokens.weight
    assert torch.allclose(logits(reload(model, tmp_path)), logits(model), atol=1e-5)


@pytest.mark.parametrize("name, keep, expected", [
    ("gpt2", DecoderKeep(heads=[[0, 1]] * 2), "heads x head size = hidden width"),
    ("llama", DecoderKeep(head_dims=[[list(range(8))] * 4] * 2), "rotary"),
    ("llama", DecoderKeep(heads=[[0, 1, 2]] * 2), "shared evenly"),
    ("llama", DecoderKeep(heads=[[0, 2]] * 2, kv_heads=[[1]] * 2), "does not read"),
    ("llama", DecoderKeep(ffn=[[0, 1], [0]]), "differ in number between layers"),
    ("gpt2", DecoderKeep(kv_heads=[[0]] * 2), "no grouped-query attention"),
])
def test_a_cut_no_plain_config_holds_is_one_line_and_leaves_the_model(name, keep, expected):
    model = tiny_causal_lm(name)
    before = logits(model)
    with pytest.raises(ModelError) as err:
        cut_decoder(model, keep)
    assert expected in err.value.line() and "\n" not in err.value.line()
    assert torch.equal(logits(model), before)  # checked before anything is cut


def test_per_layer_ratios_and_missing_calibration_are_config_errors():
    model = tiny_causal_lm("llama")
    with pytest.raises(ConfigError, match="per-layer"):
        decoder_target(model, PruneConfig(heads=[0.5, 0.0], ffn=0.0))
    with pytest.raises(ConfigError, match="calibration"):
        keep_for(model, DecoderTarget(ffn=48), None)
    report = prune_decoder(model, PruneConfig(**dict(NONE, layers=1, layer_selection="uniform")), [])
    assert report.layers_after == 1 and report.per_layer[0]["source"] == 1  # uniform depth: no scores needed

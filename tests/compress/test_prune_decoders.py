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
    top,
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


def test_block_nll_rise_is_zero_for_a_pass_through_block():
    model = tiny_causal_lm("llama", num_hidden_layers=3)
    with torch.no_grad():
        model.model.layers[1].self_attn.o_proj.weight.zero_()
        model.model.layers[1].mlp.down_proj.weight.zero_()
    before = logits(model)
    imp = measure_importance(model, batches(), block_nll=True)
    assert abs(float(imp.block_nll[1])) < 1e-9 and float(imp.block_nll[0]) != 0.0
    assert torch.equal(logits(model), before)  # the skip hooks are gone
    report = prune_decoder(model, PruneConfig(**dict(NONE, layers=2)), batches(), layer_selection="perplexity")
    assert [row["source"] for row in report.per_layer] == top(imp.block_nll, 2)  # the largest rises


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


def test_rms_norms_are_rescaled_for_the_channels_a_hidden_cut_drops():
    """Channels 32..63 never carry anything: with the RMS norms rescaled by sqrt(D / D') the cut is exact."""
    def dead_upper_half():
        model = tiny_causal_lm("llama", rms_norm_eps=1e-12)  # eps would weigh differently over fewer channels
        with torch.no_grad():
            model.model.embed_tokens.weight[:, 32:] = 0  # tied: lm_head reads nothing from them either
            for block in model.model.layers:
                block.self_attn.o_proj.weight[32:] = 0
                block.mlp.down_proj.weight[32:] = 0
        return model

    reference = logits(dead_upper_half())
    rescaled, plain = dead_upper_half(), dead_upper_half()
    imp = measure_importance(rescaled, batches())
    keep = keep_for(rescaled, DecoderTarget(hidden=32, rescale_norms=True), imp)
    assert keep.hidden == list(range(32)) and keep.norm_scales["final"] == pytest.approx(2 ** 0.5)
    cut_decoder(rescaled, keep)
    assert torch.allclose(logits(rescaled), reference, atol=1e-4)
    cut_decoder(plain, keep_for(plain, DecoderTarget(hidden=32), imp))  # default: norms left as they are
    assert not torch.allclose(logits(plain), reference, atol=1e-2)


def test_gpt2_head_size_cut_keeps_the_attention_scores():
    """Channels 4..7 of every head carry nothing in q, k and v: cutting them (head size 8 -> 4, q rescaled by
    sqrt(4 / 8) for the new 1/sqrt(head size)) leaves the attention's output as it was."""
    from distill.core.families.decoder_cut import _cut_fused

    model = tiny_causal_lm("gpt2")
    family = family_of(model)
    block = family.blocks(model)[0]
    attn = family.self_attention(block)
    dead = torch.tensor([h * 8 + d for h in range(4) for d in range(4, 8)])
    with torch.no_grad():
        for third in range(3):
            attn.c_attn.weight[:, dead + 32 * third] = 0
            attn.c_attn.bias[dead + 32 * third] = 0
    x = torch.randn(2, 6, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = block(x)
        kept = torch.tensor([h * 8 + d for h in range(4) for d in range(4)])
        _cut_fused(family, block, attn, [0, 1, 2, 3], [list(range(4))] * 4, 8, kept)
        after = block(x)
    assert attn.head_dim == 4 and attn.split_size == 16 and attn.c_attn.weight.shape == (32, 48)
    assert torch.allclose(_first(after), _first(before), atol=1e-5)


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def test_gpt2_scaled_by_inverse_layer_index_keeps_its_scores_when_layers_move(tmp_path):
    model = tiny_causal_lm("gpt2", n_layer=4, scale_attn_by_inverse_layer_idx=True)
    reference = tiny_causal_lm("gpt2", n_layer=4, scale_attn_by_inverse_layer_idx=True)
    with torch.no_grad():
        for i in (0, 2):  # blocks 0 and 2 pass their input through: cutting them changes nothing
            for m in (reference, model):
                m.transformer.h[i].attn.c_proj.weight.zero_()
                m.transformer.h[i].attn.c_proj.bias.zero_()
                m.transformer.h[i].mlp.c_proj.weight.zero_()
                m.transformer.h[i].mlp.c_proj.bias.zero_()
    cut_decoder(model, DecoderKeep(layers=[1, 3]))
    assert torch.allclose(logits(model), logits(reference), atol=1e-5)
    assert torch.allclose(logits(reload(model, tmp_path)), logits(reference), atol=1e-5)

"""The decoder family entries (llama, mistral, qwen2, gpt2) on tiny random causal LMs (tests/lm_factories.py):
paths and widths resolve, grouped-query attention and GPT-2's transposed Conv1D are read right, tied embeddings
are one tensor, and cutting layers renumbers the KV cache slots and the per-layer attention kinds so that
generation with a cache gives the same tokens as without."""

from __future__ import annotations

import pytest
import torch
from lm_factories import tiny_causal_lm

from distill.core.families import FAMILIES, FUSED_QKV, Widths, family_of, supports_qkv
from distill.core.families.decoders import DECODER_FAMILIES

NAMES = ("llama", "mistral", "qwen2", "gpt2")


def tiny_decoder(name: str, **kw):
    """A tiny random causal LM of ``name``: 4 layers; llama-likes hidden 64, 4 heads, 2 KV heads of 16, FFN 96."""
    if name == "mistral":
        from transformers import MistralConfig, MistralForCausalLM

        torch.manual_seed(0)
        cfg = dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True, head_dim=16)
        cfg.update(kw)
        return MistralForCausalLM(MistralConfig(**cfg)).eval()
    layers = {"n_layer": 4} if name == "gpt2" else {"num_hidden_layers": 4}
    return tiny_causal_lm(name, **{**layers, **kw})


def ids(n: int = 10, batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randint(1, 300, (batch, n), generator=torch.Generator().manual_seed(seed))


def test_decoder_families_are_registered_as_causal():
    assert set(DECODER_FAMILIES) <= set(FAMILIES.names())
    assert all(FAMILIES.get(n).causal for n in DECODER_FAMILIES)
    assert not any(FAMILIES.get(n).causal for n in FAMILIES.names() if n not in DECODER_FAMILIES)


@pytest.mark.parametrize("name", NAMES)
def test_entry_resolves_and_reads_the_widths(name):
    model = tiny_decoder(name)
    family = family_of(model)
    assert family.model_type == name and supports_qkv(model.config)
    w = family.widths(model.config)
    if name == "gpt2":
        assert w == Widths(layers=4, hidden=32, heads=4, kv_heads=4, head_dim=8, ffn=128)  # n_inner None: 4 x
    else:
        assert w == Widths(layers=4, hidden=64, heads=4, kv_heads=2, head_dim=16, ffn=96)
    for block in family.blocks(model):
        assert family.attention_heads(block) == w.heads
        assert family.attention_width(block) == w.heads * w.head_dim
        assert family.ffn_width(block) == w.ffn
        qkv = family.qkv(block)
        if name == "gpt2":
            assert list(qkv) == [FUSED_QKV] and tuple(qkv[FUSED_QKV].weight.shape) == (32, 96)  # Conv1D: (in, out)
            assert family.fused_qkv_sizes(model.config, 96) == (32, 32, 32)
        else:
            assert [qkv[r].out_features for r in ("query", "key", "value")] == [64, 32, 32]  # GQA: 2 KV heads
            assert getattr(family.self_attention(block), family.kv_groups_attr) == 2
            ffn = family.ffn(block)
            assert ffn["gate"].out_features == ffn["in"].out_features == ffn["out"].in_features == 96
        for norm in family.norms:
            assert getattr(block, norm).weight.shape[0] == w.hidden
    tables = family.embedding_tables(model)
    assert set(tables) == ({"word", "position"} if name == "gpt2" else {"word"})
    assert model.get_output_embeddings().weight is tables["word"].weight  # tied: one tensor
    assert getattr(model.base_model, family.final_norm).weight.shape[0] == w.hidden
    assert len(family.attention_dropouts(model)) == 4


def test_set_widths_writes_the_families_keys():
    llama, gpt2 = tiny_decoder("llama"), tiny_decoder("gpt2")
    family_of(llama).set_widths(llama.config, layers=2, hidden=48, heads=2, kv_heads=1, head_dim=16, ffn=64)
    c = llama.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim,
            c.intermediate_size) == (2, 48, 2, 1, 16, 64)
    family_of(gpt2).set_widths(gpt2.config, layers=3, hidden=16, heads=2, ffn=40)
    assert (gpt2.config.n_layer, gpt2.config.n_embd, gpt2.config.n_head, gpt2.config.n_inner) == (3, 16, 2, 40)
    from distill.core.errors import ModelError

    with pytest.raises(ModelError):
        family_of(gpt2).set_widths(gpt2.config, kv_heads=1)  # GPT-2 has no grouped-query attention


def _greedy(model, prompt: torch.Tensor, new: int, cache: bool) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(prompt, max_new_tokens=new, do_sample=False, use_cache=cache, pad_token_id=0)


@pytest.mark.parametrize("name", NAMES)
def test_keep_blocks_renumbers_cache_slots(name):
    model = tiny_decoder(name)
    family = family_of(model)
    kept = [0, 3]
    blocks = family.blocks(model)
    expected = [blocks[i] for i in kept]
    family.keep_blocks(model, kept)
    assert family.blocks(model) == expected and family.widths(model.config).layers == 2
    assert [family.self_attention(b).layer_idx for b in family.blocks(model)] == [0, 1]
    prompt = ids(6, batch=1)
    assert torch.equal(_greedy(model, prompt, 5, cache=True), _greedy(model, prompt, 5, cache=False))


def test_keep_blocks_cuts_qwen2_layer_types():
    model = tiny_decoder("qwen2", use_sliding_window=True, sliding_window=4, max_window_layers=2)
    family = family_of(model)
    before = list(model.config.layer_types)
    assert before == ["full_attention", "full_attention", "sliding_attention", "sliding_attention"]
    family.keep_blocks(model, [1, 2])
    assert model.config.layer_types == [before[1], before[2]]
    prompt = ids(8, batch=1)
    assert torch.equal(_greedy(model, prompt, 4, cache=True), _greedy(model, prompt, 4, cache=False))


def test_mistral_cuts_like_llama(tmp_path):
    from transformers import AutoModelForCausalLM

    from distill.core.families.decoder_cut import DecoderKeep, cut_decoder

    model = tiny_decoder("mistral")
    cut_decoder(model, DecoderKeep(layers=[0, 2], kv_heads=[[1], [0]], ffn=[list(range(48))] * 2,
                                   hidden=list(range(0, 64, 2))))
    w = family_of(model).widths(model.config)
    assert w == Widths(layers=2, hidden=32, heads=2, kv_heads=1, head_dim=16, ffn=48)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.allclose(loaded(ids()).logits, model(ids()).logits, atol=1e-5)

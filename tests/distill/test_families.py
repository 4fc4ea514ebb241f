"""Model-family adapters (distill.core.families): every registered entry resolves on a tiny model of its family,
an unknown family is one line naming the supported ones, and the entries issues 16 and 17 will register (llama with
grouped-query attention and a gated MLP, gpt2 with a fused Conv1D Q/K/V, ModernBERT with a fused Q/K/V, a GLU FFN
and local/global layers) fit the same dataclass and verbs without code changes (registered here for one test)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from factories import tiny_bert_config

from distill.core.errors import ModelError
from distill.core.families import FAMILIES, Family, Widths, arch_of, family_of, find_family, supports_qkv
from distill.objective.capture import (
    _attention_dropouts,
    _guess_attention_dropouts,
    _guess_qkv,
    capture_qkv,
    eager_attention,
    find_qkv,
)


def _bert():
    from transformers import BertForSequenceClassification

    return BertForSequenceClassification(tiny_bert_config(layers=2, hidden=32, heads=4, ffn=64))


def _roberta():
    from transformers import RobertaConfig, RobertaForSequenceClassification

    return RobertaForSequenceClassification(RobertaConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2,
                                                          num_attention_heads=4, intermediate_size=64,
                                                          max_position_embeddings=40))


def _distilbert():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    return DistilBertForSequenceClassification(DistilBertConfig(vocab_size=99, dim=32, n_layers=2, n_heads=4,
                                                                hidden_dim=64, max_position_embeddings=40))


# one tiny model per BERT-shaped family (2 layers, hidden 32, 4 heads, FFN 64); tests/families checks every
# registered entry (xlm-roberta, electra, deberta-v2, modernbert too) on models shaped like their checkpoints
TINY = {"bert": _bert, "roberta": _roberta, "distilbert": _distilbert}


def test_the_bert_shaped_families_here_are_registered():
    assert set(TINY) <= set(FAMILIES.names())


@pytest.mark.parametrize("name", sorted(TINY))
def test_entry_resolves_on_a_tiny_model(name):
    torch.manual_seed(0)
    model = TINY[name]().eval()
    family = family_of(model)
    assert family is FAMILIES.get(name) and arch_of(model) is family
    assert family.widths(model.config) == _widths(layers=2, hidden=32, heads=4, ffn=64)
    blocks = family.blocks(model)
    assert len(blocks) == 2
    for block in blocks:
        qkv = family.qkv(block)
        assert sorted(qkv) == ["key", "query", "value"]
        assert all((m.in_features, m.out_features) == (32, 32) for m in qkv.values())
        assert family.attention_output(block).out_features == 32
        ffn = family.ffn(block)
        assert (ffn["in"].out_features, ffn["out"].in_features) == (64, 64) and "gate" not in ffn
        assert all(isinstance(_path(block, p), torch.nn.LayerNorm) for p in family.norms)
        attn = family.self_attention(block)
        assert getattr(attn, family.heads_attr) == 4 and getattr(attn, family.head_size_attr) == 8
    tables = family.embedding_tables(model)
    assert tables["word"].weight.shape == (99, 32) and "position" in tables
    assert ("token_type" in tables) == (name != "distilbert")
    assert family.square_head_modules(model), "the task head's hidden -> hidden layer"
    assert len(family.attention_dropouts(model)) == 2


@pytest.mark.parametrize("name", sorted(TINY))
def test_adapter_finds_what_name_guessing_found(name):
    """The capture through the adapter hooks exactly the modules the old name-guessing did: same results."""
    model = TINY[name]()
    adapter, guessed = find_qkv(model), _guess_qkv(model)
    assert len(adapter) == len(guessed) == 2
    for a, g in zip(adapter, guessed, strict=True):
        assert a.keys() == g.keys() and all(a[k] is g[k] for k in a)
    assert [owner for owner, _ in _attention_dropouts(model)] == _guess_attention_dropouts(model)


@pytest.mark.parametrize("name", sorted(TINY))
def test_set_widths_writes_the_family_keys(name):
    config = TINY[name]().config
    family = FAMILIES.get(name)
    family.set_widths(config, layers=1, hidden=16, heads=2, ffn=24)
    assert family.widths(config) == _widths(layers=1, hidden=16, heads=2, ffn=24)
    with pytest.raises(ModelError, match="no key"):
        family.set_widths(config, kv_heads=1)


def test_unknown_family_is_one_line_naming_the_supported_ones():
    from transformers import GPTNeoXConfig

    config = GPTNeoXConfig(hidden_size=32, num_attention_heads=2, num_hidden_layers=1, vocab_size=100)
    assert find_family(config) is None
    with pytest.raises(ModelError) as err:
        family_of(config, "structured pruning")
    line = err.value.line()
    assert "\n" not in line and "'gpt_neox'" in line and "gpt2, llama, mistral, qwen2" in line


def test_supports_qkv_without_loading_a_model():
    assert supports_qkv(tiny_bert_config()) and supports_qkv(SimpleNamespace(model_type="distilbert"))
    assert not supports_qkv(SimpleNamespace(model_type="gpt_neox"))  # fused and not registered
    assert supports_qkv(SimpleNamespace(model_type="camembert"))  # unregistered: found by name
    assert not Family(model_type="x", layers="l", attention="a", attn_out="o", ffn_in="i", ffn_out="f").has_qkv


@pytest.mark.parametrize("kw", [{"query": "q"}, {"query": "q", "key": "k", "value": "v", "qkv_fused": "qkv"}])
def test_an_entry_gives_separate_or_fused_qkv(kw):
    with pytest.raises(ValueError, match="qkv_fused"):
        Family(model_type="x", layers="l", attention="a", attn_out="o", ffn_in="i", ffn_out="f", **kw)


def test_unregistered_bert_shaped_family_keeps_the_name_fallback():
    from transformers import CamembertConfig, CamembertModel

    model = CamembertModel(CamembertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2,
                                           num_attention_heads=4, intermediate_size=64))
    assert find_family(model) is None
    layers = find_qkv(model)
    assert len(layers) == 2 and layers[1]["value"] is model.encoder.layer[1].attention.self.value
    assert len(_attention_dropouts(model)) == 2


# ---- entries issues 16 and 17 will register fit the same dataclass --------------------------------------------

LLAMA = Family(model_type="llama", layers="layers", attention="self_attn",
               query="q_proj", key="k_proj", value="v_proj", attn_out="self_attn.o_proj",
               ffn_in="mlp.up_proj", ffn_gate="mlp.gate_proj", ffn_out="mlp.down_proj",
               attn_dropout="attention_dropout",
               norms=("input_layernorm", "post_attention_layernorm"), final_norm="norm",
               embeddings=None, word_embeddings="embed_tokens",
               heads_attr=None, head_size_attr="head_dim", all_head_attr=None, kv_groups_attr="num_key_value_groups",
               kv_heads_key="num_key_value_heads", head_dim_key="head_dim", layer_types_key="layer_types",
               causal=True)

GPT2 = Family(model_type="gpt2", layers="h", attention="attn", qkv_fused="c_attn", attn_out="attn.c_proj",
              ffn_in="mlp.c_fc", ffn_out="mlp.c_proj", attn_dropout="attn_dropout", norms=("ln_1", "ln_2"),
              final_norm="ln_f", embeddings=None, word_embeddings="wte", position_embeddings="wpe",
              heads_attr="num_heads", head_size_attr="head_dim", all_head_attr="embed_dim",
              layers_key="n_layer", hidden_key="n_embd", heads_key="n_head", ffn_key="n_inner", ffn_default_multiple=4,
              causal=True)

MODERNBERT = Family(model_type="modernbert", layers="layers", attention="attn", qkv_fused="Wqkv",
                    attn_out="attn.Wo", ffn_in="mlp.Wi", ffn_glu_fused=True, ffn_out="mlp.Wo",
                    attn_dropout="attention_dropout", norms=("attn_norm", "mlp_norm"), final_norm="final_norm",
                    embeddings="embeddings", word_embeddings="embeddings.tok_embeddings",
                    heads_attr=None, head_size_attr="head_dim", all_head_attr=None, layer_types_key="layer_types")


@pytest.fixture
def registered(monkeypatch):
    """Register decoder entries for one test only (FAMILIES itself is left as it was)."""
    def add(family: Family) -> Family:
        monkeypatch.setitem(FAMILIES._items, family.model_type, family)
        return family
    return add


def _llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        num_key_value_heads=2, intermediate_size=48, attention_dropout=0.1)).eval()


def test_a_llama_entry_describes_gqa_and_a_gated_mlp(registered):
    model = _llama()
    family = registered(LLAMA)
    assert family_of(model) is family and supports_qkv(model.config)
    assert family.widths(model.config) == Widths(layers=2, hidden=32, heads=4, kv_heads=2, head_dim=8, ffn=48)
    block = family.blocks(model)[0]
    qkv = family.qkv(block)
    assert [qkv[r].out_features for r in ("query", "key", "value")] == [32, 16, 16]  # 4 heads, 2 KV heads of 8
    ffn = family.ffn(block)
    assert ffn["gate"].out_features == ffn["in"].out_features == ffn["out"].in_features == 48
    assert set(family.embedding_tables(model)) == {"word"}  # rotary: no position table
    assert family.embedding_module(model) is model.model.embed_tokens
    family.set_widths(model.config, kv_heads=1, head_dim=16)
    assert (model.config.num_key_value_heads, model.config.head_dim) == (1, 16)
    ids = torch.randint(0, 50, (2, 5))
    with capture_qkv(model, [-1]) as captured:
        model(input_ids=ids)
    assert [captured[-1][r].shape[-1] for r in ("query", "key", "value")] == [32, 16, 16]
    attn = family.self_attention(family.blocks(model)[1])
    with eager_attention(model):
        assert attn.attention_dropout == 0.0 and model.config._attn_implementation == "eager"
    assert attn.attention_dropout == 0.1


def test_a_gpt2_entry_splits_its_fused_conv1d_qkv(registered):
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    model = GPT2Model(GPT2Config(n_embd=32, n_head=4, n_layer=2, vocab_size=100, n_positions=16)).eval()
    family = registered(GPT2)  # the same entry as distill/core/families/decoders.py registers
    assert supports_qkv(model.config)
    assert family.widths(model.config) == Widths(layers=2, hidden=32, heads=4, kv_heads=4, head_dim=8, ffn=128)
    ids = torch.randint(0, 100, (2, 5))
    fused = []
    block = family.blocks(model)[1]
    handle = family.qkv(block)["qkv"].register_forward_hook(lambda m, a, out: fused.append(out))
    with capture_qkv(model, [1]) as captured, torch.no_grad():
        model(input_ids=ids)
    handle.remove()
    q, k, v = fused[0].split(32, dim=-1)
    assert torch.equal(captured[1]["query"], q) and torch.equal(captured[1]["key"], k)
    assert torch.equal(captured[1]["value"], v)
    assert [type(o).__name__ for o, _ in family.attention_dropouts(model)] == ["Dropout", "Dropout"]


def test_a_modernbert_entry_describes_fused_qkv_and_a_glu_ffn(registered):
    from transformers import ModernBertConfig, ModernBertModel

    torch.manual_seed(0)
    config = ModernBertConfig(vocab_size=60, pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1,
                              sep_token_id=2, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                              intermediate_size=48)
    model = ModernBertModel(config).eval()
    family = registered(MODERNBERT)
    assert family.widths(config) == Widths(layers=3, hidden=32, heads=4, kv_heads=4, head_dim=8, ffn=48)
    assert getattr(config, family.layer_types_key) == ["full_attention", "sliding_attention", "sliding_attention"]
    block = family.blocks(model)[1]
    assert family.ffn(block)["in"].out_features == 2 * 48 and family.ffn_glu_fused  # [input; gate]
    assert family.qkv(block)["qkv"].out_features == 3 * 32
    assert set(family.embedding_tables(model)) == {"word"}  # rotary positions
    with capture_qkv(model, [1]) as captured, torch.no_grad():
        model(input_ids=torch.randint(3, 60, (2, 7)))
    assert [captured[1][r].shape for r in ("query", "key", "value")] == [(2, 7, 32)] * 3
    first = family.blocks(model)[0]
    family.keep_blocks(model, [0, 2])
    assert family.blocks(model)[0] is first and family.blocks(model)[1].attn.layer_idx == 1
    assert (config.num_hidden_layers, config.layer_types) == (2, ["full_attention", "sliding_attention"])


def _path(root, path):
    for part in path.split("."):
        root = getattr(root, part)
    return root


def _widths(*, layers, hidden, heads, ffn):
    return Widths(layers=layers, hidden=hidden, heads=heads, kv_heads=heads, head_dim=hidden // heads, ffn=ffn)

"""The decoder (causal LM) families: Llama (SmolLM2), Mistral, Qwen2 and GPT-2.

Each entry is data only, as transformers 5 names the modules. tests/families/test_decoders.py builds a tiny model
of every entry (tests/lm_factories.py) and checks the paths, widths, cutting layers (the KV cache is indexed by a
block's ``layer_idx``, renumbered by ``Family.keep_blocks``) and the width cuts of ``decoder_cut``.

What differs from the encoders, and where the entry says so:

- Llama / Mistral / Qwen2: separate ``q_proj``/``k_proj``/``v_proj`` with grouped-query attention (K/V narrower
  than Q: ``num_key_value_heads``, query heads per K/V head in the attention's ``num_key_value_groups``), an
  explicit ``head_dim`` (rotary positions: no position table), a gated MLP (``gate_proj`` cut with ``up_proj``),
  RMSNorm before attention and MLP and after the last block (``norm``), usually tied input/output embeddings.
  Qwen2 has Q/K/V biases and per-layer ``layer_types`` (full or sliding-window attention).
- GPT-2: one fused ``c_attn`` ([q; k; v], a ``Conv1D`` whose weight is stored transposed: ``(in, out)``), learned
  positions (``wpe``), LayerNorm, ``n_embd``/``n_head``/``n_inner`` keys (``n_inner`` None: 4 x hidden) and the
  head size fixed at ``n_embd // n_head`` (no key for it), tied ``lm_head``.
"""

from __future__ import annotations

from distill.core.families.family import Family, register_family

_LLAMA_LIKE = dict(
    layers="layers",
    attention="self_attn",
    query="q_proj",
    key="k_proj",
    value="v_proj",
    attn_out="self_attn.o_proj",
    ffn_in="mlp.up_proj",
    ffn_gate="mlp.gate_proj",
    ffn_out="mlp.down_proj",
    attn_dropout="attention_dropout",  # a float attribute
    norms=("input_layernorm", "post_attention_layernorm"),
    final_norm="norm",
    embeddings=None,
    word_embeddings="embed_tokens",  # rotary positions: no table
    heads_attr=None,  # forward infers the head count from the width (view(..., -1, head_dim))
    head_size_attr="head_dim",
    all_head_attr=None,
    kv_groups_attr="num_key_value_groups",
    kv_heads_key="num_key_value_heads",
    head_dim_key="head_dim",
    layer_types_key="layer_types",
    token_types=False,
    causal=True,
)

LLAMA = register_family(Family(model_type="llama", **_LLAMA_LIKE))
MISTRAL = register_family(Family(model_type="mistral", **_LLAMA_LIKE))
QWEN2 = register_family(Family(model_type="qwen2", **_LLAMA_LIKE))
GPT2 = register_family(Family(
    model_type="gpt2",
    layers="h",
    attention="attn",
    qkv_fused="c_attn",  # Conv1D: weight (in, out), output [q; k; v]
    attn_out="attn.c_proj",
    ffn_in="mlp.c_fc",
    ffn_out="mlp.c_proj",
    attn_dropout="attn_dropout",
    norms=("ln_1", "ln_2"),
    final_norm="ln_f",
    embeddings=None,
    word_embeddings="wte",
    position_embeddings="wpe",
    heads_attr="num_heads",
    head_size_attr="head_dim",
    all_head_attr="embed_dim",
    token_types=False,
    layers_key="n_layer",
    hidden_key="n_embd",
    heads_key="n_head",
    ffn_key="n_inner",
    ffn_default_multiple=4,
    causal=True,
))

DECODER_FAMILIES = ("gpt2", "llama", "mistral", "qwen2")

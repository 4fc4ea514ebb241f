"""The encoder families: BERT, RoBERTa, XLM-RoBERTa, ELECTRA, DistilBERT, DeBERTa-v2/v3 and ModernBERT.

Each entry is data only: module paths inside a block, the attention module's attributes and the config keys, as
transformers 5 names them. tests/families builds a tiny model of every entry and checks each path resolves, Q/K/V
capture, students of the family, pruning round trips and INT8 export.

What differs from BERT, and where the entry says so:

- RoBERTa / XLM-RoBERTa: BERT's modules; positions start at ``padding_idx + 1 = 2`` (``position_offset``).
- ELECTRA: BERT's modules, but the embeddings may be narrower than the hidden width (``embedding_size``, as in
  electra-small: 128 -> 256) with ``embeddings_project`` (on the base model) lifting them.
- DistilBERT: its own names; no token types; no pooler (``pre_classifier`` is the square head).
- DeBERTa-v2/v3: ``query_proj``/``key_proj``/``value_proj``; relative attention reads ``encoder.rel_embeddings``
  (with ``encoder.LayerNorm`` when ``norm_rel_ebd`` says so), shared by every block, and, without
  ``share_att_key``, its own ``pos_key_proj``/``pos_query_proj`` to the heads. v3 has no position table and no
  token types (the tables are None). ``ContextPooler`` reads ``pooler_hidden_size``. Attention maps come out of
  its own attention (there is no sdpa path) with the relative bias included.
- ModernBERT: one fused ``Wqkv`` ([q; k; v], heads inside each third), a GLU FFN whose ``Wi`` outputs
  [input; gate], rotary positions (no table), full or sliding-window attention per layer (``layer_types``), a
  bias-free LayerNorm after the last block, no token types; the first block's ``attn_norm`` is an Identity.
"""

from __future__ import annotations

from distill.core.families.family import Family, register_family

_BERT_LIKE = dict(
    layers="encoder.layer",
    attention="attention.self",
    query="query",
    key="key",
    value="value",
    attn_dropout="dropout",
    attn_out="attention.output.dense",
    ffn_in="intermediate.dense",
    ffn_out="output.dense",
    norms=("attention.output.LayerNorm", "output.LayerNorm"),
    embeddings="embeddings",
    word_embeddings="embeddings.word_embeddings",
    position_embeddings="embeddings.position_embeddings",
    token_type_embeddings="embeddings.token_type_embeddings",
    heads_attr="num_attention_heads",
    head_size_attr="attention_head_size",
    all_head_attr="all_head_size",
    square_heads=("pooler.dense", "classifier.dense"),
)

BERT = register_family(Family(model_type="bert", **_BERT_LIKE))
# positions start at padding_idx + 1 = 2, so a table of 514 serves 512 tokens
ROBERTA = register_family(Family(model_type="roberta", position_offset=2, **_BERT_LIKE))
XLM_ROBERTA = register_family(Family(model_type="xlm-roberta", position_offset=2, **_BERT_LIKE))
ELECTRA = register_family(Family(model_type="electra", embedding_projection="embeddings_project",
                                 embedding_size_key="embedding_size", **_BERT_LIKE))
DISTILBERT = register_family(Family(
    model_type="distilbert",
    layers="transformer.layer",
    attention="attention",
    query="q_lin",
    key="k_lin",
    value="v_lin",
    attn_dropout="dropout",
    attn_out="attention.out_lin",
    ffn_in="ffn.lin1",
    ffn_out="ffn.lin2",
    norms=("sa_layer_norm", "output_layer_norm"),
    embeddings="embeddings",
    word_embeddings="embeddings.word_embeddings",
    position_embeddings="embeddings.position_embeddings",
    heads_attr="n_heads",
    head_size_attr="attention_head_size",
    all_head_attr="dim",
    square_heads=("pre_classifier",),
    token_types=False,
    layers_key="n_layers",
    hidden_key="dim",
    heads_key="n_heads",
    ffn_key="hidden_dim",
))
DEBERTA_V2 = register_family(Family(
    model_type="deberta-v2",
    **{**_BERT_LIKE, "query": "query_proj", "key": "key_proj", "value": "value_proj",
       "square_heads": ("pooler.dense",)},
    qkv_extra=("pos_key_proj", "pos_query_proj"),
    embedding_projection="embeddings.embed_proj",
    shared=("encoder.rel_embeddings", "encoder.LayerNorm"),
    scaling_attr=None,  # the scale is computed from the query width on every forward
    embedding_size_key="embedding_size",
    hidden_aliases=("pooler_hidden_size",),
))
MODERNBERT = register_family(Family(
    model_type="modernbert",
    layers="layers",
    attention="attn",
    qkv_fused="Wqkv",
    attn_out="attn.Wo",
    ffn_in="mlp.Wi",
    ffn_glu_fused=True,
    ffn_out="mlp.Wo",
    attn_dropout="attention_dropout",  # a float attribute
    norms=("attn_norm", "mlp_norm"),
    first_block_norm="attn_norm",  # block 0 reads the normed embeddings directly: layer choices keep it
    final_norm="final_norm",
    embeddings="embeddings",
    word_embeddings="embeddings.tok_embeddings",
    heads_attr=None,
    head_size_attr="head_dim",
    all_head_attr=None,
    scaling_attr=None,  # head_dim ** -0.5 on every forward
    square_heads=("head.dense",),
    token_types=False,
    layer_types_key="layer_types",
))

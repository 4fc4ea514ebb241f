"""The encoder families: BERT, RoBERTa and DistilBERT (issue 16 adds xlm-roberta, electra, deberta-v2, modernbert).

Each entry is data only: module paths inside a block, the attention module's attributes and the config keys, as
transformers 5 names them. A test builds a tiny model of every entry and checks each path resolves.
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
    layers_key="n_layers",
    hidden_key="dim",
    heads_key="n_heads",
    ffn_key="hidden_dim",
))

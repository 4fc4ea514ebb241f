"""Tiny random-weight models and local tokenizers of every encoder family, built in-process (no network).

``tiny_model("deberta-v2")`` is a 4-layer, hidden-64 model of that family shaped like its popular checkpoint
(DeBERTa-v3's relative attention and bucketed positions, ModernBERT's local/global layers, an ELECTRA with
factorised embeddings, ...); ``tiny_tokenizer(family)`` a tokenizer of the family's kind (WordPiece, byte-level
BPE, Unigram) over a few dozen words with the family's special tokens; ``save_tiny_teacher`` writes both as a
model dir for end-to-end runs.
"""

from __future__ import annotations

from pathlib import Path

FAMILY_NAMES = ("bert", "roberta", "xlm-roberta", "electra", "distilbert", "deberta-v2", "modernbert")
WORDS = ["good", "great", "fine", "superb", "lovely", "happy", "bad", "awful", "poor", "boring", "sad", "ugly",
         "the", "a", "movie", "film", "plot", "was", "is", "very", "quite", "and", "actor", "story", "it"]
BERT_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
ROBERTA_SPECIAL = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
# what the tokenizer writes around one sentence, per family: [CLS] ... [SEP] or <s> ... </s>
_KIND = {"bert": "wordpiece", "electra": "wordpiece", "distilbert": "wordpiece", "roberta": "bpe",
         "xlm-roberta": "unigram", "deberta-v2": "unigram", "modernbert": "bpe-cls"}


def tiny_tokenizer(family: str):
    """A fast tokenizer of ``family``'s kind over ``WORDS`` (special tokens first, pad id as in the real one)."""
    import transformers

    kind = _KIND[family]
    if kind == "wordpiece":
        vocab = {t: i for i, t in enumerate(BERT_SPECIAL + WORDS)}
        cls = transformers.DistilBertTokenizerFast if family == "distilbert" else transformers.BertTokenizerFast
        return cls(vocab=vocab)
    if kind == "bpe":
        return transformers.RobertaTokenizerFast(vocab=_byte_vocab(ROBERTA_SPECIAL), merges=_merges())
    if kind == "unigram":
        special = ROBERTA_SPECIAL if family == "xlm-roberta" else BERT_SPECIAL
        pieces = [(t, 0.0) for t in special] + [("▁" + w, -1.0) for w in WORDS] + [(c, -5.0) for c in _chars()]
        if family == "xlm-roberta":
            return transformers.XLMRobertaTokenizerFast(vocab=pieces)
        return transformers.DebertaV2TokenizerFast(vocab=pieces, unk_id=1)
    return _modernbert_tokenizer()


def _chars() -> list[str]:
    return sorted({c for w in WORDS for c in w})


def _byte_vocab(special: list[str]) -> dict[str, int]:
    """Special tokens, every byte-level symbol, then the whole words with their leading space (Ġ)."""
    from tokenizers.pre_tokenizers import ByteLevel

    symbols = sorted(ByteLevel.alphabet())
    tokens = special + symbols + [t for t in _merged_tokens() if t not in symbols]
    return {t: i for i, t in enumerate(tokens)}


def _merged_tokens() -> list[str]:
    out = []
    for word in WORDS:
        for piece in ("Ġ" + word, word):
            for end in range(2, len(piece) + 1):
                if piece[:end] not in out:
                    out.append(piece[:end])
    return out


def _merges() -> list[tuple[str, str]]:
    """Left-to-right merges building every word and its Ġ-prefixed form one symbol at a time."""
    merges = []
    for word in WORDS:
        for piece in ("Ġ" + word, word):
            for end in range(2, len(piece) + 1):
                merge = (piece[:end - 1], piece[end - 1])
                if merge not in merges:
                    merges.append(merge)
    return merges


def _modernbert_tokenizer():
    """ModernBERT ships a byte-level BPE with BERT's special tokens and a [CLS] $A [SEP] template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = _byte_vocab(["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"])
    tok = Tokenizer(models.BPE(vocab=vocab, merges=_merges(), unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    cls, sep = vocab["[CLS]"], vocab["[SEP]"]
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                                   pad_token="[PAD]", mask_token="[MASK]", model_input_names=["input_ids",
                                                                                              "attention_mask"])


def tiny_config(family: str, tokenizer=None, *, layers: int = 4, hidden: int = 64, heads: int = 4, ffn: int = 128,
                **kw):
    """A config of ``family`` shaped like its popular checkpoint, at the given widths, for ``tokenizer``."""
    import transformers

    tok = tokenizer or tiny_tokenizer(family)
    ids = dict(vocab_size=len(tok), pad_token_id=tok.pad_token_id)
    common = dict(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads, intermediate_size=ffn)
    if family == "distilbert":
        return transformers.DistilBertConfig(n_layers=layers, dim=hidden, n_heads=heads, hidden_dim=ffn,
                                             max_position_embeddings=128, **ids, **kw)
    if family == "bert":
        return transformers.BertConfig(max_position_embeddings=128, **common, **ids, **kw)
    if family in ("roberta", "xlm-roberta"):
        cls = transformers.RobertaConfig if family == "roberta" else transformers.XLMRobertaConfig
        return cls(max_position_embeddings=130, type_vocab_size=1, bos_token_id=tok.cls_token_id,
                   eos_token_id=tok.sep_token_id, **common, **ids, **kw)
    if family == "electra":  # electra-small: embeddings narrower than the hidden width, lifted by a Linear
        kw.setdefault("embedding_size", hidden // 2)
        return transformers.ElectraConfig(max_position_embeddings=128, **common, **ids, **kw)
    if family == "deberta-v2":  # deberta-v3: relative attention, bucketed positions, no position table/token types
        settings = dict(relative_attention=True, position_buckets=16, max_relative_positions=-1,
                        pos_att_type=["p2c", "c2p"], norm_rel_ebd="layer_norm", share_att_key=True,
                        position_biased_input=False, type_vocab_size=0, max_position_embeddings=128)
        return transformers.DebertaV2Config(**{**settings, **kw}, **common, **ids)
    if family == "modernbert":  # ids of the tiny vocab (the config defaults them to 5028x)
        special = dict(bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id, cls_token_id=tok.cls_token_id,
                       sep_token_id=tok.sep_token_id)
        kw.setdefault("local_attention", 8)  # a window shorter than the test sentences: local layers differ
        return transformers.ModernBertConfig(max_position_embeddings=128, **special, **common, **ids, **kw)
    raise KeyError(family)


def tiny_model(family: str, head: str = "ForSequenceClassification", *, seed: int = 0, num_labels: int = 2, **kw):
    """A random-weight model of ``family`` with ``head`` (``""`` for the bare encoder), in eval mode."""
    import torch
    import transformers

    torch.manual_seed(seed)
    config = tiny_config(family, num_labels=num_labels, **kw)
    auto = getattr(transformers, "AutoModel" + head)
    return auto.from_config(config).eval()


def tiny_inputs(family: str, *, batch: int = 2, seq: int = 12, seed: int = 1, pad: int = 3) -> dict:
    """A batch of random token ids of ``family``'s tiny vocab; the first row padded by ``pad`` positions."""
    import torch

    tok = tiny_tokenizer(family)
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(len(BERT_SPECIAL), len(tok), (batch, seq), generator=gen)
    mask = torch.ones(batch, seq, dtype=torch.long)
    if pad:
        mask[0, -pad:] = 0
        ids[0, -pad:] = tok.pad_token_id
    out = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in tok.model_input_names:
        out["token_type_ids"] = torch.zeros_like(ids)
    return out


def save_tiny_teacher(family: str, root: Path, *, head: str = "ForSequenceClassification", num_labels: int = 2,
                      seed: int = 0, **kw) -> Path:
    """A teacher dir of ``family`` (safetensors + its tiny tokenizer) for end-to-end runs."""
    model = tiny_model(family, head, seed=seed, num_labels=num_labels, **kw)
    model.save_pretrained(root)
    tiny_tokenizer(family).save_pretrained(root)
    return root

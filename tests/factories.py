"""Tiny models, tokenizers and data built in-process, so no test touches the network."""

from __future__ import annotations

import random
from pathlib import Path

POSITIVE = ["good", "great", "fine", "superb", "lovely", "happy"]
NEGATIVE = ["bad", "awful", "poor", "boring", "sad", "ugly"]
NEUTRAL = ["the", "a", "movie", "film", "plot", "was", "is", "very", "quite", "and", "actor", "story", "it"]
WORDS = POSITIVE + NEGATIVE + NEUTRAL
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tiny_tokenizer(tmp_path: Path):
    from transformers import BertTokenizerFast

    return tokenizer_from_words(SPECIAL + WORDS)


def tokenizer_from_words(tokens: list[str]):
    """A WordPiece BERT tokenizer over exactly these tokens (transformers 5 takes the vocab as a dict)."""
    from transformers import BertTokenizerFast

    return BertTokenizerFast(vocab={t: i for i, t in enumerate(tokens)})


def tiny_bert_config(layers: int = 2, hidden: int = 32, heads: int = 4, ffn: int = 64, vocab: int = 99, **kw):
    from transformers import BertConfig

    kw.setdefault("max_position_embeddings", 128)
    return BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                      intermediate_size=ffn, **kw)


def sentence(rng: random.Random) -> tuple[str, int]:
    label = rng.randrange(2)
    words = rng.sample(NEUTRAL, 4) + [rng.choice(POSITIVE if label else NEGATIVE)]
    rng.shuffle(words)
    return " ".join(words), label


def write_sst2_like(root: Path, n_train: int = 96, n_dev: int = 32, seed: int = 0) -> Path:
    """A GLUE SST-2-style directory (``sentence\\tlabel`` TSVs) whose labels a tiny model can learn."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for name, n in (("train.tsv", n_train), ("dev.tsv", n_dev)):
        rows = [sentence(rng) for _ in range(n)]
        (root / name).write_text("sentence\tlabel\n" + "".join(f"{s} \t{y}\n" for s, y in rows))
    return root


def save_teacher(root: Path, tmp_path: Path, *, with_head: bool = True, num_labels: int = 2, seed: int = 0,
                 **config_kw) -> Path:
    """A tiny BERT teacher dir (safetensors + tokenizer); without a head it looks like a bare encoder checkpoint."""
    import torch
    from transformers import BertForSequenceClassification, BertModel

    torch.manual_seed(seed)
    tok = tiny_tokenizer(tmp_path)
    config = tiny_bert_config(vocab=len(tok), num_labels=num_labels, **config_kw)
    model = BertForSequenceClassification(config) if with_head else BertModel(config)
    model.save_pretrained(root)
    tok.save_pretrained(root)
    return root

"""Tiny models, tokenizers and data built in-process, so no test touches the network."""

from __future__ import annotations

import os
import random
from pathlib import Path

# The full benchmark data beside a development checkout (../shared/data); a fresh clone has none, and the tests that
# read it skip. DISTILL_SHARED_DATA points elsewhere (e.g. at a missing dir, to check the skips).
SHARED_DATA = Path(os.environ.get("DISTILL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def needs_shared(*names: str):
    """Skip unless every ``SHARED_DATA/<name>`` exists, with a one-line reason."""
    import pytest

    missing = [n for n in names if not (SHARED_DATA / n).exists()]
    return pytest.mark.skipif(bool(missing), reason=f"needs the benchmark data {SHARED_DATA}/{'+'.join(missing)} "
                                                    "(beside a development checkout, not in the clone)")

POSITIVE = ["good", "great", "fine", "superb", "lovely", "happy"]
NEGATIVE = ["bad", "awful", "poor", "boring", "sad", "ugly"]
NEUTRAL = ["the", "a", "movie", "film", "plot", "was", "is", "very", "quite", "and", "actor", "story", "it"]
WORDS = POSITIVE + NEGATIVE + NEUTRAL
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tiny_tokenizer(tmp_path: Path):

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


def write_pairs(root: Path, *, regression: bool = False, n_train: int = 64, n_dev: int = 16, seed: int = 0) -> Path:
    """A GLUE MRPC-style (or STS-B-style, ``regression=True``) sentence-pair directory."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for name, n in (("train.tsv", n_train), ("dev.tsv", n_dev)):
        lines = []
        for i in range(n):
            (a, ya), (b, yb) = sentence(rng), sentence(rng)
            if regression:
                lines.append(f"{i}\tg\tf\ty\t0\ts\t1\t{a}\t{b}\t{2.5 + 2.5 * (ya == yb) - 2.5 * (ya != yb):.1f}\n")
            else:
                lines.append(f"{int(ya == yb)}\t{i}\t{i + 1}\t{a}\t{b}\n")
        header = ("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
                  if regression else "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n")
        (root / name).write_text(header + "".join(lines))
    return root


def save_mlm(root: Path, tmp_path: Path, *, seed: int = 0, **config_kw) -> Path:
    """A tiny ``BertForMaskedLM`` dir (safetensors + tokenizer): a masked LM for augmentation, or a teacher
    checkpoint that has its own MLM head."""
    import torch
    from transformers import BertForMaskedLM

    torch.manual_seed(seed)
    tok = tiny_tokenizer(tmp_path)
    BertForMaskedLM(tiny_bert_config(vocab=len(tok), **config_kw)).save_pretrained(root)
    tok.save_pretrained(root)
    return root

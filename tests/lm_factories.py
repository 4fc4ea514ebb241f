"""Tiny causal LMs, a byte-level BPE tokenizer and WikiText-like text, all built in-process (no network)."""

from __future__ import annotations

import random
from pathlib import Path

EOS = "<|endoftext|>"
WORDS = ("the cat sat on a mat and the dog ran to the park while birds sang in old trees near river banks "
         "people walked along quiet streets under grey skies before rain fell over the small town").split()


def sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` short pseudo-English sentences (fixed for a seed)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))).capitalize() + " ." for _ in range(n)]


def tiny_lm_tokenizer(vocab_size: int = 300):
    """A byte-level BPE tokenizer (GPT-2 style) trained here on ``sentences``; EOS ``<|endoftext|>``, no BOS added."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(sentences(200), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, unk_token=EOS, pad_token=EOS)


def tiny_causal_lm(family: str = "llama", vocab: int = 300, seed: int = 0, **kw):
    """A random tiny ``*ForCausalLM`` of ``family`` (llama with GQA, qwen2, gpt2), eval mode, float32.

    Llama and Qwen2 use head size 16: ONNX Runtime's GroupQueryAttention (onnxruntime-genai) needs a multiple of 16.
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    if family == "gpt2":
        cfg = dict(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=128, bos_token_id=0, eos_token_id=0)
        cfg.update(kw)
        return GPT2LMHeadModel(GPT2Config(**cfg)).eval()
    cfg = dict(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=128, bos_token_id=0, eos_token_id=0, pad_token_id=0,
               tie_word_embeddings=True)
    cfg.update(kw)
    if family == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**cfg)).eval()
    return LlamaForCausalLM(LlamaConfig(**cfg)).eval()


def save_tiny_lm(root: Path, family: str = "llama", seed: int = 0, **kw) -> Path:
    """A tiny causal LM dir (safetensors, config, tokenizer.json) as ``save_pretrained`` writes it."""
    tok = tiny_lm_tokenizer()
    model = tiny_causal_lm(family, vocab=len(tok), seed=seed, **kw)
    model.save_pretrained(root)
    tok.save_pretrained(root)
    return root


def write_wikitext_like(path: Path, articles: int = 3, paragraphs: int = 3, seed: int = 0) -> Path:
    """A WikiText-raw-style file: `` = Title = `` articles, `` = = Section = = `` headings, lines framed by spaces."""
    rng = random.Random(seed)
    lines = [" "]
    for a in range(articles):
        lines += [f" = Article {a} = ", " "]
        for p in range(paragraphs):
            if p == 1:
                lines += [f" = = Section {a}.{p} = = ", " "]
            lines += [" " + " ".join(sentences(3, seed=rng.randrange(10**6))) + " ", " "]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_lm_folder(root: Path, train_articles: int = 5, dev_articles: int = 2) -> Path:
    """A ``train.txt``/``dev.txt`` folder of WikiText-like articles, the layout ``--data DIR`` reads."""
    write_wikitext_like(root / "train.txt", articles=train_articles, seed=1)
    write_wikitext_like(root / "dev.txt", articles=dev_articles, seed=2)
    return root

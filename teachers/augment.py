"""TinyBERT-style data augmentation: new training text by masked-LM word replacement (Jiao et al. 2020).

For each text and copy: pick whole words (letters or digits, in a seeded random order) until about ``mask_prob`` of
the word pieces are covered, mask every piece of them, run the masked LM once, and replace each masked piece with a
sample from its top-k predictions (never a special token, and a word never starts with a continuation piece).
The words are replaced in the original string, so spacing and punctuation stay. Everything random comes from a
generator seeded by (seed, column, row, copy): the same seed gives the same texts.

The new rows carry label -100: the hard-label term skips them and they are learned from the teacher's soft
targets only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from distill.core.console import info
from distill.core.errors import ConfigError, ModelError
from distill.core.runtime import load_policy, resolve_device
from distill.objective.losses import IGNORE_INDEX


@dataclass
class MaskedLM:
    """A masked-LM model with its trained head, and the tokenizer it reads."""

    model: torch.nn.Module
    tokenizer: object
    source: str
    method = "mlm"

    def rewrite(self, texts: list[str], n: int, **kw) -> list[list[str]]:
        """``augment_texts`` with this masked LM (the rewriter interface ``augment_dataset`` calls)."""
        return augment_texts(texts, self, n, **kw)


def _has_tokenizer(source: str) -> bool:
    path = Path(source)
    if not path.is_dir():
        return True  # a Hub id: its tokenizer comes with it
    return any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"))


def load_mlm(source: str, tokenizer=None) -> MaskedLM | None:
    """The masked LM of ``source`` (model dir or Hub id) with its trained head, or None when it has no MLM head.

    ``tokenizer`` is used when the directory has none of its own.
    """
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from teachers.loading import _quiet_transformers

    _quiet_transformers()
    try:
        model, loading = AutoModelForMaskedLM.from_pretrained(source, output_loading_info=True,
                                                              **load_policy().from_pretrained_kwargs())
    except Exception:  # no masked-LM class for this architecture, or no weights: no MLM head either way
        return None
    prefix = model.base_model_prefix
    if any(not k.startswith(prefix + ".") for k in loading["missing_keys"]):
        return None
    if _has_tokenizer(source):
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=load_policy().trust_remote_code)
        except Exception as exc:
            raise ModelError(f"cannot load the tokenizer of masked LM '{source}' ({exc.__class__.__name__})",
                             "save the MLM's tokenizer beside it (tokenizer.save_pretrained)") from None
    if tokenizer is None or getattr(tokenizer, "mask_token_id", None) is None:
        return None
    if len(tokenizer) > model.config.vocab_size:
        raise ModelError(f"masked LM '{source}' has {model.config.vocab_size} tokens but its tokenizer "
                         f"{len(tokenizer)}",
                         "pass an MLM directory saved together with its tokenizer")
    return MaskedLM(model.eval().requires_grad_(False), tokenizer, str(source))


def _continuation_prefix(tokenizer) -> str | None:
    """The word-piece continuation prefix (``##`` for BERT's WordPiece), or None for other tokenizer models."""
    model = getattr(getattr(tokenizer, "backend_tokenizer", None), "model", None)
    prefix = getattr(model, "continuing_subword_prefix", None)
    return prefix or None


def _banned(tokenizer, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(never, at a word's first piece): boolean masks over the vocabulary of tokens a sample must not be."""
    never = torch.zeros(vocab_size, dtype=torch.bool)
    never[[i for i in tokenizer.all_special_ids if i < vocab_size]] = True
    first = never.clone()
    prefix = _continuation_prefix(tokenizer)
    if prefix:
        ids = [i for t, i in tokenizer.get_vocab().items() if t.startswith(prefix) and i < vocab_size]
        first[ids] = True
    return never, first


@dataclass
class _Job:
    """One (row, copy): the masked ids, the chosen words (char span, piece positions) and its random generator."""

    row: int
    ids: list[int]
    words: list[tuple[int, int, list[int]]]
    rng: np.random.Generator


def _plan(texts: list[str], tokenizer, n: int, *, seed: int, stream: int, mask_prob: float,
          max_length: int) -> list[_Job]:
    """Choose the words to replace in every copy of every text."""
    enc = tokenizer(texts, truncation=True, max_length=max_length, return_offsets_mapping=True)
    jobs = []
    for row, text in enumerate(texts):
        ids = enc["input_ids"][row]
        candidates, pieces = word_pieces(text, enc["offset_mapping"][row], enc.word_ids(row))
        target = max(1, round(mask_prob * pieces))
        for copy in range(n):
            rng = np.random.default_rng([seed, stream, row, copy])
            chosen, covered = [], 0
            for k in rng.permutation(len(candidates)):
                if covered >= target:
                    break
                chosen.append(candidates[k])
                covered += len(candidates[k][2])
            masked = list(ids)
            for _, _, positions in chosen:
                for pos in positions:
                    masked[pos] = tokenizer.mask_token_id
            jobs.append(_Job(row, masked, sorted(chosen), rng))
    return jobs


def word_pieces(text: str, offsets, word_ids) -> tuple[list[tuple[int, int, list[int]]], int]:
    """(char start, char end, piece positions) of each word of ``text`` with a letter or digit, in order, and the
    number of word pieces in it (what a replacement share is a share of). ``offsets``/``word_ids``: the fast
    tokenizer's ``offset_mapping`` and ``word_ids()`` of the text."""
    pieces: dict[int, list[int]] = {}
    for pos, word in enumerate(word_ids):
        if word is not None:
            pieces.setdefault(word, []).append(pos)
    words = [(offsets[ps[0]][0], offsets[ps[-1]][1], ps) for ps in pieces.values()]
    return [w for w in words if any(ch.isalnum() for ch in text[w[0]:w[1]])], sum(len(p) for p in pieces.values())


def _sample(logits: torch.Tensor, banned: torch.Tensor, top_k: int, rng: np.random.Generator) -> int:
    """One token id drawn from the top-k predictions at a masked position (softmax over those k)."""
    scores = logits.float().masked_fill(banned.to(logits.device), float("-inf"))
    top = scores.topk(min(top_k, int((~banned).sum())))
    probs = torch.softmax(top.values, -1).double().cpu().numpy()
    return int(top.indices[int(rng.choice(len(probs), p=probs / probs.sum()))])


def augment_texts(texts: list[str], mlm: MaskedLM, n: int, *, seed: int = 0, stream: int = 0, mask_prob: float = 0.15,
                  top_k: int = 10, max_length: int = 128, batch_size: int = 32, device: str = "auto",
                  ) -> list[list[str]]:
    """For each text, ``n`` new texts with about ``mask_prob`` of the word pieces replaced (in whole words) by
    samples from the masked LM's top-``top_k`` predictions. ``stream`` separates columns (e.g. sentence pairs).

    Deterministic for a given ``seed`` (and batch size): the same call gives the same texts.
    """
    tokenizer, model = mlm.tokenizer, mlm.model
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(f"augmentation needs a fast tokenizer (word offsets), not {type(tokenizer).__name__}",
                          "use an MLM directory with tokenizer.json")
    if n < 1 or not texts:
        return [[] for _ in texts]
    max_length = min(max_length, int(getattr(model.config, "max_position_embeddings", max_length)))
    jobs = _plan(list(texts), tokenizer, n, seed=seed, stream=stream, mask_prob=mask_prob, max_length=max_length)
    vocab = model.get_output_embeddings().weight.shape[0] if model.get_output_embeddings() is not None else \
        model.config.vocab_size
    never, first = _banned(tokenizer, vocab)
    dev = resolve_device(device)
    model.to(dev)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[list[str]] = [[] for _ in texts]
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start:start + batch_size]
        width = max(len(j.ids) for j in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, job in enumerate(chunk):
            ids[i, :len(job.ids)] = torch.tensor(job.ids)
            mask[i, :len(job.ids)] = 1
        with torch.inference_mode():
            logits = model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits
        for i, job in enumerate(chunk):
            text = texts[job.row]
            for a, b, positions in reversed(job.words):  # right to left: earlier offsets stay valid
                sampled = [_sample(logits[i, pos], first if k == 0 else never, top_k, job.rng)
                           for k, pos in enumerate(positions)]
                word = tokenizer.convert_tokens_to_string(tokenizer.convert_ids_to_tokens(sampled)).strip()
                text = text[:a] + word + text[b:]
            out[job.row].append(text)
    return out


def augment_dataset(dataset, rewriter, n: int, *, seed: int = 0, mask_prob: float = 0.15, top_k: int = 10,
                    max_length: int = 128, batch_size: int = 32, device: str = "auto"):
    """``dataset`` (canonical ``text``, optional ``text_pair``, ``label``) followed by ``n`` augmented copies of
    each row (row i's copies in order), labelled -100 (a class id, or a score for regression) so only the teacher's
    soft targets teach them. ``rewriter``: a ``MaskedLM``, or ``teachers.neighbours.EmbeddingNeighbours`` (anything
    with ``rewrite(texts, n, seed=, stream=, mask_prob=, ...)`` and ``source``)."""
    from datasets import Dataset, concatenate_datasets

    if n < 1:
        return dataset
    if "tokens" in dataset.column_names:
        raise ConfigError("--augment does not support token classification (the tags would not follow the new "
                          "words)", "drop --augment")
    kw = {"seed": seed, "mask_prob": mask_prob, "top_k": top_k, "max_length": max_length, "batch_size": batch_size,
          "device": device}
    columns = {}
    for stream, name in enumerate(("text", "text_pair")):
        if name in dataset.column_names:
            columns[name] = [t for row in rewriter.rewrite(dataset[name], n, stream=stream, **kw) for t in row]
    columns["label"] = [IGNORE_INDEX] * (len(dataset) * n)
    extra = Dataset.from_dict(columns)
    extra = extra.cast(dataset.features) if set(extra.column_names) == set(dataset.column_names) else extra
    info(f"  augmentation: {len(extra):,} new rows ({n} per example) from {_named(rewriter)}")
    return concatenate_datasets([dataset, extra.select_columns(dataset.column_names)])


def _named(rewriter) -> str:
    return f"masked LM {rewriter.source}" if isinstance(rewriter, MaskedLM) else rewriter.source

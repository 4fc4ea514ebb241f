"""Data augmentation without a masked LM: replace words by their nearest neighbours in the teacher's input
embeddings.

TinyBERT (Jiao et al. 2020) rewrites training text with BERT's masked LM for single-piece words and GloVe neighbours
for the others; a teacher without a masked-LM head (a sentence-embedding model such as all-MiniLM-L6, or any
fine-tuned classifier) still has its word-piece embedding table, whose cosine neighbours play GloVe's part. For
each text and copy: pick single-piece words (letters or digits, in a seeded random order) until about ``mask_prob``
of the word pieces are covered, and replace each with one of its ``top_k`` nearest pieces (cosine similarity, never
itself, a special or ``[unused]`` token, a continuation piece or a piece without a letter or digit), drawn
uniformly. The words are replaced in the original string, so spacing and punctuation stay. Everything random comes
from a generator seeded by (seed, column, row, copy): the same seed gives the same texts.

The rows it writes are learned from the teacher's soft targets only (``teachers.augment.augment_dataset``), so a
neighbour that changes the meaning ("good" → "bad") is not label noise: the teacher scores the new text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from teachers.augment import word_pieces

CHUNK = 1024  # vocabulary rows per similarity block (bounds memory: CHUNK × vocabulary floats)


@dataclass
class EmbeddingNeighbours:
    """A word-piece embedding table and its tokenizer: the rewriter ``--augment`` uses when no masked LM is given.

    ``source`` names it in the report; neighbours are computed lazily per token id and cached."""

    embeddings: torch.Tensor  # (vocabulary, width), the teacher's input embeddings
    tokenizer: object
    source: str
    top_k: int = 10
    method = "neighbours"
    _table: dict[int, list[int]] = field(default_factory=dict, repr=False)

    @classmethod
    def of_model(cls, model, tokenizer, source: str, top_k: int = 10) -> EmbeddingNeighbours:
        """The neighbours of ``model``'s input embeddings (detached, on CPU, float32)."""
        weight = model.get_input_embeddings().weight.detach().to("cpu", torch.float32)
        return cls(weight, tokenizer, f"nearest neighbours in the input embeddings of {source}", top_k)

    def _allowed(self) -> torch.Tensor:
        """Tokens a replacement may be: whole-word pieces with a letter or digit, not special, not ``[unused]``."""
        vocab = self.embeddings.shape[0]
        allowed = torch.zeros(vocab, dtype=torch.bool)
        special = set(self.tokenizer.all_special_ids)
        for token, i in self.tokenizer.get_vocab().items():
            if i < vocab and i not in special and not token.startswith("##") and not token.startswith("[") \
                    and any(ch.isalnum() for ch in token):
                allowed[i] = True
        return allowed

    def neighbours(self, ids: list[int]) -> dict[int, list[int]]:
        """The ``top_k`` nearest allowed pieces of each id (cosine similarity of input embeddings), cached."""
        todo = sorted({i for i in ids if i not in self._table})
        if todo:
            unit = torch.nn.functional.normalize(self.embeddings, dim=-1)
            banned = ~self._allowed()
            for start in range(0, len(todo), CHUNK):
                chunk = todo[start:start + CHUNK]
                sims = unit[chunk] @ unit.T
                sims[:, banned] = float("-inf")
                sims[torch.arange(len(chunk)), torch.tensor(chunk)] = float("-inf")
                top = sims.topk(min(self.top_k, int((~banned).sum()) - 1), dim=-1).indices
                self._table.update(zip(chunk, top.tolist(), strict=True))
        return {i: self._table[i] for i in ids}

    def rewrite(self, texts: list[str], n: int, *, seed: int = 0, stream: int = 0, mask_prob: float = 0.15,
                max_length: int = 128, **_: object) -> list[list[str]]:
        """For each text, ``n`` new texts with about ``mask_prob`` of the word pieces replaced (single-piece words
        only) by embedding neighbours. ``stream`` separates columns (e.g. sentence pairs). Deterministic per seed."""
        if n < 1 or not texts:
            return [[] for _ in texts]
        enc = self.tokenizer(list(texts), truncation=True, max_length=max_length, return_offsets_mapping=True,
                             add_special_tokens=False)
        words = [_single_piece_words(text, enc["input_ids"][row], enc["offset_mapping"][row], enc.word_ids(row))
                 for row, text in enumerate(texts)]
        table = self.neighbours([i for row in words for _, _, i in row[0]])
        out: list[list[str]] = []
        for row, (text, (candidates, pieces)) in enumerate(zip(texts, words, strict=True)):
            target = max(1, round(mask_prob * pieces))
            copies = []
            for copy in range(n):
                rng = np.random.default_rng([seed, stream, row, copy])
                chosen = [candidates[k] for k in rng.permutation(len(candidates))[:target]]
                new = text
                for a, b, i in sorted(chosen, reverse=True):  # right to left: earlier offsets stay valid
                    new = new[:a] + self.tokenizer.convert_ids_to_tokens(table[i][rng.integers(len(table[i]))]) \
                        + new[b:]
                copies.append(new)
            out.append(copies)
        return out



def _single_piece_words(text: str, ids: list[int], offsets, word_ids) -> tuple[list[tuple[int, int, int]], int]:
    """(char start, char end, token id) of each word made of one piece with a letter or digit, and the number of
    word pieces in the text (``teachers.augment.word_pieces``)."""
    words, pieces = word_pieces(text, offsets, word_ids)
    return [(a, b, ids[positions[0]]) for a, b, positions in words if len(positions) == 1], pieces

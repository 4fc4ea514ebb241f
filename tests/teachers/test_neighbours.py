"""Augmentation without a masked LM: single-piece words replaced by their nearest input-embedding neighbours."""

import factories
import torch

from teachers.neighbours import EmbeddingNeighbours

TEXTS = ["the movie was very good .", "a bad plot , and a boring actor", "it", "quite lovely film and story"]


def _neighbours(tmp_path, top_k: int = 3) -> EmbeddingNeighbours:
    tokenizer = factories.tiny_tokenizer(tmp_path)
    torch.manual_seed(0)
    table = torch.randn(len(tokenizer), 16)
    return EmbeddingNeighbours(table, tokenizer, "test table", top_k)


def test_neighbours_are_the_nearest_allowed_pieces_by_cosine(tmp_path):
    nb = _neighbours(tmp_path)
    vocab = nb.tokenizer.get_vocab()
    good = vocab["good"]
    nb.embeddings[vocab["lovely"]] = nb.embeddings[good] * 3  # same direction: the nearest by cosine
    nb.embeddings[vocab["[UNK]"]] = nb.embeddings[good]  # special: never offered
    found = nb.neighbours([good])[good]
    assert found[0] == vocab["lovely"] and len(found) == 3 and good not in found
    tokens = nb.tokenizer.convert_ids_to_tokens(found)
    assert all(not t.startswith(("##", "[")) and any(c.isalnum() for c in t) for t in tokens)


def test_rewrites_are_seeded_and_replace_single_piece_words_only(tmp_path):
    nb = _neighbours(tmp_path)
    first = nb.rewrite(TEXTS, 3, seed=7)
    assert first == nb.rewrite(TEXTS, 3, seed=7) and first != nb.rewrite(TEXTS, 3, seed=8)
    assert first != nb.rewrite(TEXTS, 3, seed=7, stream=1)  # the second column of a pair draws other words
    vocab = nb.tokenizer.get_vocab()
    for copies, old in zip(first, TEXTS, strict=True):
        assert len(copies) == 3
        for new in copies:
            before, after = old.split(), new.split()
            assert len(after) == len(before)
            changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
            assert 1 <= len(changed) <= max(1, round(0.15 * len(before)))
            assert all(a.isalnum() and b in vocab for a, b in changed)  # punctuation stays, words become pieces
    assert nb.rewrite(TEXTS, 0) == [[] for _ in TEXTS]

"""The causal-LM teacher cache (``teachers.lm_cache``): the cached top-k loss equals the live truncated loss (and
with k = V the full-vocabulary loss), a sound cache is reused without running the teacher, a changed teacher or k
rebuilds it, and objectives it cannot serve are refused."""

from __future__ import annotations

import json
from dataclasses import replace

import lm_factories
import numpy as np
import pytest
import torch

from distill.core.errors import ConfigError, DistillError
from distill.data.batching import make_loader
from distill.data.lm import lm_dataset
from distill.data.lm_kind import CAUSAL_LM_KIND
from distill.objective.config import DistillConfig
from distill.objective.lm_losses import TopKTeacher, lm_kd_loss, lm_kd_loss_topk, truncate_teacher
from distill.objective.objective import Objective
from teachers.lm_cache import CachedLMTeacher, cache_lm_teacher

T = 2.0


@pytest.fixture(scope="module")
def setup():
    tok = lm_factories.tiny_lm_tokenizer()
    blocks = lm_dataset(lm_factories.sentences(30, seed=3), tok, 16)
    blocks = blocks.add_column("idx", list(range(len(blocks))))
    teacher = lm_factories.tiny_causal_lm("llama", vocab=len(tok), seed=0)
    student = lm_factories.tiny_causal_lm("llama", vocab=len(tok), seed=1, num_hidden_layers=1)
    return tok, blocks, teacher, student


def _batch(tok, blocks):
    return next(iter(make_loader(blocks, tok, 4, shuffle=True, seed=5, kind=CAUSAL_LM_KIND)))


def _logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def _forwards(model) -> list[int]:
    calls = [0]
    model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("dtype, tol", [("float32", 1e-5), ("float16", 2e-3)])
def test_cached_top_k_loss_equals_the_live_truncated_loss(setup, tmp_path, dtype, tol):
    tok, blocks, teacher, student = setup
    cache = cache_lm_teacher(teacher, blocks, tmp_path / "c", top_k=8, temperature=T, dtype=dtype, device="cpu")
    batch = _batch(tok, blocks)
    cached = cache(batch).logits
    assert isinstance(cached, TopKTeacher) and cached.k == 8 and cached.logprobs.shape == (4, 16, 8)
    s, t, mask = _logits(student, batch), _logits(teacher, batch), batch["attention_mask"]
    live = lm_kd_loss_topk(s, truncate_teacher(t, 8, T), mask, temperature=T)
    torch.testing.assert_close(lm_kd_loss_topk(s, cached, mask, temperature=T), live, rtol=tol, atol=tol)
    assert live < lm_kd_loss(s, t, mask, temperature=T)  # k < V: a lower bound of the full loss
    # through the objective, as the training loop calls it: α·CE + (1−α)·T²·(tail-bucket KL)
    objective = Objective(DistillConfig(temperature=T, hidden_weight=0.0), kind="lm_kd")
    out = type("Out", (), {"logits": s})()
    total, terms = objective.loss(out, batch["labels"], [cache.outputs(batch, False, False)], mask)
    torch.testing.assert_close(torch.tensor(terms["kd"]), live, rtol=tol, atol=tol)


def test_with_k_equal_to_the_vocabulary_it_is_the_full_loss(setup, tmp_path):
    tok, blocks, teacher, student = setup
    vocab = teacher.config.vocab_size
    cache = cache_lm_teacher(teacher, blocks, tmp_path / "c", top_k=10 * vocab, temperature=T, dtype="float32",
                             device="cpu")
    assert cache.top_k == vocab and np.isneginf(cache.tail[:]).all()
    batch = _batch(tok, blocks)
    s, t, mask = _logits(student, batch), _logits(teacher, batch), batch["attention_mask"]
    torch.testing.assert_close(lm_kd_loss_topk(s, cache(batch).logits, mask, temperature=T),
                               lm_kd_loss(s, t, mask, temperature=T), rtol=1e-5, atol=1e-5)


def test_reused_without_the_teacher_and_rebuilt_when_teacher_or_k_change(setup, tmp_path):
    tok, blocks, teacher, _ = setup
    path = tmp_path / "c"
    first = cache_lm_teacher(teacher, blocks, path, top_k=4, temperature=T, device="cpu")
    manifest = (path / "manifest.json").read_text()
    assert first.summary()["built"] and first.summary()["size_bytes"] == json.loads(manifest)["bytes"] > 0
    model = lm_factories.tiny_causal_lm("llama", vocab=teacher.config.vocab_size, seed=0)  # same weights, own hook
    calls = _forwards(model)
    again = cache_lm_teacher(model, blocks, path, top_k=4, temperature=T, device="cpu")
    assert calls[0] == 0 and not again.summary()["built"] and (path / "manifest.json").read_text() == manifest
    cache_lm_teacher(model, blocks, path, top_k=5, temperature=T, device="cpu")  # another k
    assert calls[0] > 0 and json.loads((path / "manifest.json").read_text())["top_k"] == 5
    calls[0] = 0
    cache_lm_teacher(model, blocks, path, top_k=5, temperature=1.0, device="cpu")  # another temperature
    assert calls[0] > 0
    other = lm_factories.tiny_causal_lm("llama", vocab=teacher.config.vocab_size, seed=7)  # another teacher
    calls = _forwards(other)
    rebuilt = cache_lm_teacher(other, blocks, path, top_k=5, temperature=1.0, device="cpu")
    assert calls[0] > 0 and rebuilt.summary()["built"]
    assert sorted(p.name for p in path.iterdir()) == ["indices.npy", "logprobs.npy", "manifest.json", "tail.npy"]
    assert not list(tmp_path.glob(".c.tmp-*"))


def test_a_damaged_cache_is_rebuilt(setup, tmp_path):
    tok, blocks, teacher, _ = setup
    path = tmp_path / "c"
    cache_lm_teacher(teacher, blocks, path, top_k=4, temperature=T, device="cpu")
    data = bytearray((path / "tail.npy").read_bytes())
    data[-1] ^= 0xFF
    (path / "tail.npy").write_bytes(bytes(data))
    assert cache_lm_teacher(teacher, blocks, path, top_k=4, temperature=T, device="cpu").summary()["built"]


def test_what_the_cache_cannot_serve_is_refused(setup, tmp_path):
    tok, blocks, teacher, _ = setup
    cache = cache_lm_teacher(teacher, blocks, tmp_path / "c", top_k=4, temperature=T, device="cpu")
    assert isinstance(cache, CachedLMTeacher)
    with pytest.raises(ConfigError, match="no hidden states"):
        cache.check(Objective(DistillConfig(temperature=T, hidden_weight=0.1), kind="lm_kd", student_width=64,
                              teacher_width=64, layer_map=[(1, 2)]))
    with pytest.raises(ConfigError, match="built at temperature 2.0"):
        cache.check(Objective(DistillConfig(temperature=1.0, hidden_weight=0.0), kind="lm_kd"))
    with pytest.raises(ConfigError, match="temperature-schedule"):
        cache.check(Objective(replace(DistillConfig(temperature=T, hidden_weight=0.0), temperature_schedule="linear",
                                      temperature_end=1.0), kind="lm_kd"))
    batch = _batch(tok, blocks)
    with pytest.raises(DistillError, match="no 'idx' column"):
        cache.outputs({k: v for k, v in batch.items() if k != "idx"}, False, False)
    with pytest.raises(ConfigError, match="must be ≥ 1"):
        cache_lm_teacher(teacher, blocks, tmp_path / "d", top_k=0)

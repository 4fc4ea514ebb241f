"""The teacher-output cache: exact lookups, reuse across runs, and stale or damaged caches rebuilt, never used."""

import json

import factories
import numpy as np
import pytest
import torch

from distill.core.errors import ConfigError, DistillError
from distill.data import load_splits, make_loader, tokenize
from distill.data.tasks import get_task
from teachers import CachedTeacher, cache_teacher_outputs
from teachers.cache import check_cache


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from transformers import BertForSequenceClassification

    tmp = tmp_path_factory.mktemp("cache")
    tok = factories.tiny_tokenizer(tmp)
    splits = load_splits(get_task("sst2"), str(factories.write_sst2_like(tmp / "d", n_train=48, n_dev=8)))
    data = tokenize(splits.train, tok, 32, index=True)
    torch.manual_seed(0)
    config = factories.tiny_bert_config(vocab=len(tok), hidden=32, heads=4, layers=2, num_labels=5)
    teacher = BertForSequenceClassification(config).eval()
    return teacher, tok, data


def _reference(teacher, batch):
    with torch.no_grad():
        return teacher(**{k: v for k, v in batch.items() if k not in ("labels", "idx")}, output_hidden_states=True)


def test_lookup_matches_the_teacher_and_is_reused(setup, tmp_path):
    teacher, tok, data = setup
    cache = cache_teacher_outputs(teacher, data, tmp_path / "c", hidden_layers=[0, -1], tokenizer=tok, max_length=32)
    assert isinstance(cache, CachedTeacher) and cache.summary()["built"]
    batch = next(iter(make_loader(data, tok, 16, shuffle=True, seed=3)))
    out, ref = cache(batch), _reference(teacher, batch)
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(out.logits, ref.logits, atol=5e-3, rtol=1e-3)  # fp16 storage
    for layer in (0, 2, -1):
        torch.testing.assert_close(out.hidden_states[layer][real], ref.hidden_states[layer][real], atol=5e-3,
                                   rtol=1e-3)
    assert not out.hidden_states[-1][~real].any()  # padding is zero
    with pytest.raises(ConfigError, match="layer 1 is not in the teacher cache"):
        out.hidden_states[1]
    with pytest.raises(ConfigError, match=r"needs teacher layer\(s\) \[1\]"):
        cache.require_layers([1, 2])
    again = cache_teacher_outputs(teacher, data, tmp_path / "c", hidden_layers=[0, 2], tokenizer=tok, max_length=32)
    summary = again.summary()
    assert not summary["built"] and summary["size_mb"] > 0 and summary["rows"] == len(data)


def test_top_k_keeps_the_largest_logits(setup, tmp_path):
    teacher, tok, data = setup
    cache = cache_teacher_outputs(teacher, data, tmp_path / "c", top_k=2, tokenizer=tok)
    assert (tmp_path / "c" / "logit_ids.npy").is_file() and cache.hidden is None
    batch = next(iter(make_loader(data, tok, 8, shuffle=False)))
    out, ref = cache(batch).logits, _reference(teacher, batch).logits
    top = ref.topk(2, dim=-1)
    torch.testing.assert_close(out.gather(1, top.indices), top.values, atol=5e-3, rtol=1e-3)
    assert torch.equal(out.argmax(-1), ref.argmax(-1))
    assert (out.topk(3, dim=-1).values[:, 2] < top.values[:, 1] - 10).all()  # the rest: negligible, finite


def test_stale_truncated_or_corrupt_caches_are_rebuilt(setup, tmp_path):
    teacher, tok, data = setup
    path = tmp_path / "c"
    cache_teacher_outputs(teacher, data, path, hidden_layers=[2], tokenizer=tok)
    fp = json.loads((path / "manifest.json").read_text())["fingerprint"]
    assert check_cache(path, fp) is None
    assert "fingerprint" in check_cache(path, "0" * 64)
    hidden = path / "hidden.npy"
    raw = bytearray(hidden.read_bytes())
    raw[-7] ^= 0xFF
    hidden.write_bytes(bytes(raw))
    assert "checksum" in check_cache(path, fp)
    hidden.write_bytes(bytes(raw[:-100]))
    assert "truncated" in check_cache(path, fp)
    rebuilt = cache_teacher_outputs(teacher, data, path, hidden_layers=[2], tokenizer=tok)
    assert rebuilt.summary()["built"] and check_cache(path, fp) is None
    assert cache_teacher_outputs(teacher, data.select(range(40)), path, hidden_layers=[2],
                                 tokenizer=tok).summary()["built"]  # other rows: another fingerprint
    assert len(np.load(path / "offsets.npy")) == 41


def test_refuses_foreign_dirs_and_unknown_rows(setup, tmp_path):
    teacher, tok, data = setup
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a teacher cache"):
        cache_teacher_outputs(teacher, data, tmp_path / "mine", tokenizer=tok)
    assert (tmp_path / "mine" / "notes.txt").is_file()
    cache = cache_teacher_outputs(teacher, data.select(range(8)), tmp_path / "small", tokenizer=tok)
    batch = next(iter(make_loader(data, tok, 16, shuffle=False)))
    with pytest.raises(DistillError, match="outside the teacher cache"):
        cache(batch)

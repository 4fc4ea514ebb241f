"""Teacher aliases, loading, head detection and bad checkpoints."""

import factories
import pytest

from distill.core.errors import ModelError, UnknownNameError
from distill.data.tasks import get_task
from teachers import TEACHERS, load_teacher, resolve_model_source


def test_aliases():
    assert TEACHERS.get("bert-large") == "google-bert/bert-large-uncased"
    assert TEACHERS.get("bert-base") == "google-bert/bert-base-uncased"
    assert TEACHERS.get("minilm") == "sentence-transformers/all-MiniLM-L6-v2"
    assert resolve_model_source("bert-large") == "google-bert/bert-large-uncased"
    assert resolve_model_source("org/some-model") == "org/some-model"


def test_unknown_alias_lists_choices():
    with pytest.raises(UnknownNameError, match="did you mean 'bert-large'.*minilm"):
        resolve_model_source("bert-larg")


def test_head_detection(tmp_path):
    bare = factories.save_teacher(tmp_path / "bare", tmp_path, with_head=False)
    headed = factories.save_teacher(tmp_path / "headed", tmp_path, with_head=True)
    assert not load_teacher(str(bare), get_task("sst2")).head_trained
    t = load_teacher(str(headed), get_task("sst2"))
    assert t.head_trained and not any(p.requires_grad for p in t.model.parameters())


def test_label_count_mismatch(tmp_path):
    headed = factories.save_teacher(tmp_path / "t", tmp_path, with_head=True, num_labels=2)
    with pytest.raises(ModelError, match="2-label head but task 'mnli' has 3 labels"):
        load_teacher(str(headed), get_task("mnli"))


def test_bad_checkpoints(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        load_teacher(str(tmp_path / "empty"), get_task("sst2"))
    pickled = factories.save_teacher(tmp_path / "p", tmp_path)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(ModelError, match="pickle"):
        load_teacher(str(pickled), get_task("sst2"))
    broken = factories.save_teacher(tmp_path / "b", tmp_path)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="cannot load teacher"):
        load_teacher(str(broken), get_task("sst2"))

"""Which teacher layers a student starts from (uniform, first-k, last-k, a list) and the teacher-pruned shape."""

import factories
import pytest
import torch

from distill.core.errors import ConfigError
from students import init_from_teacher
from students.init import parse_layer_selection, pruned_shape, select_layers
from students.presets import StudentPreset


def test_strategies():
    assert select_layers(2, 6) == select_layers(2, 6, "uniform") == [2, 5]
    assert select_layers(2, 6, "first-k") == [0, 1]
    assert select_layers(2, 6, "last-k") == [4, 5]
    assert select_layers(3, 6, "0,2,5") == select_layers(3, 6, [0, 2, 5]) == [0, 2, 5]
    assert parse_layer_selection(" last-k ") == "last-k"


@pytest.mark.parametrize("n_student,n_teacher,selection,match", [
    (2, 6, "0,2,5", "lists 3 teacher layers for a student of 2"),
    (2, 6, "0,6", "names layer 6 of a teacher with 6 layers"),
    (2, 6, "2,1", "out-of-order"),
    (2, 6, "1,1", "repeated"),
    (2, 6, "-1,2", "negative"),
    (2, 6, "middle", "not a strategy or a list"),
    (4, 3, "first-k", "at most the teacher's 3 layers"),
])
def test_bad_selections(n_student, n_teacher, selection, match):
    with pytest.raises(ConfigError, match=match):
        select_layers(n_student, n_teacher, selection)


@pytest.mark.parametrize("selection,expected", [("uniform", [(0, 1), (1, 3)]), ("first-k", [(0, 0), (1, 1)]),
                                                ("last-k", [(0, 2), (1, 3)]), ("0,2", [(0, 0), (1, 2)])])
def test_teacher_layers_init_copies_the_selected_layers(selection, expected):
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    teacher = BertForSequenceClassification(factories.tiny_bert_config(layers=4))
    student = BertForSequenceClassification(factories.tiny_bert_config(layers=2))
    report = init_from_teacher(student, teacher, "teacher-layers", selection)
    assert report.layer_pairs == expected
    for s, t in expected:
        for a, b in zip(student.bert.encoder.layer[s].parameters(), teacher.bert.encoder.layer[t].parameters(),
                        strict=True):
            assert torch.equal(a, b)


def test_pruned_shape_keeps_the_head_size():
    teacher = factories.tiny_bert_config(layers=6, hidden=384, heads=12, ffn=1536)  # all-MiniLM-L6's shape
    shape = pruned_shape(StudentPreset(2, 128, 2, 512), teacher, "last-k")
    assert (shape.layers, shape.hidden, shape.heads, shape.ffn) == ([4, 5], 128, 4, 512)  # 128 / 32 = 4 heads
    assert shape.heads_ratio == pytest.approx(1 - 4 / 12) and shape.ffn_ratio == pytest.approx(1 - 512 / 1536)
    with pytest.raises(ConfigError, match="cannot grow the teacher"):
        pruned_shape(StudentPreset(4, 512, 8, 2048), teacher)
    with pytest.raises(ConfigError, match="head size 32, which does not divide"):
        pruned_shape(StudentPreset(2, 80, 2, 512), teacher)
    with pytest.raises(ConfigError, match="teacher-pruned builds the student by pruning"):
        init_from_teacher(None, None, "teacher-pruned")

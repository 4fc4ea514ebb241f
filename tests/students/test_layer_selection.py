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
    narrow = factories.tiny_bert_config(layers=6, hidden=192, heads=6, ffn=768)  # under MIN_CUT_HIDDEN: cut freely
    shape = pruned_shape(StudentPreset(2, 128, 2, 512), narrow, "last-k")
    assert (shape.layers, shape.hidden, shape.heads, shape.ffn) == ([4, 5], 128, 4, 512)  # 128 / 32 = 4 heads
    assert shape.heads_ratio == pytest.approx(1 - 4 / 6) and shape.ffn_ratio == pytest.approx(1 - 512 / 768)
    with pytest.raises(ConfigError, match="cannot grow the teacher"):
        pruned_shape(StudentPreset(4, 512, 8, 2048), teacher)
    with pytest.raises(ConfigError, match="head size 32, which does not divide"):
        pruned_shape(StudentPreset(2, 80, 2, 512), teacher)
    with pytest.raises(ConfigError, match="teacher-pruned builds the student by pruning"):
        init_from_teacher(None, None, "teacher-pruned")


def test_a_cut_keeps_the_residual_width_of_a_teacher_at_min_cut_hidden():
    """all-MiniLM-L6 (H384) cut to ``mini`` (H256) collapsed on STS-B: the cut keeps the teacher's 384 channels and
    all its heads, and still takes the preset's layers and FFN width."""
    from students.presets import MIN_CUT_HIDDEN, cut_hidden

    assert MIN_CUT_HIDDEN == 384
    teacher = factories.tiny_bert_config(layers=6, hidden=384, heads=12, ffn=1536)
    shape = pruned_shape(StudentPreset(4, 256, 4, 1024), teacher)
    assert (shape.layers, shape.hidden, shape.heads, shape.ffn) == ([1, 2, 3, 5], 384, 12, 1024)
    assert shape.heads_ratio == 0 and shape.ffn_ratio == pytest.approx(1 / 3)
    wide = factories.tiny_bert_config(layers=12, hidden=768, heads=12, ffn=3072)  # head size 64
    assert pruned_shape(StudentPreset(4, 512, 8, 2048), wide).hidden == 512  # above the floor: the preset's
    shape = pruned_shape(StudentPreset(4, 256, 4, 1024), wide)
    assert (shape.hidden, shape.heads) == (384, 6)  # raised to the floor, in whole heads of 64
    assert cut_hidden(128, 192) == 128 and cut_hidden(256, 384) == 384 and cut_hidden(512, 768) == 512
    odd = factories.tiny_bert_config(layers=2, hidden=400, heads=5, ffn=800)  # head size 80: 384 rounds up to 400
    assert pruned_shape(StudentPreset(2, 160, 2, 400), odd).hidden == 400


def test_the_width_keeping_cut_prunes_into_a_loadable_student(tmp_path):
    """The cut ``pruned_shape`` plans for a H384 teacher (heads kept, FFN and layers cut) is what pruning gives, and
    the student saves and loads as a plain HF model."""
    from transformers import BertForSequenceClassification

    from compress import PruneConfig, prune_model

    torch.manual_seed(0)
    teacher = BertForSequenceClassification(factories.tiny_bert_config(layers=3, hidden=384, heads=12, ffn=96)).eval()
    shape = pruned_shape(StudentPreset(2, 128, 2, 48), teacher.config)
    assert (shape.hidden, shape.heads, shape.ffn) == (384, 12, 48)
    inputs = {"input_ids": torch.randint(5, 99, (2, 7)), "attention_mask": torch.ones(2, 7, dtype=torch.long)}
    report = prune_model(teacher, PruneConfig(heads=shape.heads_ratio, ffn=shape.ffn_ratio, layers=shape.layers,
                                              importance="magnitude"), inputs)
    c = teacher.config
    assert report.hf_loadable
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size) == (2, 384, 12, 48)
    teacher.save_pretrained(tmp_path)
    again = BertForSequenceClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.allclose(teacher(**inputs).logits, again(**inputs).logits, atol=1e-5)

"""Student presets, building from a teacher config, and teacher-layer initialisation."""

import factories
import pytest
import torch

from distill.core.errors import ConfigError, UnknownNameError
from students import PRESETS, build_student, init_from_teacher
from students.init import select_layers


@pytest.mark.parametrize("name,shape", [("tiny", (2, 128, 2, 512)), ("mini", (4, 256, 4, 1024)),
                                        ("small", (4, 512, 8, 2048)), ("medium", (8, 512, 8, 2048))])
def test_presets(name, shape):
    p = PRESETS.get(name)
    assert (p.layers, p.hidden, p.heads, p.ffn) == shape


def test_tiny_param_count_with_bert_vocab():
    teacher_cfg = factories.tiny_bert_config(vocab=30522, max_position_embeddings=512)
    student = build_student("tiny", teacher_cfg)
    # BERT-tiny (Turc et al.) has 4.39M parameters with a 30522 vocab and 512 positions (+ a 2-way head)
    assert sum(p.numel() for p in student.parameters()) == 4_386_178


def test_student_shares_teacher_vocab_and_labels():
    cfg = factories.tiny_bert_config(vocab=77, num_labels=3)
    s = build_student("mini", cfg)
    assert s.config.vocab_size == 77 and s.config.num_labels == 3
    assert s.config.num_hidden_layers == 4 and s.config.hidden_size == 256


def test_unknown_preset():
    with pytest.raises(UnknownNameError, match="did you mean 'tiny'"):
        PRESETS.get("tinny")


def test_select_layers():
    assert select_layers(2, 6) == [2, 5]
    assert select_layers(4, 12) == [2, 5, 8, 11]
    assert select_layers(3, 3) == [0, 1, 2]


def test_teacher_layers_copies_weights():
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    teacher = BertForSequenceClassification(factories.tiny_bert_config(layers=4, hidden=32, heads=4, ffn=64))
    student = BertForSequenceClassification(factories.tiny_bert_config(layers=2, hidden=32, heads=4, ffn=64))
    report = init_from_teacher(student, teacher, "teacher-layers")
    assert report.layer_pairs == [(0, 1), (1, 3)] and report.copied_embeddings
    for s, t in report.layer_pairs:
        for a, b in zip(student.bert.encoder.layer[s].parameters(), teacher.bert.encoder.layer[t].parameters(),
                        strict=True):
            assert torch.equal(a, b)
    assert torch.equal(student.bert.embeddings.word_embeddings.weight, teacher.bert.embeddings.word_embeddings.weight)


def test_auto_projects_embeddings_when_narrower_and_explicit_layers_fail():
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    teacher = BertForSequenceClassification(factories.tiny_bert_config(hidden=64, heads=4))
    student = BertForSequenceClassification(factories.tiny_bert_config(hidden=16, heads=2))
    report = init_from_teacher(student, teacher, "auto")
    assert report.strategy == "teacher-embeddings"
    words = teacher.bert.embeddings.word_embeddings.weight
    centered = words - words.mean(0, keepdim=True)
    projected = student.bert.embeddings.word_embeddings.weight
    # the projection keeps the teacher's geometry: pairwise inner products are approximated from the top
    # principal directions, so the projected Gram matrix is much closer to the teacher's than a random one
    gram_t = centered @ centered.T
    err = (projected @ projected.T - gram_t).norm() / gram_t.norm()
    assert err < 0.9
    with pytest.raises(ConfigError, match="teacher-layers needs"):
        init_from_teacher(student, teacher, "teacher-layers")
    assert init_from_teacher(student, teacher, "random").strategy == "random"


def test_a_wider_student_gets_the_teacher_embeddings_lifted_isometrically():
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    teacher = BertForSequenceClassification(factories.tiny_bert_config(hidden=16, heads=2))
    student = BertForSequenceClassification(factories.tiny_bert_config(hidden=48, heads=4))
    assert init_from_teacher(student, teacher, "teacher-embeddings").strategy == "teacher-embeddings"
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        t = getattr(teacher.bert.embeddings, name).weight.detach()
        s = getattr(student.bert.embeddings, name).weight.detach()
        if name == "word_embeddings":
            t = t - t.mean(0, keepdim=True)
        # every length and inner product of the teacher's vectors survives the lift (a random table keeps none)
        torch.testing.assert_close(s @ s.T, t @ t.T, atol=1e-4, rtol=1e-4)
    first = student.bert.embeddings.word_embeddings.weight.detach().clone()
    torch.manual_seed(123)  # the lift is fixed: it does not depend on the global seed
    init_from_teacher(student, teacher, "teacher-embeddings")
    assert torch.equal(student.bert.embeddings.word_embeddings.weight, first)

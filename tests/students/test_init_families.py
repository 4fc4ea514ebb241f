"""Student init finds blocks and embeddings through the model's family: DistilBERT students now take teacher
layers, and unregistered BERT-shaped families (ELECTRA) still take them through the BERT layout."""

import pytest
import torch

from students import init_from_teacher


def _distilbert(layers: int, dim: int = 32):
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    return DistilBertForSequenceClassification(DistilBertConfig(vocab_size=60, dim=dim, n_layers=layers, n_heads=4,
                                                                hidden_dim=64, max_position_embeddings=40))


def _electra(layers: int, hidden: int = 32):
    from transformers import ElectraConfig, ElectraForSequenceClassification

    return ElectraForSequenceClassification(ElectraConfig(vocab_size=60, embedding_size=hidden, hidden_size=hidden,
                                                          num_hidden_layers=layers, num_attention_heads=4,
                                                          intermediate_size=64, max_position_embeddings=40))


@pytest.mark.parametrize("build,blocks", [(_distilbert, lambda m: m.distilbert.transformer.layer),
                                          (_electra, lambda m: m.electra.encoder.layer)])
def test_teacher_layers_and_embeddings_are_copied(build, blocks):
    torch.manual_seed(0)
    teacher, student = build(4), build(2)
    report = init_from_teacher(student, teacher, "auto")
    assert report.strategy == "teacher-layers" and report.layer_pairs == [(0, 1), (1, 3)] and report.copied_embeddings
    for s, t in report.layer_pairs:
        for a, b in zip(blocks(student)[s].parameters(), blocks(teacher)[t].parameters(), strict=True):
            assert torch.equal(a, b)
    s_words = student.base_model.embeddings.word_embeddings.weight
    assert torch.equal(s_words, teacher.base_model.embeddings.word_embeddings.weight)


@pytest.mark.parametrize("build", [_distilbert, _electra])
def test_narrower_student_gets_projected_embeddings(build):
    torch.manual_seed(0)
    teacher, student = build(2, 32), build(1, 16)
    report = init_from_teacher(student, teacher, "auto")
    assert report.strategy == "teacher-embeddings"
    words = teacher.base_model.embeddings.word_embeddings.weight
    centered = (words - words.mean(0, keepdim=True)).detach()
    projected = student.base_model.embeddings.word_embeddings.weight.detach()
    gram = centered @ centered.T
    assert ((projected @ projected.T - gram).norm() / gram.norm()) < 0.9

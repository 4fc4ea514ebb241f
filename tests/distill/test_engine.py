"""The training loop: it learns, it keeps the best epoch, and every loss term runs through it."""

import factories
import pytest
import torch

from distill.data import load_splits, make_loader, tokenize
from distill.data.tasks import get_task
from distill.evaluate.predict import evaluator
from distill.objective.objective import DistillConfig, Objective, uniform_layer_map
from distill.train.loop import TrainConfig, fit


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from transformers import BertForSequenceClassification

    tmp = tmp_path_factory.mktemp("engine")
    tok = factories.tiny_tokenizer(tmp)
    splits = load_splits(get_task("sst2"), str(factories.write_sst2_like(tmp / "d", n_train=256, n_dev=64)))
    train = make_loader(tokenize(splits.train, tok, 32), tok, 16, shuffle=True, seed=0)
    dev = make_loader(tokenize(splits.dev, tok, 32), tok, 64, shuffle=False)
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(factories.tiny_bert_config(vocab=len(tok), hidden=32, heads=4, layers=2))
    return teacher, train, dev, len(tok)


def _student(vocab):
    from transformers import BertForSequenceClassification

    torch.manual_seed(1)
    return BertForSequenceClassification(factories.tiny_bert_config(vocab=vocab, hidden=16, heads=2, ffn=32,
                                                                    layers=2))


def test_fine_tuning_learns_the_task(setup):
    teacher, train, dev, vocab = setup
    model = _student(vocab)
    result = fit(model, Objective(DistillConfig(alpha=1.0, hidden_weight=0.0)), train,
                 TrainConfig(lr=1e-2, epochs=3, batch_size=16, seed=0), evaluate=evaluator(get_task("sst2"), dev),
                 metric="accuracy")
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert result.best_metric >= 0.8
    assert max(h["dev_accuracy"] for h in result.history) == result.best_metric
    assert evaluator(get_task("sst2"), dev)(model)["accuracy"] == pytest.approx(result.best_metric)


def test_every_loss_term_trains(setup):
    teacher, train, dev, vocab = setup
    model = _student(vocab)
    config = DistillConfig(temperature=2.0, alpha=0.5, hidden_weight=1.0, attention_weight=1.0, embedding_weight=1.0,
                           cosine_weight=1.0, relation_weight=1.0, relation_heads=2)
    objective = Objective(config, student_width=16, teacher_width=32, layer_map=uniform_layer_map(2, 2),
                          student_heads=2)
    before = [p.detach().clone() for p in model.parameters()]
    result = fit(model, objective, train, TrainConfig(lr=1e-3, epochs=1, batch_size=16, seed=0), teacher=teacher)
    terms = set(result.history[0])
    assert {"ce", "kd", "hidden", "attention", "embedding", "cosine", "relation"} <= terms
    assert all(torch.isfinite(torch.tensor(result.history[0][t])) for t in terms if t != "epoch")
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    # hooks and eager attention are undone after training
    qkv = [m for n, m in model.named_modules() if n.endswith(("query", "key", "value"))]
    assert qkv and not any(m._forward_hooks for m in qkv)
    assert model.config._attn_implementation != "eager"


def test_same_seed_same_weights(setup):
    teacher, train, dev, vocab = setup
    runs = []
    for _ in range(2):
        model = _student(vocab)
        fit(model, Objective(DistillConfig(hidden_weight=1.0), student_width=16, teacher_width=32,
                             layer_map=uniform_layer_map(2, 2)), train, TrainConfig(lr=1e-3, epochs=1, seed=3),
            teacher=teacher)
        runs.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(runs[0], runs[1])

"""Training length (issue 15): a step budget from the data size when ``--epochs`` is not given, early stopping on the
dev score with the best epoch kept, and what report.json's ``training`` records of it."""

import factories
import pytest
import torch

from distill.core.errors import ConfigError
from distill.data import load_splits, make_loader, tokenize
from distill.data.tasks import get_task
from distill.objective.objective import DistillConfig, Objective
from distill.train.config import TrainConfig, plan_epochs
from distill.train.loop import fit


@pytest.fixture(scope="module")
def loader(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("budget")
    tok = factories.tiny_tokenizer(tmp)
    splits = load_splits(get_task("sst2"), str(factories.write_sst2_like(tmp / "d", n_train=32, n_dev=8)))
    data = tokenize(splits.train, tok, 24)
    return make_loader(data, tok, 16, shuffle=True, seed=0), len(tok)  # 2 optimiser steps per epoch


def _model(vocab: int):
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(factories.tiny_bert_config(vocab=vocab, hidden=16, heads=2, ffn=32))


class Scripted:
    """An ``evaluate`` that returns the given dev scores in turn and keeps a copy of the weights it scored."""

    def __init__(self, scores):
        self.scores, self.seen = list(scores), []

    def __call__(self, model):
        self.seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"accuracy": self.scores[len(self.seen) - 1]}


def _fit(loader, scores, **config):
    batches, vocab = loader
    model, evaluate = _model(vocab), Scripted(scores)
    result = fit(model, Objective(DistillConfig(alpha=1.0, hidden_weight=0.0)), batches,
                 TrainConfig(lr=1e-3, seed=0, **config), evaluate=evaluate, metric="accuracy")
    return model, evaluate, result


@pytest.mark.parametrize(("steps_per_epoch", "epochs"),
                         [(16, 10.0), (63, 10.0), (400, 10.0), (439, 10.0), (1250, 4.0), (2105, 2.0)])
def test_the_budget_gives_small_sets_more_epochs(steps_per_epoch, epochs):
    assert plan_epochs(TrainConfig(epochs=None), steps_per_epoch) == epochs


def test_given_epochs_fix_the_length_and_turn_early_stopping_off():
    assert plan_epochs(TrainConfig(epochs=3), 2105) == 3.0
    assert TrainConfig(epochs=3).early_stopping == 0
    assert TrainConfig(epochs=None).early_stopping == 2
    assert TrainConfig(epochs=3, patience=1).early_stopping == 1
    assert TrainConfig(epochs=None, patience=0).early_stopping == 0
    assert plan_epochs(TrainConfig(epochs=None, budget_steps=100, min_epochs=1, max_epochs=4), 10) == 4.0
    assert plan_epochs(TrainConfig(epochs=None, budget_steps=100, min_epochs=1, max_epochs=4), 60) == 2.0


@pytest.mark.parametrize("bad", [{"patience": -1}, {"budget_steps": 0}, {"min_epochs": 5, "max_epochs": 2},
                                 {"min_epochs": 0}, {"epochs": 0}])
def test_bad_length_settings_are_refused(bad):
    with pytest.raises(ConfigError):
        TrainConfig(**{"epochs": None, **bad})


def test_early_stopping_keeps_the_best_epoch(loader):
    """Budget: 32 rows / batch 16 = 2 steps per epoch, so 10 epochs planned; the score peaks at epoch 2 and two
    epochs bring nothing better: the run stops after epoch 4 with the weights it had at epoch 2."""
    model, evaluate, result = _fit(loader, [0.5, 0.7, 0.6, 0.7, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9], epochs=None)
    assert (result.epochs, result.planned_steps, result.budget, result.patience) == (10.0, 20, True, 2)
    assert result.stopped_early and len(result.history) == 4 and result.steps == 8
    assert result.best_epoch == 2 and result.best_metric == 0.7
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, evaluate.seen[1][k])
    assert not torch.equal(evaluate.seen[1]["classifier.weight"], evaluate.seen[3]["classifier.weight"])
    summary = result.summary()
    assert summary == {"epochs": 10.0, "planned_steps": 20, "steps": 8, "epochs_run": 4, "best_epoch": 2,
                       "budget": True, "patience": 2, "stopped_early": True}


def test_fixed_epochs_run_to_the_end_unless_patience_is_given(loader):
    falling = [0.9, 0.8, 0.7, 0.6]
    _, _, result = _fit(loader, falling, epochs=4)
    assert not result.stopped_early and len(result.history) == 4 and result.best_epoch == 1
    assert (result.budget, result.patience) == (False, 0)
    _, _, result = _fit(loader, falling, epochs=4, patience=1)
    assert result.stopped_early and len(result.history) == 2 and result.best_epoch == 1


def test_no_early_stop_without_a_dev_set(loader):
    batches, vocab = loader
    result = fit(_model(vocab), Objective(DistillConfig(alpha=1.0, hidden_weight=0.0)), batches,
                 TrainConfig(lr=1e-3, seed=0, epochs=None, budget_steps=4, min_epochs=1))
    assert result.epochs == 2.0 and len(result.history) == 2 and not result.stopped_early


def test_early_stopping_waits_until_the_run_leaves_the_trivial_predictor(loader, capsys, monkeypatch):
    """MRPC `tiny` sat at the majority class's F1 for three epochs and was stopped there: with ``learned_above``
    (trivial + margin) patience counts only once the best score is above it; without it the run stops as before."""
    from distill.core import console

    monkeypatch.setattr(console, "_state", {"quiet": False})  # an earlier CLI test may have left --quiet on
    stuck_then_learns = [0.51, 0.51, 0.51, 0.51, 0.70, 0.72, 0.71, 0.71, 0.71, 0.71]
    _, _, result = _fit(loader, stuck_then_learns, epochs=None)
    assert result.stopped_early and len(result.history) == 3 and result.best_metric == 0.51
    _, _, result = _fit(loader, stuck_then_learns, epochs=None, learned_above=0.53)
    assert result.stopped_early and len(result.history) == 8
    assert (result.best_epoch, result.best_metric) == (6, 0.72)
    assert "still at the trivial predictor's (0.5100 ≤ 0.5300): not stopping early" in " ".join(
        capsys.readouterr().err.split())
    _, _, result = _fit(loader, [0.51] * 10, epochs=None, learned_above=0.53)  # never learns: the whole budget
    assert not result.stopped_early and len(result.history) == 10

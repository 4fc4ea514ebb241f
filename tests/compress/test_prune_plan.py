"""``plan_widths``/``plan_steps`` predict what pruning leaves (and its errors) without a model, so a run can refuse
a bad ratio before training: checked against real ``prune_model`` calls."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from compress import PruneConfig, plan_steps, prune_model, step_configs
from compress.prune.layout import measure
from compress.prune.pruner import plan_widths
from distill.core.errors import ConfigError
from distill.core.families import arch_of

TINY = dict(hidden_size=64, num_attention_heads=4, intermediate_size=128, num_hidden_layers=3, vocab_size=100)


def _bert() -> BertForSequenceClassification:
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(**TINY, num_labels=2)).eval()


def _inputs() -> dict[str, torch.Tensor]:
    return {"input_ids": torch.tensor([[2, 5, 6, 7, 3], [2, 8, 9, 3, 0]]),
            "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])}


@pytest.mark.parametrize("config", [
    PruneConfig(heads=0.5, ffn=0.5),
    PruneConfig(heads=0.25, ffn=0.3, hidden=0.3),
    PruneConfig(heads=0.0, ffn=0.0, hidden=0.5),
    PruneConfig(heads=0.5, ffn=0.25, layers=2),
    PruneConfig(heads=[0.5, 0.0, 0.25], ffn=0.5),
], ids=["heads+ffn", "own-hidden", "hidden-only", "layers", "per-layer"])
def test_plan_matches_pruning(config):
    model = _bert()
    layout = measure(model, arch_of(model))
    planned = plan_widths(config, layout)
    prune_model(model, config, _inputs())
    assert planned == measure(model, arch_of(model))


def test_plan_steps_matches_iterative_pruning():
    model = _bert()
    config = PruneConfig(heads=0.5, ffn=0.5, hidden=0.3)
    plans = plan_steps(config, 3, measure(model, arch_of(model)))
    for step, plan in zip(step_configs(config, 3, n_layers=3), plans, strict=True):
        prune_model(model, step, _inputs())
        assert plan == measure(model, arch_of(model))


@pytest.mark.parametrize("config,match", [
    (PruneConfig(heads=0.9), "removes all 4 heads of layer 0"),
    (PruneConfig(heads=0.5, layers=5), "keeps more layers than the model's 3"),
])
def test_plan_raises_what_pruning_raises(config, match):
    model = _bert()
    layout = measure(model, arch_of(model))
    with pytest.raises(ConfigError, match=match):
        plan_steps(config, 1, layout)
    with pytest.raises(ConfigError, match=match):
        prune_model(model, step_configs(config, 1, n_layers=3)[0], _inputs())

"""Pruning granularities beyond heads-with-hidden: heads without hidden, hidden alone, per-layer ratios, whole
layers; gradient importances; save_pruned/load_pruned round trips; ONNX export of every layout; schedules."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    DistilBertConfig,
    DistilBertForSequenceClassification,
)

from compress import (
    WIDTHS_FILE,
    PruneConfig,
    export_onnx,
    kd_loss_fn,
    load_pruned,
    parse_ratio,
    prune_model,
    ratio_schedule,
    save_pruned,
    step_configs,
    step_ratios,
)
from distill.core.errors import ConfigError
from distill.objective.losses import soft_target_kl

TINY = dict(hidden_size=64, num_attention_heads=4, intermediate_size=128, num_hidden_layers=2, vocab_size=100)


def _bert(**overrides) -> BertForSequenceClassification:
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(**{**TINY, **overrides}, num_labels=3)).eval()


def _inputs(batch: int = 2, seq: int = 8, labels: bool = False) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[0, -2:] = 0
    out = {"input_ids": torch.randint(3, 100, (batch, seq), generator=gen), "attention_mask": mask}
    if labels:
        out["labels"] = torch.tensor([0, 2, 1, 0][:batch])
    return out


def _out(model: torch.nn.Module) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        return model.eval()(**_inputs()).to_tuple()


def _assert_same(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...], atol: float = 1e-5) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.shape == y.shape
        assert torch.allclose(x, y, atol=atol)


def _round_trip(model: torch.nn.Module, path: Path, hf_loadable: bool, auto=AutoModelForSequenceClassification):
    """save_pruned -> the right loader gives identical outputs; plain from_pretrained refuses non-HF layouts."""
    save_pruned(model, path)
    assert (path / WIDTHS_FILE).exists() is not hf_loadable
    assert not list(path.glob("*.bin")) and not list(path.glob("*.pt"))
    _assert_same(_out(model), _out(load_pruned(path)))
    if hf_loadable:
        _assert_same(_out(model), _out(auto.from_pretrained(path)))
    else:
        with pytest.raises((RuntimeError, ValueError)):
            auto.from_pretrained(path)


def _onnx_matches(model: torch.nn.Module, path: Path) -> None:
    import onnxruntime as ort

    export_onnx(model, path / "model.onnx", max_seq_length=16)
    session = ort.InferenceSession(str(path / "model.onnx"), providers=["CPUExecutionProvider"])
    inputs = {**_inputs(), "token_type_ids": torch.zeros(2, 8, dtype=torch.long)}
    feeds = {i.name: inputs[i.name].numpy() for i in session.get_inputs()}
    got = torch.from_numpy(session.run(None, feeds)[0])
    assert torch.allclose(got, _out(model)[0], atol=1e-4)


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_heads_without_hidden_removes_whole_heads_and_reloads(tmp_path: Path) -> None:
    model = _bert()
    with torch.no_grad():  # head 1 of every layer: tiny q/k, and its values never reach the output
        for layer in model.bert.encoder.layer:
            attn = layer.attention.self
            attn.query.weight[16:32] *= 1e-3
            attn.key.weight[16:32] *= 1e-3
            attn.value.weight[16:32] = 0.0
            attn.value.bias[16:32] = 0.0
            layer.attention.output.dense.weight[:, 16:32] = 0.0
    expected = _out(model)
    report = prune_model(model, PruneConfig(heads=0.25, ffn=0.0, hidden=0.0), _inputs())

    assert (report.heads_after, report.hidden_after, report.ffn_after) == (3, 64, 128)
    assert report.params_after < report.params_before and not report.hf_loadable
    for layer in model.bert.encoder.layer:
        attn = layer.attention.self
        assert (attn.num_attention_heads, attn.attention_head_size, attn.all_head_size) == (3, 16, 48)
        assert attn.query.weight.shape == (48, 64) and layer.attention.output.dense.weight.shape == (64, 48)
    _assert_same(expected, _out(model))  # q, k, v and out lost the same whole head
    _round_trip(model, tmp_path / "m", hf_loadable=False)
    _onnx_matches(model, tmp_path)


def test_hidden_alone_keeps_heads_whole(tmp_path: Path) -> None:
    model = _bert()
    report = prune_model(model, PruneConfig(heads=0.0, ffn=0.0, hidden=0.25), _inputs())

    assert (report.heads_after, report.hidden_after, report.ffn_after) == (4, 48, 128)
    assert report.params_after < report.params_before and not report.hf_loadable
    attn = model.bert.encoder.layer[1].attention.self
    assert (attn.num_attention_heads, attn.attention_head_size, attn.query.weight.shape) == (4, 16, (64, 48))
    assert model.bert.embeddings.word_embeddings.weight.shape == (100, 48)
    assert model.bert.pooler.dense.weight.shape == (48, 48) and model.classifier.weight.shape == (3, 48)
    assert model.config.hidden_size == 48
    _round_trip(model, tmp_path / "m", hf_loadable=False)
    _onnx_matches(model, tmp_path)


def test_per_layer_ratios_and_report(tmp_path: Path) -> None:
    model = _bert()
    report = prune_model(model, PruneConfig(heads=[0.5, 0.25], ffn={"1": 0.5}), _inputs())

    assert [(d["layer"], d["heads"], d["ffn"]) for d in report.per_layer] == [(0, 2, 128), (1, 3, 64)]
    assert [(d["heads_before"], d["ffn_before"]) for d in report.per_layer] == [(4, 128), (4, 128)]
    assert report.hidden_after == 64 and not report.hf_loadable
    assert any("hidden width kept" in n for n in report.notes)
    assert any("load_pruned" in n for n in report.notes)
    assert [layer.attention.self.num_attention_heads for layer in model.bert.encoder.layer] == [2, 3]
    _round_trip(model, tmp_path / "m", hf_loadable=False)
    _onnx_matches(model, tmp_path)


def test_whole_layers_uniform_and_by_importance(tmp_path: Path) -> None:
    model = _bert(num_hidden_layers=4)
    kept_modules = [model.bert.encoder.layer[i] for i in (1, 3)]
    report = prune_model(model, PruneConfig(heads=0.0, ffn=0.0, layers=2, layer_selection="uniform"), _inputs())

    assert (report.layers_before, report.layers_after) == (4, 2)
    assert [d["source"] for d in report.per_layer] == [1, 3] and report.hf_loadable
    assert list(model.bert.encoder.layer) == kept_modules
    assert [layer.attention.self.layer_idx for layer in model.bert.encoder.layer] == [0, 1]
    assert model.config.num_hidden_layers == 2
    _round_trip(model, tmp_path / "m", hf_loadable=True)
    _onnx_matches(model, tmp_path)

    weak = _bert(num_hidden_layers=3).train()
    with torch.no_grad():
        for p in weak.bert.encoder.layer[1].parameters():
            if p.dim() == 2:
                p.mul_(1e-2)
    report = prune_model(weak, PruneConfig(heads=0.5, ffn=0.5, layers=2), _inputs())
    assert [d["source"] for d in report.per_layer] == [0, 2]
    assert all(m.training for m in weak.modules())
    assert (report.heads_after, report.hidden_after, report.ffn_after, weak.config.num_hidden_layers) == (2, 32, 64, 2)


def test_distilbert_heads_without_hidden_and_layers_reload(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = DistilBertConfig(dim=64, n_heads=4, hidden_dim=128, n_layers=3, vocab_size=100, num_labels=3)
    model = DistilBertForSequenceClassification(config).eval()
    report = prune_model(model, PruneConfig(heads=0.5, ffn=[0.5, 0.0, 0.25], hidden=0.0, layers=[0, 2]), _inputs())

    assert [(d["source"], d["heads"], d["ffn"]) for d in report.per_layer] == [(0, 2, 64), (2, 2, 96)]
    assert model.config.n_layers == 2 and model.distilbert.transformer.layer[0].attention.n_heads == 2
    _round_trip(model, tmp_path / "m", hf_loadable=False)


def test_minilm_style_bare_encoder_stays_hf_loadable(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = BertModel(BertConfig(hidden_size=384, num_attention_heads=12, intermediate_size=256,
                                 num_hidden_layers=1, vocab_size=100)).eval()
    report = prune_model(model, PruneConfig(heads=0.5, ffn=0.5), _inputs())

    attn = model.encoder.layer[0].attention.self
    assert (attn.num_attention_heads, attn.attention_head_size, attn.scaling) == (6, 32, pytest.approx(32**-0.5))
    assert (report.hidden_after, model.config.num_attention_heads, report.hf_loadable) == (192, 6, True)
    _round_trip(model, tmp_path / "m", hf_loadable=True, auto=AutoModel)


def _dead_but_large(model: BertForSequenceClassification) -> list[int]:
    """In every layer, even FFN neurons get large input weights but no output; odd ones stay small but alive."""
    with torch.no_grad():
        for layer in model.bert.encoder.layer:
            layer.intermediate.dense.weight[::2] *= 10.0
            layer.intermediate.dense.weight[1::2] *= 0.1
            layer.output.dense.weight[:, ::2] = 0.0
            layer.output.dense.weight[:, 1::2] *= 0.1
    return list(range(0, 128, 2))


def _kept_rows(before: torch.Tensor, after: torch.Tensor) -> list[int]:
    return [int((before - row).abs().sum(1).argmin()) for row in after]


@pytest.mark.parametrize("importance", ["taylor", "distillation"])
def test_gradient_importance_removes_what_the_loss_ignores(importance: str) -> None:
    models = {name: _bert() for name in ("magnitude", importance)}
    dead = _dead_but_large(models["magnitude"])
    _dead_but_large(models[importance])
    original = models[importance].bert.encoder.layer[0].intermediate.dense.weight.clone()
    expected = _out(models[importance])
    torch.manual_seed(1)
    teacher = BertForSequenceClassification(BertConfig(**TINY, num_labels=3)).eval()
    loss_fn = kd_loss_fn(teacher, partial(soft_target_kl, temperature=2.0)) if importance == "distillation" else None
    batches = [_inputs(labels=True), _inputs(batch=4, seq=6, labels=True)]

    for name, model in models.items():
        prune_model(model, PruneConfig(heads=0.0, ffn=0.5, importance=name), _inputs(labels=True),
                    batches=batches, loss_fn=loss_fn)
    by_magnitude = _kept_rows(original, models["magnitude"].bert.encoder.layer[0].intermediate.dense.weight)
    by_gradient = _kept_rows(original, models[importance].bert.encoder.layer[0].intermediate.dense.weight)

    assert set(by_magnitude) == set(dead)  # magnitude keeps the large dead neurons...
    assert set(by_gradient).isdisjoint(dead)  # ...the gradient criterion removes exactly them
    _assert_same(expected, _out(models[importance]))
    assert all(p.grad is None for p in models[importance].parameters())


def test_gradient_importance_without_a_loss_is_a_config_error() -> None:
    model = _bert()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match="kd_loss_fn"):
        prune_model(model, PruneConfig(importance="distillation", layers=1, layer_selection="uniform"), _inputs())
    with pytest.raises(ConfigError, match="labels"):
        prune_model(model, PruneConfig(importance="taylor"), _inputs())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(heads=0.9), "removes all 4 heads of layer 0"),
        (dict(heads=[0.5, 0.5, 0.5]), "3 ratios for a model with 2 layers"),
        (dict(ffn={5: 0.5}), r"layer\(s\) \[5\]"),
        (dict(layers=3), "keeps more layers"),
        (dict(layers=[0, 7]), "lists layer 7"),
    ],
)
def test_ratios_that_do_not_fit_the_model_raise_before_pruning(kwargs: dict, match: str) -> None:
    model = _bert()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match=match):
        prune_model(model, PruneConfig(**kwargs), _inputs())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(hidden=[0.5, 0.5]),
        dict(hidden=1.0),
        dict(heads=[0.5, 1.5]),
        dict(ffn={"x": 0.5}),
        dict(layers=0),
        dict(layers=[1, 1]),
        dict(layers=True),
        dict(layer_selection="random"),
    ],
)
def test_malformed_config_raises_config_error(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        PruneConfig(**kwargs)


def test_schedules_reach_the_one_shot_result() -> None:
    assert ratio_schedule(0.5, 2) == [0.25, 0.5]
    assert ratio_schedule([0.5, 0.0], 2) == [[0.25, 0.0], [0.5, 0.0]]
    assert step_ratios(0.5, 2) == pytest.approx([0.25, 1 / 3])
    with pytest.raises(ConfigError):
        ratio_schedule(0.5, 0)

    steps = step_configs(PruneConfig(heads=0.5, ffn=0.5, layers=2), 2, n_layers=4)
    assert [s.layers for s in steps] == [3, 2]
    model = _bert(num_hidden_layers=4)
    for step in steps:
        prune_model(model, step, _inputs())
    assert (model.config.num_hidden_layers, model.config.num_attention_heads) == (2, 2)
    assert (model.config.hidden_size, model.config.intermediate_size) == (32, 64)
    with pytest.raises(ConfigError, match="per-layer"):
        step_configs(PruneConfig(heads=[0.5, 0.5], layers=1), 2, n_layers=2)


def test_cli_ratio_parsing() -> None:
    assert parse_ratio("0.5") == 0.5
    assert parse_ratio("0.5,0.25", "ffn") == [0.5, 0.25]
    assert parse_ratio("0:0.5, 3:0.25") == {0: 0.5, 3: 0.25}
    for bad in ("half", "1.5", "0:x", "a:0.5"):
        with pytest.raises(ConfigError):
            parse_ratio(bad)

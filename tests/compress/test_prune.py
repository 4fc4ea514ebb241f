"""Structured pruning: shapes, config rewrite, save -> from_pretrained round trips, notes and config validation."""

from __future__ import annotations

import os
import subprocess
import sys
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
    RobertaConfig,
    RobertaForSequenceClassification,
)

from compress import PruneConfig, PruneReport, prune_model
from distill.core.errors import ConfigError, ModelError, UnknownNameError

REPO = Path(__file__).resolve().parents[2]
TINY = dict(hidden_size=64, num_attention_heads=4, intermediate_size=128, num_hidden_layers=2, vocab_size=100)


def _bert(**overrides) -> BertForSequenceClassification:
    """A tiny randomly initialised BERT classifier (3 labels, so num_labels visibly survives)."""
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(**{**TINY, **overrides}, num_labels=3)).eval()


def _inputs(batch: int = 2, seq: int = 8) -> dict[str, torch.Tensor]:
    """A fixed batch of token ids with a padded tail, to exercise the attention mask."""
    gen = torch.Generator().manual_seed(1)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[0, -2:] = 0
    return {"input_ids": torch.randint(3, 100, (batch, seq), generator=gen), "attention_mask": mask}


def _reloaded(model: torch.nn.Module, tmp_path: Path, auto=AutoModelForSequenceClassification) -> torch.nn.Module:
    """Save with save_pretrained and load back with a plain Auto class, as a user of the pruned student would."""
    model.save_pretrained(tmp_path)
    return auto.from_pretrained(tmp_path).eval()


def _assert_same_outputs(a: torch.nn.Module, b: torch.nn.Module) -> None:
    """Every output tensor of two models agrees on the example batch."""
    with torch.no_grad():
        out_a, out_b = a.eval()(**_inputs()).to_tuple(), b.eval()(**_inputs()).to_tuple()
    assert len(out_a) == len(out_b)
    for x, y in zip(out_a, out_b, strict=True):
        assert x.shape == y.shape
        assert torch.allclose(x, y, atol=1e-5)


def test_heads_hidden_and_ffn_prune_and_reload_identically(tmp_path: Path) -> None:
    model = _bert()
    report = prune_model(model, PruneConfig(heads=0.5, ffn=0.5), _inputs())

    assert isinstance(report, PruneReport)
    assert (report.heads_before, report.heads_after) == (4, 2)
    assert (report.hidden_before, report.hidden_after) == (64, 32)
    assert (report.ffn_before, report.ffn_after) == (128, 64)
    assert report.params_after < report.params_before
    assert report.params_after == sum(p.numel() for p in model.parameters())
    assert report.notes == []
    assert report.to_dict()["hidden_after"] == 32

    cfg = model.config
    assert (cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size, cfg.num_labels) == (32, 2, 64, 3)
    for layer in model.bert.encoder.layer:
        attn = layer.attention.self
        assert (attn.num_attention_heads, attn.attention_head_size, attn.all_head_size) == (2, 16, 32)
        assert attn.scaling == pytest.approx(16**-0.5)
    assert model.bert.pooler.dense.weight.shape == (32, 32)
    with torch.no_grad():
        assert model(**_inputs()).logits.shape == (2, 3)

    _assert_same_outputs(model, _reloaded(model, tmp_path))


def test_ffn_only_keeps_heads_and_hidden(tmp_path: Path) -> None:
    model = _bert()
    report = prune_model(model, PruneConfig(heads=0.0, ffn=0.25), _inputs())

    assert (report.heads_after, report.hidden_after, report.ffn_after) == (4, 64, 96)
    assert (model.config.hidden_size, model.config.num_attention_heads, model.config.intermediate_size) == (64, 4, 96)
    _assert_same_outputs(model, _reloaded(model, tmp_path))


def test_dead_ffn_neurons_are_the_ones_removed() -> None:
    """Neurons with all-zero weights contribute nothing: magnitude must pick exactly them, leaving outputs intact."""
    model = _bert()
    with torch.no_grad():
        for layer in model.bert.encoder.layer:
            layer.intermediate.dense.weight[::2] = 0.0
            layer.intermediate.dense.bias[::2] = 0.0
            layer.output.dense.weight[:, ::2] = 0.0
        expected = model(**_inputs()).logits
    prune_model(model, PruneConfig(heads=0.0, ffn=0.5), _inputs())
    with torch.no_grad():
        assert torch.allclose(model(**_inputs()).logits, expected, atol=1e-5)


def test_whole_heads_removed_with_least_magnitude() -> None:
    """The surviving q rows are whole original heads, and the head we shrank towards zero is gone in every layer."""
    model = _bert()
    with torch.no_grad():
        for layer in model.bert.encoder.layer:
            for lin in (layer.attention.self.query, layer.attention.self.key, layer.attention.self.value):
                lin.weight[16:32] *= 1e-3  # head 1
    originals = [layer.attention.self.query.weight.clone() for layer in model.bert.encoder.layer]
    word_before = model.bert.embeddings.word_embeddings.weight.clone()
    prune_model(model, PruneConfig(heads=0.25, ffn=0.0), _inputs())

    word_after = model.bert.embeddings.word_embeddings.weight
    kept_cols = [int((word_before - word_after[:, [j]]).abs().sum(0).argmin()) for j in range(word_after.shape[1])]
    assert len(set(kept_cols)) == 48
    for original, layer in zip(originals, model.bert.encoder.layer, strict=True):
        query = layer.attention.self.query.weight
        heads = [
            h
            for h in range(4)
            for k in range(3)
            if torch.equal(query[k * 16 : (k + 1) * 16], original[h * 16 : (h + 1) * 16][:, kept_cols])
        ]
        assert heads == [0, 2, 3]


def test_one_head_model_prunes_ffn_only_and_says_so(tmp_path: Path) -> None:
    model = _bert(num_attention_heads=1)
    report = prune_model(model, PruneConfig(heads=0.5, ffn=0.5), _inputs())

    assert (report.heads_after, report.hidden_after, report.ffn_after) == (1, 64, 64)
    assert any("one attention head" in note and "FFN only" in note for note in report.notes)
    _assert_same_outputs(model, _reloaded(model, tmp_path))


def test_bare_bert_model_prunes_pooler_too(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = BertModel(BertConfig(**TINY)).eval()
    report = prune_model(model, PruneConfig(heads=0.5, ffn=0.5), _inputs())

    assert report.hidden_after == 32
    with torch.no_grad():
        out = model(**_inputs())
    assert out.last_hidden_state.shape == (2, 8, 32)
    assert out.pooler_output.shape == (2, 32)
    _assert_same_outputs(model, _reloaded(model, tmp_path, AutoModel))


def test_roberta_prunes_classifier_head_and_reloads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = RobertaForSequenceClassification(RobertaConfig(**TINY, num_labels=3)).eval()
    report = prune_model(model, PruneConfig(heads=0.25, ffn=0.5), _inputs())

    assert (report.heads_after, report.hidden_after, report.ffn_after) == (3, 48, 64)
    assert model.classifier.dense.weight.shape == (48, 48)
    assert model.classifier.out_proj.weight.shape == (3, 48)
    _assert_same_outputs(model, _reloaded(model, tmp_path))


def test_distilbert_prunes_and_reloads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = DistilBertConfig(dim=64, n_heads=4, hidden_dim=128, n_layers=2, vocab_size=100, num_labels=3)
    model = DistilBertForSequenceClassification(config).eval()
    report = prune_model(model, PruneConfig(heads=0.5, ffn=0.5), _inputs())

    assert (report.heads_after, report.hidden_after, report.ffn_after) == (2, 32, 64)
    assert (model.config.dim, model.config.n_heads, model.config.hidden_dim) == (32, 2, 64)
    assert model.distilbert.transformer.layer[0].attention.n_heads == 2
    _assert_same_outputs(model, _reloaded(model, tmp_path))


def test_rounding_is_reported_and_heads_never_split() -> None:
    model = _bert()
    report = prune_model(model, PruneConfig(heads=0.3, ffn=0.0), _inputs())

    assert (report.heads_after, report.hidden_after, report.ffn_after) == (3, 48, 128)
    assert any("removes 1 of 4 heads" in note for note in report.notes)


def test_zero_ratios_leave_model_untouched() -> None:
    model = _bert()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = prune_model(model, PruneConfig(heads=0.0, ffn=0.0), _inputs())

    assert report.params_after == report.params_before
    assert any("nothing to prune" in note for note in report.notes)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_mode_and_requires_grad_are_kept_and_result_is_deterministic() -> None:
    a, b = _bert().train(), _bert().train()
    a.bert.embeddings.requires_grad_(False)
    b.bert.embeddings.requires_grad_(False)
    prune_model(a, PruneConfig(), _inputs())
    prune_model(b, PruneConfig(), _inputs())

    assert all(m.training for m in a.modules())
    assert not a.bert.embeddings.word_embeddings.weight.requires_grad
    assert a.classifier.weight.requires_grad
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("field", ["heads", "ffn"])
@pytest.mark.parametrize("value", [1.0, 1.2, -0.1])
def test_bad_ratios_raise_config_error(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=r"outside \[0, 1\)"):
        PruneConfig(**{field: value})


def test_non_numeric_ratio_and_unknown_importance_are_rejected() -> None:
    with pytest.raises(ConfigError):
        PruneConfig(heads="half")  # type: ignore[arg-type]
    with pytest.raises(UnknownNameError, match="magnitude"):
        PruneConfig(importance="magnitud")


def test_unknown_architecture_raises_model_error() -> None:
    from transformers import GPTNeoXConfig, GPTNeoXModel

    model = GPTNeoXModel(GPTNeoXConfig(hidden_size=32, num_attention_heads=2, num_hidden_layers=1, vocab_size=100,
                                       intermediate_size=64))
    with pytest.raises(ModelError, match="gpt_neox"):
        prune_model(model, PruneConfig(), _inputs())


def test_a_decoder_is_sent_to_prune_decoder() -> None:
    from transformers import GPT2Config, GPT2Model

    model = GPT2Model(GPT2Config(n_embd=32, n_head=2, n_layer=1, vocab_size=100, n_positions=16))
    with pytest.raises(ModelError, match="prune_decoder"):
        prune_model(model, PruneConfig(), _inputs())


def test_import_compress_does_not_import_torch_pruning() -> None:
    code = "import sys, compress; assert compress.prune_model; print('torch_pruning' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

"""compress.measure: parameter counts, example inputs, torch / ONNX Runtime latency, OnnxClassifier."""

from __future__ import annotations

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from compress import export_onnx
from compress.measure import (
    OnnxClassifier,
    count_params,
    example_inputs,
    onnx_latency_ms,
    onnx_param_count,
    torch_latency_ms,
)
from distill.core.errors import ModelError

VOCAB = 100


@pytest.fixture(scope="module")
def model() -> BertForSequenceClassification:
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(hidden_size=64, num_attention_heads=4, intermediate_size=128,
                                                     num_hidden_layers=2, vocab_size=VOCAB, num_labels=3,
                                                     max_position_embeddings=64)).eval()
    with torch.no_grad():  # "trained" weights: the exporter merges identical initializers (fresh zero biases)
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def onnx_path(model, tmp_path_factory) -> Path:
    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "model.onnx", max_seq_length=16)


def test_count_params_counts_shared_weights_once():
    lin = torch.nn.Linear(4, 3)
    assert count_params(lin) == 15
    tied = torch.nn.Sequential(lin, torch.nn.ReLU(), lin)
    assert count_params(tied) == 15


def test_example_inputs():
    a = example_inputs(VOCAB, 2, 7, seed=3)
    assert list(a) == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(v.shape == (2, 7) and v.dtype == torch.long for v in a.values())
    assert int(a["input_ids"].max()) < VOCAB and bool((a["attention_mask"] == 1).all())
    assert bool((a["token_type_ids"] == 0).all())
    assert torch.equal(a["input_ids"], example_inputs(VOCAB, 2, 7, seed=3)["input_ids"])
    assert "token_type_ids" not in example_inputs(VOCAB, 1, 4, type_vocab_size=0)


def test_torch_latency_restores_threads_and_mode(model):
    before = torch.get_num_threads()
    model.train()
    try:
        ms = torch_latency_ms(model, seq=16, threads=1, warmup=1, runs=3)
        assert model.training
    finally:
        model.eval()
    assert isinstance(ms, float) and ms > 0
    assert torch.get_num_threads() == before


def test_onnx_latency_is_positive(onnx_path):
    ms = onnx_latency_ms(onnx_path, seq=16, threads=1, warmup=1, runs=3, vocab_size=VOCAB)
    assert isinstance(ms, float) and ms > 0


def test_onnx_param_count_matches_torch(model, onnx_path):
    n, ref = onnx_param_count(onnx_path), count_params(model)
    assert abs(n - ref) <= 0.01 * ref, (n, ref)


def test_onnx_classifier_matches_torch(model, onnx_path):
    clf = OnnxClassifier(onnx_path, threads=1)
    assert clf.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    batch = example_inputs(VOCAB, 3, 11, seed=1)
    batch["attention_mask"][0, 8:] = 0
    with torch.inference_mode():
        ref = model(**batch).logits.numpy()
    as_int32 = {k: v.int() for k, v in batch.items()}
    logits = clf({**as_int32, "labels": torch.tensor([0, 1, 2])})  # extra keys dropped, int32 cast to int64
    assert logits.dtype == np.float32 and logits.shape == (3, 3)
    np.testing.assert_allclose(logits, ref, atol=1e-4, rtol=0)
    numpy_batch = {k: v.numpy() for k, v in batch.items() if k != "token_type_ids"}  # optimum-style zero fill
    np.testing.assert_allclose(clf(numpy_batch), ref, atol=1e-4, rtol=0)


def test_bad_onnx_files_raise_model_error(tmp_path):
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"definitely not protobuf")
    for fn in (onnx_param_count, OnnxClassifier):
        with pytest.raises(ModelError, match="not a valid ONNX model"):
            fn(bad)
        with pytest.raises(ModelError, match="does not exist"):
            fn(tmp_path / "missing.onnx")

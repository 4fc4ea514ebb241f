"""compress.quantize.qat: fake-quantized Linear layers train, and export to a QDQ ONNX graph that ONNX Runtime runs."""

from __future__ import annotations

import os
from collections import Counter

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from compress import export_qat_onnx, prepare_qat, strip_qat
from compress.quantize.int8 import count_quantized_nodes
from compress.quantize.qat import FakeQuantLinear
from distill.core.errors import ModelError

VOCAB = 60


def _model() -> BertForSequenceClassification:
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(hidden_size=64, num_attention_heads=4, intermediate_size=128,
                                                    num_hidden_layers=2, vocab_size=VOCAB,
                                                    max_position_embeddings=32))


def _batch(n: int, seq: int, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (n, seq), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}


@pytest.fixture(scope="module")
def trained() -> BertForSequenceClassification:
    """A prepared model after a few optimizer steps (what the pipeline's distillation does at length)."""
    model = prepare_qat(_model()).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for step in range(3):
        loss = model(**_batch(8, 12, seed=step), labels=torch.tensor([0, 1] * 4)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model


def test_prepare_swaps_encoder_linears_only():
    model = prepare_qat(_model(), target="avx512_vnni")
    swapped = [n for n, m in model.named_modules() if isinstance(m, FakeQuantLinear)]
    assert len(swapped) == 12 and all(".encoder.layer." in n for n in swapped)  # 6 per layer; head stays FP32
    assert type(model.classifier) is torch.nn.Linear and type(model.bert.pooler.dense) is torch.nn.Linear
    assert prepare_qat(_model(), target="avx2").bert.encoder.layer[0].output.dense.w_qmax == 63  # 7-bit weights


def test_prepared_model_trains(trained):
    model = trained.train()
    loss = model(**_batch(4, 10, seed=9), labels=torch.tensor([0, 1, 0, 1])).loss
    loss.backward()
    layer = model.bert.encoder.layer[0].attention.self.query
    assert isinstance(layer, FakeQuantLinear) and layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    assert bool(layer.observed) and layer.act_min < 0 < layer.act_max
    model.zero_grad()


def test_export_is_qdq_and_matches_torch(trained, tmp_path):
    path = export_qat_onnx(trained, tmp_path / "model.onnx", max_seq_length=16)
    assert trained.training  # export leaves the model as it was
    graph = onnx.load(str(path)).graph
    ops = Counter(n.op_type for n in graph.node)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > ops["QuantizeLinear"]
    assert count_quantized_nodes(path) == 12  # every encoder Linear computes on an INT8 weight
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]
    batch = _batch(5, 9, seed=42)
    (logits,) = session.run(["logits"], {k: v.numpy() for k, v in batch.items()})
    trained.eval()
    with torch.no_grad():
        ref = trained(**batch).logits.numpy()
    trained.train()
    np.testing.assert_allclose(logits, ref, atol=1e-3)  # ONNX Runtime computes what training simulated


def test_untrained_layers_keep_fp32_inputs_and_strip_restores_linear():
    model = prepare_qat(_model()).eval()  # never saw a batch: no input range, so inputs are not rounded
    with torch.no_grad():
        logits = model(**_batch(2, 6, seed=1)).logits
    assert torch.isfinite(logits).all()
    weight = model.bert.encoder.layer[0].output.dense.weight
    strip_qat(model)
    assert not any(isinstance(m, FakeQuantLinear) for m in model.modules())
    assert model.bert.encoder.layer[0].output.dense.weight is weight


def test_export_needs_a_prepared_model(tmp_path):
    with pytest.raises(ModelError, match="prepare_qat"):
        export_qat_onnx(_model(), tmp_path / "model.onnx")

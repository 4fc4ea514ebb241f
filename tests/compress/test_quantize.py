"""compress.quantize: FP32 export fidelity, INT8 accuracy and size, bundle layout, dynamic axes, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from transformers import (
    AutoConfig,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    BertTokenizerFast,
)

import compress.quantize.int8 as quantize_module
from compress import QuantizeConfig, QuantizeReport, export_onnx, quantize_model
from distill.core.errors import ConfigError, DistillError, UnknownNameError

VOCAB = 100
WORDS = ["the", "a", "cat", "dog", "sat", "on", "mat", "good", "bad", "movie", "##s", "##ing"]


def _model(**overrides) -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = dict(hidden_size=128, num_attention_heads=4, intermediate_size=256, num_hidden_layers=2,
                  vocab_size=VOCAB, num_labels=2, max_position_embeddings=64)
    return BertForSequenceClassification(BertConfig(**{**config, **overrides})).eval()


def _batch(n: int, seq: int, seed: int = 123) -> dict[str, torch.Tensor]:
    """Random ids with some padding and a second segment, so masks and segment ids matter."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (n, seq), generator=gen)
    mask = torch.ones_like(ids)
    mask[::3, seq * 2 // 3:] = 0
    types = torch.zeros_like(ids)
    types[:, seq // 2:] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def _run(path: Path, batch: dict[str, torch.Tensor]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {i.name: batch[i.name].numpy() for i in session.get_inputs()})[0]


def _torch_logits(model, batch) -> np.ndarray:
    with torch.inference_mode():
        return model(**batch).logits.numpy()


@pytest.fixture(scope="module")
def model() -> BertForSequenceClassification:
    return _model()


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> BertTokenizerFast:
    vocab = tmp_path_factory.mktemp("tok") / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    return BertTokenizerFast(vocab_file=str(vocab))


@pytest.fixture(scope="module")
def fp32(model, tmp_path_factory) -> Path:
    return export_onnx(model, tmp_path_factory.mktemp("fp32") / "model.onnx", max_seq_length=32)


@pytest.fixture(scope="module")
def bundle(model, tokenizer, tmp_path_factory) -> tuple[Path, QuantizeReport]:
    out = tmp_path_factory.mktemp("run") / "int8"
    report = quantize_model(model, out, QuantizeConfig(), tokenizer=tokenizer)
    return out, report


def test_fp32_export_matches_torch_with_optimum_io_names(model, fp32):
    session = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(i.type == "tensor(int64)" for i in session.get_inputs())
    assert [o.name for o in session.get_outputs()] == ["logits"]
    assert sorted(p.name for p in fp32.parent.iterdir()) == ["model.onnx"]  # weights inside: no .onnx_data
    batch = _batch(3, 17)
    np.testing.assert_allclose(_run(fp32, batch), _torch_logits(model, batch), atol=1e-4, rtol=0)


def test_export_leaves_model_as_it_was(model, fp32):
    assert not model.training
    trained = _model(num_hidden_layers=1).train()
    attn = trained.config._attn_implementation
    export_onnx(trained, fp32.parent.parent / "again" / "m.onnx", max_seq_length=8)
    assert trained.training and trained.config._attn_implementation == attn


def test_int8_predictions_agree_with_fp32_torch(model, bundle):
    out, _ = bundle
    batch = _batch(64, 24)
    ref, got = _torch_logits(model, batch), _run(out / "model.onnx", batch)
    assert (ref.argmax(-1) == got.argmax(-1)).mean() >= 0.9
    centred = ref - ref.mean(0)  # random-init logits share a large offset; judge the part that varies by input
    sqnr_db = 10 * np.log10((centred**2).sum() / ((ref - got) ** 2).sum())
    assert sqnr_db > 20, sqnr_db


def test_int8_is_smaller_and_really_quantized(bundle, fp32):
    out, report = bundle
    int8 = out / "model.onnx"
    assert report.onnx_int8_mb < 0.5 * report.onnx_fp32_mb
    assert int8.stat().st_size < 0.5 * fp32.stat().st_size
    graph = onnx.load(str(int8)).graph
    ops = Counter(n.op_type for n in graph.node)
    assert ops["MatMulInteger"] >= 12 and ops["DynamicQuantizeLinear"] > 0  # 6 linears × 2 layers at least
    assert any(t.data_type == onnx.TensorProto.INT8 for t in graph.initializer)
    assert report.quantized_nodes >= ops["MatMulInteger"]
    assert report.to_dict() == {"onnx_fp32_mb": report.onnx_fp32_mb, "onnx_int8_mb": report.onnx_int8_mb,
                                "quantized_nodes": report.quantized_nodes, "mode": "dynamic", "per_channel": True,
                                "target": report.target, "calibration": None, "fp32_nodes": []}


def test_int8_dynamic_axes(bundle):
    out, _ = bundle
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    for n, seq in [(3, 17), (1, 1), (5, 64)]:
        batch = _batch(n, seq)
        (logits,) = session.run(None, {k: v.numpy() for k, v in batch.items()})
        assert logits.shape == (n, 2) and logits.dtype == np.float32 and np.isfinite(logits).all()


def test_bundle_layout_loads_like_optimum(bundle, tokenizer):
    out, report = bundle
    names = {p.name for p in out.iterdir()}
    assert {"model.onnx", "config.json", "quantize_config.json", "tokenizer.json", "tokenizer_config.json"} <= names
    assert not any(n.endswith(".onnx_data") for n in names)
    assert not any(p.name.startswith(".") for p in out.parent.iterdir())  # staging directory renamed away
    assert AutoConfig.from_pretrained(out).num_labels == 2
    loaded = AutoTokenizer.from_pretrained(out)
    enc = loaded(["the cat sat", "a good movie on the mat"], padding=True, return_tensors="np")
    # optimum feeds exactly the session's inputs (token_type_ids only if the graph has it) and reads "logits"
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {i.name: enc[i.name].astype(np.int64) for i in session.get_inputs()})[0]
    assert logits.shape == (2, 2)
    settings = json.loads((out / "quantize_config.json").read_text())
    assert settings["mode"] == "dynamic" and settings["per_channel"] is True and settings["weight_type"] == "QInt8"
    assert {"torch", "transformers", "onnx", "onnxruntime"} <= set(settings["versions"])
    assert settings["report"] == report.to_dict()


def test_bare_encoder_without_segment_ids(tmp_path):
    torch.manual_seed(0)
    encoder = BertModel(BertConfig(hidden_size=32, num_attention_heads=2, intermediate_size=64, num_hidden_layers=1,
                                   vocab_size=VOCAB, type_vocab_size=1, max_position_embeddings=32)).eval()
    path = export_onnx(encoder, tmp_path / "encoder.onnx", max_seq_length=16)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    assert [o.name for o in session.get_outputs()] == ["last_hidden_state"]
    batch = {k: v for k, v in _batch(2, 9).items() if k != "token_type_ids"}
    (hidden,) = session.run(None, {k: v.numpy() for k, v in batch.items()})
    with torch.inference_mode():
        ref = encoder(**batch).last_hidden_state.numpy()
    np.testing.assert_allclose(hidden, ref, atol=1e-4, rtol=0)


def test_config_validation():
    with pytest.raises(UnknownNameError, match="dynamic"):
        QuantizeConfig(mode="statik")
    with pytest.raises(ConfigError, match="opset"):
        QuantizeConfig(opset=13)
    assert QuantizeConfig(mode="DYNAMIC").mode == "dynamic"


def test_failed_quantization_writes_nothing(tmp_path, model, monkeypatch):
    def fake_export(model, path, **_):
        path.write_bytes(b"not onnx")
        return path

    def broken(src, dst, config):
        raise RuntimeError("boom")

    monkeypatch.setattr(quantize_module, "export_onnx", fake_export)
    monkeypatch.setitem(quantize_module.QUANTIZERS._items, "dynamic", broken)
    with pytest.raises(RuntimeError, match="boom"):
        quantize_model(model, tmp_path / "int8")
    assert list(tmp_path.iterdir()) == []


def test_export_error_is_a_model_error(tmp_path):
    class NoIds(torch.nn.Module):
        config = BertConfig()

        def forward(self, pixel_values):
            return pixel_values

    with pytest.raises(DistillError, match="input_ids"):
        export_onnx(NoIds(), tmp_path / "x.onnx")


def test_import_compress_stays_light():
    code = "import sys, compress; bad = {'onnx', 'onnxruntime'} & set(sys.modules); assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])

"""compress.quantize.tolerance: per-layer sensitivity; the most sensitive layers kept FP32 until the drop is allowed."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

import compress.quantize.tolerance as tolerance_module
from compress import QuantizeConfig, export_onnx, quantize_with_tolerance
from compress.quantize.tolerance import ToleranceReport, node_groups, quantizable_nodes
from distill.core.errors import ConfigError

VOCAB = 60


def _inputs(n: int, seq: int, seed: int) -> dict[str, np.ndarray]:
    ids = np.random.default_rng(seed).integers(0, VOCAB, (n, seq))
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


@pytest.fixture(scope="module")
def model() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(hidden_size=64, num_attention_heads=4, intermediate_size=128, num_hidden_layers=2,
                        vocab_size=VOCAB, max_position_embeddings=32, num_labels=3)
    return BertForSequenceClassification(config).eval()


@pytest.fixture(scope="module")
def fp32(model, tmp_path_factory) -> Path:
    return export_onnx(model, tmp_path_factory.mktemp("fp32") / "model.onnx", max_seq_length=16)


@pytest.fixture(scope="module")
def evaluate(fp32):
    """A metric we control: -1000 x mean |logit - FP32 logit| on fixed inputs; FP32 scores 0, any rounding < 0."""
    feeds = _inputs(32, 12, seed=7)

    def run(path: Path) -> np.ndarray:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["logits"], feeds)[0]

    ref = run(fp32)
    return lambda path: -1000.0 * float(np.abs(run(path) - ref).mean())


@pytest.fixture(scope="module")
def calibration() -> list[dict[str, np.ndarray]]:
    return [_inputs(8, 12, seed=i) for i in range(3)]


@pytest.fixture(scope="module")
def search(model, fp32, evaluate, calibration, tmp_path_factory):
    """Run quantize_with_tolerance on the module's export (the exporter itself is tested elsewhere)."""
    root = tmp_path_factory.mktemp("tol")

    def run(max_drop: float, mode: str = "static") -> tuple[ToleranceReport, Path]:
        out = root / f"{mode}-{max_drop}"
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(tolerance_module, "export_onnx", lambda model, path, **_: _copy(fp32, path))
            report = quantize_with_tolerance(model, out, QuantizeConfig(mode=mode), evaluate=evaluate,
                                             max_drop=max_drop, calibration_batches=calibration)
        return report, out
    return run


def _copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(src, dst))


@pytest.fixture(scope="module")
def strict(search) -> ToleranceReport:
    return search(0.0)[0]


def test_layers_group_matmuls_and_embeddings(fp32):
    groups = node_groups(fp32, quantizable_nodes(fp32, "static"))
    assert list(groups) == ["embeddings", "layer.0", "layer.1"]
    assert len(groups["embeddings"]) == 3 and len(groups["layer.0"]) == len(groups["layer.1"]) == 6  # q k v o in out
    dynamic = node_groups(fp32, quantizable_nodes(fp32, "dynamic"))  # dynamic also quantizes the head's Gemms
    assert dynamic == {**groups, "pooler": ["node_Gemm_240"], "classifier": ["node_Gemm_241"]}


def test_zero_tolerance_keeps_layers_fp32_until_exact(strict):
    assert strict.int8_metric < strict.fp32_metric  # INT8 everywhere does lose something on this metric
    assert set(strict.sensitivity) == {"embeddings", "layer.0", "layer.1"}
    assert strict.fp32_layers == sorted(strict.sensitivity, key=strict.sensitivity.get, reverse=True)
    assert strict.final_metric == strict.fp32_metric and strict.within_tolerance
    assert strict.quantize.fp32_nodes == strict.fp32_nodes and len(strict.fp32_nodes) == 15
    assert strict.quantize.quantized_nodes == 0
    assert strict.evaluations == 2 + 3 + len(strict.fp32_layers)  # fp32, all-int8, 3 sensitivities, greedy steps


def test_large_tolerance_keeps_everything_int8(search):
    loose, _ = search(1e9)
    assert loose.fp32_layers == [] and loose.fp32_nodes == [] and loose.sensitivity == {}
    assert loose.evaluations == 2 and loose.final_metric == loose.int8_metric
    assert loose.quantize.quantized_nodes >= 15


def test_tolerance_between_keeps_only_the_most_sensitive_layer(search, strict, tmp_path):
    top = max(strict.sensitivity, key=strict.sensitivity.get)
    allowed = strict.fp32_metric - strict.sensitivity[top]  # exactly what keeping `top` in FP32 achieves
    assert 0 < allowed < strict.fp32_metric - strict.int8_metric
    report, _ = search(allowed)
    assert report.fp32_layers == [top] and report.within_tolerance
    assert report.final_metric == pytest.approx(strict.sensitivity[top])
    assert 0 < report.quantize.quantized_nodes < 15


def test_bundle_records_the_fp32_layers(search, strict):
    report, out = search(0.0)  # `strict` wrote this directory; this rerun replaces it with the same result
    assert report.fp32_layers == strict.fp32_layers
    settings = json.loads((out / "quantize_config.json").read_text())
    assert settings["nodes_to_exclude"] == report.fp32_nodes
    assert settings["tolerance"]["fp32_layers"] == report.fp32_layers
    assert settings["tolerance"]["within_tolerance"] is True
    graph = onnx.load(str(out / "model.onnx")).graph
    dq_outputs = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    kept = [n for n in graph.node if n.name in report.fp32_nodes]
    assert kept and not any(dq_outputs.intersection(n.input) for n in kept)  # really FP32 in the bundle


def test_dynamic_mode_searches_too(search):
    report, _ = search(0.0, mode="dynamic")
    assert report.fp32_layers and report.final_metric == report.fp32_metric


def test_bad_tolerance_and_metric(model, fp32, tmp_path, monkeypatch):
    monkeypatch.setattr(tolerance_module, "export_onnx", lambda model, path, **_: _copy(fp32, path))
    with pytest.raises(ConfigError, match="max_drop"):
        quantize_with_tolerance(model, tmp_path / "x", evaluate=lambda p: 1.0, max_drop=-0.1)
    with pytest.raises(ConfigError, match="finite"):
        quantize_with_tolerance(model, tmp_path / "x", evaluate=lambda p: float("nan"), max_drop=0.1)
    assert not (tmp_path / "x").exists()

"""compress.quantize static mode: QDQ graph with per-channel weights, calibration data handling and methods."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import factories
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper
from transformers import BertForSequenceClassification

import compress.quantize.int8 as quantize_module
from compress import CALIBRATIONS, QUANTIZERS, QuantizeConfig, export_onnx, quantize_model
from compress.quantize.int8 import Calibration, _check_calibration_cache, calibration_feeds, quantize_static_int8
from compress.quantize.targets import detect_target
from distill.core.errors import ConfigError, UnknownNameError

NAMES = ["input_ids", "attention_mask", "token_type_ids"]


def _batch(n: int, seq: int, vocab: int, seed: int) -> dict[str, torch.Tensor]:
    """A DataLoader-style batch: padded ids, mask, segments and labels (which the graph does not take)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (n, seq), generator=gen)
    mask = torch.ones_like(ids)
    mask[::2, seq - 3:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids),
            "labels": torch.randint(0, 2, (n,), generator=gen)}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return factories.tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def model(tokenizer) -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = factories.tiny_bert_config(vocab=len(tokenizer), hidden=64, ffn=128, max_position_embeddings=64)
    return BertForSequenceClassification(config).eval()


@pytest.fixture(scope="module")
def batches(tokenizer) -> list[dict[str, torch.Tensor]]:
    return [_batch(8, 10 + i, len(tokenizer), seed=i) for i in range(4)]  # lengths differ, as with dynamic padding


@pytest.fixture(scope="module")
def fp32(model, tmp_path_factory) -> Path:
    return export_onnx(model, tmp_path_factory.mktemp("fp32") / "model.onnx", max_seq_length=16)


@pytest.fixture(scope="module")
def bundle(model, tokenizer, batches, fp32, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "int8"
    with pytest.MonkeyPatch.context() as patch:  # reuse the module's export (the exporter is tested elsewhere)
        patch.setattr(quantize_module, "export_onnx", lambda model, path, **_: Path(shutil.copy(fp32, path)))
        report = quantize_model(model, out, QuantizeConfig(mode="static"), tokenizer=tokenizer,
                                calibration_batches=iter(batches))  # a one-shot iterable, like a DataLoader pass
    return out, report


def _logits(path: Path, batch: dict) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {i.name: np.asarray(batch[i.name]) for i in session.get_inputs()})[0]


def _scales(path: Path) -> dict[str, np.ndarray]:
    graph = onnx.load(str(path)).graph
    return {t.name: numpy_helper.to_array(t) for t in graph.initializer if t.name.endswith("_scale")}


def test_static_is_registered():
    assert "static" in QUANTIZERS and "dynamic" in QUANTIZERS
    assert set(CALIBRATIONS.names()) == {"minmax", "percentile", "entropy"}


def test_static_bundle_is_qdq_with_per_channel_weights(bundle, fp32):
    out, report = bundle
    graph = onnx.load(str(out / "model.onnx")).graph
    ops = Counter(n.op_type for n in graph.node)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > ops["QuantizeLinear"]
    assert ops["DynamicQuantizeLinear"] == 0 and ops["MatMulInteger"] == 0  # QDQ, not the dynamic operators
    inits = {t.name: t for t in graph.initializer}
    weights = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
               and inits[n.input[0]].data_type == onnx.TensorProto.INT8 and len(inits[n.input[0]].dims) == 2]
    assert len(weights) >= 12  # 6 linears x 2 layers
    per_channel = [n for n in weights if "model.bert.embeddings" not in n.input[0]]
    assert per_channel and all(numpy_helper.to_array(inits[n.input[1]]).size > 1 for n in per_channel)
    assert report.quantized_nodes >= 12 and report.onnx_int8_mb < 0.75 * report.onnx_fp32_mb


def test_static_bundle_keeps_optimum_layout(bundle, tokenizer):
    out, report = bundle
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == NAMES
    assert all(i.type == "tensor(int64)" for i in session.get_inputs())
    assert [o.name for o in session.get_outputs()] == ["logits"]
    for n, seq in [(3, 17), (1, 1), (2, 64)]:  # dynamic axes, lengths beyond the calibration data
        (logits,) = session.run(None, {k: np.ones((n, seq), np.int64) for k in NAMES})
        assert logits.shape == (n, 2) and np.isfinite(logits).all()
    assert {"model.onnx", "config.json", "quantize_config.json", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    settings = json.loads((out / "quantize_config.json").read_text())
    assert settings["mode"] == "static" and settings["calibration"] == "minmax" and settings["format"] == "QDQ"
    assert settings["target"] == report.target == detect_target()
    assert settings["report"] == report.to_dict() and report.to_dict()["target"] == report.target


def test_static_int8_tracks_fp32(bundle, fp32, tokenizer):
    batch = {k: v.numpy() for k, v in _batch(64, 16, len(tokenizer), seed=123).items()}
    ref, got = _logits(fp32, batch), _logits(bundle[0] / "model.onnx", batch)
    assert (ref.argmax(-1) == got.argmax(-1)).mean() >= 0.9
    centred = ref - ref.mean(0)
    sqnr_db = 10 * np.log10((centred**2).sum() / ((ref - got) ** 2).sum())
    assert sqnr_db > 15, sqnr_db


def _one_matmul(path: Path) -> Path:
    """x[n, 16] @ w[16, 8]: the smallest graph whose activation range each calibration method sets."""
    w = np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "mm",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 16])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 8])],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def test_calibration_methods_clip_outliers_except_minmax(tmp_path):
    src = _one_matmul(tmp_path / "mm.onnx")
    rng = np.random.default_rng(1)
    feeds = []
    for i in range(4):
        x = rng.normal(size=(256, 16)).astype(np.float32)
        x[0, i] = 50.0  # one rare outlier per batch, 25x the bulk's spread
        feeds.append({"x": x})
    scale = {}
    for method in ["minmax", "percentile", "entropy"]:
        out = tmp_path / f"{method}.onnx"
        quantize_static_int8(src, out, QuantizeConfig(mode="static", calibration=method, percentile=99.9),
                             Calibration(feeds))
        scale[method] = float(_scales(out)["x_scale"])
    assert scale["minmax"] == pytest.approx((50.0 - min(f["x"].min() for f in feeds)) / 255, rel=1e-3)
    assert scale["percentile"] < 0.5 * scale["minmax"] and scale["entropy"] < 0.75 * scale["minmax"]


def test_histogram_calibration_on_ragged_task_batches(fp32, batches, tmp_path):
    out = tmp_path / "model.onnx"  # percentile stacks all batches: works because feeds are padded to one shape
    config = QuantizeConfig(mode="static", calibration="percentile")
    quantize_static_int8(fp32, out, config, Calibration(calibration_feeds(batches, NAMES, limit=32)))
    assert np.isfinite(_logits(out, {k: v.numpy() for k, v in batches[0].items()})).all()


def test_calibration_cache_is_reused(fp32, batches, tmp_path):
    cache = tmp_path / "calibration.json"
    config = QuantizeConfig(mode="static")
    quantize_static_int8(fp32, tmp_path / "a.onnx", config, Calibration(calibration_feeds(batches, NAMES, 32), cache))
    assert cache.is_file()
    quantize_static_int8(fp32, tmp_path / "b.onnx", config, Calibration([], cache))  # no data: ranges from cache
    assert _scales(tmp_path / "a.onnx").keys() == _scales(tmp_path / "b.onnx").keys()


def test_calibration_feeds_take_what_the_graph_needs():
    ragged = {"input_ids": [[2, 7, 3], [2, 9, 9, 9, 3]], "attention_mask": [[1, 1, 1], [1, 1, 1, 1, 1]],
              "labels": [0, 1], "idx": [4, 5]}
    ints32 = {"input_ids": np.full((3, 4), 7, np.int32), "label": np.zeros(3)}
    feeds = calibration_feeds([ragged, ints32, ragged], NAMES, limit=6)
    assert len(feeds) == 3 and all(set(f) == set(NAMES) for f in feeds)  # labels/idx dropped, segments filled
    assert {f[k].shape for f in feeds for k in f} == {(2, 5)}  # one shape: padded to 5, re-cut into 2-row batches
    assert all(f[k].dtype == np.int64 for f in feeds for k in f)
    np.testing.assert_array_equal(feeds[0]["input_ids"][0], [2, 7, 3, 0, 0])
    np.testing.assert_array_equal(feeds[0]["attention_mask"][0], [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(feeds[1]["attention_mask"][1], [1, 1, 1, 1, 0])  # no mask given: ones, padded 0
    assert not feeds[2]["token_type_ids"].any()
    tail = calibration_feeds([{"input_ids": np.ones((4, 3), np.int64)}, {"input_ids": np.ones((3, 2), np.int64)}],
                             NAMES, limit=100)
    assert [f["input_ids"].shape for f in tail] == [(4, 3)]  # 3-row ragged tail dropped


def test_calibration_data_errors(model, tmp_path):
    with pytest.raises(ConfigError, match="calibration"):
        quantize_model(model, tmp_path / "int8", QuantizeConfig(mode="static"))
    with pytest.raises(ConfigError, match="no calibration data"):
        quantize_model(model, tmp_path / "int8", QuantizeConfig(mode="static"), calibration_batches=[])
    with pytest.raises(ConfigError, match="input_ids"):
        calibration_feeds([{"text": ["a"]}], NAMES, limit=4)
    with pytest.raises(ConfigError, match="shape"):
        calibration_feeds([{"input_ids": np.ones((2, 3)), "attention_mask": np.ones((2, 4))}], NAMES, limit=4)
    assert list(tmp_path.iterdir()) == []  # failed before export: nothing written


def test_config_validation():
    with pytest.raises(UnknownNameError, match="entropy"):
        QuantizeConfig(mode="static", calibration="kl")
    with pytest.raises(UnknownNameError, match="static"):
        QuantizeConfig(mode="qat")
    with pytest.raises(ConfigError, match="percentile"):
        QuantizeConfig(mode="static", calibration="percentile", percentile=0)
    with pytest.raises(ConfigError, match="calibration_samples"):
        QuantizeConfig(mode="static", calibration_samples=0)
    config = QuantizeConfig(mode="STATIC", calibration="Entropy")
    assert (config.mode, config.calibration, config.target) == ("static", "entropy", detect_target())


def test_old_onnxruntime_is_named():
    def quantize_static(model_input, model_output, calibration_data_reader=None):  # before the calibration cache
        pass

    with pytest.raises(ConfigError, match="too old for static quantization"):
        _check_calibration_cache(quantize_static)

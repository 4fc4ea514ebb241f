"""ONNX export and dynamic INT8 of every encoder family through ``compress.quantize_model``: the bundle runs in
onnxruntime alone on the family's tokenizer output (a length other than the traced one: dynamic axes, DeBERTa's
relative buckets, ModernBERT's sliding windows), stays close to the PyTorch logits, and carries a config and
tokenizer that load without this package, and no exporter trace metadata (stack traces with this machine's paths).
Pruned layouts only the widths file describes export too."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from family_factories import FAMILY_NAMES, tiny_model, tiny_tokenizer

from compress import PruneConfig, QuantizeConfig, load_pruned, prune_model, quantize_model, save_pruned

TEXTS = ["the movie was superb and the actor very good", "a boring plot", "it is sad"]


def _feed(name: str) -> dict[str, np.ndarray]:
    return {k: v.astype(np.int64) for k, v in tiny_tokenizer(name)(TEXTS, padding=True, return_tensors="np").items()}


def _check_bundle(model, name: str, out) -> None:
    import onnxruntime as ort
    from transformers import AutoConfig, AutoTokenizer

    report = quantize_model(model, out, QuantizeConfig(), tokenizer=tiny_tokenizer(name), max_seq_length=16)
    assert report.quantized_nodes > 0 and report.onnx_int8_mb < report.onnx_fp32_mb
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    assert names == json.loads((out / "quantize_config.json").read_text())["inputs"]
    feed = {k: v for k, v in _feed(name).items() if k in names}
    assert feed["input_ids"].shape[1] != 16  # not the traced length
    with torch.no_grad():
        want = model.eval()(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.numpy()
    got = session.run(None, feed)[0]
    assert got.shape == want.shape and np.abs(got - want).max() < 0.05
    assert AutoConfig.from_pretrained(out).model_type == name
    _check_no_trace_metadata(out / "model.onnx")
    assert AutoTokenizer.from_pretrained(out)(TEXTS[0])["input_ids"] == tiny_tokenizer(name)(TEXTS[0])["input_ids"]


def _check_no_trace_metadata(path) -> None:
    """The exporter's per-node stack traces (this machine's source paths) are not shipped."""
    import onnx

    from compress.quantize.export import KEPT_NODE_METADATA

    graph = onnx.load(str(path)).graph
    assert {p.key for node in graph.node for p in node.metadata_props} == set(KEPT_NODE_METADATA)
    assert str(Path(torch.__file__).parent).encode() not in path.read_bytes()
    assert any(p.key == "pkg.torch.onnx.name_scopes" for node in graph.node for p in node.metadata_props)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_family_exports_and_quantizes(name, tmp_path):
    _check_bundle(tiny_model(name), name, tmp_path / "int8")


def test_pruned_modernbert_exports(tmp_path):
    """Fused heads cut without the hidden width and GLU neurons, reloaded from the widths file, export and
    quantize like any model."""
    name = "modernbert"
    model = tiny_model(name)
    prune_model(model, PruneConfig(heads=0.5, ffn=0.5, hidden=0.0), {k: torch.from_numpy(v) for k, v in
                                                                      _feed(name).items()})
    save_pruned(model, tmp_path / "pruned")
    _check_bundle(load_pruned(tmp_path / "pruned"), name, tmp_path / "int8")

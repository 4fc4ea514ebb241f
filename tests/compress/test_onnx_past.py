"""The torch.onnx fallback (past key values + ONNX Runtime dynamic INT8) for families the genai builder does not
cover: tiny random GPT-2 (and Llama, which it handles too), offline."""

import json
import subprocess
import sys

import pytest
import torch
from lm_factories import save_tiny_lm

from compress.quantize.lm_speed import fixed_prompt, onnx_decode_speed, torch_decode_speed
from compress.quantize.onnx_lm import OnnxCausalLM
from compress.quantize.onnx_past import build_with_past
from distill.core.errors import ConfigError


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    return save_tiny_lm(tmp_path_factory.mktemp("gpt2") / "model", "gpt2", seed=4)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_fp32_export_matches_torch_logits_and_greedy_tokens(family, gpt2_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    model_dir = gpt2_dir if family == "gpt2" else save_tiny_lm(tmp_path / "llama", "llama", seed=5)
    bundle = build_with_past(model_dir, tmp_path / "fp32", "fp32")
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = torch.tensor([fixed_prompt(300, 10, seed=1), fixed_prompt(300, 10, seed=2)])
    with torch.no_grad():
        assert torch.allclose(OnnxCausalLM(bundle.path, threads=1)(ids), model(input_ids=ids).logits, atol=1e-4)
    prompt = fixed_prompt(300, 12)
    ours = torch_decode_speed(model, prompt, new_tokens=12, threads=1, runs=1, warmup=0).tokens
    assert onnx_decode_speed(bundle.path, prompt, new_tokens=12, threads=1, runs=1, warmup=0).tokens == ours
    layout = json.loads((bundle.path / "onnx_past.json").read_text())
    assert layout["architecture"] == type(model).__name__ and layout["layers"] == 2


def test_int8_gpt2_is_smaller_and_its_cache_agrees_with_recomputing(gpt2_dir, tmp_path):
    fp32 = build_with_past(gpt2_dir, tmp_path / "fp32", "fp32")
    int8 = build_with_past(gpt2_dir, tmp_path / "int8", "int8")
    assert int8.size_bytes < fp32.size_bytes
    lm = OnnxCausalLM(int8.path, threads=1)
    prompt = fixed_prompt(300, 8, seed=3)
    cached = onnx_decode_speed(int8.path, prompt, new_tokens=10, threads=1, runs=1, warmup=0).tokens
    seq = list(prompt)
    for _ in range(10):  # no cache: the whole sequence every step
        seq.append(int(lm(torch.tensor([seq]))[0, -1].argmax()))
    assert seq[len(prompt):] == cached


def test_int4_gpt2_is_4_bit_weight_only_smaller_than_int8_and_its_cache_agrees(gpt2_dir, tmp_path):
    """Every weight product (the exporter's Gemms, the tied LM head) becomes MatMulNBits, the embeddings 4-bit."""
    import onnx

    int8 = build_with_past(gpt2_dir, tmp_path / "int8", "int8")
    int4 = build_with_past(gpt2_dir, tmp_path / "int4", "int4")
    assert int4.size_bytes < int8.size_bytes
    ops = [n.op_type for n in onnx.load(str(int4.path / "model.onnx")).graph.node]
    assert ops.count("MatMulNBits") == 9 and "Gemm" not in ops and "GatherBlockQuantized" in ops  # 4 per layer + head
    assert "INT4" in (int4.path / "README.md").read_text()
    lm = OnnxCausalLM(int4.path, threads=1)
    prompt = fixed_prompt(300, 8, seed=3)
    cached = onnx_decode_speed(int4.path, prompt, new_tokens=6, threads=1, runs=1, warmup=0).tokens
    seq = list(prompt)
    for _ in range(6):
        seq.append(int(lm(torch.tensor([seq]))[0, -1].argmax()))
    assert seq[len(prompt):] == cached


def test_readme_snippet_runs_without_our_package(gpt2_dir, tmp_path):
    bundle = build_with_past(gpt2_dir, tmp_path / "int8", "int8")
    code = (bundle.path / "README.md").read_text().split("```python\n")[1].split("```")[0]
    assert "distill" not in code and "compress" not in code
    res = subprocess.run([sys.executable, "-c", code], cwd=bundle.path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-500:]
    assert res.stdout.startswith("The capital of France is")


def test_unknown_precision_is_one_line(gpt2_dir, tmp_path):
    with pytest.raises(ConfigError, match="precision"):
        build_with_past(gpt2_dir, tmp_path / "out", "int2")

"""onnxruntime-genai export of tiny random causal LMs (offline, local dirs) and decode-speed measurement."""

import json
import subprocess
import sys

import pytest
import torch
from lm_factories import save_tiny_lm, tiny_causal_lm

from compress.quantize import genai
from compress.quantize.lm_speed import (
    DecodeSpeed,
    fixed_prompt,
    genai_decode_speed,
    onnx_decode_speed,
    torch_decode_speed,
)
from compress.quantize.onnx_lm import OnnxCausalLM
from distill.core.errors import ConfigError, ModelError

og = pytest.importorskip("onnxruntime_genai", reason="needs `pip install onnxruntime-genai`")


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return save_tiny_lm(tmp_path_factory.mktemp("llama") / "model", "llama", seed=1)


@pytest.fixture(scope="module")
def fp32_bundle(llama_dir, tmp_path_factory):
    return genai.build_genai(llama_dir, tmp_path_factory.mktemp("genai") / "fp32", "fp32")


def _greedy_matches_torch(model_dir, bundle, n=16):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    prompt = fixed_prompt(model.config.vocab_size, 12)
    ours = torch_decode_speed(model, prompt, new_tokens=n, threads=1, runs=1, warmup=0)
    theirs = genai_decode_speed(bundle.path, prompt, new_tokens=n, threads=1, runs=1, warmup=0)
    return ours.tokens, theirs.tokens


def test_fp32_export_generates_the_same_greedy_tokens_as_torch(llama_dir, fp32_bundle):
    assert fp32_bundle.architecture == "LlamaForCausalLM" and fp32_bundle.precision == "fp32"
    for name in ("model.onnx", "genai_config.json", "tokenizer.json", "README.md"):
        assert (fp32_bundle.path / name).is_file(), name
    config = json.loads((fp32_bundle.path / "genai_config.json").read_text())
    assert config["model"]["decoder"]["inputs"]["past_key_names"] == "past_key_values.%d.key"
    ours, theirs = _greedy_matches_torch(llama_dir, fp32_bundle)
    assert theirs == ours
    plain = onnx_decode_speed(fp32_bundle.path, fixed_prompt(300, 12), new_tokens=16, threads=1, runs=1, warmup=0)
    assert plain.tokens == ours  # the same graph stepped by plain onnxruntime


def test_int8_export_is_smaller_and_runs(llama_dir, fp32_bundle, tmp_path):
    int8 = genai.build_genai(llama_dir, tmp_path / "int8", "int8")
    assert int8.size_bytes < fp32_bundle.size_bytes
    speed = genai_decode_speed(int8.path, fixed_prompt(300, 16), new_tokens=8, threads=1, runs=1, warmup=0)
    assert len(speed.tokens) == 8 and speed.decode_tokens_per_s > 0 and speed.prefill_ms > 0
    ids = torch.tensor([fixed_prompt(300, 20)])
    close = OnnxCausalLM(int8.path, threads=1)(ids)
    assert close.shape == (1, 20, 300)


def test_int4_options_make_an_untied_embedding_4_bit_too(tmp_path):
    """The builder keeps an untied embedding FP32 at int4 unless ``INT4_OPTIONS`` (MatMul/Gather) ask for it."""
    import onnx

    untied = save_tiny_lm(tmp_path / "untied", "llama", seed=2, tie_word_embeddings=False)
    int4 = genai.build_genai(untied, tmp_path / "int4", "int4", extra_options=genai.INT4_OPTIONS)
    ops = {n.op_type for n in onnx.load(str(int4.path / "model.onnx"), load_external_data=False).graph.node}
    assert "GatherBlockQuantized" in ops and "MatMulNBits" in ops
    assert "INT4 weight-only" in (int4.path / "README.md").read_text()
    speed = genai_decode_speed(int4.path, fixed_prompt(300, 8), new_tokens=4, threads=1, runs=1, warmup=0)
    assert len(speed.tokens) == 4


def test_onnx_logits_equal_torch_logits_for_the_fp32_export(llama_dir, fp32_bundle):
    from transformers import AutoModelForCausalLM

    from distill.evaluate.lm import sliding_perplexity

    model = AutoModelForCausalLM.from_pretrained(llama_dir).eval()
    ids = torch.tensor([fixed_prompt(300, 24, seed=1), fixed_prompt(300, 24, seed=2)])
    with torch.no_grad():
        want = model(input_ids=ids).logits
    onnx = OnnxCausalLM(fp32_bundle.path, threads=1)
    assert torch.allclose(onnx(ids), want, atol=1e-4)
    stream = fixed_prompt(300, 64, seed=3)
    assert sliding_perplexity(onnx, stream, window=16).perplexity == pytest.approx(
        sliding_perplexity(model, stream, window=16).perplexity, rel=1e-4)


def test_readme_snippet_runs_without_our_package(fp32_bundle):
    readme = (fp32_bundle.path / "README.md").read_text()
    code = readme.split("```python\n")[1].split("```")[0]
    assert "distill" not in code and "compress" not in code and "torch" not in code
    res = subprocess.run([sys.executable, "-c", code], cwd=fp32_bundle.path, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-500:]
    assert res.stdout.startswith("The capital of France is")


def test_speed_reports_both_runtimes(llama_dir, fp32_bundle):
    model = tiny_causal_lm("llama", vocab=300)
    prompt = fixed_prompt(300, 32)
    torch_speed = torch_decode_speed(model, prompt, new_tokens=8, threads=1, runs=2, warmup=1)
    genai_speed = genai_decode_speed(fp32_bundle.path, prompt, new_tokens=8, threads=1, runs=2, warmup=1)
    for s in (torch_speed, genai_speed):
        assert isinstance(s, DecodeSpeed) and s.prompt_tokens == 32 and s.new_tokens == 8 and s.threads == 1
        assert s.prefill_ms > 0 and s.decode_tokens_per_s > 0
        assert "tokens" not in s.to_dict()
    assert torch.get_num_threads() == 1  # restored


def test_uncovered_families_and_bad_settings_are_one_line(tmp_path):
    gpt2 = save_tiny_lm(tmp_path / "gpt2", "gpt2")
    with pytest.raises(ModelError, match="does not cover GPT2LMHeadModel") as err:
        genai.build_genai(gpt2, tmp_path / "out")
    assert "torch.onnx" in err.value.line() and "\n" not in err.value.line()
    narrow = save_tiny_lm(tmp_path / "narrow", "llama", hidden_size=32)  # head size 8
    with pytest.raises(ModelError, match="multiple of 16"):
        genai.build_genai(narrow, tmp_path / "out")
    with pytest.raises(ConfigError, match="precision"):
        genai.build_genai(narrow, tmp_path / "out", "int2")
    with pytest.raises(ModelError, match="no config.json"):
        genai.build_genai(tmp_path, tmp_path / "out")


def test_missing_onnxruntime_genai_is_one_line(monkeypatch, llama_dir, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime_genai" else real(name, *a))
    with pytest.raises(ModelError, match="pip install onnxruntime-genai"):
        genai.build_genai(llama_dir, tmp_path / "out")


@pytest.mark.slow
def test_qwen2_export_generates_the_same_greedy_tokens_as_torch(tmp_path):
    model_dir = save_tiny_lm(tmp_path / "qwen2", "qwen2", seed=2)
    bundle = genai.build_genai(model_dir, tmp_path / "fp32", "fp32")
    assert bundle.architecture == "Qwen2ForCausalLM"
    ours, theirs = _greedy_matches_torch(model_dir, bundle)
    assert theirs == ours

"""Causal LM -> ONNX with KV cache through onnxruntime-genai's model builder (INT8 / INT4 weight-only, or FP32).

``python -m onnxruntime_genai.models.builder -i DIR -o OUT -p int8|int4|fp32 -e cpu`` turns a Hugging Face dir
into ``model.onnx`` (+ ``model.onnx.data``) with GroupQueryAttention and a KV cache, ``genai_config.json`` and the
tokenizer files; ``-p int8``/``int4`` quantizes the MatMul weights (MatMulNBits, block size 32, symmetric). The
embedding: with int8 it stays FP32 (the builder's quantized Gather is 4-bit only); with int4 a tied embedding is
shared 4-bit with the LM head (GatherBlockQuantized), an untied one stays FP32 unless ``INT4_OPTIONS`` ask for it
(``op_types_to_quantize=MatMul/Gather``: a tiny untied Llama, hidden 256, vocab 300, 1.13 MB -> 0.87 MB; a tied
one is 0.83 MB either way). It runs offline on a local dir (about 10 s for SmolLM2-135M on 2 cores). We run it as a
subprocess (its ``-h`` crashes on a help-string bug; its options are in ``onnxruntime_genai/models/builder.py``).

Coverage is the builder's: ``BUILDER_ARCHITECTURES`` lists the ``config.architectures[0]`` values it dispatches on
in onnxruntime-genai 0.18.0. GPT-2 (``GPT2LMHeadModel``) is not among them: ``check_builder_support`` says so in
one line (the fallback is a ``torch.onnx`` export with past key values plus ``onnxruntime.quantization``).
Its CPU GroupQueryAttention kernel also needs a head size that is a multiple of 16.

The bundle is what the builder writes plus ``README.md`` with ``GENERATE_SNIPPET``: greedy generation with
``onnxruntime_genai`` alone (no torch, no transformers, not this package).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from distill.core.errors import ConfigError, ModelError

GENAI_INSTALL = "pip install onnxruntime-genai"
PRECISIONS = ("int8", "int4", "fp32")  # what the builder accepts for the CPU execution provider
BUILDER_ARCHITECTURES = frozenset({
    "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "Phi3ForCausalLM",
    "PhiForCausalLM", "GemmaForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM", "GraniteForCausalLM",
    "OlmoForCausalLM", "NemotronForCausalLM", "SmolLM3ForCausalLM", "Ernie4_5ForCausalLM", "InternLM2ForCausalLM",
})
NOT_COVERED_FIX = {
    "GPT2LMHeadModel": "export GPT-2 with torch.onnx (past key values) and quantize it with onnxruntime.quantization",
}
ONNX_FILES = ("model.onnx", "model.onnx.data", "genai_config.json")
INT4_OPTIONS = {"op_types_to_quantize": "MatMul/Gather"}  # every weight 4-bit, the embedding table too
PRECISION_TEXT = {"int8": "INT8 (weight MatMuls)", "int4": "INT4 weight-only (MatMuls and embedding)",
                  "fp32": "FP32"}

GENERATE_SNIPPET = '''\
import onnxruntime_genai as og

model = og.Model(".")  # the folder holding genai_config.json
tokenizer = og.Tokenizer(model)
prompt = tokenizer.encode("The capital of France is")
params = og.GeneratorParams(model)
params.set_search_options(max_length=len(prompt) + 32, do_sample=False)  # greedy, 32 new tokens
generator = og.Generator(model, params)
generator.append_tokens(prompt)
while not generator.is_done():
    generator.generate_next_token()
print(tokenizer.decode(generator.get_sequence(0)))
'''


@dataclass
class GenaiBundle:
    """An onnxruntime-genai model folder and how it was built."""

    path: Path
    precision: str
    architecture: str
    size_bytes: int  # model.onnx + its external data
    build_seconds: float


def require_genai() -> None:
    """One-line ModelError when onnxruntime-genai is not installed."""
    if importlib.util.find_spec("onnxruntime_genai") is None:
        raise ModelError("exporting a causal LM with a KV cache needs onnxruntime-genai",
                         f"install it with `{GENAI_INSTALL}`")


def _config(model_dir: Path) -> dict:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise ModelError(f"'{model_dir}' has no config.json", "pass a directory written by save_pretrained")
    return json.loads(path.read_text())


def check_builder_support(model_dir: Path) -> str:
    """The architecture name when the builder covers the model; a one-line ModelError when it does not."""
    config = _config(model_dir)
    arch = (config.get("architectures") or [""])[0]
    if arch not in BUILDER_ARCHITECTURES:
        fix = NOT_COVERED_FIX.get(arch, f"use one of: {', '.join(sorted(BUILDER_ARCHITECTURES))}")
        raise ModelError(f"onnxruntime-genai's model builder does not cover {arch or 'this model'}", fix)
    hidden, heads = config.get("hidden_size"), config.get("num_attention_heads")
    head = config.get("head_dim") or (hidden // heads if hidden and heads else None)
    if head and head % 16:
        raise ModelError(f"ONNX Runtime's GroupQueryAttention needs a head size that is a multiple of 16, "
                         f"this model's is {head}", "choose a student shape with head size 16, 32, 64, ...")
    return arch


def _last_error(text: str) -> str:
    """The most telling line of the builder's output (its last error line, else the last line)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error" in ln or "error" in ln or "not supported" in ln]
    return (errors or lines or ["no output"])[-1][:200]


def build_genai(model_dir: Path | str, out_dir: Path | str, precision: str = "int8", *,
                extra_options: dict[str, str] | None = None, timeout: float = 1800) -> GenaiBundle:
    """Run the model builder on a local HF dir (offline) and add the README; returns the bundle's facts.

    ``extra_options`` go to the builder's ``--extra_options KEY=VALUE`` (e.g. ``{"shared_embeddings": "true"}``,
    ``{"op_types_to_quantize": "MatMul/Gather"}`` with int4 to quantize the embedding table too; with int8 the
    builder keeps the embedding Gather in FP32: its quantized Gather is 4-bit only).
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision '{precision}' for the CPU ONNX export",
                          f"choose one of: {', '.join(PRECISIONS)}")
    require_genai()
    model_dir, out = Path(model_dir).resolve(), Path(out_dir).resolve()
    arch = check_builder_support(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TQDM_DISABLE": "1"}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="genai-cache-") as cache:
        cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(model_dir), "-o", str(out),
               "-p", precision, "-e", "cpu", "-c", cache]
        if extra_options:
            cmd += ["--extra_options", *(f"{k}={v}" for k, v in extra_options.items())]
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=cache)
    seconds = time.perf_counter() - start
    missing = [f for f in ("model.onnx", "genai_config.json") if not (out / f).is_file()]
    if res.returncode != 0 or missing:
        raise ModelError(f"onnxruntime-genai's model builder failed on '{model_dir.name}' "
                         f"({_last_error(res.stderr + res.stdout)})", "check that the dir loads with transformers")
    (out / "README.md").write_text(bundle_readme(arch, precision))
    size = sum((out / f).stat().st_size for f in ("model.onnx", "model.onnx.data") if (out / f).is_file())
    return GenaiBundle(path=out, precision=precision, architecture=arch, size_bytes=size, build_seconds=seconds)


def bundle_readme(architecture: str, precision: str) -> str:
    """The bundle's README: what it is and a generation snippet that needs only onnxruntime-genai."""
    return (f"# {architecture}, {PRECISION_TEXT.get(precision, precision)} ONNX with KV cache (onnxruntime-genai)"
            f"\n\nPrecision: {precision}. "
            "Built by onnxruntime-genai's model builder for the CPU execution provider. "
            "`model.onnx` (+ `model.onnx.data`) takes `input_ids`, `attention_mask` and the past keys/values, "
            "`genai_config.json` describes it, and the tokenizer files sit beside it.\n\n"
            f"Greedy generation (`pip install onnxruntime-genai`), run from this folder:\n\n```python\n"
            f"{GENERATE_SNIPPET}```\n")


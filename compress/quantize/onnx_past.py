"""Causal LM -> ONNX with past key values through ``torch.onnx`` + ONNX Runtime dynamic INT8: the fallback for
families onnxruntime-genai's model builder does not cover (GPT-2).

The graph (``model.onnx``) takes ``input_ids`` (B, S), ``attention_mask`` (B, P + S) and, per layer i,
``past_key_values.{i}.key`` / ``.value`` (B, kv_heads, P, head_dim), and returns ``logits`` (B, S, V) and
``present.{i}.key`` / ``.value`` (B, kv_heads, P + S, head_dim): the names optimum and onnxruntime-genai use.
P = 0 (empty past tensors) is the prefill; then one token per step. Positions follow the cache length, so batches
must not be left-padded. Exported by the torch.export-based exporter (opset 18) through a wrapper that rebuilds a
``DynamicCache`` from the flat past tensors.

``-p int8`` applies ``onnxruntime.quantization.quantize_dynamic`` (INT8 weights per output channel, activations
quantized at run time) to the MatMuls; GPT-2's ``Conv1D`` projections are plain MatMuls in the graph, so they are
quantized too (Linear-only quantizers skip them). The bundle adds ``config.json``, the tokenizer and ``README.md``
with a greedy loop that needs only onnxruntime, numpy and transformers' tokenizer.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from distill.core.errors import ConfigError, ModelError

PRECISIONS = ("int8", "fp32")
ONNX_FILE = "model.onnx"

GENERATE_SNIPPET = '''\
import json

import numpy as np
import onnxruntime as ort
from transformers import AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained(".")  # run from this folder
session = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
layout = json.load(open("onnx_past.json"))  # layers, kv heads, head dim
ids = np.array([tokenizer.encode("The capital of France is")], dtype=np.int64)
empty = np.zeros((1, layout["kv_heads"], 0, layout["head_dim"]), dtype=np.float32)
past = {f"past_key_values.{i}.{kv}": empty for i in range(layout["layers"]) for kv in ("key", "value")}
tokens, feed = [], ids
for _ in range(32):  # greedy, 32 new tokens, reusing the KV cache
    mask = np.ones((1, feed.shape[1] + next(iter(past.values())).shape[2]), dtype=np.int64)
    logits, *present = session.run(None, {"input_ids": feed, "attention_mask": mask, **past})
    past = dict(zip(past, present))
    feed = logits[:, -1:].argmax(-1).astype(np.int64)
    tokens.append(int(feed[0, 0]))
print(tokenizer.decode(ids[0].tolist() + tokens))
'''


@dataclass
class PastBundle:
    """An ONNX-with-past bundle and how it was built."""

    path: Path
    precision: str
    architecture: str
    size_bytes: int
    layers: int
    kv_heads: int
    head_dim: int


def kv_layout(config) -> tuple[int, int, int]:
    """(layers, kv heads, head dim) of a causal-LM config (GPT-2's ``n_layer``/``n_head``/``n_embd`` too)."""
    layers = getattr(config, "num_hidden_layers", None) or config.n_layer
    heads = getattr(config, "num_attention_heads", None) or config.n_head
    kv = getattr(config, "num_key_value_heads", None) or heads
    hidden = getattr(config, "hidden_size", None) or config.n_embd
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    return int(layers), int(kv), int(head_dim)


def _wrapper(model):
    """``forward(input_ids, attention_mask, *flat_past) -> (logits, *flat_present)`` around a HF causal LM."""
    import torch
    from transformers import DynamicCache

    from compress.quantize.lm_speed import cache_keyword, output_cache

    layers, key = kv_layout(model.config)[0], cache_keyword(model)

    class WithPast(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, *past):
            cache = DynamicCache(config=self.model.config)
            for i in range(layers):
                cache.update(past[2 * i], past[2 * i + 1], i)
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=True, **{key: cache})
            present = []
            for layer in output_cache(out).layers[:layers]:
                present += [layer.keys, layer.values]
            return (out.logits, *present)

    return WithPast().eval()


def past_names(layers: int) -> tuple[list[str], list[str]]:
    """Input names of the past tensors and output names of the present ones, key then value per layer."""
    past = [f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    return past, [name.replace("past_key_values", "present") for name in past]


def export_with_past(model, path: Path) -> Path:
    """Export a causal LM (eval, FP32, CPU) to one ONNX file with past-key-value inputs and present outputs."""
    import torch

    from compress.quantize.export import quiet_exporter

    layers, kv, head_dim = kv_layout(model.config)
    past_in, present_out = past_names(layers)
    ids = torch.zeros((1, 4), dtype=torch.long)
    past = [torch.zeros((1, kv, 3, head_dim)) for _ in past_in]
    mask = torch.ones((1, 7), dtype=torch.long)
    batch, seq, total, length = (torch.export.Dim(n) for n in ("batch_size", "sequence_length",
                                                                 "total_sequence_length", "past_sequence_length"))
    shapes = ({0: batch, 1: seq}, {0: batch, 1: total}, tuple({0: batch, 2: length} for _ in past_in))  # *past
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with quiet_exporter(all_future_warnings=True):
            program = torch.onnx.export(_wrapper(model), (ids, mask, *past), dynamic_shapes=shapes, dynamo=True,
                                        input_names=["input_ids", "attention_mask", *past_in],
                                        output_names=["logits", *present_out], opset_version=18, verbose=False)
            program.save(str(path))
    except Exception as exc:  # the exporter raises many types; all mean the same thing here
        raise ModelError(f"could not export {type(model).__name__} with past key values to ONNX "
                         f"({type(exc).__name__})", "check that the model runs on CPU in FP32 with a KV cache"
                         ) from exc
    return path


def quantize_int8(src: Path, dst: Path) -> Path:
    """Dynamic INT8 (per-channel signed weights) of the MatMuls of an ONNX file."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"])
    return dst


def build_with_past(model_dir: Path | str, out_dir: Path | str, precision: str = "int8") -> PastBundle:
    """An ONNX-with-past bundle of a HF causal-LM dir: ``model.onnx``, ``onnx_past.json``, config, tokenizer, README."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision '{precision}' for the ONNX export with past key values",
                          f"choose one of: {', '.join(PRECISIONS)}")
    model_dir, out = Path(model_dir), Path(out_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32", use_safetensors=True).eval()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="onnx-past-") as scratch:
        fp32 = export_with_past(model, Path(scratch) / ONNX_FILE)
        if precision == "int8":
            quantize_int8(fp32, out / ONNX_FILE)
        else:
            shutil.copy(fp32, out / ONNX_FILE)
    layers, kv, head_dim = kv_layout(model.config)
    arch = type(model).__name__
    (out / "onnx_past.json").write_text(json.dumps({"layers": layers, "kv_heads": kv, "head_dim": head_dim,
                                                    "precision": precision, "architecture": arch}, indent=2))
    model.config.save_pretrained(out)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
    (out / "README.md").write_text(
        f"# {arch}, {precision.upper()} ONNX with past key values (ONNX Runtime)\n\n`model.onnx` takes `input_ids`, "
        "`attention_mask` and `past_key_values.{i}.key/value` (empty, length 0, for the prompt) and returns `logits` "
        "and `present.{i}.key/value`. No left padding: positions follow the cache length.\n\n"
        f"Greedy generation, run from this folder:\n\n```python\n{GENERATE_SNIPPET}```\n")
    return PastBundle(path=out, precision=precision, architecture=arch, size_bytes=(out / ONNX_FILE).stat().st_size,
                      layers=layers, kv_heads=kv, head_dim=head_dim)

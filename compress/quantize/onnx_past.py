"""Causal LM -> ONNX with past key values through ``torch.onnx`` + ONNX Runtime quantization (dynamic INT8, or
4-bit weight-only): the fallback for families onnxruntime-genai's model builder does not cover (GPT-2).

The graph (``model.onnx``) takes ``input_ids`` (B, S), ``attention_mask`` (B, P + S) and, per layer i,
``past_key_values.{i}.key`` / ``.value`` (B, kv_heads, P, head_dim), and returns ``logits`` (B, S, V) and
``present.{i}.key`` / ``.value`` (B, kv_heads, P + S, head_dim): the names optimum and onnxruntime-genai use.
P = 0 (empty past tensors) is the prefill; then one token per step. Positions follow the cache length, so batches
must not be left-padded. Exported by the torch.export-based exporter (opset 18) through a wrapper that rebuilds a
``DynamicCache`` from the flat past tensors.

``-p int8`` applies ``onnxruntime.quantization.quantize_dynamic`` (INT8 weights per output channel, activations
quantized at run time) to the MatMuls; GPT-2's ``Conv1D`` projections are plain MatMuls in the graph, so they are
quantized too (Linear-only quantizers skip them). ``-p int4`` is weight-only: the exporter's ``Gemm`` nodes and the
tied LM head (a ``Transpose`` of the embedding) are first rewritten as MatMuls on constant weights, then
``MatMulNBitsQuantizer`` makes them ``MatMulNBits`` and the embedding tables ``GatherBlockQuantized`` (4 bits,
blocks of 32, symmetric, as onnxruntime-genai's builder): a tiny GPT-2 (n_embd 128, 2 layers) is 0.59 MB against
0.92 MB INT8 and 2.1 MB FP32. The bundle adds ``config.json``, the tokenizer and ``README.md`` with a greedy loop
that needs only onnxruntime, numpy and transformers' tokenizer.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from distill.core.errors import ConfigError, ModelError

PRECISIONS = ("int8", "int4", "fp32")
INT4_BLOCK = 32  # weights per 4-bit block (as the genai builder)
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


def _transposed(init, name: str):
    """A new initializer ``name`` holding the 2-D initializer ``init`` transposed."""
    import numpy as np
    from onnx import numpy_helper

    return numpy_helper.from_array(np.ascontiguousarray(numpy_helper.to_array(init).T), name)


def _as_matmul(node, inits: dict, graph) -> list | None:
    """``Gemm(A, W[, C])`` on a constant W (alpha = beta = 1, A not transposed) as ``MatMul`` (+ ``Add``); else None."""
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.input[1] not in inits or attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 \
            or attrs.get("beta", 1.0) != 1.0:
        return None
    weight = node.input[1]
    if attrs.get("transB", 0):
        weight += "_transposed"
        graph.initializer.append(_transposed(inits[node.input[1]], weight))
    if len(node.input) < 3 or not node.input[2]:
        return [helper.make_node("MatMul", [node.input[0], weight], list(node.output), name=node.name)]
    product = node.output[0] + "_matmul"
    return [helper.make_node("MatMul", [node.input[0], weight], [product], name=node.name + "_matmul"),
            helper.make_node("Add", [product, node.input[2]], list(node.output), name=node.name + "_bias")]


def plain_matmuls(model):
    """Rewrite ``model`` (an ``onnx.ModelProto``, in place) so its weight products are MatMuls on initializers, which
    is what the 4-bit quantizer looks for: 2-D ``Transpose`` of an initializer folded, eligible ``Gemm`` split."""
    from onnx import helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    nodes = []
    for node in graph.node:
        perm = next((list(helper.get_attribute_value(a)) for a in node.attribute if a.name == "perm"), [1, 0])
        if node.op_type == "Transpose" and node.input[0] in inits and perm == [1, 0] \
                and len(inits[node.input[0]].dims) == 2:
            graph.initializer.append(_transposed(inits[node.input[0]], node.output[0]))
            continue
        nodes.extend((_as_matmul(node, inits, graph) if node.op_type == "Gemm" else None) or [node])
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def quantize_int4(src: Path, dst: Path) -> Path:
    """4-bit weight-only (MatMulNBits, GatherBlockQuantized; symmetric, blocks of ``INT4_BLOCK``) of an ONNX file."""
    import logging

    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logger = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    level = logger.level
    logger.setLevel(logging.ERROR)  # it logs every node, and warns that it raises the opset to 21 (int4 types)
    try:
        quantizer = MatMulNBitsQuantizer(plain_matmuls(onnx.load(str(src))), bits=4, block_size=INT4_BLOCK,
                                         is_symmetric=True, op_types_to_quantize=("MatMul", "Gather"))
        quantizer.process()
    finally:
        logger.setLevel(level)
    quantizer.model.save_model_to_file(str(dst), use_external_data_format=False)
    return dst


QUANTIZERS = {"int8": quantize_int8, "int4": quantize_int4, "fp32": shutil.copy}


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
        QUANTIZERS[precision](fp32, out / ONNX_FILE)
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

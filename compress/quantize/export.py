"""FP32 ONNX export of a transformers model, with the graph signature of its task kind.

The task kind (``distill.data.kinds.TaskKind.onnx``) names the graph's candidate inputs, its one output and the
dynamic axes: ``input_ids``, ``attention_mask`` and ``token_type_ids`` (the last only when the model uses segment
ids), int64, dynamic ``batch_size`` × ``sequence_length``; output ``logits``, per example (classification,
regression) or per token (token classification). Without a kind, the kind whose head the model has is used; a
model no kind claims (a bare encoder) exports the first of ``OUTPUT_NAMES`` it returns. These follow optimum's
``ORTModelFor...`` conventions, so the files load without this package.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from distill.core.errors import ModelError
from distill.data.kinds import BATCH_AND_SEQUENCE, OnnxSignature, TaskKind, kind_for_config

OUTPUT_NAMES = ("logits", "last_hidden_state")  # a model no kind claims: the first one it returns is the output
DEFAULT_INPUTS = OnnxSignature().inputs
MIN_OPSET = 17  # LayerNormalization is an ONNX op from 17 on
DEFAULT_OPSET = 18  # the dynamo exporter's native opset: no version conversion pass
_EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf's 2 GB limit, with headroom for the graph itself


def onnx_signature(model: PreTrainedModel, kind: TaskKind | None = None) -> OnnxSignature | None:
    """The graph signature of ``kind``, else of the kind whose head ``model`` has; None when no kind claims it."""
    config = getattr(model, "config", None)
    kind = kind or kind_for_config(config if config is not None else {}, type(model).__name__)
    return kind.onnx if kind is not None else None


def graph_input_names(model: PreTrainedModel, candidates: tuple[str, ...] = DEFAULT_INPUTS) -> list[str]:
    """The inputs optimum's exporter would give this model: those of ``candidates`` its ``forward`` takes,
    token_type_ids only when segment ids mean something."""
    params = inspect.signature(model.forward).parameters
    names = [n for n in candidates if n in params and n != "token_type_ids"]
    if "token_type_ids" in candidates and "token_type_ids" in params \
            and getattr(model.config, "type_vocab_size", 2) > 1:
        names.append("token_type_ids")
    if "input_ids" not in names:
        raise ModelError(f"{type(model).__name__} takes no input_ids",
                         "pass a text model (BERT, RoBERTa, DistilBERT, ...)")
    return names


def export_input_names(model: PreTrainedModel, kind: TaskKind | None = None) -> list[str]:
    """The graph inputs ``export_onnx`` gives ``model`` (with ``kind``'s signature): what calibration feeds and the
    bundle's settings name."""
    signature = onnx_signature(model, kind)
    return graph_input_names(model, signature.inputs if signature else DEFAULT_INPUTS)


class _SingleOutput(torch.nn.Module):
    """Calls the model with keyword inputs and returns one named output tensor, so the graph has one output."""

    def __init__(self, model: PreTrainedModel, output: str) -> None:
        super().__init__()
        self.model = model
        self.output = output

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        kwargs = {"attention_mask": attention_mask, "token_type_ids": token_type_ids}
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        return getattr(self.model(input_ids=input_ids, **kwargs, return_dict=True), self.output)


@contextlib.contextmanager
def _export_ready(model: PreTrainedModel) -> Iterator[PreTrainedModel]:
    """Yield the model in eval mode, FP32 on CPU, with eager attention; restore what was changed on exit."""
    on_cpu_fp32 = all(p.device.type == "cpu" and p.dtype == torch.float32 for p in model.parameters())
    target = model if on_cpu_fp32 else copy.deepcopy(model).to("cpu", torch.float32)
    was_training = target.training
    attn = getattr(target.config, "_attn_implementation", None)
    target.eval()
    # eager attention exports to plain MatMul/Softmax: ~20% faster under ORT than the decomposed SDPA graph
    with contextlib.suppress(Exception):
        target.set_attn_implementation("eager")
    try:
        yield target
    finally:
        target.train(was_training)
        if attn is not None and attn != "eager":
            with contextlib.suppress(Exception):
                target.set_attn_implementation(attn)


def _example_inputs(model: PreTrainedModel, names: list[str], seq: int) -> dict[str, torch.Tensor]:
    """A batch of 2 (so the batch axis is not specialised to 1) for tracing."""
    gen = torch.Generator().manual_seed(0)
    vocab = int(getattr(model.config, "vocab_size", 100))
    ids = torch.randint(0, vocab, (2, seq), generator=gen)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    return {n: inputs[n] for n in names}


def _output_name(model: PreTrainedModel, inputs: dict[str, torch.Tensor], wanted: str | None = None) -> str:
    """``wanted`` (the kind's output) when the model returns it; without one, ``logits`` for a task head and
    ``last_hidden_state`` for a bare encoder."""
    try:
        with torch.inference_mode():
            out = model(**inputs, return_dict=True)
    except Exception as exc:
        raise ModelError(f"{type(model).__name__} fails on an example batch ({type(exc).__name__}: {exc})",
                         "check that the model runs on CPU in FP32 with input_ids/attention_mask") from exc
    for name in (wanted,) if wanted else OUTPUT_NAMES:
        if getattr(out, name, None) is not None:
            return name
    missing = f"no {wanted}" if wanted else f"neither {' nor '.join(OUTPUT_NAMES)}"
    raise ModelError(f"{type(model).__name__} returns {missing}",
                     "export a *ForSequenceClassification, *ForTokenClassification or bare encoder model")


QUIET_LOGGERS = ("torch.onnx", "onnxscript")  # the exporter and its graph optimiser (constant-folding notes)


@contextlib.contextmanager
def quiet_exporter(*, all_future_warnings: bool = False) -> Iterator[None]:
    """Silence the ONNX exporter's routine chatter (axis-renaming notes, optional torchvision ops, the optimiser's
    skipped constant folds); real errors still raise. ``all_future_warnings`` also drops every FutureWarning (the
    KV-cache export of ``onnx_past`` trips several in transformers' cache code), else only the pytree LeafSpec one.
    The one copy for ``export_onnx`` and ``onnx_past.export_with_past``."""
    logs = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [log.level for log in logs]
    for log in logs:
        log.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"# The axis name")
        warnings.filterwarnings("ignore", message="" if all_future_warnings else r".*LeafSpec",
                                category=FutureWarning)
        try:
            yield
        finally:
            for log, level in zip(logs, levels, strict=True):
                log.setLevel(level)


KEPT_NODE_METADATA = ("pkg.torch.onnx.name_scopes",)  # module path per node: the INT8 tolerance search reads it


def drop_trace_metadata(program: Any) -> None:
    """Drop what the torch.export-based exporter records on every node of ``program`` (an ``ONNXProgram``) but
    its module scopes: the Python stack trace, FX node text, class hierarchy and namespace. No runtime reads them,
    yet the traces are the exporting machine's absolute source paths inside a file meant to ship, and together
    they are a third to a half of a small model's file (a pruned 1-layer DeBERTa-v3 at hidden 64: FP32 ONNX 0.63
    MB with them, 0.32 MB without; its INT8 file was larger than the FP32 safetensors). The module scopes
    (``pkg.torch.onnx.name_scopes``) stay: the accuracy-aware INT8 search groups nodes by layer with them."""
    model = getattr(program, "model", None)
    if model is None:
        return
    for graph in (model.graph, *getattr(model, "functions", {}).values()):
        for node in graph.all_nodes():
            for key in [k for k in node.metadata_props if k not in KEPT_NODE_METADATA]:
                del node.metadata_props[key]


def export_onnx(model: PreTrainedModel, path: Path, *, max_seq_length: int = 128, opset: int = DEFAULT_OPSET,
                kind: TaskKind | None = None) -> Path:
    """Export ``model`` to one FP32 ONNX file with the task kind's signature (``kind``, else the kind whose head
    the model has): its inputs, its one output and dynamic batch and sequence axes (torch.export-based exporter)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _export_ready(model) as ready:
        signature = onnx_signature(ready, kind)
        names = export_input_names(ready, kind)
        max_pos = int(getattr(ready.config, "max_position_embeddings", max_seq_length) or max_seq_length)
        # RoBERTa-style positions start at padding_idx + 1: stay 2 below the table size
        inputs = _example_inputs(ready, names, seq=max(2, min(max_seq_length, max_pos - 2)))
        output = _output_name(ready, inputs, signature.output if signature else None)
        axes = signature.input_axes if signature else BATCH_AND_SEQUENCE
        dims = {name: torch.export.Dim(name) for name in dict.fromkeys(axes.values())}
        external = sum(p.numel() * p.element_size() for p in ready.parameters()) > _EXTERNAL_DATA_BYTES
        try:
            with quiet_exporter():
                program = torch.onnx.export(
                    _SingleOutput(ready, output).eval(), (), kwargs=inputs, output_names=[output],
                    dynamic_shapes={n: {axis: dims[d] for axis, d in axes.items()} for n in names},
                    opset_version=opset, dynamo=True, external_data=external, verbose=False)
                drop_trace_metadata(program)
                program.save(str(path), external_data=external)
        except Exception as exc:  # the exporter raises many types; all mean the same thing to the user
            raise ModelError(f"could not export {type(ready).__name__} to ONNX ({type(exc).__name__}: {exc})",
                             "check that the model runs on CPU in FP32 with input_ids/attention_mask") from exc
    return path

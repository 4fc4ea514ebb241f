"""Post-training INT8 quantization: a transformers model in, an ONNX Runtime bundle that optimum can load out.

The bundle (``out_dir``) follows optimum's ``ORTModelForSequenceClassification`` conventions: ``model.onnx``
(weights inside, no ``model.onnx_data`` below 2 GB), ``config.json``, tokenizer files; graph inputs
``input_ids``, ``attention_mask`` and ``token_type_ids`` (the last only when the model uses segment ids), int64,
with dynamic ``batch_size`` × ``sequence_length`` axes; output ``logits`` (or ``last_hidden_state`` for a bare
encoder). onnx and onnxruntime are imported inside functions only, so ``import compress`` stays light.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import logging
import platform
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel

from distill.core.artifacts import dir_size_mb, staged_dir, write_json
from distill.core.errors import ConfigError, ModelError
from distill.core.registry import Registry

ONNX_FILE = "model.onnx"
CONFIG_FILE = "quantize_config.json"
OUTPUT_NAMES = ("logits", "last_hidden_state")  # first one the model returns becomes the single graph output
MIN_OPSET = 17  # LayerNormalization is an ONNX op from 17 on
DEFAULT_OPSET = 18  # the dynamo exporter's native opset: no version conversion pass
_EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf's 2 GB limit, with headroom for the graph itself
_QDQ_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}

Quantizer = Callable[[Path, Path, "QuantizeConfig"], None]
QUANTIZERS: Registry[Quantizer] = Registry("quantization mode")


@dataclass
class QuantizeConfig:
    """How to quantize: ``mode`` names a QUANTIZERS entry; ``per_channel`` scales each output channel separately."""

    mode: str = "dynamic"
    per_channel: bool = True
    opset: int = DEFAULT_OPSET

    def __post_init__(self) -> None:
        QUANTIZERS.get(self.mode)  # unknown mode -> UnknownNameError listing the registered ones
        self.mode = self.mode.lower()
        if not isinstance(self.opset, int) or self.opset < MIN_OPSET:
            raise ConfigError(f"ONNX opset {self.opset!r} is too old", f"use an opset >= {MIN_OPSET}")


@dataclass
class QuantizeReport:
    """What quantization did: sizes of the FP32 and INT8 ONNX files and how many nodes now run on INT8 weights."""

    onnx_fp32_mb: float
    onnx_int8_mb: float
    quantized_nodes: int
    mode: str
    per_channel: bool

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------------------------- export


def graph_input_names(model: PreTrainedModel) -> list[str]:
    """The inputs optimum's exporter would give this model: token_type_ids only when segment ids mean something."""
    params = inspect.signature(model.forward).parameters
    names = [n for n in ("input_ids", "attention_mask") if n in params]
    if "token_type_ids" in params and getattr(model.config, "type_vocab_size", 2) > 1:
        names.append("token_type_ids")
    if "input_ids" not in names:
        raise ModelError(f"{type(model).__name__} takes no input_ids",
                         "pass a text model (BERT, RoBERTa, DistilBERT, ...)")
    return names


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


def _output_name(model: PreTrainedModel, inputs: dict[str, torch.Tensor]) -> str:
    """``logits`` for a task head, ``last_hidden_state`` for a bare encoder."""
    try:
        with torch.inference_mode():
            out = model(**inputs, return_dict=True)
    except Exception as exc:
        raise ModelError(f"{type(model).__name__} fails on an example batch ({type(exc).__name__}: {exc})",
                         "check that the model runs on CPU in FP32 with input_ids/attention_mask") from exc
    for name in OUTPUT_NAMES:
        if getattr(out, name, None) is not None:
            return name
    raise ModelError(f"{type(model).__name__} returns neither {' nor '.join(OUTPUT_NAMES)}",
                     "export a *ForSequenceClassification, *ForTokenClassification or bare encoder model")


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's routine chatter (axis-renaming notes, optional torchvision ops); keep real errors."""
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"# The axis name")
        warnings.filterwarnings("ignore", message=r".*LeafSpec", category=FutureWarning)
        try:
            yield
        finally:
            log.setLevel(level)


def export_onnx(model: PreTrainedModel, path: Path, *, max_seq_length: int = 128, opset: int = DEFAULT_OPSET) -> Path:
    """Export ``model`` to one FP32 ONNX file with dynamic batch and sequence axes (torch.export-based exporter)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _export_ready(model) as ready:
        names = graph_input_names(ready)
        max_pos = int(getattr(ready.config, "max_position_embeddings", max_seq_length) or max_seq_length)
        # RoBERTa-style positions start at padding_idx + 1: stay 2 below the table size
        inputs = _example_inputs(ready, names, seq=max(2, min(max_seq_length, max_pos - 2)))
        output = _output_name(ready, inputs)
        batch, seq = torch.export.Dim("batch_size"), torch.export.Dim("sequence_length")
        external = sum(p.numel() * p.element_size() for p in ready.parameters()) > _EXTERNAL_DATA_BYTES
        try:
            with _quiet_exporter():
                program = torch.onnx.export(
                    _SingleOutput(ready, output).eval(), (), kwargs=inputs, output_names=[output],
                    dynamic_shapes={n: {0: batch, 1: seq} for n in names}, opset_version=opset,
                    dynamo=True, external_data=external, verbose=False)
                program.save(str(path), external_data=external)
        except Exception as exc:  # the exporter raises many types; all mean the same thing to the user
            raise ModelError(f"could not export {type(ready).__name__} to ONNX ({type(exc).__name__}: {exc})",
                             "check that the model runs on CPU in FP32 with input_ids/attention_mask") from exc
    return path


# ------------------------------------------------------------------------------------------- quantize


@QUANTIZERS.register("dynamic")
def quantize_dynamic_int8(src: Path, dst: Path, config: QuantizeConfig) -> None:
    """Dynamic INT8: weights QInt8 ahead of time, activations quantized per batch at run time; no calibration."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # default op set (MatMul, Gemm, Gather, Attention, ...): quantizing the embedding Gathers cuts 60% more
    # bytes than MatMul/Gemm alone at equal accuracy; only MatMuls with a constant weight are quantized.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # "consider pre-processing": measured, quant_pre_process gains nothing here
    try:
        quantize_dynamic(src, dst, per_channel=config.per_channel, weight_type=QuantType.QInt8,
                         use_external_data_format=(src.with_name(src.name + "_data")).exists())
    finally:
        root.setLevel(level)


def count_quantized_nodes(path: Path) -> int:
    """Nodes computing on 8-bit weights (MatMulInteger, Gather of an INT8 table, ...), (de)quantize ops excluded."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    eight_bit = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}
    quantized = {t.name for t in graph.initializer if t.data_type in eight_bit}
    return sum(1 for n in graph.node if n.op_type not in _QDQ_OPS and quantized.intersection(n.input))


def _versions() -> dict[str, str]:
    """Library versions that shaped the graph, for the bundle's provenance record."""
    import onnx
    import onnxruntime
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def quantize_model(model: PreTrainedModel, out_dir: Path, config: QuantizeConfig | None = None, *,
                   tokenizer=None, max_seq_length: int = 128) -> QuantizeReport:
    """Export ``model`` to ONNX, quantize it to INT8 and write an optimum-loadable bundle to ``out_dir`` atomically."""
    config = config or QuantizeConfig()
    quantizer = QUANTIZERS.get(config.mode)
    with tempfile.TemporaryDirectory(prefix="distill-onnx-") as scratch, staged_dir(out_dir) as stage:
        fp32 = export_onnx(model, Path(scratch) / ONNX_FILE, max_seq_length=max_seq_length, opset=config.opset)
        int8 = stage / ONNX_FILE
        quantizer(fp32, int8, config)
        report = QuantizeReport(onnx_fp32_mb=round(dir_size_mb(fp32.parent), 3),
                                onnx_int8_mb=round(dir_size_mb(int8), 3),
                                quantized_nodes=count_quantized_nodes(int8), mode=config.mode,
                                per_channel=config.per_channel)
        model.config.save_pretrained(stage)
        if tokenizer is not None:
            tokenizer.save_pretrained(stage)
        write_json(stage / CONFIG_FILE, {**asdict(config), "weight_type": "QInt8", "activation_type": "QUInt8",
                                         "inputs": graph_input_names(model), "file_name": ONNX_FILE,
                                         "report": report.to_dict(), "versions": _versions()})
    return report

"""Measurements shared by every stage: parameter counts, CPU latency (torch and ONNX Runtime), ONNX prediction.

Layer 1: imports only ``distill.core`` from this repository; onnx / onnxruntime are imported inside functions.
"""

from __future__ import annotations

import inspect
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch

from distill.core.errors import ModelError

_NOT_A_MODEL_FIX = "pass the model.onnx written by `distill quantize`"


def count_params(model: torch.nn.Module) -> int:
    """Number of parameters (shared tensors counted once), the size figure reported for torch stages."""
    return sum(p.numel() for p in model.parameters())


def onnx_param_count(path: Path) -> int:
    """Sum of initializer element counts of an ONNX graph; an INT8 weight counts as one element like an FP32 one."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"ONNX file '{path}' does not exist", _NOT_A_MODEL_FIX)
    try:
        graph = onnx.load(str(path), load_external_data=False).graph  # shapes are enough: skip the weight bytes
    except Exception as exc:
        raise ModelError(f"'{path}' is not a valid ONNX model", _NOT_A_MODEL_FIX) from exc
    return int(sum(np.prod(t.dims, dtype=np.int64) for t in graph.initializer))


def example_inputs(vocab_size: int, batch: int, seq: int, *, type_vocab_size: int = 2,
                   seed: int = 0) -> dict[str, torch.Tensor]:
    """Random token ids with a full attention mask and zero segment ids (``type_vocab_size=0``: no segment ids)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (batch, seq), generator=gen, dtype=torch.long)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if type_vocab_size > 0:
        inputs["token_type_ids"] = torch.zeros_like(ids)
    return inputs


def _median_ms(fn: Callable[[], object], warmup: int, runs: int, sync: Callable[[], None] = lambda: None) -> float:
    """Median wall time of ``fn`` in milliseconds after ``warmup`` untimed calls."""
    if runs < 1:
        raise ValueError("runs must be >= 1")
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def torch_latency_ms(model: torch.nn.Module, *, batch: int = 1, seq: int = 128, threads: int = 2,
                     warmup: int = 5, runs: int = 30) -> float:
    """Median forward latency in ms on the model's device; torch's thread count and train mode are restored after."""
    config = getattr(model, "config", None)
    inputs = example_inputs(int(getattr(config, "vocab_size", 1000)), batch, seq,
                            type_vocab_size=int(getattr(config, "type_vocab_size", 2)))
    accepted = inspect.signature(model.forward).parameters
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    inputs = {k: v.to(device) for k, v in inputs.items() if k in accepted}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    previous, was_training = torch.get_num_threads(), model.training
    torch.set_num_threads(threads)
    model.eval()
    try:
        with torch.inference_mode():
            return _median_ms(lambda: model(**inputs), warmup, runs, sync)
    finally:
        torch.set_num_threads(previous)
        model.train(was_training)


def _session(path: Path, threads: int | None):
    """A CPU InferenceSession with fixed intra-op threads and one inter-op thread, for repeatable timings."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"ONNX file '{path}' does not exist", _NOT_A_MODEL_FIX)
    options = ort.SessionOptions()
    options.inter_op_num_threads = 1
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # InvalidProtobuf, Fail, ...: onnxruntime's own exception types
        raise ModelError(f"'{path.name}' is not a valid ONNX model ({type(exc).__name__})", _NOT_A_MODEL_FIX) from exc


def onnx_latency_ms(path: Path, *, batch: int = 1, seq: int = 128, threads: int = 2, warmup: int = 5,
                    runs: int = 30, vocab_size: int = 1000) -> float:
    """Median ONNX Runtime latency in ms, feeding only the inputs the graph declares."""
    session = _session(path, threads)
    inputs = example_inputs(vocab_size, batch, seq)
    names = [i.name for i in session.get_inputs()]
    unknown = [n for n in names if n not in inputs]
    if unknown:
        raise ModelError(f"'{Path(path).name}' takes inputs {unknown} that latency measurement cannot make",
                         "export a text model whose inputs are input_ids, attention_mask and token_type_ids")
    feeds = {n: inputs[n].numpy() for n in names}
    return _median_ms(lambda: session.run(None, feeds), warmup, runs)


class OnnxClassifier:
    """An ONNX Runtime session that predicts from a batch dict like a torch model, for the scorer."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        self.path = Path(path)
        self.session = _session(self.path, threads)
        self.input_names: list[str] = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        self.output_name = "logits" if "logits" in outputs else outputs[0]

    def __call__(self, batch: Mapping[str, torch.Tensor | np.ndarray]) -> np.ndarray:
        """Float32 logits; keys the graph does not take (labels, ...) are dropped, ids are cast to int64."""
        feeds = {k: _as_int64(v) for k, v in batch.items() if k in self.input_names}
        if "token_type_ids" in self.input_names and "token_type_ids" not in feeds and "input_ids" in feeds:
            feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])  # what optimum's ORT models do too
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise ModelError(f"the batch lacks inputs {missing} that '{self.path.name}' needs",
                             "tokenize with the tokenizer saved next to the model")
        (logits,) = self.session.run([self.output_name], feeds)
        return np.asarray(logits, dtype=np.float32)


def _as_int64(value: torch.Tensor | np.ndarray) -> np.ndarray:
    """A CPU int64 numpy array, the dtype every exported text input has."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.ascontiguousarray(value, dtype=np.int64)


def onnx_text_dims(path: Path) -> dict[str, int | None]:
    """Vocabulary, hidden width and position-table size of an exported text model, so latency inputs fit it."""
    # read from the embedding tables; None where a table is not found
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    shapes = {t.name: list(t.dims) for t in graph.initializer}
    # a quantized table reaches its Gather through DequantizeLinear: follow it back to the initializer
    source = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    dims: dict[str, int | None] = {"vocab_size": None, "hidden_size": None, "max_positions": None}
    for node in graph.node:
        if node.op_type != "Gather" or not node.input:
            continue
        table = shapes.get(source.get(node.input[0], node.input[0]))
        if table is None or len(table) != 2:
            continue
        if "input_ids" in node.input[1:]:
            dims["vocab_size"], dims["hidden_size"] = int(table[0]), int(table[1])
        elif "position" in node.input[0]:
            dims["max_positions"] = int(table[0])
    return dims

"""Quantization-aware training: fake-quantized Linear layers in PyTorch, exported as a QDQ ONNX graph.

``prepare_qat`` swaps each ``nn.Linear`` (the small classification head excepted) for a ``FakeQuantLinear``
that rounds its input to u8 (per-tensor, range tracked as a moving average while training) and its weight to s8
(per output channel, symmetric) on the forward pass, with straight-through gradients. Training is the caller's
job (the pipeline distils the prepared model). ``export_qat_onnx`` writes the trained model as ONNX Runtime's
static QDQ format: ``DequantizeLinear(int8 weight) -> MatMul`` with ``QuantizeLinear/DequantizeLinear`` on inputs.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import PreTrainedModel

from compress.quantize.int8 import DEFAULT_OPSET, export_onnx
from compress.quantize.targets import TARGETS, detect_target
from distill.core.errors import ModelError

SKIP = ("classifier", "pre_classifier", "pooler", "score", "qa_outputs")  # small heads: kept FP32, as in PTQ


class FakeQuantLinear(torch.nn.Module):
    """A Linear computing on fake-quantized u8 inputs and s8 per-channel weights; same parameters as the original."""

    def __init__(self, linear: torch.nn.Linear, *, reduce_range: bool = False, momentum: float = 0.01) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias  # the same Parameters: optimizers and state stay valid
        self.momentum = momentum
        self.w_qmax = 63 if reduce_range else 127  # 7-bit weights where the target needs reduce_range
        device = linear.weight.device
        self.register_buffer("act_min", torch.zeros((), device=device))
        self.register_buffer("act_max", torch.zeros((), device=device))
        self.register_buffer("observed", torch.zeros((), dtype=torch.bool, device=device))
        # eval: the weight as ONNX Runtime stores it, int8 [in, out] with one scale per output channel
        self.register_buffer("w_scale", torch.ones(self.out_features, device=device))
        self.register_buffer("w_int8", torch.zeros(self.in_features, self.out_features, dtype=torch.int8,
                                                   device=device))
        self._frozen: tuple[float, int] | None = None  # eval: input scale/zero point (None: never observed, FP32)

    def _observe(self, x: torch.Tensor) -> None:
        """Track the input range as a moving average of batch min/max (the first batch sets it)."""
        lo, hi = x.detach().min().float(), x.detach().max().float()
        if not bool(self.observed):
            self.act_min.copy_(lo)
            self.act_max.copy_(hi)
            self.observed.fill_(True)
        else:
            self.act_min.lerp_(lo, self.momentum)
            self.act_max.lerp_(hi, self.momentum)

    def _act_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """u8 scale and zero point of the tracked input range, widened to include 0 as ONNX Runtime does."""
        lo, hi = torch.clamp(self.act_min, max=0.0), torch.clamp(self.act_max, min=0.0)
        scale = torch.clamp((hi - lo) / 255.0, min=1e-8)
        zero_point = torch.clamp(torch.round(-lo / scale), 0, 255).to(torch.int32)
        return scale, zero_point

    def _weight_scale(self) -> torch.Tensor:
        """Symmetric per-output-channel scale of the current weight."""
        return torch.clamp(self.weight.detach().abs().amax(dim=1) / self.w_qmax, min=1e-8)

    def train(self, mode: bool = True) -> FakeQuantLinear:
        """Switching to eval freezes the quantization (int8 weight, input scale) as constants for export."""
        super().train(mode)
        if not mode:
            with torch.no_grad():
                self.w_scale.copy_(self._weight_scale())
                q = torch.round(self.weight.detach() / self.w_scale[:, None]).clamp(-self.w_qmax, self.w_qmax)
                self.w_int8.copy_(q.t().to(torch.int8))
                scale, zero_point = self._act_qparams()
            self._frozen = (float(scale), int(zero_point)) if bool(self.observed) else None
        return self

    def _train_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fake quantization with straight-through gradients; the input range keeps being tracked."""
        self._observe(x)
        scale, zero_point = self._act_qparams()
        x = torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, 255)
        zeros = torch.zeros(self.out_features, dtype=torch.int32, device=self.weight.device)
        weight = torch.fake_quantize_per_channel_affine(self.weight, self._weight_scale(), zeros, 0,
                                                        -self.w_qmax, self.w_qmax)
        return torch.nn.functional.linear(x, weight, self.bias)

    def _eval_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The same arithmetic as (de)quantize ops, which export as QuantizeLinear / DequantizeLinear."""
        ops = _decomposed()
        if self._frozen is not None:
            q = ops.quantize_per_tensor(x, *self._frozen, 0, 255, torch.uint8)
            x = ops.dequantize_per_tensor(q, *self._frozen, 0, 255, torch.uint8)
        zeros = torch.zeros(self.out_features, dtype=torch.int64, device=x.device)
        weight = ops.dequantize_per_channel(self.w_int8, self.w_scale, zeros, 1, -self.w_qmax, self.w_qmax,
                                            torch.int8)
        out = torch.matmul(x, weight)  # int8 weight -> DequantizeLinear -> MatMul: the layout ORT fuses
        return out + self.bias if self.bias is not None else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._train_forward(x) if self.training else self._eval_forward(x)

    def to_linear(self) -> torch.nn.Linear:
        """A plain Linear with this layer's (FP32) parameters, e.g. to save the model for transformers."""
        linear = torch.nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        linear.weight, linear.bias = self.weight, self.bias
        return linear


def _decomposed():
    """PyTorch's (de)quantize ops that torch.export keeps and the ONNX exporter maps to Q/DQ nodes."""
    import torch.ao.quantization.fx._decomposed  # noqa: F401  (registers torch.ops.quantized_decomposed)

    return torch.ops.quantized_decomposed


def _replace(model: torch.nn.Module, name: str, module: torch.nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def prepare_qat(model: PreTrainedModel, *, target: str | None = None, skip: tuple[str, ...] = SKIP,
                momentum: float = 0.01) -> PreTrainedModel:
    """Swap Linear layers for FakeQuantLinear in place (heads named in ``skip`` excepted); returns the model."""
    reduce_range = TARGETS.get(target or detect_target()).reduce_range
    names = [n for n, m in model.named_modules() if type(m) is torch.nn.Linear and not set(n.split(".")) & set(skip)]
    if not names:
        raise ModelError(f"{type(model).__name__} has no Linear layers to quantize",
                         "pass a transformer built from torch.nn.Linear layers (BERT, RoBERTa, DistilBERT, ...)")
    for name in names:
        _replace(model, name, FakeQuantLinear(model.get_submodule(name), reduce_range=reduce_range,
                                              momentum=momentum))
    return model


def strip_qat(model: PreTrainedModel) -> PreTrainedModel:
    """Put plain Linear layers back (weights as trained), so ``save_pretrained`` writes a standard checkpoint."""
    for name, module in list(model.named_modules()):
        if isinstance(module, FakeQuantLinear):
            _replace(model, name, module.to_linear())
    return model


def export_qat_onnx(model: PreTrainedModel, path: Path, *, max_seq_length: int = 128,
                    opset: int = DEFAULT_OPSET) -> Path:
    """Export a ``prepare_qat`` model (after training) to a QDQ ONNX file with INT8 weights, optimum's I/O names."""
    if not any(isinstance(m, FakeQuantLinear) for m in model.modules()):
        raise ModelError(f"{type(model).__name__} has no fake-quantized layers",
                         "call compress.prepare_qat(model) and train it before exporting")
    return export_onnx(model, Path(path), max_seq_length=max_seq_length, opset=opset)  # eval mode: Q/DQ ops

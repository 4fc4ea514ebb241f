"""Accuracy-aware INT8: quantize, and if the task metric drops more than allowed, keep the most sensitive
transformer layers in FP32 until it does not.

Sensitivity of a layer = the metric with that layer's quantizable nodes left in FP32 and everything else INT8 (one
quantization and one evaluation per layer, calibration computed once and cached). Layers are then returned to FP32
in order of sensitivity until the drop is within tolerance: at most 2·layers + 2 evaluations in all.
"""

from __future__ import annotations

import ast
import math
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from transformers import PreTrainedModel

from compress.quantize.int8 import (
    ONNX_FILE,
    QUANTIZERS,
    STATIC_OP_TYPES,
    QuantizeConfig,
    QuantizeReport,
    calibration_for,
    export_onnx,
    finish_bundle,
    static_excluded_nodes,
)
from distill.core.artifacts import staged_dir
from distill.core.errors import ConfigError

Evaluate = Callable[[Path], float]  # path of an ONNX file -> task metric on the dev set, higher is better
_SCOPES_KEY = "pkg.torch.onnx.name_scopes"  # module path of each node, written by the dynamo exporter
_LAYER = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)(?:\.|$)")
_EPS = 1e-9  # metric differences below this are float noise


@dataclass
class ToleranceReport:
    """What the search measured and kept: metrics, the layers left in FP32 and each layer's sensitivity."""

    fp32_metric: float
    int8_metric: float  # every quantizable node INT8
    final_metric: float  # the bundle written
    max_drop: float
    fp32_layers: list[str]
    fp32_nodes: list[str]
    sensitivity: dict[str, float] = field(default_factory=dict)  # metric with only this layer in FP32
    evaluations: int = 0
    quantize: QuantizeReport | None = None

    @property
    def drop(self) -> float:
        return self.fp32_metric - self.final_metric

    @property
    def within_tolerance(self) -> bool:
        return self.drop <= self.max_drop + _EPS

    def to_dict(self) -> dict:
        return {**asdict(self), "drop": self.drop, "within_tolerance": self.within_tolerance}


def quantizable_nodes(path: Path, mode: str) -> list[str]:
    """Graph nodes the quantizer of ``mode`` would turn to INT8: MatMul, Gemm, embedding Gather on a constant."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    constant = {t.name for t in graph.initializer}
    skip = set(static_excluded_nodes(path)) if mode == "static" else set()
    ops = set(STATIC_OP_TYPES) if mode == "static" else {"MatMul", "Gather", "Gemm"}  # dynamic: Gemm as MatMul
    weight_at = {"Gather": slice(0, 1), "Gemm": slice(1, 2)}
    names = []
    for node in graph.node:
        weight = node.input[weight_at.get(node.op_type, slice(None))]
        if node.op_type in ops and node.name not in skip and constant.intersection(weight):
            names.append(node.name)
    return names


def layer_of(node) -> str:
    """The group a node belongs to: ``layer.N`` inside a transformer block, else its top module (embeddings, ...)."""
    scopes = next((p.value for p in node.metadata_props if p.key == _SCOPES_KEY), "")
    try:
        paths = [s for s in ast.literal_eval(scopes) if s] if scopes else []
    except (ValueError, SyntaxError):
        paths = []
    modules = [p.removeprefix("model.") for p in paths[:-1] if p != "model"]  # last scope is the op itself
    for path in modules:
        match = _LAYER.search(path)
        if match:
            return f"layer.{match.group(1)}"
    if modules:
        parts = modules[-1].split(".")
        return parts[1] if len(parts) > 1 else parts[0]  # drop the base model prefix (bert., roberta., ...)
    return node.name


def node_groups(path: Path, names: Iterable[str]) -> dict[str, list[str]]:
    """``names`` grouped by layer (see ``layer_of``), in graph order."""
    import onnx

    wanted = set(names)
    groups: dict[str, list[str]] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        if node.name in wanted:
            groups.setdefault(layer_of(node), []).append(node.name)
    return groups


class _Trials:
    """Quantizes the FP32 graph with some layers kept FP32 and evaluates each result; counts evaluations."""

    def __init__(self, fp32: Path, scratch: Path, config: QuantizeConfig, calibration: dict,
                 evaluate: Evaluate) -> None:
        self.fp32, self.scratch, self.config = fp32, scratch, config
        self.calibration, self.evaluate = calibration, evaluate
        self.quantizer = QUANTIZERS.get(config.mode)
        self.count = 0
        self.last: Path | None = None

    def metric(self, path: Path) -> float:
        self.count += 1
        value = float(self.evaluate(path))
        if not math.isfinite(value):
            raise ConfigError(f"the evaluate function returned {value}", "return a finite task metric, higher = better")
        return value

    def __call__(self, fp32_nodes: list[str]) -> float:
        """The metric of the INT8 graph with ``fp32_nodes`` left out of quantization."""
        out = self.scratch / f"trial-{self.count}" / ONNX_FILE
        out.parent.mkdir()
        config = replace(self.config, nodes_to_exclude=[*self.config.nodes_to_exclude, *fp32_nodes])
        self.quantizer(self.fp32, out, config, **self.calibration)
        self.last = out
        return self.metric(out)


def _search(trials: _Trials, groups: dict[str, list[str]], fp32_metric: float,
            max_drop: float) -> tuple[list[str], float, dict[str, float]]:
    """Per-layer sensitivity, then the fewest most-sensitive layers in FP32 that meet the tolerance."""
    sensitivity = {name: trials(nodes) for name, nodes in groups.items()}
    order = sorted(groups, key=lambda name: sensitivity[name], reverse=True)
    for k in range(1, len(order) + 1):
        kept = order[:k]
        metric = trials([n for name in kept for n in groups[name]])
        if fp32_metric - metric <= max_drop + _EPS:
            break
    return kept, metric, sensitivity


def quantize_with_tolerance(model: PreTrainedModel, out_dir: Path, config: QuantizeConfig | None = None, *,
                            evaluate: Evaluate, max_drop: float, tokenizer=None, max_seq_length: int = 128,
                            calibration_batches: Iterable[Mapping[str, object]] | None = None) -> ToleranceReport:
    """Quantize like ``quantize_model``, keeping the most sensitive layers FP32 until the metric drop <= max_drop."""
    if isinstance(max_drop, bool) or not isinstance(max_drop, (int, float)) or not max_drop >= 0:
        raise ConfigError(f"max_drop {max_drop!r} is not a number >= 0", "give the largest metric drop, e.g. 0.01")
    config = config or QuantizeConfig()
    with tempfile.TemporaryDirectory(prefix="distill-tol-") as tmp, staged_dir(out_dir) as stage:
        scratch = Path(tmp)
        fp32 = export_onnx(model, scratch / "fp32" / ONNX_FILE, max_seq_length=max_seq_length, opset=config.opset)
        calibration = calibration_for(model, config, calibration_batches, cache=scratch / "calibration.json")
        trials = _Trials(fp32, scratch, config, calibration, evaluate)
        fp32_metric = trials.metric(fp32)
        int8_metric = final = trials([])
        kept, sensitivity = [], {}
        groups = node_groups(fp32, [n for n in quantizable_nodes(fp32, config.mode)
                                    if n not in config.nodes_to_exclude])
        if fp32_metric - int8_metric > max_drop + _EPS and groups:
            kept, final, sensitivity = _search(trials, groups, fp32_metric, max_drop)
        fp32_nodes = [n for name in kept for n in groups[name]]
        shutil.copyfile(trials.last, stage / ONNX_FILE)
        final_config = replace(config, nodes_to_exclude=[*config.nodes_to_exclude, *fp32_nodes])
        result = ToleranceReport(fp32_metric=fp32_metric, int8_metric=int8_metric, final_metric=final,
                                 max_drop=float(max_drop), fp32_layers=kept, fp32_nodes=fp32_nodes,
                                 sensitivity=sensitivity, evaluations=trials.count)
        tolerance = {k: v for k, v in result.to_dict().items() if k not in ("quantize", "fp32_nodes")}
        result.quantize = finish_bundle(model, stage, fp32, final_config, tokenizer=tokenizer,
                                        extra={"tolerance": tolerance})
    return result

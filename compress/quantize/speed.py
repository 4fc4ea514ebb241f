"""Speed honesty: time the FP32 and INT8 graphs side by side and, when INT8 is not faster, say the likely why."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from compress.measure import onnx_latency_ms, onnx_text_dims
from compress.quantize.targets import cpu_flags, detect_target, has_fast_int8

SMALL_HIDDEN = 256  # below this width the (de)quantize work outweighs the cheaper 8-bit products


def _gpu_providers() -> list[str]:
    """onnxruntime execution providers other than the CPU one (CUDA, TensorRT, ROCm, ...)."""
    import onnxruntime as ort

    return [p for p in ort.get_available_providers() if p not in ("CPUExecutionProvider", "AzureExecutionProvider")]


def slow_int8_causes(hidden: int | None, flags: set[str] | None = None, machine: str | None = None,
                     gpu_providers: list[str] | None = None) -> list[str]:
    """Known reasons for INT8 not beating FP32 on this machine and model, most likely first."""
    causes = []
    if hidden is not None and hidden < SMALL_HIDDEN:
        causes.append(f"tiny matrices (hidden size {hidden} < {SMALL_HIDDEN}): quantize/dequantize overhead "
                      "outweighs the cheaper 8-bit products")
    if not has_fast_int8(flags, machine):
        causes.append("this CPU has no VNNI flags (avx512_vnni / avx_vnni): 8-bit products take the slower "
                      "AVX2 path")
    gpu = _gpu_providers() if gpu_providers is None else gpu_providers
    if gpu:
        causes.append(f"a GPU build of onnxruntime ({', '.join(gpu)}): INT8 graphs gain nothing on GPU "
                      "providers; serve FP32/FP16 there")
    return causes


def speed_check(fp32_onnx: Path, int8_onnx: Path, threads: int = 2, *, batch: int = 1, seq: int = 128,
                runs: int = 30, rounds: int = 2, min_speedup: float = 1.0) -> dict:
    """FP32 vs INT8 ONNX latency (CPU, alternating rounds, best median of each); ``warning`` when INT8 is not faster."""
    dims = onnx_text_dims(Path(fp32_onnx))
    seq = min(seq, dims["max_positions"] or seq)
    kwargs = {"batch": batch, "seq": seq, "threads": threads, "runs": runs, "vocab_size": dims["vocab_size"] or 1000}
    fp32_ms, int8_ms = float("inf"), float("inf")
    for _ in range(max(1, rounds)):  # alternate so a burst of load from elsewhere hits both alike
        fp32_ms = min(fp32_ms, onnx_latency_ms(Path(fp32_onnx), **kwargs))
        int8_ms = min(int8_ms, onnx_latency_ms(Path(int8_onnx), **kwargs))
    speedup = fp32_ms / int8_ms
    result = {"fp32_ms": round(fp32_ms, 4), "int8_ms": round(int8_ms, 4), "speedup": round(speedup, 3),
              "threads": threads, "batch": batch, "seq": seq, "cpu_target": detect_target(),
              "vnni": has_fast_int8(), "machine": platform.machine(), "hidden_size": dims["hidden_size"],
              "load_avg": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None, "warning": None}
    if speedup < min_speedup:
        causes = slow_int8_causes(dims["hidden_size"], cpu_flags())
        why = "; ".join(causes) if causes else (f"no known cause; the timing may be distorted by other load "
                                                f"(load average {result['load_avg']} on {os.cpu_count()} CPUs)")
        result["warning"] = (f"INT8 is not faster than FP32 here ({int8_ms:.1f} ms vs {fp32_ms:.1f} ms, "
                             f"batch {batch}, seq {seq}, {threads} threads). Likely cause: {why}.")
    return result

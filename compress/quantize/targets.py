"""Named INT8 targets: the 8-bit types and range that suit a CPU family, and detection of the one we run on.

The presets follow ONNX Runtime's guidance for CPU inference and optimum's ``AutoQuantizationConfig``: unsigned
activations with signed weights everywhere (the u8×s8 kernels of MLAS), and 7-bit weights (``reduce_range``) on
x86 without VNNI, whose VPMADDUBSW instruction saturates on full-range u8×s8 sums.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

from distill.core.registry import Registry

CPUINFO = Path("/proc/cpuinfo")
_VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # any of them gives ORT's fast u8×s8 dot-product kernels
_ARM_MACHINES = ("arm64", "aarch64", "armv8", "armv8l")


@dataclass(frozen=True)
class Target:
    """8-bit choices for one CPU family; types are ``onnxruntime.quantization.QuantType`` member names."""

    name: str
    activation_type: str
    weight_type: str
    reduce_range: bool
    about: str


TARGETS: Registry[Target] = Registry("quantization target")
for _target in (
    Target("avx512_vnni", "QUInt8", "QInt8", False, "x86 with VNNI (Cascade Lake+, Zen 4+): full 8-bit range"),
    Target("avx2", "QUInt8", "QInt8", True, "x86 without VNNI: 7-bit weights so u8×s8 sums cannot saturate"),
    Target("arm64", "QUInt8", "QInt8", False, "ARM64 (Graviton, Apple, Cortex-A): u8×s8, full range"),
):
    TARGETS.register(_target.name, _target)


def cpu_flags(cpuinfo: Path = CPUINFO) -> set[str]:
    """The instruction-set flags of the first CPU in /proc/cpuinfo; empty where there is none (macOS, Windows)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86 / ARM spelling
            return set(value.split())
    return set()


def detect_target(flags: set[str] | None = None, machine: str | None = None) -> str:
    """The target that fits this CPU: arm64 on ARM, avx512_vnni where VNNI is present, avx2 otherwise (safe)."""
    machine = (machine if machine is not None else platform.machine()).lower()
    if machine in _ARM_MACHINES:
        return "arm64"
    flags = cpu_flags() if flags is None else flags
    return "avx512_vnni" if any(f in flags for f in _VNNI_FLAGS) else "avx2"


def has_fast_int8(flags: set[str] | None = None, machine: str | None = None) -> bool:
    """Whether this CPU has 8-bit dot-product instructions (VNNI, or ARM's dot product), where INT8 pays off most."""
    machine = (machine if machine is not None else platform.machine()).lower()
    flags = cpu_flags() if flags is None else flags
    if machine in _ARM_MACHINES:
        return "asimddp" in flags or machine == "arm64"  # Apple silicon reports no cpuinfo but has dot product
    return any(f in flags for f in _VNNI_FLAGS)

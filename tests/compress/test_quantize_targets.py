"""compress.quantize.targets: CPU presets, detection from CPU flags, and the preset's effect on the INT8 weights."""

from __future__ import annotations

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from compress import TARGETS, QuantizeConfig, detect_target
from compress.quantize.int8 import quantize_dynamic_int8
from compress.quantize.targets import cpu_flags, has_fast_int8
from distill.core.errors import UnknownNameError

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw avx512_vnni
processor\t: 1
flags\t\t: fpu sse2
"""


def test_presets_follow_onnxruntime_cpu_guidance():
    assert set(TARGETS.names()) == {"avx512_vnni", "avx2", "arm64"}
    vnni, avx2, arm = (TARGETS.get(n) for n in ("avx512_vnni", "avx2", "arm64"))
    assert (vnni.activation_type, vnni.weight_type, vnni.reduce_range) == ("QUInt8", "QInt8", False)
    assert (avx2.activation_type, avx2.weight_type, avx2.reduce_range) == ("QUInt8", "QInt8", True)
    assert (arm.activation_type, arm.weight_type, arm.reduce_range) == ("QUInt8", "QInt8", False)


def test_cpu_flags_reads_the_first_cpu(tmp_path):
    (tmp_path / "cpuinfo").write_text(CPUINFO)
    assert {"avx2", "avx512_vnni"} <= cpu_flags(tmp_path / "cpuinfo")
    assert cpu_flags(tmp_path / "missing") == set()
    (tmp_path / "arm").write_text("processor\t: 0\nFeatures\t: fp asimd asimddp\n")
    assert "asimddp" in cpu_flags(tmp_path / "arm")


@pytest.mark.parametrize("flags,machine,expected", [
    ({"avx2", "avx512f", "avx512_vnni"}, "x86_64", "avx512_vnni"),
    ({"avx2", "avx_vnni"}, "AMD64", "avx512_vnni"),  # Alder Lake's AVX-VNNI: same u8 x s8 dot product
    ({"avx2", "avx512f"}, "x86_64", "avx2"),  # AVX-512 without VNNI saturates like AVX2: 7-bit weights
    (set(), "x86_64", "avx2"),  # no /proc/cpuinfo: the safe choice
    ({"fp", "asimd"}, "aarch64", "arm64"),
    (set(), "arm64", "arm64"),
])
def test_detect_target(flags, machine, expected):
    assert detect_target(flags, machine) == expected
    assert detect_target() in TARGETS


def test_fast_int8_flags():
    assert has_fast_int8({"avx512_vnni"}, "x86_64") and not has_fast_int8({"avx2"}, "x86_64")
    assert has_fast_int8({"asimddp"}, "aarch64") and not has_fast_int8({"asimd"}, "aarch64")


def test_config_resolves_and_checks_the_target():
    assert QuantizeConfig().target == detect_target()
    assert QuantizeConfig(target="AVX2").target == "avx2"
    with pytest.raises(UnknownNameError, match="quantization target 'neon'") as err:
        QuantizeConfig(target="neon")
    assert "choose one of: arm64, avx2, avx512_vnni" in str(err.value)


@pytest.fixture(scope="module")
def fp32(tmp_path_factory) -> Path:
    """x[n, 64] @ w[64, 32]: enough to see the weight range a target gives, without exporting a model."""
    w = np.random.default_rng(0).normal(size=(64, 32)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "mm",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 64])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 32])],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    path = tmp_path_factory.mktemp("fp32") / "model.onnx"
    onnx.save(model, str(path))
    return path


def _int8_weights(path: Path) -> list[np.ndarray]:
    graph = onnx.load(str(path)).graph
    return [numpy_helper.to_array(t) for t in graph.initializer
            if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 2]


def test_avx2_target_uses_7_bit_weights(fp32, tmp_path):
    for target in ("avx2", "avx512_vnni"):
        quantize_dynamic_int8(fp32, tmp_path / f"{target}.onnx", QuantizeConfig(target=target))
    seven, eight = _int8_weights(tmp_path / "avx2.onnx"), _int8_weights(tmp_path / "avx512_vnni.onnx")
    assert seven and eight
    assert max(int(np.abs(w).max()) for w in seven) <= 64  # reduce_range: [-64, 64]
    assert max(int(np.abs(w).max()) for w in eight) >= 120  # full range: [-127, 127]

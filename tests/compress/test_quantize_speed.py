"""compress.quantize.speed: FP32 vs INT8 timing and the warning that names why INT8 is not faster."""

from __future__ import annotations

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from compress import QuantizeConfig, export_onnx, speed_check
from compress.measure import onnx_text_dims
from compress.quantize.int8 import quantize_dynamic_int8
from compress.quantize.speed import slow_int8_causes


@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> tuple[Path, Path]:
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(hidden_size=32, num_attention_heads=2, intermediate_size=64,
                                                     num_hidden_layers=1, vocab_size=70, max_position_embeddings=24))
    root = tmp_path_factory.mktemp("speed")
    fp32 = export_onnx(model.eval(), root / "fp32" / "model.onnx", max_seq_length=8)
    quantize_dynamic_int8(fp32, root / "int8.onnx", QuantizeConfig())
    return fp32, root / "int8.onnx"


def test_text_dims_read_from_fp32_and_int8(graphs):
    for path in graphs:
        assert onnx_text_dims(path) == {"vocab_size": 70, "hidden_size": 32, "max_positions": 24}


def test_speed_check_times_both_within_the_model_limits(graphs):
    result = speed_check(*graphs, threads=1, runs=2, rounds=1, min_speedup=0.0)
    assert result["fp32_ms"] > 0 and result["int8_ms"] > 0 and result["warning"] is None
    assert result["speedup"] == pytest.approx(result["fp32_ms"] / result["int8_ms"], rel=0.05)
    assert result["seq"] == 24 and result["threads"] == 1  # 128 capped to the 24 positions the model has
    assert result["hidden_size"] == 32 and {"cpu_target", "vnni", "load_avg"} <= set(result)


def test_not_faster_gives_a_warning_with_the_cause(graphs):
    result = speed_check(*graphs, threads=1, runs=2, rounds=1, min_speedup=1e9)  # force the "not faster" branch
    assert result["warning"].startswith("INT8 is not faster than FP32 here")
    assert "hidden size 32 < 256" in result["warning"]


def test_causes_name_cpu_flags_gpu_and_width():
    assert slow_int8_causes(384, {"avx512_vnni"}, "x86_64", gpu_providers=[]) == []
    no_vnni = slow_int8_causes(384, {"avx2", "avx512f"}, "x86_64", gpu_providers=[])
    assert len(no_vnni) == 1 and "no VNNI" in no_vnni[0]
    gpu = slow_int8_causes(384, {"avx512_vnni"}, "x86_64", gpu_providers=["CUDAExecutionProvider"])
    assert len(gpu) == 1 and "CUDAExecutionProvider" in gpu[0]
    tiny = slow_int8_causes(128, {"avx512_vnni"}, "x86_64", gpu_providers=[])
    assert len(tiny) == 1 and "tiny matrices" in tiny[0]
    assert slow_int8_causes(None, {"asimddp"}, "aarch64", gpu_providers=[]) == []

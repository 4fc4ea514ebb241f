"""``distill quantize`` and ``distill eval`` on model dirs written by a run."""

import json

import factories
import onnx
import pytest

from distill.cli import main

ARGS = ["--student", "tiny", "--epochs", "1", "--batch-size", "16", "--max-seq-length", "32", "--latency-runs", "2",
        "--quiet", "--no-quantize", "--prune-ffn", "0.5"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("qe")
    teacher = factories.save_teacher(tmp / "teacher", tmp)
    data = factories.write_sst2_like(tmp / "data", n_train=32, n_dev=16)
    assert main(["run", "--teacher", str(teacher), "--task", "sst2", "--data", str(data),
                 "--output-dir", str(tmp / "run"), *ARGS]) == 0
    return tmp


def test_quantize_static_from_data_dir(run_dir):
    out = run_dir / "int8-static"
    assert main(["quantize", str(run_dir / "run" / "pruned"), "--mode", "static", "--calibration-data",
                 str(run_dir / "data"), "--calibration", "entropy", "--target", "avx2", "--output-dir", str(out),
                 "--latency-runs", "2", "--quiet"]) == 0
    report = json.loads((out / "quantize_report.json").read_text())
    assert report["mode"] == "static" and report["target"] == "avx2" and report["calibration"] == "entropy"
    ops = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    assert (out / "labels.json").is_file() and (out / "tokenizer.json").is_file()


def test_eval_scores_dirs_and_onnx(run_dir, capsys):
    onnx_dir = run_dir / "int8-dyn"
    assert main(["quantize", str(run_dir / "run" / "student"), "--output-dir", str(onnx_dir), "--latency-runs", "2",
                 "--quiet"]) == 0
    out_json = run_dir / "scores.json"
    assert main(["eval", str(run_dir / "run" / "student"), str(onnx_dir / "model.onnx"), "--teacher",
                 str(run_dir / "teacher"), "--task", "sst2", "--data", str(run_dir / "data"), "--latency-runs", "2",
                 "--max-seq-length", "32", "--json", str(out_json)]) == 0
    stages = json.loads(out_json.read_text())["stages"]
    assert [s["name"] for s in stages] == ["teacher", "student", "int8-dyn"]
    assert stages[1]["size_mb"] == pytest.approx(
        (run_dir / "run" / "student" / "model.safetensors").stat().st_size / 1e6, rel=1e-3)

"""End to end: ``distill run`` through the CLI on a tiny in-process teacher and generated data."""

import json
import subprocess
import sys
import time
from pathlib import Path

import factories
import numpy as np
import pytest

from distill.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    teacher = factories.save_teacher(tmp / "teacher", tmp, with_head=False)
    data = factories.write_sst2_like(tmp / "data", n_train=128, n_dev=32)
    out = tmp / "run"
    start = time.perf_counter()
    code = main(["run", "--teacher", str(teacher), "--student", "tiny", "--task", "sst2", "--data", str(data),
                 "--output-dir", str(out), "--epochs", "2", "--teacher-epochs", "2", "--batch-size", "16",
                 "--max-seq-length", "32", "--latency-runs", "3", "--prune-heads", "0.5", "--prune-ffn", "0.5",
                 "--quiet"])  # fixed ratios (no retention search): the shape tests below know the widths
    assert code == 0
    # Wall time is reported, not asserted (speed is checked by experiments/bench, never by timed unit tests).
    print(f"tiny end-to-end run: {time.perf_counter() - start:.1f} s")
    return out


def test_layout(run_dir: Path):
    for stage in ("teacher", "student", "pruned"):
        assert (run_dir / stage / "config.json").is_file()
        assert (run_dir / stage / "model.safetensors").is_file()
        assert (run_dir / stage / "tokenizer_config.json").is_file()
    for name in ("model.onnx", "config.json", "tokenizer_config.json"):
        assert (run_dir / "int8" / name).is_file()
    for name in ("config.yaml", "env.json", "report.json", "report.md"):
        assert (run_dir / name).is_file()
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".")], "temporary dirs left behind"


def test_report(run_dir: Path):
    report = json.loads((run_dir / "report.json").read_text())
    assert report["task"] == "sst2" and report["metric_name"] == "accuracy"
    stages = {s["name"]: s for s in report["stages"]}
    assert list(stages) == ["teacher", "student", "pruned", "int8"]
    assert stages["teacher"]["retention"] == 1.0 and stages["teacher"]["agreement"] == 1.0
    for s in stages.values():
        assert 0.0 <= s["metric"] <= 1.0 and 0.0 <= s["agreement"] <= 1.0
        assert s["params"] > 0 and s["size_mb"] > 0 and s["latency_ms"] > 0
    assert stages["pruned"]["params"] < stages["student"]["params"]
    assert stages["int8"]["size_mb"] < stages["pruned"]["size_mb"]
    assert "| stage |" in (run_dir / "report.md").read_text()


def test_artifacts_load_with_plain_libraries(run_dir: Path):
    """Every artifact loads with transformers / onnxruntime in a process that never imports distill."""
    code = f"""
import sys, numpy as np, onnxruntime as ort, torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
root = {str(run_dir)!r}
tok = AutoTokenizer.from_pretrained(root + "/int8")
enc = tok(["the movie was good", "a bad plot"], padding=True, return_tensors="np")
sess = ort.InferenceSession(root + "/int8/model.onnx", providers=["CPUExecutionProvider"])
feed = {{i.name: enc[i.name].astype(np.int64) for i in sess.get_inputs()}}
int8 = sess.run(None, feed)[0]
for stage in ("teacher", "student", "pruned"):
    m = AutoModelForSequenceClassification.from_pretrained(root + "/" + stage).eval()
    with torch.no_grad():
        out = m(**tok(["the movie was good", "a bad plot"], padding=True, return_tensors="pt")).logits
    assert out.shape == (2, 2), out.shape
assert int8.shape == (2, 2)
assert "distill" not in sys.modules
print("ok")
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().endswith("ok")


def test_pruned_reload_matches_saved_student_shape(run_dir: Path):
    cfg_s = json.loads((run_dir / "student" / "config.json").read_text())
    cfg_p = json.loads((run_dir / "pruned" / "config.json").read_text())
    assert cfg_p["hidden_size"] == cfg_s["hidden_size"] // 2
    assert cfg_p["num_attention_heads"] == cfg_s["num_attention_heads"] // 2
    assert cfg_p["intermediate_size"] == cfg_s["intermediate_size"] // 2
    assert np.isclose(cfg_p["hidden_size"] / cfg_p["num_attention_heads"],
                      cfg_s["hidden_size"] / cfg_s["num_attention_heads"])


COMMON = ["--student", "tiny", "--epochs", "1", "--batch-size", "16", "--max-seq-length", "32", "--latency-runs", "2",
          "--quiet"]


@pytest.mark.parametrize("task,regression,metric", [("mrpc", False, "f1"), ("stsb", True, "pearson")])
def test_pair_and_regression_tasks(tmp_path, task, regression, metric):
    teacher = factories.save_teacher(tmp_path / "t", tmp_path, num_labels=1 if regression else 2)
    data = factories.write_pairs(tmp_path / "d", regression=regression)
    out = tmp_path / "run"
    assert main(["run", "--teacher", str(teacher), "--task", task, "--data", str(data), "--output-dir", str(out),
                 *COMMON]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["metric_name"] == metric
    assert [s["name"] for s in report["stages"]] == ["teacher", "student", "pruned", "int8"]
    assert not (out / "teacher").exists()  # the teacher had a trained head: used in place, not copied


def test_finetune_teacher_then_run_reuses_it(tmp_path, capsys):
    teacher = factories.save_teacher(tmp_path / "t", tmp_path, with_head=False)
    data = factories.write_sst2_like(tmp_path / "d", n_train=32, n_dev=8)
    out = tmp_path / "run"
    args = ["--teacher", str(teacher), "--task", "sst2", "--data", str(data), "--output-dir", str(out),
            "--batch-size", "16", "--max-seq-length", "32"]
    assert main(["finetune-teacher", *args, "--epochs", "1", "--lr", "1e-4"]) == 0
    assert (out / "teacher" / "model.safetensors").is_file()
    capsys.readouterr()
    assert main(["run", *args, "--overwrite", "--teacher-epochs", "1", "--teacher-lr", "1e-4", "--epochs", "1",
                 "--latency-runs", "2", "--no-prune", "--no-quantize"]) == 0
    assert "reusing the fine-tuned teacher" in capsys.readouterr().err
    stages = [s["name"] for s in json.loads((out / "report.json").read_text())["stages"]]
    assert stages == ["teacher", "student"]


def test_report_command_and_gates(run_dir: Path, capsys):
    assert (run_dir / "report.html").is_file()
    report = json.loads((run_dir / "report.json").read_text())
    assert set(report["predictions"]) == {"teacher", "student", "pruned", "int8"}
    assert all(s["kl_to_teacher"] is not None and s["kl_to_teacher"] >= 0 for s in report["stages"])
    (run_dir / "report.html").unlink()
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report.html").is_file()
    capsys.readouterr()
    assert main(["report", str(run_dir), "--min-retention", "1.5", "--max-size-mb", "0.0001"]) == 1
    err = capsys.readouterr().err
    assert "gate failed" in err and "--min-retention" in err and "--max-size-mb" in err


@pytest.mark.parametrize("extra", [["--quantize-mode", "static", "--calibration", "percentile"],
                                   ["--max-int8-drop", "0.0"], ["--qat"]], ids=["static", "tolerance", "qat"])
def test_quantization_variants(tmp_path, extra):
    teacher = factories.save_teacher(tmp_path / "t", tmp_path)
    data = factories.write_sst2_like(tmp_path / "d", n_train=32, n_dev=16)
    out = tmp_path / "run"
    assert main(["run", "--teacher", str(teacher), "--task", "sst2", "--data", str(data), "--output-dir", str(out),
                 "--no-prune", *COMMON, *extra]) == 0
    report = json.loads((out / "report.json").read_text())
    assert [s["name"] for s in report["stages"]] == ["teacher", "student", "int8"]
    q = report["history"]["quantize_report"]
    assert "int8_speed" in report["history"]
    assert json.loads((out / "int8" / "labels.json").read_text()) and (out / "int8" / "README.md").is_file()
    if "--max-int8-drop" in extra:
        assert report["stages"][-1]["metric"] == pytest.approx(report["stages"][1]["metric"], abs=1e-9)
        assert q["quantize"]["fp32_nodes"] or q.get("int8_metric") == q.get("fp32_metric")
    elif "--qat" in extra:
        assert q["mode"] == "qat" and report["history"]["qat"]
    else:
        assert q["mode"] == "static" and q["calibration"] == "percentile"


def test_cached_teacher_is_built_once_and_reused(tmp_path, capsys):
    teacher = factories.save_teacher(tmp_path / "t", tmp_path)
    data = factories.write_sst2_like(tmp_path / "d", n_train=32, n_dev=8)
    out = tmp_path / "run"
    args = ["run", "--teacher", str(teacher), "--task", "sst2", "--data", str(data), "--output-dir", str(out),
            "--cache-teacher", "--hidden-weight", "1", "--prune-ffn", "0.5", "--no-quantize", *COMMON]
    args.remove("--quiet")
    assert main(args) == 0
    first = json.loads((out / "report.json").read_text())["history"]["teacher_cache"]
    assert first[0]["built"] and first[0]["size_mb"] > 0 and first[0]["hidden_layers"]
    capsys.readouterr()
    assert main([*args, "--overwrite"]) == 0
    assert "reusing the teacher cache" in capsys.readouterr().err
    second = json.loads((out / "report.json").read_text())["history"]["teacher_cache"]
    assert not any(c["built"] for c in second)


def test_export_run_dir_is_a_shippable_bundle(run_dir: Path, tmp_path):
    """``distill export RUN``: model, tokenizer, config, labels and a README with the run's numbers; the README's
    snippet predicts with onnxruntime + tokenizers alone."""
    out = tmp_path / "edge"
    assert main(["export", str(run_dir), "--output-dir", str(out), "--quiet"]) == 0
    for name in ("model.onnx", "tokenizer.json", "config.json", "labels.json", "README.md"):
        assert (out / name).is_file(), name
    final = json.loads((run_dir / "report.json").read_text())["stages"][-1]
    readme = (out / "README.md").read_text()
    assert f"| retention | {round(final['retention'], 4):.4g} |" in readme and "sst2 tiny INT8" in readme
    assert (out / "model.onnx").read_bytes() == (run_dir / "int8" / "model.onnx").read_bytes()
    blocked = "; ".join(f"sys.modules[{m!r}] = None" for m in ("distill", "compress", "torch", "transformers"))
    code = (f"import sys; {blocked}\ntext = open('README.md').read()\n"
            "start = text.index('```python\\n') + len('```python\\n')\nexec(text[start:text.index('```', start)])\n")
    res = subprocess.run([sys.executable, "-I", "-c", code], cwd=out, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() in json.loads((out / "labels.json").read_text()).values()


def test_export_an_onnx_file(run_dir: Path, tmp_path):
    out = tmp_path / "edge"
    assert main(["export", str(run_dir / "int8" / "model.onnx"), "--output-dir", str(out), "--quiet"]) == 0
    assert (out / "labels.json").is_file() and "```python" in (out / "README.md").read_text()
    assert main(["export", str(run_dir / "int8"), "--output-dir", str(out), "--quiet"]) == 2  # not empty
    assert main(["export", str(run_dir / "int8"), "--output-dir", str(out), "--overwrite", "--quiet"]) == 0

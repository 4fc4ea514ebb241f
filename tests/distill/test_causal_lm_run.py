"""``distill run --task causal-lm`` end to end on tiny random Llama, Qwen2 and GPT-2 teachers: teacher → distilled
student → INT8 ONNX with KV cache (onnxruntime-genai for Llama/Qwen2, torch.onnx + past for GPT-2) → every stage
scored; the report (JSON/Markdown/HTML) and every artifact loads without this package."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lm_factories
import pytest

from distill.cli import main

REPORT_KEYS = {"kind", "task", "teacher", "student", "data", "settings", "stages", "perplexity_convention", "eval",
               "trivial_predictor", "trivial_perplexity", "training", "continuations", "notes", "stage_seconds",
               "wall_seconds", "machine", "teacher_source"}
ROW_KEYS = {"name", "perplexity", "perplexity_ratio", "retention", "agreement", "kl", "params", "size_mb",
            "latency_ms", "prefill_ms", "decode_tokens_per_s", "prompt_tokens", "new_tokens", "threads", "runtime",
            "path", "collapsed"}


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    return lm_factories.write_lm_folder(tmp_path_factory.mktemp("lmtext"))


def _run(tmp: Path, family: str, text: Path, *extra: str) -> dict:
    teacher = lm_factories.save_tiny_lm(tmp / "teacher", family, seed=0)
    student = lm_factories.save_tiny_lm(tmp / "student", family, seed=1,
                                        **({"n_layer": 1} if family == "gpt2" else {"num_hidden_layers": 1}))
    out = tmp / "run"
    code = main(["run", "--teacher", str(teacher), "--student", str(student), "--task", "causal-lm", "--data",
                 str(text), "--block-size", "16", "--batch-size", "4", "--epochs", "1", "--latency-runs", "1",
                 "--output-dir", str(out), "--quiet", *extra])
    assert code == 0
    return json.loads((out / "report.json").read_text())


SEARCH_ONE = ("--prune-search", "0.5", "--target-retention", "0.01")  # one search step, kept: always pruned


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
def test_run_end_to_end(tmp_path, text, family):
    report = _run(tmp_path, family, text, *SEARCH_ONE)
    assert set(report) == REPORT_KEYS | {"prune_search", "retention_target"}
    names = [s["name"] for s in report["stages"]]
    assert names == ["teacher", "student", "pruned", "int8"]
    for row in report["stages"]:
        assert set(row) == ROW_KEYS
        assert row["perplexity"] > 1 and row["decode_tokens_per_s"] > 0 and row["prefill_ms"] > 0
    teacher, student, pruned, int8 = report["stages"]
    assert teacher["perplexity_ratio"] == 1.0 and teacher["agreement"] == 1.0
    assert pruned["params"] < student["params"] < teacher["params"]
    assert report["training"]["pruned"]["recovery"]["steps"] > 0
    ffn = report["training"]["pruned"]["ffn"]
    assert ffn[1] == ffn[0] // 2  # the search's one ratio, 0.5, kept
    assert [s["kept"] for s in report["prune_search"]["prune_steps"]] == [True]
    # INT8 of the pruned model scores close to it (same greedy argmax on most positions)
    assert abs(int8["perplexity"] / pruned["perplexity"] - 1) < 0.05
    assert int8["runtime"] == ("onnxruntime" if family == "gpt2" else "onnxruntime-genai")
    assert report["training"]["student"]["steps"] > 0
    cont = report["continuations"]
    assert set(cont["stages"]) == {"teacher", "student", "pruned", "int8"}
    assert all(len(texts) == len(cont["prompts"]) for texts in cont["stages"].values())
    assert "stride 16" in report["perplexity_convention"] and "no BOS" in report["perplexity_convention"]
    out = tmp_path / "run"
    md = (out / "report.md").read_text()
    assert "Greedy continuations" in md and "decode tok/s" in md
    assert "<table id='stages'>" in (out / "report.html").read_text()
    _loads_without_package(out, family)


def test_cache_teacher_end_to_end_and_reused_by_the_next_run(tmp_path, text):
    """``--cache-teacher``: the teacher's top-k runs once into OUTPUT/teacher_cache; distillation and recovery read
    it (recorded in the training facts); a second run (``--overwrite``) keeps and reuses it."""
    extra = ("--cache-teacher", "--cache-top-k", "8", "--no-quantize", *SEARCH_ONE)
    report = _run(tmp_path, "llama", text, *extra)
    cache = tmp_path / "run" / "teacher_cache"
    manifest = json.loads((cache / "manifest.json").read_text())
    student, recovery = report["training"]["student"], report["training"]["pruned"]["recovery"]
    facts = student["teacher_cache"]
    assert facts["top_k"] == 8 == manifest["top_k"] and facts["built"] and facts["teacher_seconds"] > 0
    assert facts["size_bytes"] == manifest["bytes"] > 0 and facts["rows"] == student["blocks"]
    assert facts["passes_served"] >= 1  # distillation read the cache
    assert recovery["teacher_cache"]["top_k"] == 8 and recovery["steps"] > 0
    assert "teacher cache" in report["stage_seconds"]
    assert "teacher_cache" in (tmp_path / "run" / "report.md").read_text()
    again = _run(tmp_path, "llama", text, *extra, "--overwrite")
    assert not again["training"]["student"]["teacher_cache"]["built"]
    assert json.loads((cache / "manifest.json").read_text())["created"] == manifest["created"]


LOAD = """
import sys, numpy as np
from transformers import AutoModelForCausalLM, AutoTokenizer
import onnxruntime as ort
out = sys.argv[1]
m = AutoModelForCausalLM.from_pretrained(out + "/student")
p = AutoModelForCausalLM.from_pretrained(out + "/pruned")
assert p.num_parameters() < m.num_parameters()
tok = AutoTokenizer.from_pretrained(out + "/int8")
s = ort.InferenceSession(out + "/int8/model.onnx", providers=["CPUExecutionProvider"])
names = [i.name for i in s.get_inputs()]
assert names[:2] == ["input_ids", "attention_mask"], names
if sys.argv[2] != "gpt2":
    import onnxruntime_genai as og
    og.Model(out + "/int8")
assert not any(k == "distill" or k.startswith(("distill.", "compress", "teachers", "students")) for k in sys.modules)
print("ok")
"""


def _loads_without_package(out: Path, family: str) -> None:
    """The student dir and the INT8 bundle load with transformers / ONNX Runtime (/ genai) alone."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-c", LOAD, str(out), family], capture_output=True, text=True, env=env,
                         cwd=str(out), timeout=300)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-2000:]


GENERATE = """
import sys
import onnxruntime_genai as og
model = og.Model(sys.argv[1])
params = og.GeneratorParams(model)
params.set_search_options(max_length=12, do_sample=False)
generator = og.Generator(model, params)
generator.append_tokens([5, 6, 7, 8])
while not generator.is_done():
    generator.generate_next_token()
print(len(generator.get_sequence(0)))
"""


def test_int8_and_int4_bundles_both_come_from_the_final_torch_stage(tmp_path, text):
    """``--lm-precision int8,int4``: two rows scored like each other, two bundles; the INT4 one is smaller, says
    INT4 in its README, and onnxruntime-genai loads and generates with it."""
    report = _run(tmp_path, "llama", text, "--no-prune", "--lm-precision", "int8,int4")
    assert [s["name"] for s in report["stages"]] == ["teacher", "student", "int8", "int4"]
    rows = {row["name"]: row for row in report["stages"]}
    assert all(set(row) == ROW_KEYS for row in rows.values())
    assert rows["int4"]["size_mb"] < rows["int8"]["size_mb"] and rows["int4"]["runtime"] == "onnxruntime-genai"
    assert rows["int4"]["perplexity"] > 1 and rows["int4"]["decode_tokens_per_s"] > 0
    training = report["training"]
    assert training["int8"]["from"] == training["int4"]["from"] == "student"
    assert "MatMul/Gather" in training["int4"]["builder"] and training["int4"]["precision"] == "int4"
    assert {"quantize", "quantize-int4"} <= set(report["stage_seconds"])
    assert set(report["continuations"]["stages"]) == {"teacher", "student", "int8", "int4"}
    assert report["settings"]["lm_precision"] == ["int8", "int4"]
    bundle = tmp_path / "run" / "int4"
    assert "INT4" in (bundle / "README.md").read_text()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-c", GENERATE, str(bundle)], capture_output=True, text=True, env=env,
                         cwd=str(bundle), timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "12", res.stderr[-1000:]


def test_gpt2_int4_goes_through_matmul_nbits(tmp_path, text):
    """GPT-2, outside the genai builder: ``--lm-precision int4`` alone gives an ``int4`` row through plain ONNX
    Runtime (4-bit MatMulNBits on the torch.onnx export) and no INT8 bundle."""
    report = _run(tmp_path, "gpt2", text, "--no-prune", "--lm-precision", "int4")
    assert [s["name"] for s in report["stages"]] == ["teacher", "student", "int4"]
    int4 = report["stages"][-1]
    assert int4["runtime"] == "onnxruntime" and int4["perplexity"] > 1
    assert "MatMulNBits" in report["training"]["int4"]["builder"]
    assert (tmp_path / "run" / "int4" / "model.onnx").is_file() and not (tmp_path / "run" / "int8").exists()


@pytest.mark.parametrize("value", ["int2", "int8,int8", ""])
def test_a_bad_lm_precision_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, value):
    out = tmp_path / "run"
    code = main(["run", "--teacher", str(tmp_path / "absent"), "--task", "causal-lm", "--lm-precision", value,
                 "--output-dir", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--lm-precision" in err and "int8,int4" in err, err
    assert not out.exists()


def test_lm_precision_round_trips_through_a_recipe():
    from distill.pipeline.config import RunConfig
    from distill.pipeline.recipe import dump_recipe

    cfg = RunConfig(teacher="t", lm_precision="int4,int8")
    assert cfg.quantize.lm_precision == ["int8", "int4"]  # built and reported in this order
    assert dump_recipe(cfg)["quantize"]["lm_precision"] == ["int8", "int4"]
    assert RunConfig(teacher="t", quantize={"lm_precision": ["int4"]}).quantize.lm_precision == ["int4"]


def test_demo_data_alone_means_causal_lm(tmp_path):
    """``--data wikitext-2-demo`` without ``--task`` runs the causal-LM pipeline, here with a preset student cut from
    the teacher (depth only: its weights are copies of the frozen teacher's and must train); no INT8: quicker."""
    teacher = lm_factories.save_tiny_lm(tmp_path / "teacher", "llama", seed=0)
    out = tmp_path / "run"
    code = main(["run", "--teacher", str(teacher), "--student", "half", "--data", "wikitext-2-demo",
                 "--block-size", "32", "--max-train-samples", "8", "--eval-blocks", "4", "--epochs", "1",
                 "--latency-runs", "1", "--no-quantize", "--no-prune", "--output-dir", str(out), "--quiet"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert [s["name"] for s in report["stages"]] == ["teacher", "student"]
    assert report["eval"]["windows_scored"] == 4 and report["training"]["student"]["blocks"] == 8
    assert report["trivial_perplexity"] > 1
    kept = report["training"]["student"]["built"]["kept_layers"]
    assert len(kept) == 1
    from transformers import AutoModelForCausalLM

    student = AutoModelForCausalLM.from_pretrained(out / "student")
    teacher_model = AutoModelForCausalLM.from_pretrained(teacher)
    assert student.config.num_hidden_layers == 1
    moved = student.model.layers[0].mlp.up_proj.weight - teacher_model.model.layers[kept[0]].mlp.up_proj.weight
    assert moved.abs().max() > 0  # distillation changed the copied layer


def test_a_stage_no_better_than_the_unigram_model_is_marked_collapsed(capsys):
    """The flag follows the numbers: at or above the unigram perplexity a stage is collapsed (row, note, table,
    one line on stderr even under --quiet), below it not."""
    from distill.core.console import set_quiet
    from distill.pipeline.lm_run import mark_collapsed
    from distill.report.lm import rows

    data = {"trivial_perplexity": 100.0, "notes": [],
            "stages": [{"name": "teacher", "perplexity": 20.0}, {"name": "student", "perplexity": 100.0},
                       {"name": "pruned", "perplexity": 99.9}]}
    set_quiet(True)
    try:
        mark_collapsed(data)
    finally:
        set_quiet(False)
    assert [row["collapsed"] for row in data["stages"]] == [False, True, False]
    assert len(data["notes"]) == 1 and "student has COLLAPSED" in data["notes"][0]
    assert "student has COLLAPSED" in capsys.readouterr().err.replace("\n", " ")
    assert [r[0] for r in rows(data)] == ["teacher", "student COLLAPSED", "pruned"]

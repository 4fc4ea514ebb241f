"""The smaller commands: presets, env, help texts, and running from a recipe with --set."""

import json
import subprocess
import sys

import factories
import pytest
import yaml

from distill.cli import build_parser, main


def test_presets_and_env(capsys):
    assert main(["presets"]) == 0
    text = capsys.readouterr().out
    for word in ("tiny", "medium", "bert-large", "minilm-pip", "stsb", "avx512_vnni"):
        assert word in text
    assert main(["env"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["packages"]["torch"] and info["cpu_count"] >= 1 and "quantization_target" in info


@pytest.mark.parametrize("command", ["run", "distil", "finetune-teacher", "prune", "quantize", "eval", "report",
                                     "check", "presets", "env"])
def test_every_subcommand_shows_an_example(command):
    sub = build_parser()._subparsers._group_actions[0].choices[command]
    assert "example" in sub.format_help()


def test_help_is_fast_and_light():
    code = "import sys; from distill.cli import main\ntry: main(['--help'])\nexcept SystemExit: pass\n" \
           "print(sorted(m for m in ('torch_pruning', 'onnxruntime', 'optimum', 'evaluate', 'matplotlib') " \
           "if m in sys.modules))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.stdout.strip().endswith("[]"), res.stdout


def test_run_from_recipe_with_overrides(tmp_path):
    teacher = factories.save_teacher(tmp_path / "t", tmp_path)
    factories.write_sst2_like(tmp_path / "data", n_train=32, n_dev=8)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "teacher": {"name": str(teacher)}, "student": {"name": "tiny"},
        "data": {"task": "sst2", "path": "data", "max_seq_length": 16},  # relative to the recipe
        "train": {"epochs": 5, "batch_size": 8}, "prune": {"enabled": False}, "quantize": {"enabled": False},
        "report": {"latency_runs": 2}}))
    out = tmp_path / "run"
    assert main(["run", "--config", str(recipe), "--set", "train.epochs=1", "--output-dir", str(out),
                 "--quiet"]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 1 and saved["data"]["path"] == str(tmp_path / "data")
    assert saved["teacher"]["name"] == str(teacher) and saved["prune"]["enabled"] is False
    assert [s["name"] for s in json.loads((out / "report.json").read_text())["stages"]] == ["teacher", "student"]


def test_unknown_recipe_key_is_one_line(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  lerning_rate: 1\n")
    assert main(["run", "--config", str(recipe), "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown recipe key 'train.lerning_rate'" in err

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
    for word in ("tiny", "medium", "bert-large", "minilm-pip", "stsb", "avx512_vnni", "half-width",
                 "1/3 of the teacher"):
        assert word in text
    assert main(["env"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["packages"]["torch"] and info["cpu_count"] >= 1 and "quantization_target" in info


COMMANDS = ["run", "distil", "finetune-teacher", "prune", "quantize", "eval", "export", "report", "check", "presets",
            "env"]
# what `distill --help` must never pay for (the benchmark experiments/bench/cli_startup.py times it)
HEAVY = ("torch_pruning", "onnxruntime", "onnx", "optimum", "evaluate", "datasets", "transformers", "accelerate",
         "matplotlib", "scipy", "tensorboard")


def test_every_command_is_listed():
    assert set(build_parser()._subparsers._group_actions[0].choices) == set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_shows_a_worked_example(command):
    """The epilog of each subcommand shows at least one complete `distill COMMAND ...` line."""
    sub = build_parser()._subparsers._group_actions[0].choices[command]
    lines = [line.strip() for line in sub.format_help().split("example")[-1].splitlines()]
    assert any(line.startswith(f"distill {command}") for line in lines), sub.epilog


def test_help_imports_no_heavy_module():
    """`python -m distill --help` and every `distill COMMAND --help`, in one fresh process: no heavy backend
    (nor transformers' model classes, nor datasets) is imported, and the top-level help shows a worked example."""
    code = ("import contextlib, io, sys\nfrom distill.cli import main\nbuf = io.StringIO()\n"
            f"for argv in [['--help']] + [[c, '--help'] for c in {COMMANDS!r}]:\n"
            "    with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):\n        main(argv)\n"
            f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
            "print('worked example' if '  distill run --teacher' in buf.getvalue() else 'no example')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-2:] == ["[]", "worked example"], res.stdout


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


def test_a_typed_flag_beats_the_recipe_even_at_its_default_value(tmp_path):
    """`--epochs 3` over a recipe's `epochs: 10` means 3, although 3 is also the flag's default."""
    from distill.cli.flags import typed
    from distill.cli.settings import run_config

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"teacher": {"name": "bert-base"}, "train": {"epochs": 10, "batch_size": 8},
                                      "prune": {"heads": 0.0}}))
    argv = ["run", "--config", str(recipe), "--epochs", "3", "--prune-heads", "0.5", "--task", "sst2"]
    args = build_parser().parse_args(argv)
    assert {"epochs", "prune_heads", "task"} <= set(typed(args)) and "batch_size" not in typed(args)
    assert args.config == str(recipe)
    cfg = run_config(args)
    assert (cfg.train.epochs, cfg.prune.heads, cfg.train.batch_size) == (3, 0.5, 8)
    args = build_parser().parse_args(argv[:3])  # nothing typed over the recipe: it wins
    assert (run_config(args).train.epochs, run_config(args).prune.heads) == (10, 0.0)

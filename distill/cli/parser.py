"""The ``distill`` argument parser: one subcommand per command, their settings' flags generated from the settings
schema (``distill.cli.flags``), each with a worked example. Building it imports no torch or heavy backend."""

from __future__ import annotations

import argparse

from distill.cli import commands
from distill.cli.flags import add_sections, add_setting, add_settings

# Every example here runs as printed after `pip install -e '.[dev]'` (minilm-pip and sst2-demo come with it), in the
# order of a session: the first `distill run` writes runs/sst2-tiny, which later examples read. Examples that need
# the Hub sit under a header saying "with internet"; tests/distill/test_examples.py checks all of them.
EXAMPLE_RUN = """example (offline: the minilm-pip teacher and the sst2-demo data come with the install):
  distill run --teacher minilm-pip --student tiny --task sst2 --data sst2-demo --output-dir runs/sst2-tiny
example (with internet: BERT-large and all of GLUE SST-2 from the Hub):
  distill run --teacher bert-large --student tiny --task sst2 --output-dir runs/sst2-tiny-hub
an interrupted run (Ctrl-C, SIGTERM, a killed machine, a full disk) continues where it stopped:
  distill run --resume runs/sst2-tiny
`distill presets` lists the demo data sets, student presets, teacher aliases and tasks"""

EXAMPLE_PRUNE = """examples (after the `distill run` example, which writes runs/sst2-tiny):
  distill prune runs/sst2-tiny/student --heads 0.5 --ffn 0.5 --output-dir runs/student-pruned
  distill prune runs/sst2-tiny/student --layers 1 --ffn 0.5 --importance taylor --teacher runs/sst2-tiny/teacher \\
      --task sst2 --data sst2-demo --output-dir runs/tiny-pruned"""

EXAMPLE_REPORT = """examples (after the `distill run` and `distill distil` examples: runs/sst2-tiny, runs/sst2-mini-kd):
  distill report runs/sst2-tiny                                   # rewrite report.json/md/html
  distill report runs/sst2-tiny runs/sst2-mini-kd                 # compare, one Pareto plot
  distill report runs/sst2-tiny --min-retention 0.9 --max-latency-ms 5    # exit 1 if a gate fails"""

EXAMPLE_QUANTIZE = """examples (after the `distill run` example, which writes runs/sst2-tiny):
  distill quantize runs/sst2-tiny/pruned --output-dir runs/tiny-int8                      # dynamic INT8
  distill quantize runs/sst2-tiny/pruned --mode static --calibration-data sst2-demo \\
      --calibration percentile --target avx512_vnni --output-dir runs/tiny-int8-static"""

EXAMPLE_EVAL = """example (after the `distill run` example, which writes runs/sst2-tiny):
  distill eval runs/sst2-tiny/student runs/sst2-tiny/int8/model.onnx --teacher runs/sst2-tiny/teacher \\
      --task sst2 --data sst2-demo"""

EXAMPLE_DISTIL = """example (after the `distill run` example, whose fine-tuned teacher it reuses):
  distill distil --teacher runs/sst2-tiny/teacher --student mini --task sst2 --data sst2-demo \\
      --output-dir runs/sst2-mini-kd"""

EXAMPLE_CHECK = """examples:
  distill check --teacher minilm-pip --student mini                             # preset student
example (with internet: a student with its own vocabulary, from the Hub):
  distill check --teacher minilm-pip --student distilbert/distilroberta-base --task sst2"""
EXAMPLE_EXPORT = """examples (after the `distill run` and `distill quantize` examples):
  distill export runs/sst2-tiny --output-dir edge/sst2-tiny          # the run's INT8 stage, numbers from its report
  distill export runs/tiny-int8/model.onnx --output-dir edge/tiny    # any INT8 dir or .onnx written by quantize
the bundle's README.md holds its numbers and a 10-line snippet needing only onnxruntime, tokenizers and numpy"""

EXAMPLE_FT = """example (offline: the teacher and the data come with the install):
  distill finetune-teacher --teacher minilm-pip --task sst2 --data sst2-demo --output-dir runs/minilm-sst2"""


DATA = ("task", "data", "text_columns", "label_column", "max_seq_length", "max_train_samples")
TRAIN = ("lr", "epochs", "batch_size", "seed", "device", "grad_accum_steps", "group_by_length", "compile",
         "teacher_dtype", "teacher_shard")
OUTPUT = ("output_dir", "overwrite")


def _subparser(sub, name: str, help: str, epilog: str, func, **defaults) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` ends with ``epilog`` (its worked example); ``defaults``: the command's own
    defaults for settings (``command_defaults``)."""
    p = sub.add_parser(name, help=help, formatter_class=argparse.RawDescriptionHelpFormatter, epilog=epilog)
    p.set_defaults(func=func, command_defaults=defaults)
    return p


def _cli_only(p: argparse.ArgumentParser) -> None:
    """What a command that writes an output dir takes besides settings: quiet output and safety switches."""
    p.add_argument("--quiet", action="store_true", help="no progress output, only the final table")
    g = p.add_argument_group("safety")
    g.add_argument("--offline", action="store_true", help="no network access at all (Hub lookups fail fast)")
    g.add_argument("--allow-pickle", action="store_true",
                   help="also load pickle checkpoints (pytorch_model.bin), which can run code: trusted files only")
    g.add_argument("--trust-remote-code", action="store_true",
                   help="run modelling code shipped with a checkpoint: trusted sources only")


def _run_parser(sub, name: str, help: str, epilog: str, **defaults) -> None:
    """``distill run`` (and ``distill distil``, which only changes two defaults): every setting, recipes, resume."""
    run = _subparser(sub, name, help, epilog, commands.cmd_run, **defaults)
    run.add_argument("--config", help="a YAML recipe (only changes from the defaults), e.g. "
                                      "experiments/recipes/sst2-mini.yaml")
    run.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                     help="override one recipe value, e.g. --set train.lr=5e-5 (repeatable)")
    add_sections(run, defaults)
    _cli_only(run)
    g = run.add_argument_group("interrupted runs")
    g.add_argument("--resume", metavar="OUTPUT",
                   help="continue the run in OUTPUT with its saved settings (OUTPUT/config.yaml): finished stages "
                        "are skipped, the interrupted one continues from its last complete checkpoint")


def _finetune_parser(sub) -> None:
    defaults = {"lr": 5e-5, "epochs": None, "output_dir": "runs/teacher"}
    ft = _subparser(sub, "finetune-teacher", "fine-tune a teacher on the task (the run's first stage alone)",
                    EXAMPLE_FT, commands.cmd_finetune_teacher, **defaults)
    add_setting(ft, "teacher", action="store", required=True, help="alias, model dir or Hub id")
    add_settings(ft, DATA, defaults, title="task and data")
    add_settings(ft, TRAIN, defaults, {"lr": {"help": "fine-tuning learning rate (5e-5)"},
                                       "epochs": {"help": "fine-tuning epochs (default: the step budget, "
                                                          "with early stopping)"}}, title="training")
    add_settings(ft, ("tensorboard", *OUTPUT), defaults)
    _cli_only(ft)


def _prune_parser(sub) -> None:
    defaults = {"prune_heads": 0.0, "prune_ffn": 0.0, "hidden_weight": 0.0, "lr": 1e-4, "epochs": 1.0,
                "teacher": "", "output_dir": "runs/pruned"}
    pr = _subparser(sub, "prune", "structured pruning of any HF model dir, with optional recovery distillation",
                    EXAMPLE_PRUNE, commands.cmd_prune, **defaults)
    pr.add_argument("model_dir", help="a Hugging Face model dir (bare encoder or with a task head)")
    add_settings(pr, ("prune_heads", "prune_ffn", "prune_hidden", "prune_layers", "prune_importance", "prune_steps",
                      "teacher", "temperature", "hidden_weight"), defaults, {
        "prune_heads": {"flags": ("--heads",), "help": "fraction of heads removed per layer, with the hidden width "
                                                       "unless --hidden is given"},
        "prune_ffn": {"flags": ("--ffn",), "help": "fraction of FFN neurons removed"},
        "prune_hidden": {"flags": ("--hidden",), "help": "fraction of hidden width removed"},
        "prune_layers": {"flags": ("--layers",), "help": "transformer layers kept"},
        "prune_importance": {"flags": ("--importance",), "help": "magnitude (data-free), taylor (task gradients) or "
                                                                 "distillation (needs --teacher)"},
        "prune_steps": {"flags": ("--steps",), "help": "iterative steps, each with recovery (1)"},
        "teacher": {"action": "store", "help": "teacher for recovery distillation (needs --task/--data)"},
        "temperature": {"help": "KD temperature for recovery (2.0)"},
        "hidden_weight": {"help": "weight of the hidden-state MSE to the teacher during recovery (0 = logits only)"}})
    add_settings(pr, DATA, defaults, title="task and data")
    add_settings(pr, TRAIN, defaults, {"lr": {"help": "recovery learning rate (1e-4)"},
                                       "epochs": {"help": "recovery epochs (1)"}}, title="training")
    add_settings(pr, OUTPUT, defaults)
    _cli_only(pr)


def _quantize_parser(sub) -> None:
    defaults = {"output_dir": "runs/int8"}
    qz = _subparser(sub, "quantize", "INT8 ONNX bundle of any model dir (dynamic, or static with calibration)",
                    EXAMPLE_QUANTIZE, commands.cmd_quantize, **defaults)
    qz.add_argument("model_dir", help="a Hugging Face model dir (bare encoder or with a task head)")
    add_settings(qz, ("quantize_mode", "quantize_target", "calibration", "calibration_samples", "data", "task",
                      "text_columns", "label_column", "max_seq_length", "max_train_samples", "latency_runs",
                      *OUTPUT), defaults, {
        "quantize_mode": {"flags": ("--mode",)},
        "quantize_target": {"flags": ("--target",), "help": "avx512_vnni, avx2 or arm64 (default: this CPU's)"},
        "data": {"flags": ("--calibration-data",), "help": "local data (same formats as run --data)"},
        "task": {"help": "task of --calibration-data when it is a GLUE dir (e.g. mrpc)"},
        "max_train_samples": {"help": "read at most N rows of --calibration-data"}})
    _cli_only(qz)


def _eval_parser(sub) -> None:
    ev = _subparser(sub, "eval", "score model dirs and ONNX files against a teacher on the dev set", EXAMPLE_EVAL,
                    commands.cmd_eval, output_dir=".")
    ev.add_argument("models", nargs="+", metavar="MODEL", help="model dirs or .onnx files")
    add_setting(ev, "teacher", action="store", required=True, help="alias, model dir or Hub id with a trained head")
    add_settings(ev, DATA, title="task and data")
    add_settings(ev, ("batch_size", "latency_runs", "device"))
    ev.add_argument("--json", dest="json_out", help="also write the scores to this JSON file")
    ev.add_argument("--offline", action="store_true", help="no network access at all")


def _check_parser(sub) -> None:
    ck = _subparser(sub, "check", "which loss terms and inits a teacher/student pair supports, before training",
                    EXAMPLE_CHECK, commands.cmd_check, prune=False, quantize=False)
    add_settings(ck, ("teacher", "student", "task", "layer_selection"), overrides={
        "teacher": {"required": True, "help": "alias, model dir or Hub id (repeatable)"},
        "student": {"help": "preset, model dir or Hub id (tiny)"},
        "task": {"help": "task name (token classification cannot use KD across tokenizers)"},
        "layer_selection": {"help": "as for `distill run` (uniform)"}})
    ck.add_argument("--json", dest="json_out", help="also write the result to this JSON file")
    ck.add_argument("--offline", action="store_true", help="no network access at all")


def _report_parser(sub) -> None:
    rp = _subparser(sub, "report", "rewrite a run's report.{json,md,html}; compare several runs side by side",
                    EXAMPLE_REPORT, commands.cmd_report)
    rp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="output dirs of `distill run`")
    rp.add_argument("--output-dir", help="where a comparison goes (default: the runs' common parent)")
    add_settings(rp, commands.GATES, title="quality gates (exit code 1 when the final stage misses one)")


def _tool_parsers(sub) -> None:
    """``export``, ``presets`` and ``env``: ship what a run wrote; describe this package and this machine."""
    ex = _subparser(sub, "export", "ship an INT8 model: model.onnx, tokenizer, config, labels and a README",
                    EXAMPLE_EXPORT, commands.cmd_export)
    ex.add_argument("source", metavar="RUN_DIR_OR_ONNX", help="a run dir, an INT8 dir or its model.onnx")
    ex.add_argument("--output-dir", required=True, help="the bundle folder to write")
    ex.add_argument("--overwrite", action="store_true", help="replace a non-empty output dir")
    ex.add_argument("--quiet", action="store_true", help="no status line")
    _subparser(sub, "presets", "list student presets, teacher aliases, tasks and quantization targets",
               "example:\n  distill presets", commands.cmd_presets)
    _subparser(sub, "env", "versions, CPU features and GPU of this machine (paste it into bug reports)",
               "example:\n  distill env", commands.cmd_env)


def build_parser() -> argparse.ArgumentParser:
    """The whole ``distill`` command line."""
    parser = argparse.ArgumentParser(
        prog="distill", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Distil a large transformer into a small student, prune it, quantize it to INT8, "
                    "and score every stage against the teacher.", epilog=EXAMPLE_RUN)
    parser.add_argument("--log-level", default="WARNING", help="library log level (WARNING)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _run_parser(sub, "run", "the whole pipeline: teacher → student → prune → INT8 → report", EXAMPLE_RUN)
    _run_parser(sub, "distil", "distillation only: teacher → student → report (no pruning, no INT8)",
                EXAMPLE_DISTIL, prune=False, quantize=False)
    _finetune_parser(sub)
    _prune_parser(sub)
    _quantize_parser(sub)
    _eval_parser(sub)
    _report_parser(sub)
    _check_parser(sub)
    _tool_parsers(sub)
    return parser

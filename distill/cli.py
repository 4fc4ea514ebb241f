"""The ``distill`` command line: argparse subcommands whose handlers import the heavy modules lazily."""

from __future__ import annotations

import argparse
import os
import sys

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


def _common_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("task and data")
    g.add_argument("--task", help="GLUE task name (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli)")
    g.add_argument("--data", help="a demo data set shipped with the package (sst2-demo; `distill presets` lists them), "
                                  "or local data: a GLUE-format dir (train.tsv, dev.tsv) or a csv/tsv/jsonl file/dir")
    g.add_argument("--text-column", "--text-columns", dest="text_columns", nargs="+",
                   help="text column(s) of a local csv/tsv/jsonl file (two for sentence pairs)")
    g.add_argument("--label-column", help="label column of a local file")
    g.add_argument("--max-seq-length", type=int, default=128, help="truncate inputs to this many tokens (128)")
    g.add_argument("--max-train-samples", type=int,
                   help="use at most N training examples (also caps teacher fine-tuning)")


def _common_train_args(p: argparse.ArgumentParser, lr: float | None, epochs: float, what: str):
    g = p.add_argument_group("training")
    default = f"{lr:g}" if lr else ("1e-4 for layers taken from the teacher, else 1e-3 × min(1, 128/hidden "
                                    "size): 1e-3 for tiny, 2.5e-4 for small")
    g.add_argument("--lr", type=float, default=lr, help=f"{what} learning rate ({default})")
    g.add_argument("--epochs", type=float, default=epochs, help=f"{what} epochs ({epochs:g})")
    g.add_argument("--batch-size", type=int, default=32, help="batch size (32)")
    g.add_argument("--seed", type=int, default=42, help="random seed (42)")
    g.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    g.add_argument("--grad-accum", dest="grad_accum_steps", type=int, default=1,
                   help="micro-batches per optimiser step (1)")
    g.add_argument("--no-group-by-length", dest="group_by_length", action="store_false",
                   help="plain random batches instead of length-grouped ones (more padding)")
    g.add_argument("--compile", action="store_true", help="torch.compile the student (pays off on GPU)")
    g.add_argument("--teacher-dtype", default="fp32", choices=("fp32", "bf16", "fp16"),
                   help="teacher precision on GPU (fp32; bf16 halves its memory)")
    g.add_argument("--teacher-shard", default="auto", choices=("auto", "none", "fsdp"),
                   help="under `accelerate launch`, fsdp splits the teacher's weights across the processes (for "
                        "teachers that do not fit one device; the student stays DDP); auto: fsdp when launched "
                        "with --use_fsdp")
    return g


def _output_args(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--output-dir", default=default, help=f"where to write (default {default})")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output dir")
    p.add_argument("--quiet", action="store_true", help="no progress output, only the final table")
    g = p.add_argument_group("safety")
    g.add_argument("--offline", action="store_true", help="no network access at all (Hub lookups fail fast)")
    g.add_argument("--allow-pickle", action="store_true",
                   help="also load pickle checkpoints (pytorch_model.bin), which can run code: trusted files only")
    g.add_argument("--trust-remote-code", action="store_true",
                   help="run modelling code shipped with a checkpoint: trusted sources only")


def _tensorboard_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tensorboard", action="store_true",
                   help="log loss terms per step and dev metrics per epoch to OUTPUT/tensorboard (needs tensorboard)")


def _gate_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("quality gates (exit code 1 when the final stage misses one)")
    g.add_argument("--min-retention", type=float, help="e.g. 0.97: final metric ≥ 97%% of the teacher's")
    g.add_argument("--max-latency-ms", type=float, help="e.g. 5: final latency (batch 1) at most 5 ms")
    g.add_argument("--max-size-mb", type=float, help="e.g. 10: final artifact at most 10 MB")


def _gate_failures(report: dict, args) -> int:
    from distill.report import check_gates

    if not report:  # a secondary process of a multi-process run: the main one scores and gates
        return 0

    failures = check_gates(report, min_retention=args.min_retention, max_latency_ms=args.max_latency_ms,
                           max_size_mb=args.max_size_mb)
    for line in failures:
        print(line, file=sys.stderr)
    return 1 if failures else 0


def _names(text: str) -> list[str]:
    """``A,B`` -> ["A", "B"] (teacher names)."""
    return [t.strip() for t in text.split(",") if t.strip()]


def _floats(text: str) -> list[float]:
    """``0.7,0.3`` -> [0.7, 0.3]."""
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of numbers") from None


def _schedules() -> list[str]:
    from distill.schedules import SCHEDULES

    return SCHEDULES.names()


def _add_run_args(run: argparse.ArgumentParser) -> None:
    """The flags of `distill run` (and of `distill distil`, which only changes two defaults)."""
    run.add_argument("--config", help="a YAML recipe (only changes from the defaults), e.g. "
                                      "experiments/recipes/sst2-mini.yaml")
    run.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                     help="override one recipe value, e.g. --set train.lr=5e-5 (repeatable)")
    run.add_argument("--teacher", action="append",
                     help="alias (bert-base, bert-large, minilm, ...), model dir or Hub id; repeat it for several "
                          "teachers (the first is the one the report compares to)")
    run.add_argument("--teachers", type=_names, metavar="A,B",
                     help="several teachers at once (instead of repeating --teacher)")
    run.add_argument("--teacher-weights", type=_floats, metavar="W1,W2",
                     help="weights of the teachers' soft targets and feature terms (default: equal)")
    run.add_argument("--student", default="tiny", help="preset (tiny, mini, small, medium), model dir or Hub id "
                                                       "(a student with its own tokenizer gets logit KD only)")
    run.add_argument("--init", default="auto",
                     choices=("auto", "random", "teacher-layers", "teacher-embeddings", "teacher-pruned"),
                     help="student init: teacher-layers copies teacher layers (equal widths only), "
                          "teacher-embeddings projects the teacher's embeddings, teacher-pruned prunes the teacher "
                          "down to the preset's layers, hidden and FFN widths (head size kept); auto picks the first "
                          "that fits of teacher-layers, teacher-pruned, teacher-embeddings")
    run.add_argument("--layer-selection", default="uniform", metavar="uniform|first-k|last-k|0,2,5",
                     help="teacher layers for teacher-layers/teacher-pruned: every k-th (uniform), the first or last "
                          "k, or an explicit 0-based list (uniform)")
    _common_data_args(run)
    g = run.add_argument_group("augmentation (TinyBERT-style)")
    g.add_argument("--augment", type=int, default=0, metavar="N",
                   help="N masked-LM rewrites of each training example, learned from the teacher's soft targets (0)")
    g.add_argument("--augment-mlm", metavar="DIR",
                   help="masked LM for --augment (default: the teacher checkpoint's own MLM head)")
    g = run.add_argument_group("distillation loss")
    g.add_argument("--temperature", type=float, default=2.0, help="softmax temperature T (2.0)")
    g.add_argument("--alpha", type=float, default=0.5, help="weight of hard-label CE; 1-alpha weighs T²·KL (0.5)")
    g.add_argument("--hidden-weight", type=float, default=0.1, help="β, weight of hidden-state MSE (0.1; 0 = off)")
    g.add_argument("--attention-weight", type=float, default=0.0, help="weight of the attention-map loss (TinyBERT)")
    g.add_argument("--attention-loss", default="kl", choices=("kl", "mse"), help="attention-map loss (kl)")
    g.add_argument("--embedding-weight", type=float, default=0.0, help="weight of the embedding-layer MSE")
    g.add_argument("--cosine-weight", type=float, default=0.0, help="weight of the hidden-state cosine loss")
    g.add_argument("--relation-weight", type=float, default=0.0,
                   help="weight of the MiniLMv2 Q-Q/K-K/V-V self-attention relation loss")
    g.add_argument("--relation-heads", type=int, help="relation heads (default: the student's head count)")
    g.add_argument("--relation-layer", type=int, default=-1, help="teacher layer for relations (1-based; -1 = last)")
    for name, end in (("temperature", "temperature-end"), ("alpha", "alpha-end"), ("feature", "feature-scale-end")):
        g.add_argument(f"--{name}-schedule", default="constant", choices=_schedules(),
                       help=f"schedule of the {name} (weight) over training (constant)")
        g.add_argument(f"--{end}", type=float, help=f"final value for --{name}-schedule")
    g = _common_train_args(run, None, 3.0, "distillation")
    g.add_argument("--cache-teacher", action="store_true",
                   help="run the teacher once over the training set and reuse its outputs from disk "
                        "(OUTPUT/teacher_cache; later epochs, recovery and later runs skip the teacher)")
    g.add_argument("--cache-top-k", type=int, default=20, help="logits kept per row in the cache (20)")
    g.add_argument("--teacher-lr", type=float, default=5e-5, help="teacher fine-tuning learning rate (5e-5)")
    g.add_argument("--teacher-epochs", type=float, default=3.0, help="teacher fine-tuning epochs (3)")
    g = run.add_argument_group("compression")
    g.add_argument("--prune-heads", type=float, default=0.5, help="fraction of heads (with hidden width) removed (0.5)")
    g.add_argument("--prune-ffn", type=float, default=0.5, help="fraction of FFN neurons removed (0.5)")
    g.add_argument("--prune-hidden", type=float,
                   help="fraction of hidden width removed on its own (default: with the heads; 0 = keep it)")
    g.add_argument("--prune-layers", type=int, help="transformer layers kept (default: all)")
    g.add_argument("--prune-importance", default="magnitude", help="magnitude, taylor or distillation (magnitude)")
    g.add_argument("--prune-steps", type=int, default=1, help="iterative pruning steps, each with recovery (1)")
    g.add_argument("--recover-epochs", type=float, default=1.0, help="distillation epochs after pruning (1)")
    g.add_argument("--no-prune", dest="prune", action="store_false", help="skip pruning")
    g.add_argument("--no-quantize", dest="quantize", action="store_false", help="skip INT8 quantization")
    g.add_argument("--quantize-mode", default="dynamic", choices=("dynamic", "static"),
                   help="dynamic INT8, or static INT8 (QDQ) calibrated on training batches (dynamic)")
    g.add_argument("--quantize-target", help="avx512_vnni, avx2 or arm64 (default: detected from this CPU)")
    g.add_argument("--calibration", default="minmax", choices=("minmax", "percentile", "entropy"),
                   help="static calibration method (minmax)")
    g.add_argument("--calibration-samples", type=int, default=128, help="rows used for calibration (128)")
    g.add_argument("--max-int8-drop", "--max-drop", dest="max_int8_drop", type=float,
                   help="accuracy-aware INT8: keep the most sensitive layers FP32 until the drop ≤ this (e.g. 0.01)")
    g.add_argument("--qat", action="store_true", help="quantization-aware distillation instead of post-training")
    g.add_argument("--latency-runs", type=int, default=30, help="timed runs per latency measurement (30)")
    _tensorboard_arg(run)
    _gate_args(run)
    _output_args(run, "runs/distill")
    g = run.add_argument_group("interrupted runs")
    g.add_argument("--resume", metavar="OUTPUT",
                   help="continue the run in OUTPUT with its saved settings (OUTPUT/config.yaml): finished stages "
                        "are skipped, the interrupted one continues from its last complete checkpoint")
    g.add_argument("--checkpoint-every", type=int, default=500, metavar="N",
                   help="write a training checkpoint every N optimiser steps, besides each epoch end (500; 0 = "
                        "epoch ends only); Ctrl-C/SIGTERM also write one after the current step")
    g.add_argument("--keep-checkpoints", type=int, default=2, metavar="K",
                   help="keep the last K checkpoints of the running stage (2); a damaged one falls back to the one "
                        "before")
    g.add_argument("--skip-nonfinite", action="store_true",
                   help="skip batches whose loss is NaN/inf (counted in the report) instead of stopping the run")


RESUME_FLAGS = {"checkpoint_every", "keep_checkpoints", "skip_nonfinite"}  # may change on --resume


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distill", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Distil a large transformer into a small student, prune it, quantize it to INT8, "
                    "and score every stage against the teacher.", epilog=EXAMPLE_RUN)
    parser.add_argument("--log-level", default="WARNING", help="library log level (WARNING)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="the whole pipeline: teacher → student → prune → INT8 → report",
                         formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLE_RUN)
    _add_run_args(run)
    run.set_defaults(func=cmd_run)

    dl = sub.add_parser("distil", help="distillation only: teacher → student → report (no pruning, no INT8)",
                        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLE_DISTIL)
    _add_run_args(dl)
    dl.set_defaults(func=cmd_run, prune=False, quantize=False)

    ft = sub.add_parser("finetune-teacher", help="fine-tune a teacher on the task (the run's first stage alone)",
                        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLE_FT)
    ft.add_argument("--teacher", required=True, help="alias, model dir or Hub id")
    _common_data_args(ft)
    _common_train_args(ft, 5e-5, 3.0, "fine-tuning")
    _tensorboard_arg(ft)
    _output_args(ft, "runs/teacher")
    ft.set_defaults(func=cmd_finetune_teacher)

    pr = sub.add_parser("prune", help="structured pruning of any HF model dir, with optional recovery distillation",
                        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLE_PRUNE)
    pr.add_argument("model_dir", help="a Hugging Face model dir (bare encoder or with a task head)")
    pr.add_argument("--heads", dest="prune_heads", type=float, default=0.0,
                    help="fraction of heads removed per layer, with the hidden width unless --hidden is given")
    pr.add_argument("--ffn", dest="prune_ffn", type=float, default=0.0, help="fraction of FFN neurons removed")
    pr.add_argument("--hidden", dest="prune_hidden", type=float, help="fraction of hidden width removed")
    pr.add_argument("--layers", dest="prune_layers", type=int, help="transformer layers kept")
    pr.add_argument("--importance", dest="prune_importance", default="magnitude",
                    help="magnitude (data-free), taylor (task gradients) or distillation (needs --teacher)")
    pr.add_argument("--steps", dest="prune_steps", type=int, default=1, help="iterative steps, each with recovery (1)")
    pr.add_argument("--teacher", default="", help="teacher for recovery distillation (needs --task/--data)")
    pr.add_argument("--temperature", type=float, default=2.0, help="KD temperature for recovery (2.0)")
    pr.add_argument("--hidden-weight", type=float, default=0.0,
                    help="weight of the hidden-state MSE to the teacher during recovery (0 = logits only)")
    _common_data_args(pr)
    _common_train_args(pr, 1e-4, 1.0, "recovery")
    _output_args(pr, "runs/pruned")
    pr.set_defaults(func=cmd_prune)

    qz = sub.add_parser("quantize", help="INT8 ONNX bundle of any model dir (dynamic, or static with calibration)",
                        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLE_QUANTIZE)
    qz.add_argument("model_dir", help="a Hugging Face model dir (bare encoder or with a task head)")
    qz.add_argument("--mode", dest="quantize_mode", default="dynamic", choices=("dynamic", "static"))
    qz.add_argument("--target", dest="quantize_target", help="avx512_vnni, avx2 or arm64 (default: this CPU's)")
    qz.add_argument("--calibration", default="minmax", choices=("minmax", "percentile", "entropy"))
    qz.add_argument("--calibration-samples", type=int, default=128, help="rows used for calibration (128)")
    qz.add_argument("--calibration-data", dest="data", help="local data (same formats as run --data)")
    qz.add_argument("--task", help="task of --calibration-data when it is a GLUE dir (e.g. mrpc)")
    qz.add_argument("--text-column", "--text-columns", dest="text_columns", nargs="+")
    qz.add_argument("--label-column")
    qz.add_argument("--max-seq-length", type=int, default=128)
    qz.add_argument("--max-train-samples", type=int, help="read at most N rows of --calibration-data")
    qz.add_argument("--latency-runs", type=int, default=30)
    _output_args(qz, "runs/int8")
    qz.set_defaults(func=cmd_quantize)

    ev = sub.add_parser("eval", help="score model dirs and ONNX files against a teacher on the dev set",
                        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLE_EVAL)
    ev.add_argument("models", nargs="+", metavar="MODEL", help="model dirs or .onnx files")
    ev.add_argument("--teacher", required=True, help="alias, model dir or Hub id with a trained head")
    _common_data_args(ev)
    ev.add_argument("--batch-size", type=int, default=32)
    ev.add_argument("--latency-runs", type=int, default=30)
    ev.add_argument("--device", default="auto")
    ev.add_argument("--json", dest="json_out", help="also write the scores to this JSON file")
    ev.add_argument("--offline", action="store_true", help="no network access at all")
    ev.set_defaults(func=cmd_eval)

    rp = sub.add_parser("report", help="rewrite a run's report.{json,md,html}; compare several runs side by side",
                        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLE_REPORT)
    rp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="output dirs of `distill run`")
    rp.add_argument("--output-dir", help="where a comparison goes (default: the runs' common parent)")
    _gate_args(rp)
    rp.set_defaults(func=cmd_report)

    ck = sub.add_parser("check", help="which loss terms and inits a teacher/student pair supports, before training",
                        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLE_CHECK)
    ck.add_argument("--teacher", action="append", required=True, help="alias, model dir or Hub id (repeatable)")
    ck.add_argument("--student", default="tiny", help="preset, model dir or Hub id (tiny)")
    ck.add_argument("--task", help="task name (token classification cannot use KD across tokenizers)")
    ck.add_argument("--layer-selection", default="uniform", help="as for `distill run` (uniform)")
    ck.add_argument("--json", dest="json_out", help="also write the result to this JSON file")
    ck.add_argument("--offline", action="store_true", help="no network access at all")
    ck.set_defaults(func=cmd_check)
    ex = sub.add_parser("export", help="ship an INT8 model: model.onnx, tokenizer, config, labels and a README",
                        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLE_EXPORT)
    ex.add_argument("source", metavar="RUN_DIR_OR_ONNX", help="a run dir, an INT8 dir or its model.onnx")
    ex.add_argument("--output-dir", required=True, help="the bundle folder to write")
    ex.add_argument("--overwrite", action="store_true", help="replace a non-empty output dir")
    ex.add_argument("--quiet", action="store_true", help="no status line")
    ex.set_defaults(func=cmd_export)

    ps = sub.add_parser("presets", help="list student presets, teacher aliases, tasks, demo data, quantization targets",
                        epilog="example:\n  distill presets", formatter_class=argparse.RawDescriptionHelpFormatter)
    ps.set_defaults(func=cmd_presets)
    en = sub.add_parser("env", help="versions, CPU features and GPU of this machine (paste it into bug reports)",
                        epilog="example:\n  distill env", formatter_class=argparse.RawDescriptionHelpFormatter)
    en.set_defaults(func=cmd_env)
    return parser


def _explicit(args: argparse.Namespace) -> dict:
    """Flags the user actually typed, also when the value equals the default (``--epochs 3`` over a recipe's 10)."""
    typed = getattr(args, "_typed", None)
    if typed is None:  # a namespace not made by ``main``: fall back on values that differ from the defaults
        parser = args._parser
        return {k: v for k, v in vars(args).items() if v is not None and v != parser.get_default(k)}
    return {k: getattr(args, k) for k in typed if getattr(args, k, None) is not None}


def _typed_dests(argv: list[str]) -> set[str]:
    """The destinations the command line sets: ``argv`` parsed again with every default suppressed."""
    fresh = build_parser()
    for p in (fresh, *fresh._subparsers._group_actions[0].choices.values()):
        for action in p._actions:
            action.default = argparse.SUPPRESS
        p._defaults.clear()
    return set(vars(fresh.parse_args(argv)))


def _run_config(args: argparse.Namespace, **fixed):
    """defaults < recipe (--config) < typed flags < --set, checked by RunConfig."""
    from dataclasses import fields

    from distill.core.errors import ConfigError
    from distill.pipeline import RunConfig
    from distill.recipe import load_recipe, parse_overrides

    names = {f.name for f in fields(RunConfig)}
    values = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if getattr(args, "config", None):
        values.update(load_recipe(args.config))
        values.update({k: v for k, v in _explicit(args).items() if k in names})
    values.update(parse_overrides(getattr(args, "set", [])))
    values.update(fixed)
    _teacher_list(values, args)
    if not values.get("teacher") and "teacher" not in fixed:
        raise ConfigError("no teacher given", "pass --teacher NAME_OR_DIR or set teacher.name in the recipe")
    try:
        return RunConfig(**values)
    except TypeError as exc:
        raise ConfigError(f"bad setting ({exc})", "check the recipe and flags") from None


def _teacher_list(values: dict, args: argparse.Namespace) -> None:
    """``--teacher A --teacher B`` or ``--teachers A,B`` -> teacher (the first) and teachers (all, when several)."""
    from distill.core.errors import ConfigError

    typed, many = getattr(args, "teacher", None), getattr(args, "teachers", None)
    if isinstance(typed, list) and many:
        raise ConfigError("both --teacher and --teachers are given", "give --teacher A --teacher B, or --teachers A,B")
    if isinstance(values.get("teacher"), list):
        names = values["teacher"]
        values["teacher"], values["teachers"] = names[0], (names if len(names) > 1 else None)
    elif many:
        values["teacher"] = many[0]


def _resume_config(args: argparse.Namespace):
    """The settings saved in OUTPUT/config.yaml, with only the checkpoint flags changeable."""
    from dataclasses import fields
    from pathlib import Path

    import yaml

    from distill.core.errors import ConfigError
    from distill.pipeline import RunConfig
    from distill.recipe import recipe_to_fields

    out = Path(args.resume)
    saved = out / "config.yaml"
    if not saved.is_file():
        raise ConfigError(f"'{out}' holds no config.yaml, so there is no run to resume",
                          "pass the --output-dir of an earlier `distill run`")
    names = {f.name for f in fields(RunConfig)}
    changed = sorted(k for k in _explicit(args) if k in names and k not in RESUME_FLAGS)
    if changed or getattr(args, "config", None) or getattr(args, "set", None):
        flags = ", ".join("--" + k.replace("_", "-") for k in changed) or "--config/--set"
        raise ConfigError(f"--resume takes every setting from {saved}, so {flags} cannot change them",
                          "drop them, or start a new run in another --output-dir")
    try:
        values = recipe_to_fields(yaml.safe_load(saved.read_text()) or {})
    except yaml.YAMLError:
        raise ConfigError(f"{saved} is not valid YAML", "restore it, or start a new run") from None
    values.update({k: v for k, v in _explicit(args).items() if k in RESUME_FLAGS})
    values.update(output_dir=str(out), overwrite=False)
    try:
        return RunConfig(**values)
    except TypeError as exc:
        raise ConfigError(f"bad setting in {saved} ({exc})", "restore it, or start a new run") from None


def cmd_run(args: argparse.Namespace) -> int:
    from distill.pipeline import run

    resume = bool(getattr(args, "resume", None))
    cfg = _resume_config(args) if resume else _run_config(args)
    return _gate_failures(run(cfg, resume=resume), cfg)  # the gates of the run's settings (recipe or flags)


def cmd_report(args: argparse.Namespace) -> int:
    from distill.compare import report_runs
    from distill.core.console import out
    from distill.report import render_table

    result = report_runs(args.run_dirs, args.output_dir, min_retention=args.min_retention,
                         max_latency_ms=args.max_latency_ms, max_size_mb=args.max_size_mb)
    for report in result.reports.values():
        out.print(render_table(report))
    for line in result.failures:
        print(line, file=sys.stderr)
    return 1 if result.failures else 0


def cmd_prune(args: argparse.Namespace) -> int:
    from distill.pipeline import prune_only

    prune_only(_run_config(args, teacher=args.teacher, student=args.model_dir,
                           recover_epochs=args.epochs),
               args.model_dir)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from rich.table import Table

    from distill.core.artifacts import write_json
    from distill.core.console import out
    from distill.pipeline import RunConfig, check_pair

    names = args.teacher
    result = check_pair(RunConfig(teacher=names[0], teachers=names if len(names) > 1 else None,
                                  student=args.student, task=args.task, layer_selection=args.layer_selection,
                                  prune=False, quantize=False))
    for pair in result["pairs"]:
        tokens = ("the same tokenizer" if pair["same_tokenizer"] else
                  f"different tokenizers ({pair['student_vocab']} and {pair['teacher_vocab']} tokens): each "
                  "tokenizes the raw text")
        table = Table(title=f"teacher {pair['teacher']} ({pair['teacher_shape']}) → student {pair['student']} "
                            f"({pair['student_shape']}): {tokens}")
        for col in ("term / init", "supported", "why not"):
            table.add_column(col)
        for kind in ("losses", "inits"):
            for name, why in pair[kind].items():
                label = name if kind == "losses" else f"--init {name}"
                table.add_row(label, "yes" if why is None else "no", why or "")
        out.print(table)
    if args.json_out:
        write_json(args.json_out, result)
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from rich.table import Table

    from distill.core.console import out
    from distill.tasks import TASKS
    from students import PRESETS
    from teachers import TEACHERS

    students = Table(title="student presets (BERT; vocabulary and positions from the teacher)")
    for col in ("name", "layers", "hidden", "heads", "FFN", "params (30,522-token vocab)"):
        students.add_column(col)
    for name, p in PRESETS.items():
        emb = 30522 * p.hidden + 512 * p.hidden + 2 * p.hidden + 2 * p.hidden
        layer = 4 * (p.hidden * p.hidden + p.hidden) + 2 * p.hidden * p.ffn + p.ffn + p.hidden + 4 * p.hidden
        params = emb + p.layers * layer + p.hidden * p.hidden + p.hidden
        students.add_row(name, str(p.layers), str(p.hidden), str(p.heads), str(p.ffn), f"{params / 1e6:.1f}M")
    teachers = Table(title="teacher aliases")
    teachers.add_column("alias")
    teachers.add_column("source")
    for name, source in TEACHERS.items():
        teachers.add_row(name, source if isinstance(source, str) else (source.__doc__ or "").strip())
    tasks = Table(title="tasks")
    for col in ("name", "text columns", "labels", "metrics"):
        tasks.add_column(col)
    for name, t in TASKS.items():
        tasks.add_row(name, ", ".join(t.text_columns), "regression" if t.is_regression else str(t.num_labels),
                      ", ".join(t.metrics))
    for table in (students, teachers, tasks, _demo_table(), *_target_tables()):
        out.print(table)
    return 0


def _demo_table():
    """The demo data sets shipped inside the package (``--data NAME``)."""
    from rich.table import Table

    from distill.demo import DEMOS

    table = Table(title="demo data (--data NAME: shipped with the package, offline; source and licence in its README)")
    for col in ("name", "task", "what", "citation"):
        table.add_column(col)
    for name, demo in DEMOS.items():
        table.add_row(name, demo.task, demo.description, demo.citation)
    return table


def _target_tables():
    from rich.table import Table

    try:
        from compress.targets import TARGETS, detect_target
    except ImportError:
        return []
    default = detect_target()
    table = Table(title=f"quantization targets (this machine: {default})")
    table.add_column("target")
    table.add_column("settings")
    for name, target in TARGETS.items():
        table.add_row(name, target.about)
    return [table]


def cmd_env(args: argparse.Namespace) -> int:
    import json

    from distill.core.console import out
    from distill.core.runtime import environment_info

    info = environment_info()
    try:
        from compress.targets import cpu_flags, detect_target

        flags = cpu_flags()
        info["cpu_features"] = sorted(f for f in flags if f.startswith(("avx", "amx", "sse4", "fma", "neon", "asimd")))
        info["quantization_target"] = detect_target()
    except ImportError:
        pass
    out.print_json(json.dumps(info, default=str))
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from distill.pipeline import quantize_only

    quantize_only(_run_config(args, teacher="", student=args.model_dir), args.model_dir)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from distill.core.artifacts import write_json
    from distill.pipeline import eval_only

    report = eval_only(_run_config(args, output_dir="."), args.models)
    if args.json_out:
        write_json(args.json_out, report)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from compress.bundle import export_bundle, resolve_export_source
    from distill.core.console import info
    from distill.pipeline import check_output_dir

    resolve_export_source(args.source)  # a bad source is named before the output dir
    check_output_dir(Path(args.output_dir), args.overwrite)
    out = export_bundle(args.source, args.output_dir)
    info(f"bundle written to {out} (see its README.md)")
    return 0


def cmd_finetune_teacher(args: argparse.Namespace) -> int:
    from distill.pipeline import finetune_only

    finetune_only(_run_config(args, teacher_lr=args.lr, teacher_epochs=args.epochs))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: returns the exit code (0 ok, 1 gate failed or run failed part-way, 2 bad input,
    130/143 interrupted by SIGINT/SIGTERM)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "command", None):
        args._parser = parser._subparsers._group_actions[0].choices[args.command]
        args._typed = _typed_dests(sys.argv[1:] if argv is None else list(argv))
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from distill.core.console import configure_logging, console, quiet_libraries, set_quiet
    from distill.core.errors import DistillError
    from distill.core.runtime import LoadPolicy, go_offline, process_rank, single_cpu_launch_note, using_load_policy
    from distill.interrupts import graceful

    configure_logging(args.log_level)
    quiet_libraries(args.log_level)
    rank = process_rank()
    if rank and args.func in (cmd_quantize, cmd_eval, cmd_report, cmd_presets, cmd_env, cmd_export, cmd_check):
        return 0  # nothing to train: under accelerate launch the main process does it alone
    set_quiet(getattr(args, "quiet", False) or rank != 0)  # only the main process prints
    if note := single_cpu_launch_note():
        console.print(note, style="yellow", highlight=False, markup=False, soft_wrap=True)
    if getattr(args, "offline", False):
        go_offline()
    policy = LoadPolicy(getattr(args, "allow_pickle", False), getattr(args, "trust_remote_code", False))
    try:
        with using_load_policy(policy), graceful():
            return args.func(args)
    except DistillError as exc:
        line = exc.line() if rank == 0 else f"[rank {rank}] {exc.line()}"
        console.print(line, style="bold red", highlight=False, markup=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # distill.interrupts.Interrupted says where, and how to resume
        line = exc.line() if hasattr(exc, "line") else "interrupted"
        console.print(line, style="bold red", highlight=False, markup=False, soft_wrap=True)
        return getattr(exc, "exit_code", 130)
    finally:
        if "distill.tracking" in sys.modules:  # flush TensorBoard event files, whatever happened
            sys.modules["distill.tracking"].stop_tracking()


if __name__ == "__main__":
    sys.exit(main())

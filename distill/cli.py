"""The ``distill`` command line: argparse subcommands whose handlers import the heavy modules lazily."""

from __future__ import annotations

import argparse
import os
import sys

EXAMPLE_RUN = """example (offline, local teacher and GLUE-format data):
  distill run --teacher path/to/minilm --student tiny --task sst2 --data ../shared/data/SST-2 \\
      --max-train-samples 2000 --output-dir runs/sst2-tiny
example (with internet):
  distill run --teacher bert-large --student tiny --task sst2 --output-dir runs/sst2-tiny"""

EXAMPLE_FT = """example:
  distill finetune-teacher --teacher minilm --task sst2 --data ../shared/data/SST-2 --output-dir runs/minilm-sst2"""


def _common_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("task and data")
    g.add_argument("--task", help="GLUE task name (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli)")
    g.add_argument("--data", help="local data: a GLUE-format dir (train.tsv, dev.tsv) or a csv/tsv/jsonl file or dir")
    g.add_argument("--text-column", "--text-columns", dest="text_columns", nargs="+",
                   help="text column(s) of a local csv/tsv/jsonl file (two for sentence pairs)")
    g.add_argument("--label-column", help="label column of a local file")
    g.add_argument("--max-seq-length", type=int, default=128, help="truncate inputs to this many tokens (128)")
    g.add_argument("--max-train-samples", type=int,
                   help="use at most N training examples (also caps teacher fine-tuning)")


def _common_train_args(p: argparse.ArgumentParser, lr: float | None, epochs: float, what: str):
    g = p.add_argument_group("training")
    default = f"{lr:g}" if lr else "1e-3 for students trained from scratch or projected embeddings, else 1e-4"
    g.add_argument("--lr", type=float, default=lr, help=f"{what} learning rate ({default})")
    g.add_argument("--epochs", type=float, default=epochs, help=f"{what} epochs ({epochs:g})")
    g.add_argument("--batch-size", type=int, default=32, help="batch size (32)")
    g.add_argument("--seed", type=int, default=42, help="random seed (42)")
    g.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    return g


def _output_args(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--output-dir", default=default, help=f"where to write (default {default})")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output dir")
    p.add_argument("--quiet", action="store_true", help="no progress output, only the final table")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distill", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Distil a large transformer into a small student, prune it, quantize it to INT8, "
                    "and score every stage against the teacher.", epilog=EXAMPLE_RUN)
    parser.add_argument("--log-level", default="WARNING", help="library log level (WARNING)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="the whole pipeline: teacher → student → prune → INT8 → report",
                         formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLE_RUN)
    run.add_argument("--teacher", required=True, help="alias (bert-base, bert-large, minilm, ...), model dir or Hub id")
    run.add_argument("--student", default="tiny", help="preset (tiny, mini, small, medium), model dir or Hub id")
    run.add_argument("--init", default="auto", choices=("auto", "random", "teacher-layers", "teacher-embeddings"),
                     help="student init: teacher-layers copies every k-th teacher layer (equal widths only), "
                          "teacher-embeddings projects the teacher's embeddings; auto picks the first that fits")
    _common_data_args(run)
    g = run.add_argument_group("distillation loss")
    g.add_argument("--temperature", type=float, default=2.0, help="softmax temperature T (2.0)")
    g.add_argument("--alpha", type=float, default=0.5, help="weight of hard-label CE; 1-alpha weighs T²·KL (0.5)")
    g.add_argument("--hidden-weight", type=float, default=0.1, help="β, weight of hidden-state MSE (0.1; 0 = off)")
    g = _common_train_args(run, None, 3.0, "distillation")
    g.add_argument("--teacher-lr", type=float, default=5e-5, help="teacher fine-tuning learning rate (5e-5)")
    g.add_argument("--teacher-epochs", type=float, default=3.0, help="teacher fine-tuning epochs (3)")
    g = run.add_argument_group("compression")
    g.add_argument("--prune-heads", type=float, default=0.5, help="fraction of heads (with hidden width) removed (0.5)")
    g.add_argument("--prune-ffn", type=float, default=0.5, help="fraction of FFN neurons removed (0.5)")
    g.add_argument("--recover-epochs", type=float, default=1.0, help="distillation epochs after pruning (1)")
    g.add_argument("--no-prune", dest="prune", action="store_false", help="skip pruning")
    g.add_argument("--no-quantize", dest="quantize", action="store_false", help="skip INT8 quantization")
    g.add_argument("--latency-runs", type=int, default=30, help="timed runs per latency measurement (30)")
    _output_args(run, "runs/distill")
    run.set_defaults(func=cmd_run)

    ft = sub.add_parser("finetune-teacher", help="fine-tune a teacher on the task (the run's first stage alone)",
                        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLE_FT)
    ft.add_argument("--teacher", required=True, help="alias, model dir or Hub id")
    _common_data_args(ft)
    _common_train_args(ft, 5e-5, 3.0, "fine-tuning")
    _output_args(ft, "runs/teacher")
    ft.set_defaults(func=cmd_finetune_teacher)
    return parser


def _run_config(args: argparse.Namespace, **fixed):
    from dataclasses import fields

    from distill.pipeline import RunConfig

    names = {f.name for f in fields(RunConfig)}
    values = {k: v for k, v in vars(args).items() if k in names and v is not None}
    values.update(fixed)
    return RunConfig(**values)


def cmd_run(args: argparse.Namespace) -> int:
    from distill.pipeline import run

    run(_run_config(args))
    return 0


def cmd_finetune_teacher(args: argparse.Namespace) -> int:
    from distill.pipeline import finetune_only

    finetune_only(_run_config(args, teacher_lr=args.lr, teacher_epochs=args.epochs))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: returns the exit code (0 ok, 2 bad input, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from distill.core.console import configure_logging, console, set_quiet
    from distill.core.errors import DistillError

    configure_logging(args.log_level)
    set_quiet(getattr(args, "quiet", False))
    try:
        return args.func(args)
    except DistillError as exc:
        console.print(exc.line(), style="bold red", highlight=False, markup=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        console.print("interrupted", style="bold red")
        return 130


if __name__ == "__main__":
    sys.exit(main())

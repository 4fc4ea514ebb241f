"""What general distillation (``--general-data``) buys on small tasks: the same teacher, student, rows and seed,
task-distilled with no general stage, after one on WikiText-2 text, and after one on the task's own texts.

    OMP_NUM_THREADS=1 python experiments/bench/general.py --tasks mrpc stsb --train-samples 2000 --seq 64

Per task the first variant's run fine-tunes the teacher (``--teacher minilm-pip``: all-MiniLM-L6 from the pip
package) and every later variant reuses that fine-tuned teacher dir, so the variants differ only in the general
stage. Each variant is a ``distill distil`` command (teacher → [general] → student → scores; no pruning, no INT8:
the question is what the student learns). Prints a markdown table and writes experiments/results/general.json
with the commands, the machine and every number.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
if not SHARED.is_dir():  # a git worktree beside the main checkout
    SHARED = Path("/work/shared/data")
TASK_DIRS = {"mrpc": "MRPC", "stsb": "STS-B", "sst2": "SST-2"}
VARIANTS = {"none": [], "wikitext": ["--general-data", str(SHARED / "wikitext-2-raw")],
            "task": ["--general-data", "task"]}


def run_variant(task: str, variant: str, teacher: str, args, work: Path) -> dict:
    from distill.cli import main as distill_main

    out = work / task / variant
    general = VARIANTS[variant] + (["--general-steps", str(args.general_steps)] if VARIANTS[variant] else [])
    argv = ["distil", "--teacher", teacher, "--student", args.student, "--task", task, "--data",
            str(SHARED / TASK_DIRS[task]), "--max-train-samples", str(args.train_samples), "--max-seq-length",
            str(args.seq), "--epochs", str(args.epochs), "--teacher-epochs", str(args.teacher_epochs), "--seed",
            str(args.seed), "--latency-runs", "3", "--output-dir", str(out), "--overwrite", "--quiet", *general]
    start = time.perf_counter()
    code = distill_main(argv)
    seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"{task}/{variant} failed with exit code {code}: distill {' '.join(argv)}")
    report = json.loads((out / "report.json").read_text())
    stages = {s["name"]: s for s in report["stages"]}
    gen = report["history"].get("general")
    return {"task": task, "variant": variant, "command": "distill " + " ".join(argv), "metric": report["metric_name"],
            "teacher": round(stages["teacher"]["metric"], 4), "student": round(stages["student"]["metric"], 4),
            "retention": round(stages["student"]["retention"], 4),
            "agreement": round(stages["student"]["agreement"], 4),
            "collapsed": bool(stages["student"].get("collapsed")),
            "student_per_epoch": [{k: round(v, 4) for k, v in h.items() if k.startswith("dev_")}
                                  for h in report["history"].get("student", [])],
            "general": None if gen is None else {k: gen[k] for k in ("rows", "steps", "seconds", "lr", "terms",
                                                                    "loss_before", "loss_after")},
            "stage_seconds": report["stage_seconds"], "seconds": round(seconds, 1), "teacher_dir": teacher,
            "out": str(out)}


def table(rows: list[dict]) -> str:
    lines = ["| task | general data | teacher | student | retention | agreement | general loss before → after | "
             "general s | distil s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        g = r["general"]
        loss = f"{g['loss_before']['total']:.3f} → {g['loss_after']['total']:.3f}" if g else "—"
        lines.append(f"| {r['task']} ({r['metric']}) | {r['variant']} | {r['teacher']:.4f} | {r['student']:.4f} | "
                     f"{r['retention']:.1%} | {r['agreement']:.1%} | {loss} | "
                     f"{r['stage_seconds'].get('general', 0):.0f} | {r['stage_seconds'].get('distil', 0):.0f} |")
    return "\n".join(lines)


def main() -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=["mrpc", "stsb"], choices=list(TASK_DIRS))
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--teacher", default="minilm-pip", help="fine-tuned once per task by the first variant")
    p.add_argument("--student", default="mini")
    p.add_argument("--train-samples", type=int, default=2000)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--teacher-epochs", type=float, default=3.0)
    p.add_argument("--general-steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", default="runs/general-bench")
    p.add_argument("--out", default=str(ROOT / "experiments" / "results" / "general.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows: list[dict] = []
    for task in args.tasks:
        teacher = args.teacher
        for variant in args.variants:
            row = run_variant(task, variant, teacher, args, Path(args.work))
            rows.append(row)
            teacher = str(Path(row["out"]) / "teacher") if (Path(row["out"]) / "teacher").is_dir() else teacher
            print(table(rows[-1:]).splitlines()[-1], flush=True)
            _write(args, rows)
    print(table(rows))


def _write(args, rows: list[dict]) -> None:
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": args.threads,
               "load_average": os.getloadavg()}
    Path(args.out).write_text(json.dumps({"settings": vars(args), "machine": machine, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()

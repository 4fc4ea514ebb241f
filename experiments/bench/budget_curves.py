"""Dev metric after every epoch of long teacher fine-tunes and student distillations, to size the step budget.

Each cell is one ``distill`` command (``finetune-teacher --epochs E`` or ``distil --epochs E``), run one at a time;
the per-epoch history comes from ``OUTPUT/teacher/distill_teacher.json`` or ``OUTPUT/report.json``. The student
cells reuse the teacher of the matching teacher cell (``--teacher OUTPUT/teacher``) and the teacher cache.

    PYTHONPATH=. python experiments/bench/budget_curves.py --cells sst2:500,sst2:2000,stsb:2000,mrpc:2000 \\
        --epochs 8 --out experiments/results/budget_curves.json

Then, for each curve, it prints the epoch (and optimiser step) where the best dev metric was reached, the step
where the curve first came within 1 point (0.01) of that best, and what patience 1, 2 or 3 would have stopped at.
Note: the linear LR schedule decays over the whole budget, so epoch k of an 8-epoch run is not a k-epoch run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = {"sst2": "SST-2", "stsb": "STS-B", "mrpc": "MRPC", "cola": "CoLA"}


def sh(cmd: list[str], log: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}; see {log}")
    return time.perf_counter() - start


def stop_points(history: list[dict], key: str, steps_per_epoch: int) -> dict:
    """Best epoch, first epoch within 0.01 of the best, and where patience p (no new best for p epochs) stops."""
    values = [h[key] for h in history]
    best = max(range(len(values)), key=lambda i: values[i])
    near = next(i for i, v in enumerate(values) if v >= values[best] - 0.01)
    out = {"best_epoch": best + 1, "best": values[best], "best_step": (best + 1) * steps_per_epoch,
           "within_1pt_epoch": near + 1, "within_1pt_step": (near + 1) * steps_per_epoch}
    for patience in (1, 2, 3):
        top, since, stop = -math.inf, 0, len(values)
        kept = 0
        for i, v in enumerate(values):
            if v > top:
                top, since, kept = v, 0, i
            else:
                since += 1
                if since >= patience:
                    stop = i + 1
                    break
        out[f"patience{patience}"] = {"stopped_after": stop, "kept_epoch": kept + 1, "kept": values[kept],
                                      "loss_vs_best": values[best] - values[kept]}
    return out


def metric_key(task: str) -> str:
    from distill.data.tasks import get_task

    return "dev_" + get_task(task).main_metric


def run_cell(args, task: str, rows: int, kind: str, extra: list[str]) -> dict:
    work = Path(args.work) / f"{task}-{rows}"
    data = str(Path(args.data_root) / DATA[task])
    common = ["--task", task, "--data", data, "--max-train-samples", str(rows), "--max-seq-length",
              str(args.max_seq_length), "--epochs", str(args.epochs), "--overwrite", "--quiet"]
    teacher_dir = work / "teacher"
    if kind == "teacher":
        cmd = ["distill", "finetune-teacher", "--teacher", args.teacher, "--output-dir", str(teacher_dir),
               "--lr", str(args.teacher_lr), *common, *extra]
        seconds = sh(cmd, _log(work, "teacher"))
        history = json.loads((teacher_dir / "teacher" / "distill_teacher.json").read_text())["history"]
    else:
        out = work / ("student" + "".join(e.strip("-").replace("=", "") for e in extra))
        cmd = ["distill", "distil", "--teacher", str(teacher_dir / "teacher"), "--student", args.student,
               "--cache-teacher", "--output-dir", str(out), *common, *extra]
        seconds = sh(cmd, _log(work, out.name))
        history = json.loads((out / "report.json").read_text())["history"]["student"]
        shutil.rmtree(out / "teacher_cache", ignore_errors=True)
    batches = math.ceil(rows / 32)
    key = metric_key(task)
    return {"task": task, "rows": rows, "kind": kind, "extra": extra, "command": " ".join(cmd),
            "seconds": round(seconds, 1), "steps_per_epoch": batches,
            "curve": [round(h[key], 4) for h in history], "stops": stop_points(history, key, batches),
            "history": [{k: round(v, 4) if isinstance(v, float) else v for k, v in h.items()} for h in history]}


def _log(work: Path, name: str) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    return work / f"{name}.log"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="sst2:2000", help="task:rows[:teacher|student][:flag=value ...], comma "
                                                              "separated (both kinds when no kind is given)")
    parser.add_argument("--teacher", default="minilm-pip")
    parser.add_argument("--student", default="mini")
    parser.add_argument("--epochs", type=float, default=8)
    parser.add_argument("--teacher-lr", type=float, default=5e-5)
    parser.add_argument("--max-seq-length", type=int, default=64)
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared/data"))
    parser.add_argument("--work", default="/tmp/quality-runs/budget")
    parser.add_argument("--out", default=str(ROOT / "experiments/results/budget_curves.json"))
    args = parser.parse_args()
    out = Path(args.out)
    saved = json.loads(out.read_text())["rows"] if out.is_file() else []
    for cell in args.cells.split(","):
        task, rows, *rest = cell.split(":")
        kinds = [k for k in rest if k in ("teacher", "student")] or ["teacher", "student"]
        extra = [f"--{e.split('=')[0]}={e.split('=')[1]}" for e in rest if "=" in e]
        for kind in kinds:
            row = run_cell(args, task, int(rows), kind, extra)
            saved = [r for r in saved if (r["task"], r["rows"], r["kind"], r["extra"]) !=
                     (row["task"], row["rows"], row["kind"], row["extra"])] + [row]
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"machine": platform.node(), "cpus": os.cpu_count(),
                                       "load_average_at_end": os.getloadavg(), "args": vars(args), "rows": saved},
                                      indent=1))
            s = row["stops"]
            print(f"{task} {rows} {kind} {' '.join(extra)}: {row['curve']} best epoch {s['best_epoch']} "
                  f"(step {s['best_step']}), within 1 pt at step {s['within_1pt_step']}, {row['seconds']:.0f} s",
                  flush=True)
    print("| task | rows | stage | flags | steps/epoch | dev metric per epoch | best (epoch, step) | "
          "within 1 pt (step) | patience 2 keeps |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in saved:
        s = r["stops"]
        print(f"| {r['task']} | {r['rows']} | {r['kind']} | {' '.join(r['extra'])} | {r['steps_per_epoch']} | "
              f"{' / '.join(f'{v:.3f}' for v in r['curve'])} | {s['best']:.3f} ({s['best_epoch']}, {s['best_step']}) "
              f"| {s['within_1pt_step']} | {s['patience2']['kept']:.3f} (stops after {s['patience2']['stopped_after']})"
              " |")


if __name__ == "__main__":
    sys.exit(main())

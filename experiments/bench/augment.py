"""What ``--augment N`` buys a student on a small task: the same ``distill distil`` with and without it.

Each variant is ``distill distil --teacher DIR --student S --task T --data D [--max-train-samples R]
[--augment N]`` into ``WORK/<task>-<student>-aug<N>`` (the teacher is given, fine-tuned beforehand, so every variant
distils from the same one). Read from each report.json: teacher and student dev metric, retention, the augmenter
(``history.augment``), training rows, the epochs run and the best one, wall seconds.

    PYTHONPATH=. python experiments/bench/augment.py --teacher STSB_TEACHER --task stsb \\
        --data ../shared/data/STS-B --rows 2000 --augment 0,4 --out experiments/results/augment_stsb_tiny.json

``--collect`` runs nothing and rebuilds the JSON and table from the reports already in ``--work``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def command(args, n: int, out: Path) -> list[str]:
    cmd = [sys.executable, "-m", "distill", "distil", "--teacher", args.teacher, "--student", args.student,
           "--task", args.task, "--data", args.data, "--output-dir", str(out), "--overwrite"]
    cmd += ["--max-train-samples", str(args.rows)] if args.rows else []
    return cmd + (["--augment", str(n)] if n else []) + args.extra


def summarise(report: dict) -> dict:
    stages = {s["name"]: s for s in report["stages"]}
    history, distil = report.get("history") or {}, (report.get("training") or {}).get("distil", {})
    return {"metric_name": report["metric_name"], "teacher": stages["teacher"]["metric"],
            "student": stages["student"]["metric"], "retention": stages["student"].get("retention"),
            "collapsed": bool(stages["student"].get("collapsed")), "augment": history.get("augment"),
            "epochs_run": distil.get("epochs_run"), "best_epoch": distil.get("best_epoch"),
            "steps": distil.get("steps"), "wall_seconds": report.get("wall_seconds")}


def table(rows: list[dict]) -> str:
    lines = ["| --augment | rows added | augmenter | teacher | student | retention | epochs run, best | steps | time |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        aug = r.get("augment") or {}
        lines.append(f"| {r['augment_n']} | {aug.get('rows', 0):,} | {aug.get('method', '—')} | {r['teacher']:.4f} | "
                     f"{r['student']:.4f} | {100 * r['retention']:.1f}% | {r['epochs_run']}, best {r['best_epoch']} "
                     f"| {r['steps']} | {r['wall_seconds']:.0f} s |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="a fine-tuned teacher dir (OUTPUT/teacher of an earlier run)")
    p.add_argument("--task", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--student", default="tiny")
    p.add_argument("--rows", type=int, default=None, help="--max-train-samples")
    p.add_argument("--augment", default="0,4", help="comma-separated N (0: none)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", default="/tmp/distill-bench-augment")
    p.add_argument("--collect", action="store_true")
    p.add_argument("--out", required=True)
    p.add_argument("extra", nargs="*", help="more distill flags, after --")
    args = p.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(args.threads)}
    rows = []
    for n in (int(x) for x in args.augment.split(",")):
        out = Path(args.work) / f"{args.task}-{args.student}-aug{n}"
        cmd = command(args, n, out)
        if not args.collect:
            out.parent.mkdir(parents=True, exist_ok=True)
            start = time.perf_counter()
            with (out.parent / f"{out.name}.log").open("w") as log:
                subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, check=True)
            print(f"{out.name}: {time.perf_counter() - start:.0f} s", flush=True)
        row = {"augment_n": n, "command": " ".join(["python", *cmd[1:]])}
        rows.append({**row, **summarise(json.loads((out / "report.json").read_text()))})
    print(table(rows))
    Path(args.out).write_text(json.dumps({"machine": platform.node(), "cpus": os.cpu_count(), "threads": args.threads,
                                          "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""Cross-task benchmark (issue 15): the default command, no per-task flags, on several tasks, sizes and students.

Each cell is one ``distill run --teacher minilm-pip --student S --task T --data DIR [--max-train-samples N]`` with
nothing else (the step budget picks the epochs, early stopping the best epoch). The second student of a (task, rows)
pair reuses the teacher the first one fine-tuned (``--teacher RUN/teacher``: a trained head is used as is, so
the teacher is identical and its fine-tuning is not paid twice). Read from each report.json: teacher, student,
pruned and INT8 metric, INT8 retention, parameters, wall time per stage, the training length each stage chose
and the ``collapsed`` flags (a stage no better than the trivial predictor).

    PYTHONPATH=. python experiments/bench/tasks.py --cells stsb:2000:mini,sst2:2000:tiny \\
        --out experiments/results/tasks.json

A cell is ``task:rows:student`` (rows ``all`` for the whole training set, ``demo`` for the demo set shipped in the
package: ``sst2:demo:tiny`` is README.md's main command). Cells run one at a time, in order; the
JSON is rewritten after each, so an interrupted benchmark keeps what finished; rows of other cells already in
``--out`` are kept (a rerun cell replaces its row). ``--threads`` sets OMP_NUM_THREADS.
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
DATA = {"sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "conll2003": "conll2003"}
ALL_CELLS = [f"{t}:{r}:{s}" for t in DATA for r in ("2000", "all") for s in ("mini", "tiny")]


def parse_cell(text: str) -> tuple[str, str, str]:
    task, rows, student = text.split(":")
    if task not in DATA:
        raise SystemExit(f"unknown task {task!r}: choose from {', '.join(DATA)}")
    return task, rows, student


def command(task: str, rows: str, student: str, teacher: str, data_root: Path, out: Path) -> list[str]:
    """The default command for a cell: only the inputs, the size cap and where to write."""
    data = f"{task}-demo" if rows == "demo" else str(data_root / DATA[task])
    cmd = [sys.executable, "-m", "distill", "run", "--teacher", teacher, "--student", student, "--task", task,
           "--data", data, "--output-dir", str(out), "--overwrite"]
    return cmd + (["--max-train-samples", rows] if rows not in ("all", "demo") else [])


def summarise(report: dict) -> dict:
    """One row of the table from a report.json."""
    stages = {s["name"]: s for s in report["stages"]}
    row = {"metric_name": report["metric_name"], "trivial_metric": report.get("trivial_metric"), "stages": {}}
    for name, s in stages.items():
        row["stages"][name] = {"metric": s["metric"], "retention": s.get("retention"), "params": s.get("params"),
                               "size_mb": s.get("size_mb"), "collapsed": bool(s.get("collapsed", False))}
    row["int8_retention"] = stages.get("int8", {}).get("retention")
    row["collapsed"] = [n for n, s in stages.items() if s.get("collapsed")]
    row["stage_seconds"] = report.get("stage_seconds", {})
    row["wall_seconds"] = report.get("wall_seconds")
    row["training"] = report.get("training", {})
    return row


def _lengths(train: dict) -> str:
    """``teacher / distil / recover`` lengths; every recovery of a pruning search (``prune``, ``prune_2``, ...) is
    counted: ``1 of 1 ×3 steps``."""
    def one(t: dict) -> str:
        return f"{t['epochs_run']} of {t['epochs']:g}, best {t['best_epoch']}" + (" (stopped)" if t.get("stopped_early")
                                                                                  else "")

    parts = [one(train[k]) for k in ("teacher", "distil") if k in train]
    recover = [t for k, t in train.items() if k == "prune" or k.startswith("prune_")]
    if recover:
        kinds = sorted({one(t) for t in recover})
        steps = f" ×{len(recover)} steps" if len(recover) > 1 else ""
        parts.append(f"{kinds[0]}{steps}" if len(kinds) == 1 else "; ".join(one(t) for t in recover))
    return " / ".join(parts) or "—"


def table(rows: list[dict]) -> str:
    """The markdown table of experiments/README.md."""
    head = ("| task | rows | student | metric | teacher | student | pruned | INT8 | INT8 retention | params (INT8) "
            "| epochs run (teacher / distil / recover), best | time | collapsed |\n|" + "---|" * 13)
    lines = [head]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['task']} | {r['rows']} | {r['student']} | failed: {r['error']} |" + " |" * 9)
            continue
        st = r["stages"]
        m = {k: (f"{st[k]['metric']:.3f}" if k in st else "—") for k in ("teacher", "student", "pruned", "int8")}
        ret = r.get("int8_retention")
        length = _lengths(r.get("training", {}))
        params = st.get("int8", st.get("pruned", {})).get("params")
        lines.append(f"| {r['task']} | {r['rows']} | {r['student']} | {r['metric_name']} | {m['teacher']} | "
                     f"{m['student']} | {m['pruned']} | {m['int8']} | "
                     f"{'—' if ret is None else f'{100 * ret:.1f}%'} | {params:,} | {length} | "
                     f"{r['wall_seconds'] / 60:.1f} min | {', '.join(r['collapsed']) or 'none'} |")
    return "\n".join(lines)


def run_cell(cell: str, args, teachers: dict) -> dict:
    task, rows, student = parse_cell(cell)
    out = Path(args.work) / f"{task}-{rows}-{student}"
    teacher = teachers.get((task, rows), args.teacher)
    cmd = command(task, rows, student, teacher, Path(args.data_root), out)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(args.threads)}
    start, code = time.perf_counter(), 0
    out.parent.mkdir(parents=True, exist_ok=True)
    if not args.collect:
        with (out.parent / f"{out.name}.log").open("w") as log:
            code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode
    row = {"task": task, "rows": rows, "student": student, "teacher_source": teacher,
           "command": " ".join(["python", *cmd[1:]]).replace(str(ROOT) + "/", "")}
    if not args.collect:
        row["seconds"] = round(time.perf_counter() - start, 1)
    if code not in (0, 1):  # 1: a quality gate missed, the report is still written
        return {**row, "error": f"exit {code}, see {out.parent / (out.name + '.log')}"}
    if (out / "teacher").is_dir():
        teachers[(task, rows)] = str(out / "teacher")
    return {**row, **summarise(json.loads((out / "report.json").read_text()))}


def _kept_rows(out: Path, cells: list[str]) -> list[dict]:
    """The rows already in ``out`` for cells this run does not redo: the table grows cell by cell across runs."""
    if not out.is_file():
        return []
    redo = {parse_cell(c) for c in cells}
    return [r for r in json.loads(out.read_text()).get("rows", [])
            if (r["task"], r["rows"], r["student"]) not in redo]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", default=",".join(ALL_CELLS), help="task:rows:student,... (default: all 16)")
    p.add_argument("--teacher", default="minilm-pip")
    p.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--work", default="/tmp/distill-bench-tasks")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--collect", action="store_true", help="run nothing: rebuild the JSON and table from the reports "
                                                          "already in --work")
    p.add_argument("--out", default=str(ROOT / "experiments" / "results" / "tasks.json"))
    args = p.parse_args()
    cells = [c for c in args.cells.split(",") if c]
    for c in cells:
        parse_cell(c)
    teachers: dict = {}
    result = {"machine": platform.node(), "cpus": os.cpu_count(), "threads": args.threads, "args": vars(args),
              "rows": _kept_rows(Path(args.out), cells)}
    for cell in cells:
        row = run_cell(cell, args, teachers)
        result["rows"].append(row)
        result["load_average"] = os.getloadavg()
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        print(table([row]).splitlines()[-1], flush=True)
    print(table(result["rows"]))


if __name__ == "__main__":
    main()

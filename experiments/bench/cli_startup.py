"""Command-line start-up: how long ``distill --help`` takes next to ``import torch`` (the floor of any command).

Each command runs ``--repeats`` times in a fresh interpreter (wall time of the whole process, median reported):
a bare interpreter, ``import torch``, ``import distill``, ``python -m distill --help`` and ``python -m distill run
--help``. The target (issue 7) is ``distill --help`` within 1 s of ``import torch``; which heavy modules a help
call imports is checked by tests/distill/test_cli_misc.py, not here.

    python experiments/bench/cli_startup.py [--repeats 5]

Writes ``experiments/results/cli_startup.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "experiments" / "results"
COMMANDS = {
    "python (bare)": ["-c", "pass"],
    "import torch": ["-c", "import torch"],
    "import distill": ["-c", "import distill"],
    "distill --help": ["-m", "distill", "--help"],
    "distill run --help": ["-m", "distill", "run", "--help"],
}


def time_command(args: list[str], repeats: int) -> list[float]:
    """Wall seconds of ``python ARGS`` in a fresh process, ``repeats`` times (after one untimed warm-up run)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, *args]
    subprocess.run(cmd, capture_output=True, check=True, env=env, cwd=ROOT)  # warm the page cache
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True, env=env, cwd=ROOT)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = {}
    for name, cmd in COMMANDS.items():
        times = time_command(cmd, args.repeats)
        rows[name] = {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
                      "runs_s": [round(t, 3) for t in times]}
        print(f"{name:22s} median {rows[name]['median_s']:.3f} s  (min {rows[name]['min_s']:.3f} s)")
    help_over_torch = rows["distill --help"]["median_s"] - rows["import torch"]["median_s"]
    print(f"distill --help minus import torch: {help_over_torch:+.3f} s (target < 1 s)")
    result = {"repeats": args.repeats, "commands": rows, "help_minus_import_torch_s": round(help_over_torch, 3),
              "target_s": 1.0, "meets_target": help_over_torch < 1.0, "python": platform.python_version(),
              "machine": platform.machine(), "cpu_count": os.cpu_count(),
              "load_average": [round(x, 2) for x in os.getloadavg()]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "cli_startup.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""Issue 4's numbers: prune the real all-MiniLM-L6 teacher (fine-tuned on SST-2) by 50% heads + 50% FFN with
distillation recovery, then static INT8; score each against the FP32 teacher.

Targets: pruned ≥ 98% of the teacher's dev accuracy and ≥ 1.6× faster (batch 1, seq 128, 2 threads, PyTorch);
static INT8 of the pruned model ≥ 97% and ≥ 3× faster than the FP32 teacher in PyTorch.

    python experiments/bench/prune_minilm.py --work runs/bench-prune --train-samples 20000

Every step is a `distill` command, so the numbers come from the same code users run. Prints a table and writes
experiments/results/prune_minilm_sst2.json.
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
SST2 = ROOT.parent / "shared" / "data" / "SST-2"


def step(name: str, argv: list[str], timings: dict) -> None:
    from distill.cli import main

    start = time.perf_counter()
    code = main(argv)
    timings[name] = round(time.perf_counter() - start, 1)
    if code != 0:
        raise SystemExit(f"{name} failed with exit code {code}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="runs/bench-prune")
    p.add_argument("--train-samples", type=int, default=20000)
    p.add_argument("--teacher-epochs", type=float, default=1.0)
    p.add_argument("--recover-epochs", type=float, default=1.0)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--hidden", help="passed to `distill prune --hidden` (0: heads without hidden width)")
    p.add_argument("--importance", default="magnitude", help="passed to `distill prune --importance`")
    p.add_argument("--steps", type=int, default=1, help="passed to `distill prune --steps`")
    p.add_argument("--hidden-weight", type=float, default=0.0, help="passed to `distill prune --hidden-weight`")
    p.add_argument("--lr", type=float, default=5e-5, help="recovery learning rate")
    p.add_argument("--out", default=str(ROOT / "experiments" / "results" / "prune_minilm_sst2.json"))
    args = p.parse_args()
    work = Path(args.work)
    data = ["--task", "sst2", "--data", str(SST2), "--max-train-samples", str(args.train_samples),
            "--max-seq-length", str(args.seq)]
    timings: dict[str, float] = {}
    teacher = work / "ft" / "teacher"
    if not (teacher / "model.safetensors").is_file():
        step("finetune_teacher", ["finetune-teacher", "--teacher", "minilm-pip", *data, "--epochs",
                                  str(args.teacher_epochs), "--output-dir", str(work / "ft"), "--overwrite",
                                  "--quiet"], timings)
    hidden = ["--hidden", args.hidden] if args.hidden is not None else []
    step("prune_and_recover", ["prune", str(teacher), "--heads", "0.5", "--ffn", "0.5", *hidden, "--teacher",
                               str(teacher),
                               *data, "--epochs", str(args.recover_epochs), "--lr", str(args.lr), "--importance",
                               args.importance, "--steps", str(args.steps), "--hidden-weight",
                               str(args.hidden_weight), "--output-dir",
                               str(work / "pruned"), "--overwrite", "--quiet"], timings)
    step("static_int8", ["quantize", str(work / "pruned"), "--mode", "static", "--calibration-data", str(SST2),
                         "--task", "sst2", "--calibration", "minmax", "--calibration-samples", "256",
                         "--max-train-samples", "2000", "--output-dir", str(work / "int8-static"), "--overwrite",
                         "--quiet"], timings)
    scores = work / "scores.json"
    step("eval", ["eval", str(work / "pruned"), str(work / "int8-static" / "model.onnx"), "--teacher", str(teacher),
                  "--task", "sst2", "--data", str(SST2), "--max-seq-length", "128", "--json", str(scores)], timings)
    stages = json.loads(scores.read_text())["stages"]
    teacher_row = stages[0]
    rows = []
    for s in stages:
        speedup = teacher_row["latency_ms"] / s["latency_ms"]
        rows.append({"stage": s["name"], "accuracy": round(s["metric"], 4), "retention": round(s["retention"], 4),
                     "agreement": round(s["agreement"], 4), "params": s["params"], "size_mb": s["size_mb"],
                     "latency_ms": s["latency_ms"], "speedup_vs_fp32_teacher": round(speedup, 2)})
    targets = {"pruned_retention>=0.98": rows[1]["retention"] >= 0.98,
               "pruned_speedup>=1.6": rows[1]["speedup_vs_fp32_teacher"] >= 1.6,
               "int8_retention>=0.97": rows[2]["retention"] >= 0.97,
               "int8_speedup>=3": rows[2]["speedup_vs_fp32_teacher"] >= 3.0}
    result = {"benchmark": "prune_minilm_sst2", "rows": rows, "targets_met": targets, "seconds": timings,
              "settings": vars(args), "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                                  "load_avg": os.getloadavg()}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    header = f"{'stage':<14}{'accuracy':>9}{'retention':>10}{'agree':>7}{'params':>12}{'MB':>8}{'ms':>8}{'speedup':>8}"
    print(header)
    for r in rows:
        print(f"{r['stage']:<14}{r['accuracy']:>9.4f}{r['retention']:>10.1%}{r['agreement']:>7.1%}{r['params']:>12,}"
              f"{r['size_mb']:>8.1f}{r['latency_ms']:>8.2f}{r['speedup_vs_fp32_teacher']:>7.2f}×")
    print("targets:", targets)


if __name__ == "__main__":
    main()

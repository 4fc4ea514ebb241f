"""What each distillation term buys: the same student, data and budget trained with no KD (plain fine-tuning on
labels), logit KD only, logit KD + hidden-state MSE, + the MiniLM relation loss or the TinyBERT attention loss;
and (``--variants init-*``) what each student initialisation buys under the default loss.

    python experiments/bench/ablation.py --teacher runs/teacher-sst2 --train-samples 8000 --epochs 3
    python experiments/bench/ablation.py --teacher runs/teacher-sst2 --variants init-random \
        init-teacher-embeddings init-teacher-pruned --out experiments/results/init_sst2.json

Every variant is a `distill distil` command (same seed, same student preset and init, same steps); the dev metric
comes from the run's report.json. Prints a table and writes experiments/results/ablation_sst2.json.
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

# name → (description, extra `distill distil` flags)
VARIANTS = {
    "no-kd": ("fine-tuning on labels only (alpha 1, no teacher terms)", ["--alpha", "1.0", "--hidden-weight", "0"]),
    "logits": ("CE + T²·KL on logits", ["--hidden-weight", "0"]),
    "logits+hidden": ("+ β·hidden-state MSE (β 0.1, learned projections)", ["--hidden-weight", "0.1"]),
    "logits+hidden+relation": ("+ MiniLM Q-Q/K-K/V-V relation loss (weight 1, last teacher layer)",
                               ["--hidden-weight", "0.1", "--relation-weight", "1.0"]),
    "logits+hidden+attention": ("+ TinyBERT attention-map KL (weight 1)",
                                ["--hidden-weight", "0.1", "--attention-weight", "1.0"]),
    # student initialisation, with the default loss (CE + KL + 0.1·hidden MSE)
    "init-random": ("random init", ["--init", "random"]),
    "init-teacher-embeddings": ("teacher embeddings projected on their principal directions (PCA)",
                                ["--init", "teacher-embeddings"]),
    "init-teacher-pruned": ("the teacher pruned to the preset's widths and layers (head size kept)",
                            ["--init", "teacher-pruned"]),
}
DEFAULT_VARIANTS = ["no-kd", "logits", "logits+hidden", "logits+hidden+relation", "logits+hidden+attention"]


def main() -> None:
    from distill.cli import main as distill_main

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="a fine-tuned SST-2 teacher dir")
    p.add_argument("--student", default="tiny")
    p.add_argument("--train-samples", type=int, default=8000)
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--work", default="runs/ablation")
    p.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    p.add_argument("--out", default=str(ROOT / "experiments" / "results" / "ablation_sst2.json"))
    args = p.parse_args()
    if not SST2.is_dir():
        raise SystemExit(f"SST-2 not found at {SST2}")
    rows = []
    for name in args.variants:
        description, flags = VARIANTS[name]
        out = Path(args.work) / name
        argv = ["distil", "--teacher", args.teacher, "--student", args.student, "--task", "sst2", "--data", str(SST2),
                "--max-train-samples", str(args.train_samples), "--max-seq-length", str(args.seq), "--epochs",
                str(args.epochs), "--latency-runs", "5", "--output-dir", str(out), "--overwrite", "--quiet", *flags]
        start = time.perf_counter()
        code = distill_main(argv)
        seconds = time.perf_counter() - start
        if code != 0:
            raise SystemExit(f"{name} failed with exit code {code}")
        report = json.loads((out / "report.json").read_text())
        teacher, student = report["stages"][0], report["stages"][-1]
        history = report.get("history", {}).get("student", [])
        rows.append({"variant": name, "description": description, "flags": flags, "teacher": teacher["metric"],
                     "accuracy": round(student["metric"], 4), "retention": round(student["retention"], 4),
                     "agreement": round(student["agreement"], 4),
                     "kl_to_teacher": student.get("kl_to_teacher"),
                     "dev_per_epoch": [round(h.get("dev_accuracy", float("nan")), 4) for h in history],
                     "seconds": round(seconds, 1)})
        print(f"{name:<26}{rows[-1]['accuracy']:>8.4f}{rows[-1]['retention']:>9.1%}{seconds:>8.0f}s", flush=True)
    result = {"benchmark": "ablation_sst2", "settings": vars(args), "rows": rows,
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_avg": os.getloadavg()}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{'variant':<26}{'acc':>8}{'retain':>9}{'agree':>8}{'KL':>7}  dev accuracy per epoch")
    for r in rows:
        kl = r["kl_to_teacher"]
        print(f"{r['variant']:<26}{r['accuracy']:>8.4f}{r['retention']:>9.1%}{r['agreement']:>8.1%}"
              f"{kl if kl is None else round(kl, 3)!s:>7}  {r['dev_per_epoch']}")


if __name__ == "__main__":
    main()

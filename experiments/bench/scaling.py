"""Data-parallel scaling of distillation: samples/s with 1 and 2 CPU processes (``accelerate launch``, gloo).

Same global batch and step count in every row: 1 process × batch B × 2 threads, 2 processes × batch B/2 × 1
thread each (the machine's 2 cores either way), and 2 processes with the teacher sharded by FSDP
(``distill.train.sharding``: each holds half the teacher's weights and gathers one block at a time). Teacher
all-MiniLM-L6-v2 (run every step, no cache), student ``tiny``, SST-2 rows. The GPU column stays empty unless run on
a GPU (``--gpu``: 1 process on CUDA).

    python experiments/bench/scaling.py [--rows 512] [--batch 32] [--epochs 3] [--repeats 3] [--gpu]

Prints a table and writes ``experiments/results/scaling.json``.
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
RESULTS = ROOT / "experiments" / "results"
sys.path.insert(0, str(Path(__file__).resolve().parent))


def child(rows: int, batch: int, epochs: float, device: str, shard_teacher: bool = False) -> dict | None:
    """Distil in this process (one rank of many, or alone); rank 0 returns the timing."""
    import torch
    from throughput import load_inputs

    from distill.core.console import set_quiet
    from distill.core.dist import is_main_process, wait_for_everyone
    from distill.data import make_loader
    from distill.objective.objective import DistillConfig, Objective
    from distill.train.loop import TrainConfig, fit

    set_quiet(True)
    teacher, tok, student, data = load_inputs(rows)
    loader = make_loader(data, tok, batch, shuffle=True, seed=42, group_by_length=True)
    objective = Objective(DistillConfig(hidden_weight=0.0))
    config = TrainConfig(lr=1e-4, epochs=epochs, batch_size=batch, seed=42, device=device)
    wait_for_everyone()
    held = sum(p.numel() for p in teacher.parameters())
    if shard_teacher:
        from distill.core.dist import get_accelerator
        from distill.train.sharding import local_parameters, shard

        shard(teacher, get_accelerator(device).device)
        held = local_parameters(teacher)[0]
    start = time.perf_counter()
    result = fit(student, objective, loader, config, teacher=teacher)
    wait_for_everyone()
    seconds = time.perf_counter() - start
    if not is_main_process():
        return None
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return {"processes": world, "teacher": "sharded (FSDP)" if shard_teacher else "whole copy",
            "teacher_params_per_process": held, "threads_per_process": torch.get_num_threads(), "device": device,
            "per_process_batch": batch, "global_batch": batch * world, "steps": result.steps,
            "seconds": round(seconds, 2), "samples_per_s": round(result.steps * batch * world / seconds, 1)}


def launch(processes: int, args, shard_teacher: bool = False) -> dict:
    """Run ``child`` alone or under ``accelerate launch`` and read rank 0's JSON line."""
    per = args.batch // processes
    script = [__file__, "--child", "--rows", str(args.rows), "--batch", str(per), "--epochs", str(args.epochs),
              "--device", "cuda" if args.gpu and processes == 1 else "cpu", *(["--shard"] if shard_teacher else [])]
    if processes == 1:
        cmd = [sys.executable, *script]
        threads = str(args.threads)
    else:  # `--cpu --num_processes N` needs mpirun; the torchrun launcher with a CPU Accelerator does not
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
               "0", *script]
        threads = str(max(1, args.threads // processes))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1"}
    if not (args.gpu and processes == 1):
        env["CUDA_VISIBLE_DEVICES"] = ""
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        raise SystemExit(f"{processes} process(es) failed:\n{res.stderr[-3000:]}")
    return json.loads([line for line in res.stdout.splitlines() if line.startswith("{")][-1])


def best_of(args) -> list[dict]:
    """1 process, 2 processes, 2 processes with a sharded teacher; ``--repeats`` rounds in alternating order; the
    fastest run of each is kept (the machine is shared: the best run is the least disturbed one), all runs'
    samples/s alongside."""
    variants = {"1": (1, False), "2": (2, False), "2-fsdp": (2, True)}
    runs: dict[str, list[dict]] = {k: [] for k in variants}
    for round_ in range(args.repeats):
        for name in list(variants) if round_ % 2 == 0 else list(variants)[::-1]:
            runs[name].append(launch(*variants[name][:1], args, shard_teacher=variants[name][1]))
            print(f"  {name} process(es): {runs[name][-1]['samples_per_s']:.1f} samples/s, load "
                  f"{os.getloadavg()[0]:.2f}", flush=True)
    return [{**max(r, key=lambda x: x["samples_per_s"]), "all_samples_per_s": [x["samples_per_s"] for x in r]}
            for r in runs.values()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32, help="global batch size")
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads in all")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gpu", action="store_true", help="also time 1 process on CUDA")
    parser.add_argument("--out", default=str(RESULTS / "scaling.json"), help="JSON written here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--shard", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        row = child(args.rows, args.batch, args.epochs, args.device, args.shard)
        if row is not None:
            print(json.dumps(row), flush=True)
        return
    load_before = os.getloadavg()
    rows = best_of(args)
    gpu = launch(1, argparse.Namespace(**{**vars(args), "gpu": True}))["samples_per_s"] if args.gpu else None
    print(f"{'processes':>9} {'teacher':>15} {'teacher params/proc':>19} {'threads/proc':>12} {'batch/proc':>10} "
          f"{'steps':>6} {'CPU samples/s':>14} {'scaling':>8} {'GPU samples/s':>14}")
    for r in rows:
        r["scaling"] = round(r["samples_per_s"] / rows[0]["samples_per_s"], 2)
        r["gpu_samples_per_s"] = gpu if r["processes"] == 1 else None
        print(f"{r['processes']:>9} {r['teacher']:>15} {r['teacher_params_per_process']:>19,} "
              f"{r['threads_per_process']:>12} {r['per_process_batch']:>10} {r['steps']:>6} "
              f"{r['samples_per_s']:>14.1f} {r['scaling']:>7.2f}x {str(r['gpu_samples_per_s'] or ''):>14}")
    result = {"benchmark": "data-parallel scaling (accelerate, gloo on CPU)", "rows": args.rows,
              "global_batch": args.batch, "epochs": args.epochs, "repeats": args.repeats,
              "statistic": "best of repeats", "results": rows,
              "load_avg_before": [round(x, 2) for x in load_before],
              "load_avg_after": [round(x, 2) for x in os.getloadavg()], "cpu_count": os.cpu_count(),
              "platform": platform.platform()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"load average before {result['load_avg_before']}, after {result['load_avg_after']}; "
          f"written to {args.out}")


if __name__ == "__main__":
    main()

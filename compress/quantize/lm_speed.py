"""Generation speed of a causal LM, measured the same way in PyTorch, onnxruntime-genai and plain onnxruntime.

Definitions (batch 1, greedy, KV cache, fixed thread count):

- **prefill latency**: one forward over the prompt (128 tokens by default) that fills the KV cache and gives the
  first next-token logits, in ms (genai: ``Generator.append_tokens``; the generator's creation is not timed);
- **decode tokens/s**: after prefill, ``new_tokens`` (64) greedy tokens: the first comes from the prefill logits,
  each later one from a forward of the model on the token before it with the cache, so N tokens cost N − 1
  single-token forwards; tokens/s = (N − 1) / the time of the whole loop (genai: N ``generate_next_token`` calls,
  which run the same N − 1 forwards, with ``min_length`` = ``max_length`` so EOS cannot stop it early).

Each measurement is repeated ``runs`` times after ``warmup`` untimed runs; the median is reported. The generated
token ids come back too, so two runtimes can be checked for the same greedy text.
"""

from __future__ import annotations

import inspect
import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class DecodeSpeed:
    """Median prefill latency and decode throughput of one runtime, with the greedy tokens it produced."""

    runtime: str
    prefill_ms: float
    decode_tokens_per_s: float
    prompt_tokens: int
    new_tokens: int
    threads: int
    tokens: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The numbers without the generated tokens, for JSON reports."""
        return {k: v for k, v in self.__dict__.items() if k != "tokens"}


def cache_keyword(model) -> str:
    """The name ``model.forward`` takes the KV cache under: ``cache`` from transformers 5.25, ``past_key_values``
    before (5.25 still accepts the old name, with a deprecation warning)."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def output_cache(out):
    """The KV cache a forward returned (``out.cache`` from transformers 5.25, ``out.past_key_values`` before)."""
    return out["cache"] if "cache" in out else out.past_key_values


def fixed_prompt(vocab_size: int, length: int = 128, seed: int = 0) -> list[int]:
    """A deterministic prompt of exactly ``length`` token ids (speed does not depend on which tokens)."""
    import random

    rng = random.Random(seed)
    return [rng.randrange(vocab_size) for _ in range(length)]


def _median_of(runs: int, warmup: int, fn) -> list:
    for _ in range(warmup):
        fn()
    return [fn() for _ in range(runs)]


def torch_decode_speed(model, prompt: Sequence[int], *, new_tokens: int = 64, threads: int = 2, runs: int = 3,
                       warmup: int = 1) -> DecodeSpeed:
    """Prefill and greedy decode with the model's KV cache on CPU at ``threads`` threads (``new_tokens`` ≥ 2)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    ids = torch.tensor([list(prompt)], dtype=torch.long)

    key = cache_keyword(model)

    def once():
        with torch.inference_mode():
            start = time.perf_counter()
            out = model(input_ids=ids, use_cache=True)
            prefill = time.perf_counter() - start
            past, tokens = output_cache(out), []
            start = time.perf_counter()
            for step in range(new_tokens):
                nxt = out.logits[:, -1].argmax(-1, keepdim=True)
                tokens.append(int(nxt))
                if step < new_tokens - 1:  # the last token's logits are never used
                    out = model(input_ids=nxt, use_cache=True, **{key: past})
                    past = output_cache(out)
            return prefill, time.perf_counter() - start, tokens

    was_training = model.training
    model.eval()
    try:
        results = _median_of(runs, warmup, once)
    finally:
        torch.set_num_threads(previous)
        model.train(was_training)
    return DecodeSpeed(runtime="torch", prefill_ms=statistics.median(r[0] for r in results) * 1e3,
                       decode_tokens_per_s=(new_tokens - 1) / statistics.median(r[1] for r in results),
                       prompt_tokens=len(prompt), new_tokens=new_tokens, threads=threads, tokens=results[-1][2])


def genai_model(bundle: Path | str, threads: int = 2):
    """An ``onnxruntime_genai.Model`` on CPU with ``threads`` intra-op threads (overlaid, the bundle is not edited)."""
    import onnxruntime_genai as og

    config = og.Config(str(bundle))
    config.clear_providers()
    options = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
    config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
    return og.Model(config)


def genai_decode_speed(bundle: Path | str, prompt: Sequence[int], *, new_tokens: int = 64, threads: int = 2,
                       runs: int = 3, warmup: int = 1) -> DecodeSpeed:
    """Prefill and greedy decode of an onnxruntime-genai bundle, timed like ``torch_decode_speed``."""
    import numpy as np
    import onnxruntime_genai as og

    model = genai_model(bundle, threads)
    ids = np.asarray(list(prompt), dtype=np.int32)
    total = len(ids) + new_tokens

    def once():
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=total, min_length=total, do_sample=False)
        generator = og.Generator(model, params)
        start = time.perf_counter()
        generator.append_tokens(ids)
        prefill = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(new_tokens):
            generator.generate_next_token()
        decode = time.perf_counter() - start
        return prefill, decode, [int(t) for t in generator.get_sequence(0)[len(ids):]]

    results = _median_of(runs, warmup, once)
    return DecodeSpeed(runtime="onnxruntime-genai", prefill_ms=statistics.median(r[0] for r in results) * 1e3,
                       decode_tokens_per_s=(new_tokens - 1) / statistics.median(r[1] for r in results),
                       prompt_tokens=len(ids), new_tokens=new_tokens, threads=threads, tokens=results[-1][2])


def onnx_decode_speed(bundle: Path | str, prompt: Sequence[int], *, new_tokens: int = 64, threads: int = 2,
                      runs: int = 3, warmup: int = 1) -> DecodeSpeed:
    """Prefill and greedy decode of a bundle's graph with plain onnxruntime, timed like ``torch_decode_speed``."""
    import numpy as np

    from compress.quantize.onnx_lm import OnnxCausalLM

    lm = OnnxCausalLM(bundle, threads)
    ids = np.asarray([list(prompt)], dtype=np.int64)

    def once():
        start = time.perf_counter()
        logits, past = lm.run(ids, lm.empty_past(1))
        prefill = time.perf_counter() - start
        tokens = []
        start = time.perf_counter()
        for step in range(new_tokens):
            nxt = logits[:, -1:].argmax(-1).astype(np.int64)
            tokens.append(int(nxt[0, 0]))
            if step < new_tokens - 1:  # as in torch_decode_speed: N tokens, N - 1 forwards
                logits, past = lm.run(nxt, past)
        return prefill, time.perf_counter() - start, tokens

    for _ in range(warmup):
        once()
    results = [once() for _ in range(runs)]
    return DecodeSpeed(runtime="onnxruntime", prefill_ms=statistics.median(r[0] for r in results) * 1e3,
                       decode_tokens_per_s=(new_tokens - 1) / statistics.median(r[1] for r in results),
                       prompt_tokens=len(prompt), new_tokens=new_tokens, threads=threads, tokens=results[-1][2])

"""A causal-LM ONNX graph with past key values, run with plain ``onnxruntime``: logits for scoring, greedy decode
for speed.

Both bundle kinds have the same graph interface (``input_ids``, ``attention_mask``, ``past_key_values.{i}.key/
value`` -> ``logits``, ``present.{i}.key/value``): onnxruntime-genai's builder (layout in ``genai_config.json``)
and the ``torch.onnx`` fallback (``onnx_past.json``). GroupQueryAttention and MatMulNBits, which the builder
emits, are contrib ops of the CPU build of onnxruntime.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

from compress.decode import DecodeSpeed
from distill.core.errors import ModelError


def bundle_layout(bundle: Path | str) -> tuple[int, int]:
    """(kv heads, head size) of a bundle, from ``genai_config.json`` or ``onnx_past.json``."""
    bundle = Path(bundle)
    if (bundle / "genai_config.json").is_file():
        decoder = json.loads((bundle / "genai_config.json").read_text())["model"]["decoder"]
        return int(decoder["num_key_value_heads"]), int(decoder["head_size"])
    if (bundle / "onnx_past.json").is_file():
        layout = json.loads((bundle / "onnx_past.json").read_text())
        return int(layout["kv_heads"]), int(layout["head_dim"])
    raise ModelError(f"'{bundle}' is not a causal-LM ONNX bundle (no genai_config.json or onnx_past.json)",
                     "pass a folder written by build_genai or build_with_past")


class OnnxCausalLM:
    """``model.onnx`` of a bundle as a logits function: (B, L) token ids -> (B, L, V) float32 torch logits.

    Runs with an empty KV cache (past length 0), so every position's logits come back (scoring needs them all).
    """

    def __init__(self, bundle: Path | str, threads: int = 2) -> None:
        import onnxruntime as ort

        self.path = Path(bundle) / "model.onnx"
        self.kv_heads, self.head_size = bundle_layout(bundle)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.past = [i.name for i in self.session.get_inputs() if i.name.startswith("past_key_values.")]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def empty_past(self, batch: int) -> dict:
        """Zero-length past tensors: the feed of a prefill."""
        import numpy as np

        empty = np.zeros((batch, self.kv_heads, 0, self.head_size), dtype=np.float32)
        return {name: empty for name in self.past}

    def run(self, ids, past: dict) -> tuple:
        """One forward: logits (numpy) and the next ``past`` dict (the present tensors under the past names)."""
        import numpy as np

        length = next(iter(past.values())).shape[2] if past else 0
        mask = np.ones((ids.shape[0], length + ids.shape[1]), dtype=np.int64)
        logits, *present = self.session.run(self.outputs, {"input_ids": ids, "attention_mask": mask, **past})
        return logits, dict(zip(self.past, present, strict=True))

    def __call__(self, input_ids):
        import numpy as np
        import torch

        ids = input_ids.cpu().numpy() if hasattr(input_ids, "cpu") else input_ids
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        logits, _ = self.run(ids, self.empty_past(ids.shape[0]))
        return torch.from_numpy(np.asarray(logits, dtype=np.float32))


def onnx_decode_speed(bundle: Path | str, prompt: Sequence[int], *, new_tokens: int = 64, threads: int = 2,
                      runs: int = 3, warmup: int = 1) -> DecodeSpeed:
    """Prefill and greedy decode of a bundle's graph with plain onnxruntime, timed like ``torch_decode_speed``."""
    import numpy as np

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

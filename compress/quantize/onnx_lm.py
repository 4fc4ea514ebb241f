"""A causal-LM ONNX graph with past key values, run with plain ``onnxruntime``: logits for scoring, one step at a
time for greedy decoding (``lm_speed.onnx_decode_speed``).

Both bundle kinds have the same graph interface (``input_ids``, ``attention_mask``, ``past_key_values.{i}.key/
value`` -> ``logits``, ``present.{i}.key/value``): onnxruntime-genai's builder (layout in ``genai_config.json``)
and the ``torch.onnx`` fallback (``onnx_past.json``). GroupQueryAttention and MatMulNBits, which the builder
emits, are contrib ops of the CPU build of onnxruntime.
"""

from __future__ import annotations

import json
from pathlib import Path

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


"""The causal-LM teacher cache: the teacher run once over the packed training blocks, its next-token
distributions kept on disk as top-k log-probabilities plus the remaining (tail) mass, memory-mapped.

Why top-k: the full logits are N × L × V floats (V = 49k for SmolLM2: 200 kB per token in float32); k = 20
log-probabilities (float16) + their ids (int32) + one tail value (float32) are 124 bytes per token. What is kept is
exactly ``distill.objective.lm_losses.truncate_teacher(logits, k, T)`` at the run's temperature T, and the loss
against it is ``lm_kd_loss_topk``: the teacher and student distributions coarse-grained to the k teacher tokens +
one "tail" bucket (that module's docstring: with k = V it equals the full-vocabulary loss; with k < V it is a lower
bound, the gap being what happens inside the tail).

Files in the cache dir (N blocks of L tokens, in the dataset's row order, padding positions included and masked
by the loss):

- ``logprobs.npy`` (N, L, k) float16 (or float32): log p_T(v) of the teacher's k most likely tokens, descending;
- ``indices.npy`` (N, L, k) int32: their token ids;
- ``tail.npy`` (N, L) float32: log(1 − Σ_top-k p), −inf when k = V;
- ``manifest.json``: fingerprint, shapes, sizes and SHA-256 of every file (``teachers.cache.seal_cache``).

The fingerprint covers the teacher (weights hash and config), the blocks' token ids and masks, k, the temperature,
the stored dtype and whether the teacher ran under mixed precision; a cache whose fingerprint, sizes or checksums
do not match is rebuilt, never used. The arrays are opened with ``np.load(mmap_mode="r")``: a batch reads only its
rows. A lookup needs each batch's row numbers (``idx``: ``distill.data.lm_kind.tokenize_lm(..., index=True)``).
The cache holds no hidden states or attention maps: objectives that need them are refused (``check``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from distill.core.console import info
from distill.core.errors import ConfigError, DistillError
from distill.core.runtime import autocast, resolve_device
from distill.objective.lm_losses import TopKTeacher, truncate_teacher
from teachers.cache import DTYPES, MANIFEST, check_cache, data_hash, seal_cache, weights_hash

if TYPE_CHECKING:
    from distill.objective.objective import Objective

KIND = "causal-lm top-k"
FILES = ("logprobs.npy", "indices.npy", "tail.npy")
MODEL_INPUTS = ("input_ids", "attention_mask")


@dataclass
class CachedLMOutput:
    """Looks like a model output to ``Objective``: ``logits`` is the truncated teacher (the output loss of a causal
    LM then uses ``lm_kd_loss_topk``); no hidden states or attentions."""

    logits: TopKTeacher
    hidden_states: None = None
    attentions: None = None


def lm_fingerprint(teacher: torch.nn.Module, blocks, *, top_k: int, temperature: float, dtype: str,
                   mixed_precision: bool) -> str:
    """What the cached top-k depends on, hashed (``teachers.cache.weights_hash`` and ``data_hash``)."""
    parts = {"kind": KIND, "weights": weights_hash(teacher), "config": teacher.config.to_json_string(),
             "data": data_hash(blocks), "top_k": top_k, "temperature": float(temperature), "dtype": dtype,
             "mixed_precision": mixed_precision}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class CachedLMTeacher:
    """The recorded top-k teacher, a ``distill.train.teacher.TeacherSource`` the training loop uses in place of the
    causal-LM teacher; also a callable batch (with ``idx``) -> ``CachedLMOutput``."""

    def __init__(self, path: Path, manifest: dict, built_seconds: float = 0.0) -> None:
        self.path, self.manifest = Path(path), manifest
        self.temperature: float = float(manifest["temperature"])
        self.logprobs = np.load(self.path / "logprobs.npy", mmap_mode="r")
        self.indices = np.load(self.path / "indices.npy", mmap_mode="r")
        self.tail = np.load(self.path / "tail.npy", mmap_mode="r")
        self.built_seconds = built_seconds
        self.rows_served = 0
        self.lookup_seconds = 0.0

    def __len__(self) -> int:
        return int(self.logprobs.shape[0])

    @property
    def top_k(self) -> int:
        return int(self.logprobs.shape[-1])

    # ---- the TeacherSource protocol (distill.train.teacher) ----

    def prepare(self, device: torch.device, dtype: str) -> None:
        """Nothing to place: lookups land on the batch's device."""

    def check(self, part: Objective) -> None:
        """Refuse an objective part that needs more than the output distribution, or another temperature."""
        if part.needs_hidden_states or part.needs_attentions or part.needs_qkv:
            raise ConfigError("the causal-LM teacher cache holds top-k log-probabilities only, no hidden states or "
                              "attention", "drop --cache-teacher, or use --hidden-weight 0 (and no other feature "
                              "loss weights)")
        check_constant_temperature(part.config, self.temperature)

    def watch(self, stack: contextlib.ExitStack, attentions: bool, qkv_layer: int | None) -> None:
        """Recorded outputs have no modules to hook (``check`` refused objectives that need any)."""
        return None

    def outputs(self, batch: dict, hidden: bool, attentions: bool) -> CachedLMOutput:
        """The rows of the batch's ``idx``."""
        if "idx" not in batch:
            raise DistillError("the training batches carry no 'idx' column, so the teacher cache cannot find rows",
                               "tokenize the blocks with tokenize_lm(..., index=True)")
        return self(batch)

    def __call__(self, batch: dict) -> CachedLMOutput:
        start = time.perf_counter()
        idx = batch["idx"].cpu().numpy().astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise DistillError(f"row {int(idx.max())} is outside the teacher cache of {len(self)} rows",
                               "the cache was built for other blocks: delete it or use another output dir")
        width = batch["input_ids"].shape[1]
        if width != self.logprobs.shape[1]:
            raise DistillError(f"the batch's blocks have {width} tokens, the teacher cache's {self.logprobs.shape[1]}",
                               "the cache is stale (another block size): delete it and run again")
        device = batch["input_ids"].device
        order = np.argsort(idx)  # sorted reads are sequential on disk; put back in batch order after
        rows = idx[order]
        back = torch.from_numpy(np.argsort(order))

        def read(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(array[rows]))[back].to(device)

        teacher = TopKTeacher(indices=read(self.indices), logprobs=read(self.logprobs), tail_logprob=read(self.tail),
                              temperature=self.temperature)
        self.rows_served += len(idx)
        self.lookup_seconds += time.perf_counter() - start
        return CachedLMOutput(teacher)

    def summary(self) -> dict:
        """What the report records: where, k, size on disk, teacher seconds of one pass, and the time saved."""
        passes = self.rows_served / max(len(self), 1)
        teacher = self.manifest["teacher_seconds"]
        return {"path": str(self.path), "top_k": self.top_k, "temperature": self.temperature,
                "dtype": self.manifest["dtype"], "size_bytes": int(self.manifest["bytes"]), "rows": len(self),
                "tokens": int(self.manifest["tokens"]), "built": self.built_seconds > 0,
                "build_seconds": round(self.built_seconds, 3), "teacher_seconds": round(teacher, 3),
                "passes_served": round(passes, 3), "lookup_seconds": round(self.lookup_seconds, 3),
                "seconds_saved": round(teacher * passes - self.lookup_seconds - self.built_seconds, 3)}


def check_constant_temperature(config, temperature: float | None = None) -> None:
    """The cached top-k log-probabilities hold for one temperature: refuse a temperature schedule, or a run at
    another temperature than the cache's."""
    if config.temperature_schedule != "constant":
        raise ConfigError(f"--temperature-schedule {config.temperature_schedule} changes T during training, but the "
                          "causal-LM teacher cache holds log-probabilities at one temperature",
                          "drop --temperature-schedule or --cache-teacher")
    if temperature is not None and not math.isclose(config.temperature, temperature):
        raise ConfigError(f"the teacher cache was built at temperature {temperature}, the run uses "
                          f"{config.temperature}", "delete the cache dir (it is rebuilt) or use its temperature")


def _blocks_of(data):
    """The dataset behind ``data`` (a dataset or its loader), checked to be tokenized with ``idx`` = row."""
    dataset = getattr(data, "dataset", data)
    columns = getattr(dataset, "column_names", [])
    if "input_ids" not in columns:
        raise ConfigError("the data given to the teacher cache is not tokenized", "pass distill.data.lm_kind blocks")
    idx = np.asarray(dataset.with_format("numpy")["idx"]) if "idx" in columns else None
    if idx is not None and not np.array_equal(idx, np.arange(len(dataset))):
        raise ConfigError("the blocks' 'idx' column is not their row positions (rows were reordered or selected "
                          "after indexing)", "select blocks first, then add idx")
    return dataset


def cache_lm_teacher(teacher: torch.nn.Module, blocks, path: str | Path, *, top_k: int = 20,
                     temperature: float = 1.0, dtype: str = "float16", batch_size: int = 8,
                     device: str = "auto", verify: bool = True) -> CachedLMTeacher:
    """The top-k teacher over ``blocks`` (packed causal-LM blocks, or their loader), cached under ``path``.

    Reuses a sound cache with the same fingerprint; otherwise runs the teacher once, in row order, and writes the
    cache atomically (a temporary dir renamed into place). ``top_k`` is capped at the vocabulary. Single process.
    """
    if dtype not in DTYPES:
        raise ConfigError(f"cache dtype '{dtype}' is unknown", f"choose one of: {', '.join(DTYPES)}")
    if top_k < 1:
        raise ConfigError(f"--cache-top-k {top_k} must be ≥ 1", "use e.g. --cache-top-k 20")
    path, dataset, dev = Path(path), _blocks_of(blocks), resolve_device(device)
    k = min(top_k, int(teacher.config.vocab_size))
    stored = np.dtype(DTYPES[dtype]).name
    fp = lm_fingerprint(teacher, dataset, top_k=k, temperature=temperature, dtype=stored,
                        mixed_precision=dev.type == "cuda")
    reason = check_cache(path, fp, verify=verify)
    if reason is None:
        info(f"  reusing the teacher cache in {path}")
        return CachedLMTeacher(path, json.loads((path / MANIFEST).read_text()))
    if reason != "no manifest" or path.exists():
        info(f"  teacher cache {path}: {reason}; rebuilding")
    start = time.perf_counter()
    manifest = _build(teacher, dataset, path, fp, k=k, temperature=temperature, dtype=DTYPES[dtype],
                      batch_size=batch_size, device=dev)
    return CachedLMTeacher(path, manifest, time.perf_counter() - start)


def _build(teacher, dataset, path: Path, fp: str, *, k: int, temperature: float, dtype, batch_size: int,
           device: torch.device) -> dict:
    """Run the teacher over every block, write the arrays into a temporary dir and seal it into ``path``."""
    n, width = len(dataset), len(dataset[0]["input_ids"])
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        logprobs = np.lib.format.open_memmap(tmp / "logprobs.npy", "w+", dtype, (n, width, k))
        indices = np.lib.format.open_memmap(tmp / "indices.npy", "w+", np.int32, (n, width, k))
        tail = np.lib.format.open_memmap(tmp / "tail.npy", "w+", np.float32, (n, width))
        seconds = _run_teacher(teacher, dataset, batch_size, device, k, temperature, (logprobs, indices, tail))
        for array in (logprobs, indices, tail):
            array.flush()
        del logprobs, indices, tail
        return seal_cache(tmp, path, {"kind": KIND, "fingerprint": fp, "rows": n, "block_size": width,
                                      "tokens": n * width, "top_k": k, "temperature": float(temperature),
                                      "vocab_size": int(teacher.config.vocab_size), "dtype": np.dtype(dtype).name,
                                      "teacher_seconds": seconds}, files=FILES)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run_teacher(teacher, dataset, batch_size: int, device: torch.device, k: int, temperature: float,
                 arrays: tuple) -> float:
    """Fill (log-probabilities, ids, tail) block range by block range; returns the seconds spent in the teacher."""
    logprobs, indices, tail = arrays
    teacher.to(device).eval()
    seconds = 0.0
    columns = dataset.with_format("torch", columns=list(MODEL_INPUTS))
    for first in range(0, len(dataset), batch_size):
        rows = columns[first:first + batch_size]
        inputs = {key: rows[key].to(device) for key in MODEL_INPUTS}
        start = time.perf_counter()
        with torch.inference_mode(), autocast(device):
            logits = teacher(**inputs).logits.float()
        top = truncate_teacher(logits, k, temperature)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds += time.perf_counter() - start
        end = first + len(inputs["input_ids"])
        logprobs[first:end] = top.logprobs.cpu().numpy()
        indices[first:end] = top.indices.cpu().numpy()
        tail[first:end] = top.tail_logprob.cpu().numpy()
    return seconds

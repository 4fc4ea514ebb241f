"""Run the teacher once over the training set and keep its outputs on disk, so later epochs and runs skip it.

A cache is a directory: ``manifest.json`` (fingerprint, shapes, sizes, SHA-256 of every file) and numpy arrays
opened memory-mapped: ``logits.npy`` (N × k, the top-k values; all classes when k ≥ labels), ``logit_ids.npy``
(N × k, only when k < labels), ``hidden.npy`` (T × layers × H, every real token of every row, flattened) and
``offsets.npy`` (N + 1, where each row's tokens start). The fingerprint covers the teacher (weights hash and
config), the tokenized rows, the tokenizer vocabulary, the max length and the cache settings; a cache whose
fingerprint, sizes or checksums do not match is rebuilt, never used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from distill.core.console import info
from distill.core.dist import is_main_process, wait_for_everyone
from distill.core.errors import ConfigError, DistillError
from distill.core.runtime import autocast, resolve_device
from distill.train.sharding import full_state_dict, is_sharded

if TYPE_CHECKING:
    from distill.objective.objective import Objective

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
FILES = ("logits.npy", "logit_ids.npy", "hidden.npy", "offsets.npy")
DTYPES = {"float16": np.float16, "fp16": np.float16, "float32": np.float32, "fp32": np.float32}
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
FILL_BELOW = 20.0  # logits of classes outside the top k: this far below the smallest kept one


# ---- what a lookup returns -------------------------------------------------------------------------------------

class HiddenStates(Sequence):
    """The cached teacher layers, indexed like ``hidden_states`` (0 = embeddings, -1 = last layer)."""

    def __init__(self, layers: dict[int, torch.Tensor], n_states: int) -> None:
        self.layers, self.n_states = layers, n_states

    def __len__(self) -> int:
        return self.n_states

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.n_states))]
        layer = index + self.n_states if index < 0 else index
        if layer not in self.layers:
            raise ConfigError(f"teacher layer {index} is not in the teacher cache (it holds {sorted(self.layers)})",
                              "rebuild the cache with hidden_layers covering the layers the loss uses")
        return self.layers[layer]


@dataclass
class CachedOutput:
    """Looks like a model output to ``Objective``: ``logits`` and (the cached) ``hidden_states``."""

    logits: torch.Tensor
    hidden_states: HiddenStates | None = None
    attentions: None = None


# ---- fingerprints ----------------------------------------------------------------------------------------------

def weights_hash(model: torch.nn.Module, state: dict[str, torch.Tensor] | None = None) -> str:
    """SHA-256 over every parameter and buffer (name, dtype, shape and bytes); ``state`` stands in for the model's
    own state dict (a sharded teacher's gathered weights)."""
    digest = hashlib.sha256()
    for name, tensor in sorted((model.state_dict() if state is None else state).items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _rows(dataset) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per model-input column: (flattened values, row lengths), read from Arrow when possible."""
    out = {}
    try:
        import pyarrow.compute as pc

        table = dataset.with_format("arrow")[:]
        for col in MODEL_INPUTS:
            if col in table.column_names:
                out[col] = (pc.list_flatten(table.column(col)).to_numpy(), pc.list_value_length(
                    table.column(col)).to_numpy())
        return out
    except (AttributeError, ImportError, TypeError):
        rows = list(dataset)
        for col in MODEL_INPUTS:
            if col in rows[0]:
                out[col] = (np.concatenate([np.asarray(r[col]) for r in rows]), np.array([len(r[col]) for r in rows]))
        return out


def data_hash(dataset) -> str:
    """SHA-256 of the tokenized rows (token ids, segment ids, masks and lengths), in order."""
    digest = hashlib.sha256()
    for col, (flat, lengths) in sorted(_rows(dataset).items()):
        digest.update(col.encode())
        digest.update(np.ascontiguousarray(lengths, dtype=np.int64).tobytes())
        digest.update(np.ascontiguousarray(flat, dtype=np.int64).tobytes())
    return digest.hexdigest()


def vocab_hash(tokenizer) -> str | None:
    """SHA-256 of the tokenizer's vocabulary, or None without a tokenizer."""
    if tokenizer is None:
        return None
    return hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()


def fingerprint(teacher: torch.nn.Module, dataset, *, tokenizer=None, max_length: int | None = None,
                top_k: int, hidden_layers: Sequence[int], dtype: str, mixed_precision: bool,
                state: dict[str, torch.Tensor] | None = None) -> str:
    """What the cached outputs depend on, hashed: a cache with another fingerprint is stale."""
    parts = {"format": FORMAT_VERSION, "weights": weights_hash(teacher, state),
             "config": teacher.config.to_json_string(),
             "data": data_hash(dataset), "vocab": vocab_hash(tokenizer), "max_length": max_length, "top_k": top_k,
             "hidden_layers": list(hidden_layers), "dtype": dtype, "mixed_precision": mixed_precision}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


# ---- the cache -------------------------------------------------------------------------------------------------

class CachedTeacher:
    """The teacher's recorded outputs, a ``distill.train.teacher.TeacherSource`` the training loop uses in place of
    the teacher (logits and the cached hidden states only); also a callable batch (with ``idx``) -> ``CachedOutput``.
    """

    def __init__(self, path: Path, manifest: dict, built_seconds: float = 0.0) -> None:
        self.path, self.manifest = Path(path), manifest
        self.layers: list[int] = list(manifest["hidden_layers"])
        self.n_states: int = manifest["n_states"]
        self.num_labels: int = manifest["num_labels"]
        self.values = np.load(self.path / "logits.npy", mmap_mode="r")
        self.ids = np.load(self.path / "logit_ids.npy", mmap_mode="r") if manifest["sparse_logits"] else None
        self.offsets = np.load(self.path / "offsets.npy")
        self.hidden = np.load(self.path / "hidden.npy", mmap_mode="r") if self.layers else None
        self.built_seconds = built_seconds
        self.rows_served = 0
        self.lookup_seconds = 0.0

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def require_layers(self, layers: Sequence[int]) -> None:
        """Fail early (before training) when the loss needs a teacher layer the cache does not hold."""
        missing = sorted({i + self.n_states if i < 0 else i for i in layers} - set(self.layers))
        if missing:
            raise ConfigError(f"the loss needs teacher layer(s) {missing} but the cache holds {self.layers}",
                              "rebuild it with hidden_layers=distill.train.loop.teacher_layers_needed(objective)")

    # ---- the TeacherSource protocol (distill.train.teacher) ----

    def prepare(self, device: torch.device, dtype: str) -> None:
        """Nothing to place: lookups land on the batch's device."""

    def check(self, part: Objective) -> None:
        """Refuse an objective part that needs more than logits and the cached hidden states."""
        if part.needs_attentions or part.needs_qkv:
            raise ConfigError("the teacher cache holds no attention maps or query/key/value",
                              "drop --cache-teacher, or use --attention-weight 0 and --relation-weight 0")
        self.require_layers(part.teacher_layers)

    def watch(self, stack: contextlib.ExitStack, attentions: bool, qkv_layer: int | None) -> None:
        """Recorded outputs have no modules to hook (``check`` refused objectives that need any)."""
        return None

    def outputs(self, batch: dict, hidden: bool, attentions: bool) -> CachedOutput:
        """The rows of the batch's ``idx``."""
        if "idx" not in batch:
            raise DistillError("the training batches carry no 'idx' column, so the teacher cache cannot find rows",
                               "tokenize the training set with tokenize(..., index=True)")
        return self(batch)

    def __call__(self, batch: dict) -> CachedOutput:
        start = time.perf_counter()
        idx = batch["idx"].cpu().numpy().astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise DistillError(f"row {int(idx.max())} is outside the teacher cache of {len(self)} rows",
                               "the cache was built for another data set: delete it or use another cache dir")
        device = batch["input_ids"].device
        logits = torch.from_numpy(self._logits(idx)).to(device)
        hidden = self._hidden(idx, batch["attention_mask"], device) if self.layers else None
        self.rows_served += len(idx)
        self.lookup_seconds += time.perf_counter() - start
        return CachedOutput(logits, hidden)

    def _logits(self, idx: np.ndarray) -> np.ndarray:
        values = np.asarray(self.values[idx], dtype=np.float32)
        if self.ids is None:
            return values
        full = np.repeat(values.min(axis=1, keepdims=True) - FILL_BELOW, self.num_labels, axis=1)
        np.put_along_axis(full, np.asarray(self.ids[idx], dtype=np.int64), values, axis=1)
        return full

    def _hidden(self, idx: np.ndarray, mask: torch.Tensor, device: torch.device) -> HiddenStates:
        starts, ends = self.offsets[idx], self.offsets[idx + 1]
        real = mask.to("cpu").bool()
        if not np.array_equal(real.sum(1).numpy(), ends - starts):
            raise DistillError("the batch's token counts differ from the teacher cache's rows",
                               "the cache is stale (other data or max length): delete it and run again")
        flat = torch.from_numpy(np.concatenate([self.hidden[s:e] for s, e in zip(starts, ends, strict=True)]))
        full = torch.zeros((*real.shape, *flat.shape[1:]), dtype=flat.dtype)
        full[real] = flat
        full = full.to(device, non_blocking=True).float()
        return HiddenStates({layer: full[:, :, i] for i, layer in enumerate(self.layers)}, self.n_states)

    def summary(self) -> dict:
        """Size on disk and time saved: teacher time avoided (at least one build pass per pass served), less
        lookups and, when built in this process, the build itself."""
        passes = self.rows_served / max(len(self), 1)
        teacher = self.manifest["teacher_seconds"]
        saved = teacher * passes - self.lookup_seconds - self.built_seconds
        return {"path": str(self.path), "size_mb": round(self.manifest["bytes"] / 1e6, 3), "rows": len(self),
                "tokens": self.manifest["tokens"], "hidden_layers": self.layers, "top_k": self.manifest["top_k"],
                "built": self.built_seconds > 0, "build_seconds": round(self.built_seconds, 3),
                "teacher_seconds_per_pass": round(teacher, 3), "passes_served": round(passes, 3),
                "lookup_seconds": round(self.lookup_seconds, 3), "seconds_saved": round(saved, 3)}


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def check_cache(path: Path, expected: str | None, *, verify: bool = True) -> str | None:
    """Why the cache at ``path`` must not be used (missing, stale, truncated, corrupt), or None if it is sound."""
    manifest_path = Path(path) / MANIFEST
    if not manifest_path.is_file():
        return "no manifest"
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (ValueError, KeyError, TypeError):
        return "unreadable manifest"
    if manifest.get("format") != FORMAT_VERSION:
        return f"format {manifest.get('format')} is not {FORMAT_VERSION}"
    if expected is not None and manifest.get("fingerprint") != expected:
        return "fingerprint mismatch (teacher, data, tokenizer or settings changed)"
    for name, meta in files.items():
        file = Path(path) / name
        if not file.is_file() or file.stat().st_size != meta["bytes"]:
            return f"{name} is missing or truncated"
        if verify and _sha256(file) != meta["sha256"]:
            return f"{name} fails its checksum"
    return None


def _open_manifest(path: Path) -> dict:
    return json.loads((Path(path) / MANIFEST).read_text())


def _remove_cache(path: Path, files: Sequence[str] = FILES) -> None:
    """Delete a stale cache dir, refusing a directory holding files a cache (of ``files``) never writes."""
    if not path.exists():
        return
    if not path.is_dir():
        raise ConfigError(f"teacher cache path '{path}' is a file", "choose a directory for --cache-teacher")
    foreign = [p.name for p in path.iterdir() if p.name not in (*files, MANIFEST)]
    if foreign:
        raise ConfigError(f"'{path}' exists and is not a teacher cache (it holds {', '.join(sorted(foreign)[:3])})",
                          "choose an empty or new directory for --cache-teacher")
    shutil.rmtree(path)


def _normalise_layers(hidden_layers: Sequence[int], n_states: int) -> list[int]:
    layers = sorted({i + n_states if i < 0 else i for i in hidden_layers})
    bad = [i for i in layers if not 0 <= i < n_states]
    if bad:
        raise ConfigError(f"hidden layer(s) {bad} do not exist: the teacher has {n_states} hidden states",
                          f"use indices in 0..{n_states - 1} (0 = embeddings) or negative ones from the end")
    return layers


def _dataset_of(data):
    dataset = getattr(data, "dataset", data)
    if "input_ids" not in getattr(dataset, "column_names", ["input_ids"]):
        raise ConfigError("the data given to the teacher cache is not tokenized", "pass distill.data.tokenize(...)")
    if "idx" in getattr(dataset, "column_names", []):
        idx = np.asarray(dataset.with_format("numpy")["idx"])
        if not np.array_equal(idx, np.arange(len(dataset))):
            raise ConfigError("the dataset's 'idx' column is not its row positions (rows were reordered or "
                              "selected after tokenizing)", "select rows first, then tokenize(..., index=True)")
    return dataset


def seal_cache(tmp: Path, path: Path, facts: dict, files: Sequence[str] = FILES) -> dict:
    """Finish a cache written into ``tmp``: checksum its files, write the manifest (``facts`` + format, files,
    bytes, created) and move it to ``path`` in one ``os.replace`` (a stale cache there, holding only ``files``, is
    removed first). Returns the manifest."""
    meta = {f.name: {"bytes": f.stat().st_size, "sha256": _sha256(f)} for f in sorted(tmp.iterdir())}
    manifest = {"format": FORMAT_VERSION, **facts, "files": meta, "bytes": sum(m["bytes"] for m in meta.values()),
                "created": time.time()}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    _remove_cache(path, files)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, path)
    return manifest


class _PadOf:
    """The pad settings the collator needs, without a tokenizer."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id, self.padding_side = pad_token_id, "right"


def cache_teacher_outputs(teacher: torch.nn.Module, data, path: str | Path, *, top_k: int = 20,
                          hidden_layers: Sequence[int] = (), dtype: str = "float16", batch_size: int = 64,
                          tokenizer=None, max_length: int | None = None, device: str = "auto",
                          verify: bool = True) -> CachedTeacher:
    """The teacher's outputs over ``data`` (a tokenized dataset or its loader), cached under ``path``.

    Reuses a sound cache with the same fingerprint, otherwise runs the teacher once (rows sorted by length, so
    almost nothing is padded) and writes the cache atomically. Under ``accelerate launch`` rank 0 builds and the
    others wait; a sharded teacher (``distill.train.sharding``) runs on every process and rank 0 writes. ``summary()``
    of the result reports the size and the time saved.
    """
    if dtype not in DTYPES:
        raise ConfigError(f"cache dtype '{dtype}' is unknown", f"choose one of: {', '.join(DTYPES)}")
    if top_k < 1:
        raise ConfigError(f"top_k {top_k} must be ≥ 1", "use e.g. top_k=20 (classification keeps every label)")
    path = Path(path)
    dataset = _dataset_of(data)
    n_states = teacher.config.num_hidden_layers + 1
    layers = _normalise_layers(hidden_layers, n_states)
    dev = resolve_device(device)
    built = 0.0
    sharded = is_sharded(teacher)  # every process holds a shard: all run the teacher, the main one writes
    state = full_state_dict(teacher) if sharded else None
    reason = None
    if is_main_process():
        fp = fingerprint(teacher, dataset, tokenizer=tokenizer, max_length=max_length, top_k=top_k,
                         hidden_layers=layers, dtype=np.dtype(DTYPES[dtype]).name, mixed_precision=dev.type == "cuda",
                         state=state)
        reason = check_cache(path, fp, verify=verify)
    del state
    if sharded:
        reason = _from_main(reason)
    if reason is not None:
        if is_main_process() and (reason != "no manifest" or path.exists()):
            info(f"  teacher cache {path}: {reason}; rebuilding")
        if is_main_process() or sharded:
            start = time.perf_counter()
            pad_id = getattr(tokenizer, "pad_token_id", None) or getattr(teacher.config, "pad_token_id", 0) or 0
            _build(teacher, dataset, path, fp if is_main_process() else "", top_k=top_k, layers=layers,
                   dtype=DTYPES[dtype], batch_size=batch_size, pad=tokenizer or _PadOf(pad_id), device=dev,
                   write=is_main_process())
            built = time.perf_counter() - start
    elif is_main_process():
        info(f"  reusing the teacher cache in {path}")
    wait_for_everyone(device)
    return CachedTeacher(path, _open_manifest(path), built)


def _from_main(value):
    """The main process's ``value`` on every process (a broadcast)."""
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _build(teacher, dataset, path: Path, fp: str, *, top_k: int, layers: list[int], dtype, batch_size: int, pad,
           device: torch.device, write: bool = True) -> None:
    """Run the teacher over every row and write the cache into a temporary dir renamed into place when done.

    ``write=False``: run the same forwards and keep nothing (the other processes of a sharded teacher)."""
    from torch.utils.data import DataLoader

    from distill.data import LengthGroupedBatchSampler, PadCollator, row_lengths

    lengths = np.asarray(row_lengths(dataset), dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    n, num_labels = len(lengths), int(teacher.config.num_labels)
    k = min(top_k, num_labels)
    sparse = k < num_labels
    batches = LengthGroupedBatchSampler(lengths.tolist(), batch_size, shuffle=False).batches()
    loader = DataLoader(dataset, batch_sampler=batches, collate_fn=PadCollator(pad))
    if not write:
        _run_teacher(teacher, loader, batches, device, layers, k, sparse, None, None, None, offsets)
        return
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        values = np.lib.format.open_memmap(tmp / "logits.npy", "w+", dtype, (n, k))
        ids = np.lib.format.open_memmap(tmp / "logit_ids.npy", "w+", np.int32, (n, k)) if sparse else None
        width = teacher.config.hidden_size
        hidden = (np.lib.format.open_memmap(tmp / "hidden.npy", "w+", dtype, (int(offsets[-1]), len(layers), width))
                  if layers else None)
        np.save(tmp / "offsets.npy", offsets)
        teacher_seconds = _run_teacher(teacher, loader, batches, device, layers, k, sparse, values, ids, hidden,
                                       offsets)
        for array in (values, ids, hidden):
            if array is not None:
                array.flush()
        del values, ids, hidden
        seal_cache(tmp, path, {"fingerprint": fp, "rows": n, "tokens": int(offsets[-1]), "num_labels": num_labels,
                               "top_k": k, "sparse_logits": sparse, "hidden_layers": layers,
                               "n_states": teacher.config.num_hidden_layers + 1, "hidden_size": width,
                               "dtype": np.dtype(dtype).name, "teacher_seconds": teacher_seconds})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run_teacher(teacher, loader, batches, device, layers, k, sparse, values, ids, hidden, offsets) -> float:
    """Fill the arrays batch by batch (``values`` None: only run the forwards); returns the seconds spent in the
    teacher's forward passes."""
    if not is_sharded(teacher):  # a sharded teacher is placed already
        teacher.to(device)
    teacher.eval()
    seconds = 0.0
    for rows, batch in zip(batches, loader, strict=True):
        inputs = {key: v.to(device) for key, v in batch.items() if key in MODEL_INPUTS}
        start = time.perf_counter()
        with torch.inference_mode(), autocast(device):
            out = teacher(**inputs, output_hidden_states=bool(layers))
        logits = out.logits.float()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds += time.perf_counter() - start
        if values is None:
            continue
        rows = np.asarray(rows, dtype=np.int64)
        if sparse:
            top = logits.topk(k, dim=-1)
            values[rows] = top.values.cpu().numpy()
            ids[rows] = top.indices.cpu().numpy()
        else:
            values[rows] = logits.cpu().numpy()
        if layers:
            stacked = torch.stack([out.hidden_states[i] for i in layers], dim=2).float()
            real = inputs["attention_mask"].bool()
            flat = stacked[real].to("cpu").numpy()  # (tokens, layers, H), row after row
            pos = 0
            for r in rows:
                count = int(offsets[r + 1] - offsets[r])
                hidden[offsets[r]:offsets[r + 1]] = flat[pos:pos + count]
                pos += count
    return seconds

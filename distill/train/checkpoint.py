"""Training checkpoints: written whole or not at all, checksummed, the last K kept, the newest intact one loaded.

A checkpoint is a directory ``step-NNNNNNNN`` holding tensors as safetensors (one file per group: model weights,
objective projections, best-epoch weights), the optimiser / scheduler / grad-scaler state and the torch RNG states
in ``trainer.pt`` (tensors and plain containers only, read back with ``torch.load(weights_only=True)``), everything
else (position, history, python and numpy RNG) in ``state.json``, and ``manifest.json`` with each file's size and
SHA-256. It is built in a temporary directory renamed into place (``staged_dir``), so a crash or a full disk leaves
the previous checkpoint as it was. A checkpoint that fails to load is skipped with a warning for the one before.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from distill.core.artifacts import staged_dir, write_json
from distill.core.console import get_logger
from distill.core.errors import ConfigError, RunError

FORMAT = 1
MANIFEST, STATE, TRAINER = "manifest.json", "state.json", "trainer.pt"
_NAME = re.compile(r"^step-(\d+)$")
WRITE_ERRNOS = {errno.ENOSPC, errno.EACCES, errno.EPERM, errno.EROFS, errno.EDQUOT}
log = get_logger("distill.train.checkpoint")


@dataclass
class Checkpoint:
    """One loaded checkpoint: tensor groups, the ``trainer.pt`` dict and the JSON state."""

    path: Path
    step: int
    tensors: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    trainer: dict = field(default_factory=dict)
    state: dict = field(default_factory=dict)


class Checkpoints:
    """The checkpoints of one training run in ``directory``: one every ``every`` optimiser steps (0 = only where the
    loop asks, e.g. epoch ends), the newest ``keep`` kept; ``resume`` says whether the loop should load one first."""

    def __init__(self, directory: str | Path, every: int = 500, keep: int = 2, resume: bool = False) -> None:
        if every < 0:
            raise ConfigError(f"--checkpoint-every {every} is negative", "use 0 for epoch ends only, or e.g. 500")
        if keep < 1:
            raise ConfigError(f"--keep-checkpoints {keep} must be ≥ 1", "use e.g. --keep-checkpoints 2")
        self.directory, self.every, self.keep, self.resume = Path(directory), every, keep, resume
        self.last_saved: int | None = None

    def due(self, step: int) -> bool:
        """Whether the loop should write a checkpoint after optimiser step ``step``."""
        return self.every > 0 and step > 0 and step % self.every == 0

    def paths(self) -> list[Path]:
        """Checkpoint directories, newest (highest step) first."""
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.directory.iterdir() if (m := _NAME.match(p.name)) and p.is_dir()]
        return [p for _, p in sorted(found, reverse=True)]

    def save(self, step: int, *, tensors: Mapping[str, Mapping[str, torch.Tensor]], trainer: dict,
             state: dict) -> Path:
        """Write checkpoint ``step`` (replacing one of that step), then drop all but the newest ``keep``.

        A failed write raises ``RunError`` and leaves the earlier checkpoints untouched.
        """
        final = self.directory / f"step-{step:08d}"
        try:
            with staged_dir(final) as tmp:
                _write(tmp, tensors, trainer, {"format": FORMAT, "step": step, **state})
        except OSError as exc:
            kept = f"; the last complete checkpoint (step {self.last_saved}) is kept" if self.last_saved else ""
            raise write_error(exc, final, kept) from None
        self.last_saved = step
        self._prune()
        return final

    def load_latest(self) -> Checkpoint | None:
        """The newest checkpoint that loads and matches its manifest; broken ones are skipped with a warning."""
        for path in self.paths():
            try:
                return load(path)
            except Exception as exc:  # truncated, wrong checksum, unreadable: fall back to the previous one
                log.warning(f"checkpoint {path} is unusable ({_reason(exc)}): skipped, trying the previous one")
        return None

    def clear(self) -> None:
        """Delete every checkpoint of this run (its stage is saved and recorded as done)."""
        shutil.rmtree(self.directory, ignore_errors=True)

    def _prune(self) -> None:
        for old in self.paths()[self.keep:]:
            shutil.rmtree(old, ignore_errors=True)
        for stale in self.directory.glob(".step-*"):  # temporary dirs of writes that crashed
            shutil.rmtree(stale, ignore_errors=True)


def write_error(exc: OSError, path: Path, kept: str = "") -> RunError | OSError:
    """A ``RunError`` for a write that failed for lack of space or permission; other errors are returned as is."""
    if exc.errno not in WRITE_ERRNOS:
        return exc
    why = os.strerror(exc.errno)
    return RunError(f"cannot write {path} ({why})", f"free disk space or make the output dir writable{kept}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _write(tmp: Path, tensors: Mapping[str, Mapping[str, torch.Tensor]], trainer: dict, state: dict) -> None:
    """Every file of a checkpoint, then the manifest of their sizes and checksums (written last)."""
    from safetensors.torch import save_file

    for name, group in tensors.items():
        # clones: safetensors refuses tensors that share memory (tied weights)
        save_file({k: v.detach().to("cpu").clone().contiguous() for k, v in group.items()},
                  tmp / f"{name}.safetensors")
    torch.save(trainer, tmp / TRAINER)
    (tmp / STATE).write_text(json.dumps(state, default=str))
    files = {}
    for path in sorted(tmp.iterdir()):
        _fsync(path)
        files[path.name] = {"bytes": path.stat().st_size, "sha256": _sha256(path)}
    write_json(tmp / MANIFEST, {"format": FORMAT, "step": state["step"], "files": files})


def load(path: str | Path) -> Checkpoint:
    """Read one checkpoint after checking every file against the manifest (size and SHA-256)."""
    from safetensors.torch import load_file

    path = Path(path)
    manifest = json.loads((path / MANIFEST).read_text())
    files = manifest["files"]
    for name in (STATE, TRAINER):
        if name not in files:
            raise ValueError(f"the manifest lists no {name}")
    for name, meta in files.items():
        file = path / name
        if not file.is_file():
            raise FileNotFoundError(f"{name} is missing")
        if file.stat().st_size != meta["bytes"]:
            raise ValueError(f"{name} has {file.stat().st_size} bytes, the manifest says {meta['bytes']}")
        if _sha256(file) != meta["sha256"]:
            raise ValueError(f"{name} does not match its checksum")
    tensors = {name[:-len(".safetensors")]: load_file(path / name) for name in files if name.endswith(".safetensors")}
    trainer = torch.load(path / TRAINER, map_location="cpu", weights_only=True)
    state = json.loads((path / STATE).read_text())
    return Checkpoint(path, int(manifest["step"]), tensors, trainer, state)


def _reason(exc: Exception) -> str:
    text = str(exc).splitlines()[0][:160] if str(exc) else ""
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


# ---- RNG states ---------------------------------------------------------------------------------------------

def rng_state() -> tuple[dict, dict]:
    """(JSON part, tensor part) of the python, numpy, torch and CUDA generators."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    plain = {"python": [version, list(internal), gauss],
             "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]}
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["cuda"] = torch.cuda.get_rng_state_all()
    return plain, tensors


def set_rng_state(plain: dict, tensors: dict) -> None:
    """Restore what ``rng_state`` captured (the CUDA part only where CUDA is available)."""
    version, internal, gauss = plain["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = plain["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(tensors["cuda"])


# ---- a training loop's state ---------------------------------------------------------------------------------

def save_training(checkpoints: Checkpoints, step: int, *, modules: Mapping[str, torch.nn.Module], optimizer,
                  scheduler=None, scaler=None, extra: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
                  state: dict | None = None) -> Path:
    """Checkpoint modules (by name), optimiser, scheduler, grad scaler, RNG states and the loop's JSON ``state``."""
    plain, rng = rng_state()
    trainer = {"optimizer": optimizer.state_dict(), "rng": rng}
    if scheduler is not None:
        trainer["scheduler"] = scheduler.state_dict()
    if scaler is not None:
        trainer["scaler"] = scaler.state_dict()
    tensors = {name: m.state_dict() for name, m in modules.items() if len(m.state_dict())}
    tensors.update(extra or {})
    return checkpoints.save(step, tensors=tensors, trainer=trainer, state={**(state or {}), "rng": plain})


def restore_training(ckpt: Checkpoint, *, modules: Mapping[str, torch.nn.Module], optimizer, scheduler=None,
                     scaler=None) -> None:
    """Load modules, optimiser, scheduler and scaler from ``ckpt``; the RNG is restored by ``restore_rng``."""
    for name, module in modules.items():
        if name in ckpt.tensors:
            module.load_state_dict(ckpt.tensors[name])
    optimizer.load_state_dict(ckpt.trainer["optimizer"])
    if scheduler is not None and "scheduler" in ckpt.trainer:
        scheduler.load_state_dict(ckpt.trainer["scheduler"])
    if scaler is not None and "scaler" in ckpt.trainer:
        scaler.load_state_dict(ckpt.trainer["scaler"])


def restore_rng(ckpt: Checkpoint) -> None:
    """Put every generator back where it was when ``ckpt`` was written."""
    set_rng_state(ckpt.state["rng"], ckpt.trainer["rng"])


# ---- disk space ----------------------------------------------------------------------------------------------

def nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(path: str | Path, flag: str = "--output-dir") -> None:
    """Refuse an output dir that cannot be created or written (probed with a temporary file)."""
    import tempfile

    base = nearest_existing(Path(path))
    try:
        fd, probe = tempfile.mkstemp(prefix=".distill-probe-", dir=base)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"output dir '{path}' is not writable ({os.strerror(exc.errno) if exc.errno else exc})",
                          f"choose another {flag} or fix its permissions") from None


def check_free_space(path: str | Path, need_bytes: int, what: str = "this run") -> None:
    """Refuse to start when the disk holding ``path`` has less free space than ``need_bytes``."""
    free = shutil.disk_usage(nearest_existing(Path(path))).free
    if free < need_bytes:
        raise ConfigError(f"{what} needs about {need_bytes / 1e6:,.0f} MB in '{path}' but only {free / 1e6:,.0f} MB "
                          "is free", "free disk space, choose another --output-dir or lower --keep-checkpoints")


def checkpoint_bytes(param_bytes: int) -> int:
    """Bytes of one checkpoint of a model of ``param_bytes``: weights, best weights and two AdamW moments."""
    return 4 * param_bytes

"""Seeds, devices and autocast: the few places where CPU and GPU runs differ."""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) so CPU runs repeat exactly."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


RANK_VARS = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")  # torchrun, then MPI launchers
SIZE_VARS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def _first_int(names: tuple[str, ...], default: int) -> int:
    for name in names:
        if os.environ.get(name, "").strip():
            return int(os.environ[name])
    return default


def process_count() -> int:
    """How many processes a launcher (``accelerate launch``, torchrun, mpirun) started; 1 when run alone."""
    return _first_int(SIZE_VARS, 1)


def process_rank() -> int:
    """This process's global rank under a launcher; 0 when run alone."""
    return _first_int(RANK_VARS, 0)


def single_cpu_launch_note() -> str | None:
    """``accelerate launch --cpu --num_processes N`` without MPI starts one process: a note saying so, else None."""
    env = os.environ
    if env.get("ACCELERATE_USE_CPU", "").lower() == "true" and "MASTER_ADDR" in env and process_count() == 1:
        return ("note: accelerate launch --cpu started a single process (several CPU processes need mpirun); for N "
                "CPU processes use: CUDA_VISIBLE_DEVICES= accelerate launch --multi_gpu --num_processes N -m distill "
                "... --device cpu")
    return None


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA (no grad scaler needed), a no-op on CPU."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def package_versions(names=("distill", "torch", "transformers", "datasets", "evaluate", "accelerate", "torch-pruning",
                            "onnx", "onnxruntime", "onnxscript", "optimum-onnx", "numpy")) -> dict[str, str | None]:
    """Installed versions read from package metadata, without importing the packages."""
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def environment_info(seed: int | None = None, device: str = "auto") -> dict:
    """What ``env.json`` records: versions, platform, CPU, the device used and the seed."""
    import platform

    dev = resolve_device(device)
    info = {"python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": str(dev),
            "cuda": torch.version.cuda, "seed": seed, "packages": package_versions()}
    if dev.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(dev)
    return info


@dataclass(frozen=True)
class LoadPolicy:
    """What checkpoint loading may do: pickle weights and remote code are refused unless asked for."""

    allow_pickle: bool = False
    trust_remote_code: bool = False

    def from_pretrained_kwargs(self) -> dict:
        """Keyword arguments for every ``from_pretrained`` call (safetensors only, unless pickles are allowed)."""
        kwargs = {"trust_remote_code": self.trust_remote_code}
        if not self.allow_pickle:
            kwargs["use_safetensors"] = True
        return kwargs


_POLICY = [LoadPolicy()]


def load_policy() -> LoadPolicy:
    return _POLICY[-1]


@contextlib.contextmanager
def using_load_policy(policy: LoadPolicy):
    """Apply ``policy`` to every checkpoint load inside the block."""
    _POLICY.append(policy)
    try:
        yield policy
    finally:
        _POLICY.pop()


def go_offline() -> None:
    """No network at all: the Hugging Face libraries' offline switches, and any socket connect raises."""
    import socket

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[var] = "1"

    def refuse(self, address, *args, **kwargs):
        if isinstance(address, str) or (isinstance(address, tuple) and str(address[0]) in ("127.0.0.1", "::1")):
            return _connect(self, address, *args, **kwargs)  # local IPC (e.g. torch's own helpers) stays allowed
        raise OSError(f"network access refused by --offline (connect to {address})")

    _connect = socket.socket.connect
    if getattr(socket.socket.connect, "__name__", "") != "refuse":
        socket.socket.connect = refuse

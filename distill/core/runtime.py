"""Seeds, devices and autocast: the few places where CPU and GPU runs differ."""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) so CPU runs repeat exactly."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


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

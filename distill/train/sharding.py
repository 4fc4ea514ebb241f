"""FSDP for teachers that do not fit one device: each process keeps 1/N of the teacher's weights.

Under ``accelerate launch`` with ``--teacher-shard fsdp`` (or ``accelerate launch --use_fsdp``) every transformer
block and then the whole teacher go through PyTorch's ``fully_shard`` (FSDP2): parameters are split across the
processes and each block's are all-gathered just before it runs and freed after, so a process holds its shard plus
one block. The student stays data-parallel (DDP): it is small, and sharding it would only add communication.
Teacher fine-tuning trains the sharded model (gradients reduce-scattered by FSDP), and ``full_state_dict`` gathers
the weights back when they must be saved or measured. Every call here that runs the teacher or gathers weights is a
collective: all processes must make it, with the same batches.
"""

from __future__ import annotations

import os

import torch
from torch import nn

SHARD_CHOICES = ("auto", "none", "fsdp")
_MARK = "_distill_shards"


def fsdp_launched() -> bool:
    """Whether the run was started by ``accelerate launch --use_fsdp`` (it exports ``ACCELERATE_USE_FSDP``)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true", "yes")


def resolve_shard(choice: str, processes: int) -> bool:
    """Whether to shard the teacher: ``fsdp`` asks for it, ``auto`` follows ``accelerate launch --use_fsdp``;
    a single process has nothing to shard across (the caller says so)."""
    from distill.core.errors import UnknownNameError

    if choice not in SHARD_CHOICES:
        raise UnknownNameError("--teacher-shard", choice, SHARD_CHOICES)
    wanted = choice == "fsdp" or (choice == "auto" and fsdp_launched())
    return wanted and processes > 1


def is_sharded(model) -> bool:
    """Whether ``model`` went through ``shard`` (its parameters are DTensor shards)."""
    return isinstance(model, nn.Module) and getattr(model, _MARK, 0) > 1


def blocks(model: nn.Module) -> list[nn.Module]:
    """The units FSDP shards one at a time: the modules transformers never splits across devices
    (``_no_split_modules``, e.g. ``BertLayer``), else the items of the model's longest ``ModuleList``."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    found = [m for m in model.modules() if m is not model and type(m).__name__ in names]
    if found:
        return [m for m in found if not any(o is not m and _contains(o, m) for o in found)]  # outermost only
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    return list(max(lists, key=len)) if lists else []


def _contains(outer: nn.Module, inner: nn.Module) -> bool:
    return any(m is inner for m in outer.modules())


def shard(model: nn.Module, device: torch.device, dtype: torch.dtype | None = None) -> nn.Module:
    """Shard ``model`` in place across every process of the default group (``fully_shard`` on each block, then
    the root) on ``device``; cast to ``dtype`` first when given. Sharding a sharded model does nothing."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if is_sharded(model):
        return model
    if dtype is not None and dtype != torch.float32:
        model.to(dtype)
    world = dist.get_world_size()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    mesh = init_device_mesh(device.type, (world,))
    for block in blocks(model):
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    setattr(model, _MARK, world)
    return model


def local_parameters(model: nn.Module) -> tuple[int, int]:
    """(parameters this process holds, parameters of the whole model)."""
    held = total = 0
    for p in model.parameters():
        local = p.to_local() if hasattr(p, "to_local") else p
        held += local.numel()
        total += p.numel()
    return held, total


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights on the CPU of the main process (an empty dict elsewhere). Collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    if not is_sharded(model):
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def unsharded_copy(model: nn.Module) -> nn.Module | None:
    """A plain CPU copy of a sharded model on the main process (None elsewhere), to measure or export it.
    Collective; an unsharded model is returned as is."""
    import torch.distributed as dist

    if not is_sharded(model):
        return model
    state = full_state_dict(model)
    if dist.get_rank() != 0:
        return None
    original = type(model).__bases__[-1] if _is_fsdp_class(model) else type(model)  # FSDP<Name>(FSDPModule, Name)
    plain = original(model.config)  # on the CPU: non-persistent buffers (position ids) are not in the state dict
    plain.load_state_dict(state)
    if hasattr(plain, "tie_weights"):
        plain.tie_weights()
    return plain.eval()


def _is_fsdp_class(model: nn.Module) -> bool:
    """``fully_shard`` swaps the module's class for an ``FSDP<Name>`` subclass; the original is its last base."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)

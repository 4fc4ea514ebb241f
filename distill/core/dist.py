"""Process state under ``accelerate launch``/``torchrun``/``mpirun``: the accelerator, the main process, barriers.

One place for the verbs every layer needs (the training loop, the teacher cache, the pipeline's writes); a single
process never builds an ``Accelerator``, so CPU runs stay as they were.
"""

from __future__ import annotations

import os

from distill.core.runtime import process_count, process_rank, resolve_device

_STATE: dict = {}  # the Accelerator, built once per process


def distributed_requested() -> bool:
    """True when started by ``accelerate launch``/``torchrun``/``mpirun`` with more than one process."""
    return process_count() > 1


def get_accelerator(device: str = "auto"):
    """The process's ``accelerate.Accelerator`` when launched multi-process, else None (created once)."""
    if not distributed_requested():
        return None
    if "accelerator" not in _STATE:
        from accelerate import Accelerator

        # `accelerate launch --use_fsdp` means "shard the teacher" here (distill.train.sharding); the student stays DDP
        saved = os.environ.pop("ACCELERATE_USE_FSDP", None)
        try:
            _STATE["accelerator"] = Accelerator(cpu=resolve_device(device).type == "cpu")
        finally:
            if saved is not None:
                os.environ["ACCELERATE_USE_FSDP"] = saved
    return _STATE["accelerator"]


def is_main_process() -> bool:
    """Whether this process should write files and print (rank 0, or the only process)."""
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return process_rank() == 0


def wait_for_everyone(device: str = "auto") -> None:
    """A barrier across processes (joining the process group first if need be); a no-op in a single process."""
    acc = get_accelerator(device)
    if acc is not None:
        acc.wait_for_everyone()


def leave_process_group() -> None:
    """Leave the process group once this process is done (a no-op in a single process).

    The secondary processes of a launched run stop after training while the main one exports, quantizes and
    scores; left to interpreter exit, gloo's worker threads were torn down mid-way and aborted one of them
    ("terminate called without an active exception", exit -6, seen under CI load), and the launcher then killed
    the main process. Called after a process's last collective operation, so leaving needs no barrier."""
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def end_secondary_process() -> None:
    """On a secondary process of a launched run that has left the process group: flush and exit at once (status 0),
    skipping interpreter finalization. Sharded teachers keep references to the process group, so its gloo worker
    threads outlive ``destroy_process_group`` and were torn down during finalization, where one aborted ("terminate
    called without an active exception", exit -6) and the launcher killed the main process mid-report (seen once in
    CI with two FSDP teachers, under load). A secondary process has written all it writes by then. A no-op in a
    single process and on the main one."""
    import sys

    if not distributed_requested() or process_rank() == 0:
        return
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(0)

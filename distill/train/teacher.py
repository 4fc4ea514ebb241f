"""The teachers a training loop learns from, behind one protocol, ``TeacherSource``: a live module
(``LiveTeacher``), a module sharded across processes (``ShardedTeacher``, ``distill.train.sharding``), or outputs
recorded on disk (``teachers.CachedTeacher``). ``as_teachers`` turns what callers pass to ``fit`` (nothing, one
module or source, or a list of them) into a list of sources, once, at the loop's entry.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import nn

from distill.data.pairs import TEACHER_PREFIX
from distill.objective.capture import capture_qkv, eager_attention
from distill.train.config import TEACHER_DTYPE_NAMES
from distill.train.sharding import is_sharded

if TYPE_CHECKING:
    from distill.objective.objective import Objective

TEACHER_DTYPES = dict(zip(TEACHER_DTYPE_NAMES, (torch.float32, torch.bfloat16, torch.float16), strict=True))
STRIPPED = ("labels", "idx")  # batch columns the models never see


@runtime_checkable
class TeacherSource(Protocol):
    """What the training loop needs of a teacher. Its outputs are constants (no gradient) that look like a model
    output to the objective: ``logits`` and, as asked, ``hidden_states`` and ``attentions``."""

    def prepare(self, device: torch.device, dtype: str) -> None:
        """Get ready to serve batches on ``device`` (``dtype``: ``TrainConfig.teacher_dtype``)."""

    def check(self, part: Objective) -> None:
        """Refuse, before training, an objective part (the one this teacher serves) it cannot give inputs to."""

    def watch(self, stack: contextlib.ExitStack, attentions: bool,
              qkv_layer: int | None) -> Mapping[int, Mapping[str, torch.Tensor]] | None:
        """Within ``stack``: return usable attention maps, and capture Q/K/V at ``qkv_layer`` (None: no capture);
        returns the capture (layer -> query/key/value, filled by each forward) or None."""

    def outputs(self, batch: dict, hidden: bool, attentions: bool) -> Any:
        """The outputs on ``batch`` (the teacher's own columns, plus ``labels`` and ``idx``)."""


def run_model(model: Any, batch: dict, hidden: bool, attentions: bool = False) -> Any:
    """A forward of ``model`` on the batch's model inputs (not labels, idx or the other model's columns)."""
    inputs = {k: v for k, v in batch.items() if k not in STRIPPED and not k.startswith(TEACHER_PREFIX)}
    if attentions:
        inputs["output_attentions"] = True
    return model(**inputs, output_hidden_states=hidden)


def as_constants(output: Any) -> Any:
    """Clone inference-mode tensors (logits, hidden states, attentions) so autograd may save them for backward."""
    for key in ("logits", "hidden_states", "attentions"):
        value = getattr(output, key, None)
        if isinstance(value, torch.Tensor):
            setattr(output, key, value.clone())
        elif isinstance(value, tuple) and value:
            setattr(output, key, tuple(v.clone() for v in value))
    return output


class LiveTeacher:
    """A model run on every batch under ``torch.inference_mode``; on GPU cast as a copy to ``--teacher-dtype``."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def prepare(self, device: torch.device, dtype: str) -> None:
        cast = TEACHER_DTYPES[dtype]
        if device.type == "cuda" and cast != torch.float32:
            self.module = copy.deepcopy(self.module.to("cpu")).to(device=device, dtype=cast).eval()
        else:
            self.module = self.module.to(device).eval()

    def check(self, part: Objective) -> None:
        """A live model gives everything an objective asks for."""

    def watch(self, stack: contextlib.ExitStack, attentions: bool,
              qkv_layer: int | None) -> Mapping[int, Mapping[str, torch.Tensor]] | None:
        if attentions:
            stack.enter_context(eager_attention(self.module))
        return None if qkv_layer is None else stack.enter_context(capture_qkv(self.module, [qkv_layer]))

    def outputs(self, batch: dict, hidden: bool, attentions: bool) -> Any:
        with torch.inference_mode():
            out = run_model(self.module, batch, hidden, attentions)
        return as_constants(out)


class ShardedTeacher(LiveTeacher):
    """A live model already sharded across the launched processes (``distill.train.sharding.shard``), which also
    placed and cast it. Every process must run it on every batch (each forward is a collective)."""

    def prepare(self, device: torch.device, dtype: str) -> None:
        """Already placed and cast by ``shard``."""


def as_teachers(teacher: Any) -> list[TeacherSource]:
    """``fit``'s ``teacher`` as a list of sources: None -> [], a module -> a live (or sharded) teacher, a
    ``TeacherSource`` as it is, a list or tuple item by item."""
    if teacher is None:
        return []
    if isinstance(teacher, (list, tuple)):
        return [source for one in teacher for source in as_teachers(one)]
    if isinstance(teacher, nn.Module):
        return [ShardedTeacher(teacher) if is_sharded(teacher) else LiveTeacher(teacher)]
    if isinstance(teacher, TeacherSource):
        return [teacher]
    raise TypeError(f"a teacher must be an nn.Module or a TeacherSource, not {type(teacher).__name__}")

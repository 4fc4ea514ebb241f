"""Scores for causal LMs: sliding-window perplexity and agreement with the teacher (top-1, per-token KL).

Perplexity convention (state it with every number; ``PerplexityResult.convention`` does):

- the text is one token stream (``distill.data.lm.token_stream``: documents tokenized without special tokens,
  EOS after each); no chat template, and no BOS unless ``bos_id`` is given. Prepending a start token or a template
  changes the score a lot (on one sentence SmolLM2 went from 3.98 to 6.11 with ``<|im_start|>`` and to 29.6 with
  its chat template), and raw text has neither;
- windows of ``window`` tokens start every ``stride`` tokens (stride ≤ window). A window scores only the tokens the
  previous windows did not, so each token is scored once, with at least ``window − stride`` tokens of context
  (except at the start). Without BOS a window's first token has no context inside it and is not scored: with
  stride = window this is the "non-overlapping blocks" protocol (window − 1 scored tokens per block). With BOS the
  window is ``[BOS] + window − 1 tokens`` and every token is scored, the first ones from BOS alone;
- perplexity = exp(total NLL / scored tokens), the NLL in nats summed over every scored token (not a mean of
  per-window means).

Agreement with the teacher: both models see the same non-overlapping windows; at every position the student's most
likely next token is compared with the teacher's (top-1 agreement) and KL(teacher ‖ student) of the two next-token
distributions at T = 1 is averaged over positions (nats per token). ``compare_with_teacher`` gives both models'
perplexities (stride = window) and the agreement from one forward of each, which is what scoring a stage needs.

``model`` may be any callable that takes ``input_ids`` (1, L) or (B, L) and returns logits (B, L, V) or an object
with ``.logits``, so ONNX stages can be scored the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from distill.core.errors import ConfigError


@dataclass
class PerplexityResult:
    """Perplexity and how it was measured."""

    perplexity: float
    nll: float  # mean negative log-likelihood per scored token, nats
    tokens: int  # scored tokens
    window: int
    stride: int
    bos: bool

    @property
    def convention(self) -> str:
        """The measurement protocol in words, to print next to the number."""
        bos = "BOS prepended to each window" if self.bos else "no BOS"
        return (f"sliding window {self.window}, stride {self.stride}, {bos}, no template, "
                f"{self.tokens} scored tokens")

    def to_dict(self) -> dict:
        """The fields plus ``convention``, for JSON reports."""
        return {**asdict(self), "convention": self.convention}


@dataclass
class TeacherAgreement:
    """Top-1 next-token agreement and mean KL(teacher ‖ model) per token (T = 1), over ``tokens`` positions."""

    top1: float
    kl: float
    tokens: int
    window: int


@dataclass(frozen=True)
class Window:
    """Model input ``tokens[begin:end]`` (after a BOS when used); tokens ``first_target..end-1`` are scored."""

    begin: int
    end: int
    first_target: int


def plan_windows(n: int, window: int, stride: int | None = None, bos: bool = False) -> list[Window]:
    """The windows that score every token of an ``n``-token stream once (module docstring)."""
    span = window - 1 if bos else window  # stream tokens per window; BOS takes one input position
    stride = span if stride is None else stride
    if span < 1 or window < 2:
        raise ConfigError(f"perplexity window {window} is too small", "use a window of at least 2 tokens")
    if not 1 <= stride <= span:
        raise ConfigError(f"stride {stride} is outside 1..{span} for window {window}",
                          f"pass a stride between 1 and {span}")
    windows, prev_end, begin = [], 0, 0
    while prev_end < n:
        end = min(begin + span, n)
        first = max(begin + (0 if bos else 1), prev_end)
        if first < end:
            windows.append(Window(begin, end, first))
        prev_end, begin = max(prev_end, end), begin + stride
    return windows


def _logits(model, input_ids):
    out = model(input_ids=input_ids)
    return out.logits if hasattr(out, "logits") else out


def _groups(windows: Sequence[Window], batch_size: int) -> list[list[Window]]:
    """Consecutive windows of equal length, at most ``batch_size`` per group (one forward each)."""
    groups: list[list[Window]] = []
    for w in windows:
        last = groups[-1] if groups else None
        if last and len(last) < batch_size and last[0].end - last[0].begin == w.end - w.begin:
            last.append(w)
        else:
            groups.append([w])
    return groups


def _inputs(ids, group: list[Window], bos_id: int | None):
    """Model input (B, len) of a group of equal-length windows and labels with -100 on unscored positions."""
    import torch

    x = torch.stack([ids[w.begin:w.end] for w in group])
    labels = x.clone()
    for i, w in enumerate(group):
        labels[i, : w.first_target - w.begin] = -100
    if bos_id is not None:
        prefix = torch.full((x.shape[0], 1), int(bos_id), dtype=x.dtype)
        x, labels = torch.cat([prefix, x], 1), torch.cat([torch.full_like(prefix, -100), labels], 1)
    return x, labels


def _nll(logits, labels) -> tuple[float, int]:
    """Summed next-token NLL (nats) over labels != -100, and their count; logits (B, L, V), labels (B, L)."""
    import torch.nn.functional as F

    vocab = logits.shape[-1]
    nll = F.cross_entropy(logits[:, :-1].float().reshape(-1, vocab), labels[:, 1:].reshape(-1).to(logits.device),
                          ignore_index=-100, reduction="sum")
    return float(nll), int((labels[:, 1:] != -100).sum())


def sliding_perplexity(model, ids: Sequence[int], *, window: int = 256, stride: int | None = None,
                       bos_id: int | None = None, batch_size: int = 4, max_windows: int | None = None,
                       device=None) -> PerplexityResult:
    """Perplexity of a token stream with the sliding-window protocol above (stride defaults to the window).

    ``max_windows`` keeps only the first windows (a quick estimate; the result says how many tokens it scored).
    """
    import torch

    ids_t = torch.as_tensor(list(ids) if not isinstance(ids, torch.Tensor) else ids, dtype=torch.long)
    windows = plan_windows(len(ids_t), window, stride, bos=bos_id is not None)
    if max_windows is not None:
        windows = windows[:max_windows]
    if not windows:
        raise ConfigError(f"a stream of {len(ids_t)} tokens has nothing to score", "give more text")
    device = device or _device(model)
    total, count = 0.0, 0
    with torch.inference_mode():
        for group in _groups(windows, batch_size):
            x, labels = _inputs(ids_t, group, bos_id)
            nll, n = _nll(_logits(model, x.to(device)), labels)
            total, count = total + nll, count + n
    span = window - 1 if bos_id is not None else window
    mean = total / count
    return PerplexityResult(perplexity=math.exp(mean), nll=mean, tokens=count, window=window,
                            stride=span if stride is None else stride, bos=bos_id is not None)


def _device(model):
    """Where a torch model's weights are; CPU for callables without parameters (ONNX wrappers)."""
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration, TypeError):
        return "cpu"


@dataclass
class LMComparison:
    """One pass over non-overlapping windows: the model's and the teacher's perplexity, and their agreement."""

    model: PerplexityResult
    teacher: PerplexityResult
    agreement: TeacherAgreement


def compare_stages(models: Mapping[str, object], teacher, ids: Sequence[int], *, window: int = 256,
                   batch_size: int = 4, max_windows: int | None = None) -> dict[str, LMComparison]:
    """``compare_with_teacher`` for several models at once: the teacher runs once per window group, each model
    after it (what scoring every stage of a run needs). Returns one ``LMComparison`` per model name."""
    import torch
    import torch.nn.functional as F

    from distill.objective.lm_losses import divergence

    ids_t = torch.as_tensor(list(ids) if not isinstance(ids, torch.Tensor) else ids, dtype=torch.long)
    windows = plan_windows(len(ids_t), window)[: max_windows or None]
    if not windows:
        raise ConfigError(f"a stream of {len(ids_t)} tokens has nothing to score", "give more text")
    sums = {name: {"nll": 0.0, "same": 0.0, "kl": 0.0} for name in models}
    teacher_nll, scored, positions = 0.0, 0, 0
    with torch.inference_mode():
        for group in _groups(windows, batch_size):
            x, labels = _inputs(ids_t, group, None)
            t = _logits(teacher, x.to(_device(teacher))).float().cpu()
            nll_t, n = _nll(t, labels)
            log_p = F.log_softmax(t, -1)
            teacher_nll, scored, positions = teacher_nll + nll_t, scored + n, positions + x.numel()
            for name, model in models.items():
                s = _logits(model, x.to(_device(model))).float().cpu()
                one = sums[name]
                one["nll"] += _nll(s, labels)[0]
                one["same"] += float((s.argmax(-1) == t.argmax(-1)).sum())
                one["kl"] += float(divergence(log_p, F.log_softmax(s, -1), "forward_kl").sum())

    def ppl(total: float) -> PerplexityResult:
        return PerplexityResult(math.exp(total / scored), total / scored, scored, window, window, False)

    return {name: LMComparison(model=ppl(one["nll"]), teacher=ppl(teacher_nll),
                               agreement=TeacherAgreement(one["same"] / positions, one["kl"] / positions, positions,
                                                          window))
            for name, one in sums.items()}


def compare_with_teacher(model, teacher, ids: Sequence[int], *, window: int = 256, batch_size: int = 4,
                         max_windows: int | None = None) -> LMComparison:
    """Perplexity of both models (stride = window, no BOS) and their agreement, from one forward of each.

    Agreement counts every position of a window (each has a next-token distribution, the last one included);
    perplexity counts the positions whose next token is inside the window, as ``sliding_perplexity`` does.
    """
    return compare_stages({"model": model}, teacher, ids, window=window, batch_size=batch_size,
                          max_windows=max_windows)["model"]


def greedy_continuation(model, prompt: Sequence[int], new_tokens: int = 20, eos_id: int | None = None) -> list[int]:
    """The ``new_tokens`` most likely next tokens after ``prompt``, one at a time (no KV cache: the whole sequence is
    re-read each step, so any logits callable works, ONNX wrappers included); stops after ``eos_id``."""
    import torch

    ids = list(prompt)
    out: list[int] = []
    with torch.inference_mode():
        for _ in range(new_tokens):
            x = torch.tensor([ids], dtype=torch.long)
            nxt = int(_logits(model, x.to(_device(model)))[0, -1].argmax())
            out.append(nxt)
            ids.append(nxt)
            if eos_id is not None and nxt == eos_id:
                break
    return out


def teacher_agreement(model, teacher, ids: Sequence[int], *, window: int = 256, batch_size: int = 4,
                      max_windows: int | None = None) -> TeacherAgreement:
    """Top-1 agreement and mean KL(teacher ‖ model) at T = 1 over every position of non-overlapping windows."""
    return compare_with_teacher(model, teacher, ids, window=window, batch_size=batch_size,
                                max_windows=max_windows).agreement

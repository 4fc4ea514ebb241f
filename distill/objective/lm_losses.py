"""Token-level distillation losses for causal LMs, over the full vocabulary or a truncated (top-k) teacher.

Shapes and conventions (every function here):

- ``student_logits`` and ``teacher_logits`` are (B, L, V): the logits at position i are the next-token
  distribution after tokens 0..i, as ``*ForCausalLM`` returns them (no shift is applied here: both models see the
  same block, so position i of one is compared with position i of the other).
- ``mask`` (B, L) selects the positions that count: 1 for real tokens (``attention_mask`` of a packed or padded
  batch); ``None`` counts every position. The loss is the mean over selected positions of the per-token
  divergence summed over the vocabulary; an all-zero mask gives 0.
- Temperature T softens both sides: p = softmax(z_t / T), q = softmax(z_s / T). The KL family (forward, reverse,
  JSD) is multiplied by T² so gradient magnitudes stay comparable across temperatures (Hinton et al. 2015; the
  encoder losses do the same). Total variation is not scaled: it is bounded by 1 and its gradient shrinks as 1/T,
  not 1/T².
- Computed in float32 whatever the input dtype.

Divergences (p = teacher, q = student, per token, summed over the vocabulary v):

- ``forward_kl``: KL(p ‖ q) = Σ_v p log(p/q)  (mean-seeking; standard KD);
- ``reverse_kl``: KL(q ‖ p) = Σ_v q log(q/p)  (mode-seeking; MiniLLM);
- ``jsd``: generalized JSD(β) = β·KL(p ‖ m) + (1−β)·KL(q ‖ m) with m = β·p + (1−β)·q, in TRL's GKD convention:
  β = 0 is taken as forward KL and β = 1 as reverse KL (the limits of JSD(β)/β and JSD(β)/(1−β)), β = 0.5 is the
  symmetric Jensen–Shannon divergence (≤ log 2);
- ``tv``: total variation ½·Σ_v |p − q| ∈ [0, 1].

Truncated teacher (``TopKTeacher``, what a teacher cache keeps to avoid storing (B, L, 49k) floats): per token the
indices of the teacher's k most likely tokens, their log-probabilities at the training temperature, and the log of
the remaining (tail) mass r_t = 1 − Σ_top-k p. The tail is handled as ONE extra category ("tail bucket"): both
distributions are coarse-grained to k + 1 outcomes (the k teacher tokens, and "any other token"), where the
student's tail probability is its exact mass outside the teacher's top-k, r_s = Σ_{v ∉ top-k} q_v (computed with a
log-sum-exp over its other logits, not as 1 − Σ, so it stays accurate when tiny); the divergence is then computed
between the two (k + 1)-outcome distributions. Properties (tested):

- k = V: there is no tail and the loss equals the full-vocabulary loss (value and gradient);
- k < V: the loss is never larger than the full-vocabulary loss (data-processing inequality: every divergence
  here is an f-divergence, and merging outcomes cannot increase one). The gap is what happens inside the tail,
  which the cache no longer knows: for forward KL exactly r_t·KL(p_tail ‖ q_tail) with p_tail, q_tail the two
  distributions renormalised over the tail tokens (chain rule); for TV at most min(r_t, r_s) ≤ r_t;
- the student is pushed to put mass r_t on the tail as a whole, but not told how to spread it there.

No renormalisation over the top-k alone (which would drop r_t and overstate the teacher's confidence) and no
"spread the tail uniformly" guess (which invents a distribution the teacher did not have).

The top-k log-probabilities depend on T through the full softmax, so a cache is built for one temperature:
``truncate_teacher(teacher_logits, k, temperature)`` computes them exactly; a loss called with a different
temperature than the cache's refuses (ValueError).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

DIVERGENCES = ("forward_kl", "reverse_kl", "jsd", "tv")


@dataclass
class TopKTeacher:
    """A truncated teacher distribution per token (shapes for a (B, L) batch).

    ``indices`` (B, L, k) int64: the teacher's top-k token ids; ``logprobs`` (B, L, k): their log-probabilities at
    ``temperature`` (from the full softmax, so they sum to 1 − r_t); ``tail_logprob`` (B, L): log r_t, the log of
    the mass on every other token (−inf when k = V). A cache may store ``logprobs`` as float16 and ``indices`` as
    int32; they are upcast here.
    """

    indices: torch.Tensor
    logprobs: torch.Tensor
    tail_logprob: torch.Tensor
    temperature: float = 1.0

    @property
    def k(self) -> int:
        """Tokens kept per position."""
        return int(self.indices.shape[-1])


def truncate_teacher(teacher_logits: torch.Tensor, k: int, temperature: float = 1.0) -> TopKTeacher:
    """The ``TopKTeacher`` of full logits (B, L, V) at ``temperature``: what a top-k cache would store."""
    if not 1 <= k <= teacher_logits.shape[-1]:
        raise ValueError(f"k must be in 1..{teacher_logits.shape[-1]}, got {k}")
    log_p = F.log_softmax(teacher_logits.detach().float() / float(temperature), dim=-1)
    logprobs, indices = log_p.topk(k, dim=-1)
    tail = log_p.scatter(-1, indices, float("-inf")).logsumexp(-1)
    return TopKTeacher(indices=indices, logprobs=logprobs, tail_logprob=tail, temperature=float(temperature))


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(P ‖ Q) over the last axis from log-probabilities, with 0·log 0 = 0 (and no NaN gradient there)."""
    p = log_p.exp()
    diff = torch.where(torch.isfinite(log_p), log_p - log_q, torch.zeros_like(log_p))
    return (p * diff).sum(-1)


def divergence(log_p: torch.Tensor, log_q: torch.Tensor, kind: str = "forward_kl", beta: float = 0.5) -> torch.Tensor:
    """Per-row divergence between teacher P and student Q given as log-probabilities (..., C) -> (...).

    ``kind`` is one of ``DIVERGENCES`` (module docstring for formulas); ``beta`` is JSD's β in [0, 1].
    """
    if kind == "forward_kl":
        return _kl(log_p, log_q)
    if kind == "reverse_kl":
        return _kl(log_q, log_p)
    if kind == "tv":
        return 0.5 * (log_p.exp() - log_q.exp()).abs().sum(-1)
    if kind == "jsd":
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"JSD beta must be in [0, 1], got {beta}")
        if beta == 0.0:
            return _kl(log_p, log_q)
        if beta == 1.0:
            return _kl(log_q, log_p)
        log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log(1.0 - beta))
        return beta * _kl(log_p, log_m) + (1.0 - beta) * _kl(log_q, log_m)
    raise ValueError(f"unknown divergence '{kind}'; choose one of: {', '.join(DIVERGENCES)}")


def _scale(kind: str, temperature: float) -> float:
    """T² for the KL family, 1 for total variation (module docstring)."""
    return 1.0 if kind == "tv" else float(temperature) ** 2


def _rows(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(B, L, ...) -> (N, ...) of the selected positions only, so padding costs no vocabulary-sized work."""
    if mask is None or bool(mask.all()):  # packed blocks: a view, not a (B·L, V) copy and its backward scatter
        return x.reshape(-1, *x.shape[2:])
    return x[mask.to(device=x.device).bool()]


def lm_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor | None = None, *,
               kind: str = "forward_kl", temperature: float = 1.0, beta: float = 0.5) -> torch.Tensor:
    """Mean over ``mask`` positions of the full-vocabulary ``kind`` divergence at temperature T (× T², not TV).

    (B, L, V) logits for both models, ``mask`` (B, L); returns a scalar (0 for an all-zero mask).
    """
    t = float(temperature)
    s, tl = _rows(student_logits, mask), _rows(teacher_logits, mask)
    if s.shape[0] == 0:
        return student_logits.float().sum() * 0.0
    log_q = F.log_softmax(_soften(s, t), dim=-1)
    log_p = F.log_softmax(_soften(tl.detach(), t), dim=-1)
    per_token = _forward_kl_dense(log_p, log_q) if kind == "forward_kl" else divergence(log_p, log_q, kind, beta)
    return per_token.mean() * _scale(kind, t)


def _soften(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """float32 logits / T, without a (N, V) copy when T = 1."""
    logits = logits.float()
    return logits if temperature == 1.0 else logits / temperature


def _forward_kl_dense(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) = Σ p log p − Σ p log q for a fixed teacher p over the full vocabulary, (N, V) -> (N).

    Equal to ``_kl(log_p, log_q)`` (tested) with fewer (N, V) temporaries: the teacher's Σ p log p is a constant
    computed without grad (``nansum``: 0·log 0 = 0·(−inf) = NaN is dropped; ``xlogy`` took 130 ms a step at
    (1024, 49k)), the student sees only Σ p log q, whose gradient is q − p through the log-softmax. For finite
    student logits only (a −inf student log-probability where p = 0 would give NaN; the truncated-teacher path
    with its −inf tail keeps ``_kl``)."""
    with torch.no_grad():
        p = log_p.exp()
        neg_entropy = (p * log_p).nansum(-1)
    return neg_entropy - (p * log_q).sum(-1)


def forward_kl(student_logits, teacher_logits, mask=None, temperature: float = 1.0) -> torch.Tensor:
    """T²·KL(teacher ‖ student) per token, mean over ``mask`` positions ((B, L, V) logits)."""
    return lm_kd_loss(student_logits, teacher_logits, mask, kind="forward_kl", temperature=temperature)


def reverse_kl(student_logits, teacher_logits, mask=None, temperature: float = 1.0) -> torch.Tensor:
    """T²·KL(student ‖ teacher) per token, mean over ``mask`` positions ((B, L, V) logits)."""
    return lm_kd_loss(student_logits, teacher_logits, mask, kind="reverse_kl", temperature=temperature)


def generalized_jsd(student_logits, teacher_logits, mask=None, temperature: float = 1.0,
                    beta: float = 0.5) -> torch.Tensor:
    """T²·JSD(β) per token (TRL's GKD convention), mean over ``mask`` positions ((B, L, V) logits)."""
    return lm_kd_loss(student_logits, teacher_logits, mask, kind="jsd", temperature=temperature, beta=beta)


def total_variation(student_logits, teacher_logits, mask=None, temperature: float = 1.0) -> torch.Tensor:
    """½·Σ|p − q| per token (not scaled by T²), mean over ``mask`` positions ((B, L, V) logits)."""
    return lm_kd_loss(student_logits, teacher_logits, mask, kind="tv", temperature=temperature)


def bucket_log_probs(student_logits: torch.Tensor, teacher: TopKTeacher,
                     temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher and student as (N, k + 1) log-probabilities over (top-k tokens, tail), or (N, k) when k = V.

    ``student_logits`` (N, V) and the teacher's tensors (N, k), (N,) are rows already selected by the mask.
    """
    log_q_all = F.log_softmax(_soften(student_logits, float(temperature)), dim=-1)
    idx = teacher.indices.long()
    log_q_top = log_q_all.gather(-1, idx)
    log_p_top = teacher.logprobs.float()
    if idx.shape[-1] == student_logits.shape[-1]:  # k = V: nothing left in the tail
        return log_p_top, log_q_top
    log_q_tail = log_q_all.scatter(-1, idx, float("-inf")).logsumexp(-1, keepdim=True)
    log_p_tail = teacher.tail_logprob.float().unsqueeze(-1)
    return torch.cat([log_p_top, log_p_tail], -1), torch.cat([log_q_top, log_q_tail], -1)


def lm_kd_loss_topk(student_logits: torch.Tensor, teacher: TopKTeacher, mask: torch.Tensor | None = None, *,
                    kind: str = "forward_kl", temperature: float = 1.0, beta: float = 0.5) -> torch.Tensor:
    """``lm_kd_loss`` against a truncated teacher: the tail-bucket divergence (module docstring), mean over mask.

    ``student_logits`` (B, L, V); ``teacher`` holds (B, L, k) top-k tensors built at ``temperature``.
    """
    t = float(temperature)
    if not math.isclose(teacher.temperature, t):
        raise ValueError(f"the truncated teacher was built at temperature {teacher.temperature}, not {t}: "
                         "its top-k log-probabilities depend on the temperature; rebuild the cache")
    s = _rows(student_logits, mask)
    rows = TopKTeacher(indices=_rows(teacher.indices, mask), logprobs=_rows(teacher.logprobs, mask),
                       tail_logprob=_rows(teacher.tail_logprob, mask), temperature=t)
    if s.shape[0] == 0:
        return student_logits.float().sum() * 0.0
    log_p, log_q = bucket_log_probs(s, rows, t)
    return divergence(log_p, log_q, kind, beta).mean() * _scale(kind, t)

"""Pure loss functions for distillation; each documents its convention and has a closed-form test.

Registered in ``LOSSES`` so recipes and the CLI can name them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distill.core.registry import Registry
from distill.data.batching import IGNORE_INDEX as IGNORE_INDEX

LOSSES: Registry = Registry("loss")


@LOSSES.register("kl")
def soft_target_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                   temperature: float = 1.0) -> torch.Tensor:
    """T²·KL(teacher ‖ student) on temperature-softened distributions, averaged over the batch.

    The T² factor (Hinton et al. 2015) keeps gradient magnitudes comparable across temperatures.
    """
    t = float(temperature)
    log_p_student = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=-1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * t * t


@LOSSES.register("ce")
def hard_label_ce(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against the gold labels, mean over labelled rows.

    Rows labelled -100 (augmented text, which has only the teacher's soft targets) are skipped; a batch without
    any label gives 0 instead of NaN.
    """
    total = F.cross_entropy(student_logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (labels != IGNORE_INDEX).sum().clamp_min(1)


@LOSSES.register("token_kl")
def token_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor | None = None,
             temperature: float = 1.0) -> torch.Tensor:
    """T²·KL(teacher ‖ student) of each token's softened distribution (B, L, C), averaged over ``mask`` positions.

    For token classification the mask is ``labels != -100``: first pieces of words, not padding, special tokens or
    later pieces; without a mask every position counts. An all-false mask gives 0.
    """
    t = float(temperature)
    log_p_student = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=-1)
    per_token = F.kl_div(log_p_student, log_p_teacher, reduction="none", log_target=True).sum(-1)
    if mask is None:
        return per_token.mean() * t * t
    m = mask.to(per_token.dtype)
    return (per_token * m).sum() / m.sum().clamp_min(1.0) * t * t


@LOSSES.register("token_ce")
def token_ce(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each token (B, L, C) against its label, mean over labels ≠ -100 (0 when there are none)."""
    flat = student_logits.float().reshape(-1, student_logits.shape[-1])
    target = labels.reshape(-1)
    total = F.cross_entropy(flat, target, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (target != IGNORE_INDEX).sum().clamp_min(1)


@LOSSES.register("mse")
def logits_mse(student_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error of outputs (regression tasks: against labels or the teacher's scores)."""
    return F.mse_loss(student_logits.float().view(-1), target.float().view(-1))


@LOSSES.register("label_mse")
def label_mse(student_scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean squared error against the gold scores (B,) or (B, 1), mean over labelled rows.

    Rows labelled -100 (augmented text: the teacher's score is their only target) are skipped; a batch without any
    label gives 0 instead of NaN. With every row labelled it is ``logits_mse``.
    """
    scores, gold = student_scores.float().view(-1), labels.float().view(-1)
    keep = gold != IGNORE_INDEX
    return ((scores - gold) ** 2 * keep).sum() / keep.sum().clamp_min(1)


@LOSSES.register("hidden_mse")
def hidden_mse(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
               mask: torch.Tensor | None = None) -> torch.Tensor:
    """MSE between (projected) student and teacher hidden states, over non-padding tokens only.

    Averaged over every element of the real tokens, so padding never changes the value.
    """
    diff = (student_hidden.float() - teacher_hidden.float()) ** 2
    if mask is None:
        return diff.mean()
    m = mask.to(diff.dtype).unsqueeze(-1)
    return (diff * m).sum() / (m.sum() * diff.shape[-1]).clamp_min(1.0)


@LOSSES.register("embedding_mse")
def embedding_mse(student_embeddings: torch.Tensor, teacher_embeddings: torch.Tensor,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
    """TinyBERT embedding-layer loss (Jiao et al. 2020): ``hidden_mse`` on ``hidden_states[0]`` (projected)."""
    return hidden_mse(student_embeddings, teacher_embeddings, mask)


@LOSSES.register("hidden_cosine")
def hidden_cosine(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
    """DistilBERT cosine loss (Sanh et al. 2019): mean over real tokens of 1 − cos(h_s, h_t)."""
    per_token = 1.0 - F.cosine_similarity(student_hidden.float(), teacher_hidden.float(), dim=-1, eps=1e-8)
    if mask is None:
        return per_token.mean()
    m = mask.to(per_token.dtype)
    return (per_token * m).sum() / m.sum().clamp_min(1.0)


def _head_aligned(student_attn: torch.Tensor, teacher_attn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, H, L, L) maps as float; when head counts differ both become their mean over heads (B, 1, L, L)."""
    s, t = student_attn.float(), teacher_attn.float()
    if s.shape[1] != t.shape[1]:
        s, t = s.mean(1, keepdim=True), t.mean(1, keepdim=True)
    return s, t


def _query_key_masks(mask: torch.Tensor | None, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) token mask -> float query mask (B, 1, L) and key mask (B, 1, 1, L); all ones without a mask."""
    if mask is None:
        mask = torch.ones(like.shape[0], like.shape[-1], device=like.device)
    m = mask.to(device=like.device, dtype=torch.float32)
    return m[:, None, :], m[:, None, None, :]


def _masked_row_mean(rows: torch.Tensor, query_mask: torch.Tensor) -> torch.Tensor:
    """Mean of per-row values (B, H, L) over heads and real query positions."""
    q = query_mask.expand_as(rows)
    return (rows * q).sum() / q.sum().clamp_min(1.0)


@LOSSES.register("attention_kl")
def attention_kl(student_attn: torch.Tensor, teacher_attn: torch.Tensor,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """Σ_k A_t·log(A_t/A_s) per query row, mean over heads and real queries (MiniLM, Wang et al. 2020).

    Inputs are attention probabilities (B, H, L, L); padding keys and padding queries are ignored; with different
    head counts the head-means are compared.
    """
    s, t = _head_aligned(student_attn, teacher_attn)
    query_mask, key_mask = _query_key_masks(mask, t)
    pointwise = torch.xlogy(t, t) - t * s.clamp_min(1e-12).log()
    return _masked_row_mean((pointwise * key_mask).sum(-1), query_mask)


@LOSSES.register("attention_mse")
def attention_mse(student_attn: torch.Tensor, teacher_attn: torch.Tensor,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
    """TinyBERT attention loss (Jiao et al. 2020): MSE of attention maps, mean over heads and real (query, key) pairs.

    Inputs are probabilities (B, H, L, L), as HF returns (TinyBERT used pre-softmax scores); with different head
    counts the head-means are compared.
    """
    s, t = _head_aligned(student_attn, teacher_attn)
    query_mask, key_mask = _query_key_masks(mask, t)
    pairs = (query_mask[..., None] * key_mask).expand_as(s)
    return ((s - t) ** 2 * pairs).sum() / pairs.sum().clamp_min(1.0)


def relation_log_probs(x: torch.Tensor, num_relation_heads: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """log softmax(X_r X_rᵀ/√d_r) over keys for X (B, L, D) re-split into R heads of d_r = D/R: (B, R, L, L).

    Padding keys get probability 0 (MiniLMv2, Wang et al. 2021).
    """
    b, n, d = x.shape
    if num_relation_heads < 1 or d % num_relation_heads:
        raise ValueError(f"width {d} cannot be split into {num_relation_heads} relation heads")
    d_r = d // num_relation_heads
    xr = x.float().view(b, n, num_relation_heads, d_r).transpose(1, 2)
    scores = xr @ xr.transpose(-1, -2) / d_r ** 0.5
    if mask is not None:
        keep = mask.to(device=x.device, dtype=torch.bool)[:, None, None, :]
        scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
    return F.log_softmax(scores, dim=-1)


@LOSSES.register("relation_kl")
def attention_relation_kl(student_x: torch.Tensor, teacher_x: torch.Tensor, mask: torch.Tensor | None,
                          num_relation_heads: int) -> torch.Tensor:
    """MiniLMv2 self-attention relation loss (Wang et al. 2021): KL(R_t ‖ R_s) of one of Q, K or V.

    R = softmax(X_r X_rᵀ/√d_r) with both X (B, L, D_s) and (B, L, D_t) re-split into the same R heads, so the
    teacher's and student's own head counts and widths may differ; summed over keys, mean over R and real queries.
    """
    log_s = relation_log_probs(student_x, num_relation_heads, mask)
    log_t = relation_log_probs(teacher_x, num_relation_heads, mask)
    query_mask, key_mask = _query_key_masks(mask, log_t)
    pointwise = F.kl_div(log_s, log_t, reduction="none", log_target=True)
    rows = torch.where(key_mask.bool(), pointwise, torch.zeros_like(pointwise)).sum(-1)
    return _masked_row_mean(rows, query_mask)

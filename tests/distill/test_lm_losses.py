"""Token-level LM distillation losses: closed forms, masking, TRL's JSD(β) convention, and the truncated (top-k +
tail bucket) teacher against the full-vocabulary loss."""

import math

import pytest
import torch
import torch.nn.functional as F

from distill.objective.lm_losses import (
    DIVERGENCES,
    TopKTeacher,
    divergence,
    forward_kl,
    generalized_jsd,
    lm_kd_loss,
    lm_kd_loss_topk,
    reverse_kl,
    total_variation,
    truncate_teacher,
)
from distill.objective.losses import token_kl


def _logits(seed, b=2, length=5, v=11, scale=3.0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(b, length, v, generator=gen, dtype=torch.float64).float() * scale


def _direct(student, teacher, mask, kind, t=1.0, beta=0.5):
    """Per-token divergences written out in float64, one token at a time."""
    total, count = 0.0, 0
    for i in range(student.shape[0]):
        for j in range(student.shape[1]):
            if mask is not None and not mask[i, j]:
                continue
            p = torch.softmax(teacher[i, j].double() / t, -1)
            q = torch.softmax(student[i, j].double() / t, -1)
            if kind == "forward_kl":
                d = (p * (p / q).log()).sum()
            elif kind == "reverse_kl":
                d = (q * (q / p).log()).sum()
            elif kind == "tv":
                d = 0.5 * (p - q).abs().sum()
            else:
                m = beta * p + (1 - beta) * q
                d = beta * (p * (p / m).log()).sum() + (1 - beta) * (q * (q / m).log()).sum()
            total, count = total + float(d), count + 1
    scale = 1.0 if kind == "tv" else t * t
    return total / max(count, 1) * scale


@pytest.mark.parametrize("kind", DIVERGENCES)
@pytest.mark.parametrize("t", [1.0, 2.0])
def test_full_vocab_losses_match_a_direct_computation(kind, t):
    s, te = _logits(0), _logits(1)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    got = lm_kd_loss(s, te, mask, kind=kind, temperature=t, beta=0.3)
    assert got.item() == pytest.approx(_direct(s, te, mask, kind, t, beta=0.3), rel=1e-5, abs=1e-6)


def test_forward_kl_equals_the_encoder_token_kl():
    s, te = _logits(2), _logits(3)
    mask = torch.tensor([[1, 0, 1, 1, 0], [0, 1, 1, 1, 1]])
    assert forward_kl(s, te, mask, 2.0).item() == pytest.approx(token_kl(s, te, mask, 2.0).item(), rel=1e-6)


def test_padding_does_not_change_the_loss_and_an_empty_mask_gives_zero():
    s, te = _logits(4), _logits(5)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 0, 0]])
    s2, te2 = s.clone(), te.clone()
    s2[mask == 0] = 1e4  # garbage on padding
    te2[mask == 0] = -1e4
    for kind in DIVERGENCES:
        assert lm_kd_loss(s2, te2, mask, kind=kind).item() == pytest.approx(lm_kd_loss(s, te, mask, kind=kind).item())
    empty = lm_kd_loss(s.requires_grad_(), te, torch.zeros(2, 5), kind="forward_kl")
    assert empty.item() == 0.0
    empty.backward()
    assert torch.all(s.grad == 0)


def test_jsd_follows_trl_conventions():
    s, te = _logits(6), _logits(7)
    assert generalized_jsd(s, te, beta=0.0).item() == pytest.approx(forward_kl(s, te).item(), rel=1e-6)
    assert generalized_jsd(s, te, beta=1.0).item() == pytest.approx(reverse_kl(s, te).item(), rel=1e-6)
    half = generalized_jsd(s, te, beta=0.5).item()
    assert half == pytest.approx(generalized_jsd(te, s, beta=0.5).item(), rel=1e-5)  # symmetric at β = 0.5
    assert 0 < half <= math.log(2)


def test_trl_generalized_jsd_formula():
    """TRL's GKDTrainer.generalized_jsd_loss, written out: mixture in log space, β·KL(p‖m) + (1−β)·KL(q‖m)."""
    s, te, beta = _logits(8), _logits(9), 0.3
    log_q, log_p = F.log_softmax(s, -1), F.log_softmax(te, -1)
    log_m = torch.logsumexp(torch.stack([log_q + math.log(1 - beta), log_p + math.log(beta)]), dim=0)
    kl_t = F.kl_div(log_m, log_p, reduction="none", log_target=True)
    kl_s = F.kl_div(log_m, log_q, reduction="none", log_target=True)
    trl = (beta * kl_t + (1 - beta) * kl_s).sum(-1).mean()
    assert generalized_jsd(s, te, beta=beta).item() == pytest.approx(trl.item(), rel=1e-5)


def test_total_variation_is_bounded_and_zero_for_equal_distributions():
    s, te = _logits(10, scale=20.0), _logits(11, scale=20.0)
    assert 0 < total_variation(s, te).item() <= 1.0
    assert total_variation(s, s + 5.0).item() == pytest.approx(0.0, abs=1e-6)
    for kind in DIVERGENCES:
        assert lm_kd_loss(s, s, kind=kind).item() == pytest.approx(0.0, abs=1e-6)


def test_divergence_rejects_unknown_kind_and_bad_beta():
    x = F.log_softmax(torch.randn(3, 4), -1)
    with pytest.raises(ValueError, match="unknown divergence"):
        divergence(x, x, "kl2")
    with pytest.raises(ValueError, match="beta"):
        divergence(x, x, "jsd", beta=1.5)


def test_truncate_teacher_keeps_the_whole_mass():
    te = _logits(12, v=50)
    top = truncate_teacher(te, 7, temperature=2.0)
    total = top.logprobs.exp().sum(-1) + top.tail_logprob.exp()
    assert torch.allclose(total, torch.ones_like(total), atol=1e-5)
    assert top.indices.shape == (2, 5, 7) and top.k == 7
    full = truncate_teacher(te, 50)
    assert torch.all(full.tail_logprob == float("-inf"))
    with pytest.raises(ValueError):
        truncate_teacher(te, 0)


@pytest.mark.parametrize("kind", DIVERGENCES)
@pytest.mark.parametrize("t", [1.0, 2.0])
def test_topk_with_k_equal_to_vocab_is_the_full_loss_value_and_gradient(kind, t):
    te = _logits(13, v=17)
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 0, 1, 1, 1]])
    s1 = _logits(14, v=17).requires_grad_()
    s2 = s1.detach().clone().requires_grad_()
    full = lm_kd_loss(s1, te, mask, kind=kind, temperature=t, beta=0.4)
    top = lm_kd_loss_topk(s2, truncate_teacher(te, 17, t), mask, kind=kind, temperature=t, beta=0.4)
    assert top.item() == pytest.approx(full.item(), rel=1e-5, abs=1e-7)
    full.backward()
    top.backward()
    assert torch.allclose(s1.grad, s2.grad, atol=1e-6)


@pytest.mark.parametrize("kind", DIVERGENCES)
@pytest.mark.parametrize("k", [1, 4, 16, 30])
def test_topk_never_exceeds_the_full_loss_and_converges_to_it(kind, k):
    te, s = _logits(15, v=31, scale=4.0), _logits(16, v=31, scale=2.0)
    full = lm_kd_loss(s, te, kind=kind, beta=0.5).item()
    top = lm_kd_loss_topk(s, truncate_teacher(te, k), kind=kind, beta=0.5).item()
    assert top <= full + 1e-6
    assert top >= 0.0


def test_forward_kl_gap_is_the_tail_term_of_the_chain_rule():
    """KL_full − KL_bucket = mean over tokens of r_t · KL(p_tail ‖ q_tail), the conditionals inside the tail."""
    te, s, k = _logits(17, v=23, scale=3.0), _logits(18, v=23), 5
    top = truncate_teacher(te, k)
    gap = forward_kl(s, te).item() - lm_kd_loss_topk(s, top, kind="forward_kl").item()
    log_p, log_q = F.log_softmax(te.double(), -1), F.log_softmax(s.double(), -1)
    tail = torch.ones_like(log_p, dtype=torch.bool).scatter(-1, top.indices, False)
    terms = []
    for i in range(2):
        for j in range(5):
            lp, lq = log_p[i, j][tail[i, j]], log_q[i, j][tail[i, j]]
            r_t = lp.exp().sum()
            pt, qt = lp.exp() / r_t, lq.exp() / lq.exp().sum()
            terms.append(float(r_t * (pt * (pt / qt).log()).sum()))
    assert gap == pytest.approx(sum(terms) / len(terms), rel=1e-4, abs=1e-7)


def test_tv_gap_is_at_most_the_teacher_tail_mass():
    te, s, k = _logits(19, v=40, scale=3.0), _logits(20, v=40, scale=3.0), 6
    top = truncate_teacher(te, k)
    gap = total_variation(s, te).item() - lm_kd_loss_topk(s, top, kind="tv").item()
    assert 0 <= gap <= top.tail_logprob.exp().mean().item() + 1e-6


def test_topk_student_tail_is_accurate_when_tiny():
    """The student's tail mass comes from a log-sum-exp, not 1 − Σ top-k (which rounds to 0 in float32 here and
    would make the forward KL infinite)."""
    v, k = 12, 3
    te = torch.zeros(1, 1, v)
    te[..., :k] = 30.0
    s = torch.full((1, 1, v), -25.0)
    s[..., :k] = 0.0
    got = lm_kd_loss_topk(s, truncate_teacher(te, k), kind="forward_kl").item()
    log_p, log_q = F.log_softmax(te.double(), -1)[0, 0], F.log_softmax(s.double(), -1)[0, 0]
    p = torch.cat([log_p[:k].exp(), log_p[k:].exp().sum().view(1)])
    q = torch.cat([log_q[:k].exp(), log_q[k:].exp().sum().view(1)])
    naive = 1 - torch.softmax(s[0, 0], -1)[:k].sum().item()  # what 1 − Σ gives: 0 or float32 rounding noise
    assert abs(naive - q[-1].item()) > 0.5 * q[-1].item()  # off by 50% or more
    assert got == pytest.approx(float((p * (p / q).log()).sum()), rel=1e-4, abs=1e-9)


def test_topk_rejects_a_cache_built_at_another_temperature():
    te, s = _logits(21), _logits(22)
    with pytest.raises(ValueError, match="temperature"):
        lm_kd_loss_topk(s, truncate_teacher(te, 3, 1.0), temperature=2.0)


def test_topk_accepts_compact_cache_dtypes_and_masks():
    te, s = _logits(23, v=20), _logits(24, v=20)
    top = truncate_teacher(te, 5)
    compact = TopKTeacher(top.indices.int(), top.logprobs.half(), top.tail_logprob.half(), 1.0)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 0, 0]])
    a = lm_kd_loss_topk(s, top, mask).item()
    b = lm_kd_loss_topk(s, compact, mask).item()
    assert b == pytest.approx(a, rel=1e-2)
    assert lm_kd_loss_topk(s, top, torch.zeros(2, 5)).item() == 0.0


@pytest.mark.parametrize("mask", [None, "full", "partial"])
def test_dense_forward_kl_has_the_general_value_and_gradient(mask):
    """The fast full-vocabulary forward KL (teacher entropy without grad, views for a full mask) against the general
    ``divergence``: same value, same gradient (q − p per token / N), also for a teacher with −inf logits."""
    s, te = _logits(4), _logits(5)
    te[0, 0, 3] = float("-inf")  # a token the teacher rules out: 0·log 0 = 0
    m = {None: None, "full": torch.ones(2, 5), "partial": torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])}[mask]
    fast = s.clone().requires_grad_(True)
    got = lm_kd_loss(fast, te, m, kind="forward_kl", temperature=2.0)
    got.backward()
    slow = s.clone().requires_grad_(True)
    keep = torch.ones(2, 5, dtype=torch.bool) if m is None else m.bool()
    log_q, log_p = F.log_softmax(slow[keep] / 2.0, -1), F.log_softmax(te[keep] / 2.0, -1)
    want = divergence(log_p, log_q, "forward_kl").mean() * 4.0
    want.backward()
    assert torch.isfinite(got) and got.item() == pytest.approx(want.item(), rel=1e-5)
    torch.testing.assert_close(fast.grad, slow.grad, rtol=1e-4, atol=1e-7)

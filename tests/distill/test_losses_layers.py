"""Layer-level losses (attention maps, embeddings, cosine, MiniLMv2 relations) against closed-form values."""

import math

import pytest
import torch

from distill.objective.losses import (
    LOSSES,
    attention_kl,
    attention_mse,
    attention_relation_kl,
    embedding_mse,
    hidden_cosine,
    hidden_mse,
)


def _probs(*shape):
    return torch.softmax(torch.randn(*shape), -1)


def _pad(attn, garbage):
    """Append one padding position: a zero key column (as HF's masked softmax gives) and a garbage query row."""
    b, h, n, _ = attn.shape
    out = torch.zeros(b, h, n + 1, n + 1)
    out[..., :n, :n] = attn
    out[..., n, :] = garbage
    return out


def test_attention_losses_of_identical_maps_are_zero():
    a = _probs(2, 3, 4, 4)
    assert attention_kl(a, a).item() == pytest.approx(0.0, abs=1e-6)
    assert attention_mse(a, a).item() == pytest.approx(0.0, abs=1e-9)


def test_attention_kl_closed_form_and_direction():
    s = torch.full((1, 1, 2, 2), 0.5)
    t = torch.tensor([[[[0.75, 0.25], [1.0, 0.0]]]])
    rows = [0.75 * math.log(1.5) + 0.25 * math.log(0.5), math.log(2.0)]  # Σ t·log(t/s), 0·log 0 = 0
    assert attention_kl(s, t).item() == pytest.approx(sum(rows) / 2, rel=1e-5)


def test_attention_mse_closed_form():
    s = torch.full((1, 1, 2, 2), 0.5)
    t = torch.eye(2).view(1, 1, 2, 2)
    assert attention_mse(s, t).item() == pytest.approx(0.25)


def test_attention_losses_ignore_padding():
    s, t = _probs(1, 2, 3, 3), _probs(1, 2, 3, 3)
    mask = torch.tensor([[1, 1, 1, 0]])
    sp, tp = _pad(s, 0.3), _pad(t, 5.0)
    assert attention_kl(sp, tp, mask).item() == pytest.approx(attention_kl(s, t).item(), rel=1e-5)
    assert attention_mse(sp, tp, mask).item() == pytest.approx(attention_mse(s, t).item(), rel=1e-5)


def test_attention_head_mean_when_head_counts_differ():
    s, t = _probs(2, 2, 3, 3), _probs(2, 4, 3, 3)
    sm, tm = s.mean(1, keepdim=True), t.mean(1, keepdim=True)
    assert attention_kl(s, t).item() == pytest.approx(attention_kl(sm, tm).item(), rel=1e-5)
    assert attention_mse(s, t).item() == pytest.approx(attention_mse(sm, tm).item(), rel=1e-5)
    # four teacher heads whose mean is the student's head mean: nothing to learn
    t_same = torch.cat([s, s.flip(1)], 1)
    assert attention_kl(s, t_same).item() == pytest.approx(0.0, abs=1e-6)


def test_embedding_mse_is_hidden_mse():
    s, t, mask = torch.randn(2, 4, 3), torch.randn(2, 4, 3), torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    assert embedding_mse(s, t, mask).item() == pytest.approx(hidden_mse(s, t, mask).item())


def test_cosine_closed_form_and_masking():
    t = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [7.0, -3.0]]])
    s = torch.tensor([[[3.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [0.0, 0.0]]])  # same dir, opposite, orthogonal, pad
    mask = torch.tensor([[1, 1, 1, 0]])
    assert hidden_cosine(s, t, mask).item() == pytest.approx((0 + 2 + 1) / 3, rel=1e-6)
    assert hidden_cosine(t, 5 * t).item() == pytest.approx(0.0, abs=1e-6)  # scale-invariant


def test_relation_of_identical_inputs_is_zero():
    x = torch.randn(2, 5, 8)
    assert attention_relation_kl(x, x, None, 4).item() == pytest.approx(0.0, abs=1e-6)


def test_relation_closed_form():
    s = torch.zeros(1, 2, 1)  # uniform relations
    t = torch.tensor([[[1.0], [2.0]]])  # scores [[1, 2], [2, 4]] with d_r = 1
    rows = []
    for scores in ([1.0, 2.0], [2.0, 4.0]):
        p = torch.softmax(torch.tensor(scores), -1)
        rows.append(float((p * (2 * p).log()).sum()))
    assert attention_relation_kl(s, t, None, 1).item() == pytest.approx(sum(rows) / 2, rel=1e-5)


def test_relation_is_mean_over_relation_heads():
    s, t = torch.randn(2, 4, 6), torch.randn(2, 4, 10)  # widths differ: d_r = 3 vs 5
    per_head = [attention_relation_kl(s[..., 3 * r:3 * r + 3], t[..., 5 * r:5 * r + 5], None, 1) for r in range(2)]
    assert attention_relation_kl(s, t, None, 2).item() == pytest.approx(sum(per_head).item() / 2, rel=1e-5)


def test_relation_ignores_padding():
    s, t = torch.randn(1, 3, 4), torch.randn(1, 3, 8)
    sp = torch.cat([s, 50 * torch.randn(1, 2, 4)], 1)
    tp = torch.cat([t, 50 * torch.randn(1, 2, 8)], 1)
    mask = torch.tensor([[1, 1, 1, 0, 0]])
    assert attention_relation_kl(sp, tp, mask, 2).item() == pytest.approx(
        attention_relation_kl(s, t, None, 2).item(), rel=1e-5)


def test_relation_needs_divisible_widths():
    with pytest.raises(ValueError, match="3 relation heads"):
        attention_relation_kl(torch.randn(1, 2, 4), torch.randn(1, 2, 6), None, 3)


def test_registry_lists_layer_losses():
    assert {"attention_kl", "attention_mse", "embedding_mse", "hidden_cosine", "relation_kl"} <= set(LOSSES.names())

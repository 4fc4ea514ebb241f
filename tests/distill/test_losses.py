"""Losses against closed-form values."""

import math

import pytest
import torch

from distill.objective.losses import LOSSES, hard_label_ce, hidden_mse, logits_mse, soft_target_kl


def test_kl_of_identical_logits_is_zero():
    x = torch.randn(4, 3)
    assert soft_target_kl(x, x, 3.0).item() == pytest.approx(0.0, abs=1e-6)


def test_kl_closed_form_and_t_squared_scaling():
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[math.log(3.0), 0.0]])  # teacher p = (0.75, 0.25) at T=1
    p = torch.tensor([0.75, 0.25])
    expected = float((p * (p / 0.5).log()).sum())
    assert soft_target_kl(s, t, 1.0).item() == pytest.approx(expected, rel=1e-5)
    # at T=2 the teacher distribution softens to softmax(t/2); the value is scaled by T^2 = 4
    q = torch.softmax(t[0] / 2, -1)
    expected_t2 = 4 * float((q * (q / 0.5).log()).sum())
    assert soft_target_kl(s, t, 2.0).item() == pytest.approx(expected_t2, rel=1e-5)


def test_kl_is_batch_mean():
    s, t = torch.randn(1, 5), torch.randn(1, 5)
    assert soft_target_kl(s.repeat(7, 1), t.repeat(7, 1), 2.0).item() == pytest.approx(
        soft_target_kl(s, t, 2.0).item(), rel=1e-5)


def test_kl_direction_is_teacher_to_student():
    s = torch.tensor([[2.0, 0.0]])
    t = torch.tensor([[0.0, 1.0]])
    ps, pt = torch.softmax(s[0], -1), torch.softmax(t[0], -1)
    assert soft_target_kl(s, t).item() == pytest.approx(float((pt * (pt / ps).log()).sum()), rel=1e-5)


def test_ce_and_mse():
    logits = torch.tensor([[0.0, 0.0]])
    assert hard_label_ce(logits, torch.tensor([1])).item() == pytest.approx(math.log(2), rel=1e-6)
    assert logits_mse(torch.tensor([[1.0], [3.0]]), torch.tensor([0.0, 1.0])).item() == pytest.approx(2.5)


def test_hidden_mse_ignores_padding():
    s = torch.zeros(1, 3, 2)
    t = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, -50.0]]])  # last position is padding
    mask = torch.tensor([[1, 1, 0]])
    assert hidden_mse(s, t, mask).item() == pytest.approx((1 + 1 + 9 + 9) / 4)
    assert hidden_mse(s, t).item() > 100


def test_registry_lists_choices():
    assert {"kl", "ce", "mse", "hidden_mse"} <= set(LOSSES.names())
    with pytest.raises(Exception, match="did you mean 'kl'"):
        LOSSES.get("kll")

"""The objective: layer maps, projections, term weighting."""

from types import SimpleNamespace

import pytest
import torch

from distill.core.errors import ConfigError
from distill.objective.losses import hidden_mse, soft_target_kl
from distill.objective.objective import DistillConfig, Objective, uniform_layer_map


@pytest.mark.parametrize("ns,nt,expected", [
    (2, 6, [(1, 3), (2, 6)]), (4, 12, [(1, 3), (2, 6), (3, 9), (4, 12)]), (3, 3, [(1, 1), (2, 2), (3, 3)]),
    (4, 2, [(1, 1), (2, 1), (3, 2), (4, 2)]),
])
def test_uniform_layer_map(ns, nt, expected):
    assert uniform_layer_map(ns, nt) == expected


def _out(logits, hidden=None):
    return SimpleNamespace(logits=logits, hidden_states=hidden)


def test_weights_combine_terms():
    torch.manual_seed(0)
    obj = Objective(DistillConfig(temperature=2.0, alpha=0.25, hidden_weight=0.5), student_width=4,
                    teacher_width=8, layer_map=[(1, 2)])
    assert isinstance(obj.terms["hidden"].projections[0], torch.nn.Linear)
    assert obj.terms["hidden"].projections[0].weight.shape == (8, 4)
    s_logits, t_logits = torch.randn(3, 2), torch.randn(3, 2)
    hs = (torch.randn(3, 5, 4), torch.randn(3, 5, 4))
    ht = (torch.randn(3, 5, 8), torch.randn(3, 5, 8), torch.randn(3, 5, 8))
    labels = torch.tensor([0, 1, 1])
    mask = torch.ones(3, 5, dtype=torch.long)
    total, terms = obj(_out(s_logits, hs), labels, _out(t_logits, ht), mask)
    ce = torch.nn.functional.cross_entropy(s_logits, labels)
    kd = soft_target_kl(s_logits, t_logits, 2.0)
    hid = hidden_mse(obj.terms["hidden"].projections[0](hs[1]), ht[2], mask)
    assert total.item() == pytest.approx((0.25 * ce + 0.75 * kd + 0.5 * hid).item(), rel=1e-5)
    assert set(terms) == {"ce", "kd", "hidden"}


def test_no_teacher_is_label_loss_only():
    obj = Objective(DistillConfig(hidden_weight=0.0))
    logits = torch.randn(2, 3)
    total, terms = obj(_out(logits), torch.tensor([0, 2]))
    assert total.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2])).item())
    assert set(terms) == {"ce"} and not obj.needs_hidden_states


def test_regression_uses_mse_to_teacher():
    obj = Objective(DistillConfig(alpha=0.0, hidden_weight=0.0), regression=True)
    total, _ = obj(_out(torch.tensor([[1.0], [2.0]])), torch.tensor([0.0, 0.0]), _out(torch.tensor([[0.0], [0.0]])))
    assert total.item() == pytest.approx(2.5)


def test_equal_widths_use_identity():
    obj = Objective(DistillConfig(hidden_weight=1.0), student_width=8, teacher_width=8, layer_map=[(1, 1)])
    assert isinstance(obj.terms["hidden"].projections[0], torch.nn.Identity)


@pytest.mark.parametrize("kw", [{"temperature": 0}, {"temperature": -1}, {"alpha": 1.5}, {"hidden_weight": -0.1}])
def test_bad_settings(kw):
    with pytest.raises(ConfigError):
        DistillConfig(**kw)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_a_term_weighted_zero_is_logged_but_adds_no_gradient(alpha):
    """α = 0: ce is logged but computed without a graph (no (B·L, V) backward for nothing); α = 1 the same for kd.
    The gradient is exactly the live term's."""
    from distill.objective.lm_losses import lm_kd_loss
    from distill.objective.objective import next_token_ce

    gen = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 6, 13, generator=gen), torch.randn(2, 6, 13, generator=gen)
    labels = torch.randint(0, 13, (2, 6), generator=gen)
    mask = torch.ones(2, 6, dtype=torch.long)
    got = s.clone().requires_grad_(True)
    objective = Objective(DistillConfig(alpha=alpha, temperature=1.0, hidden_weight=0.0), kind="lm_kd")
    total, logged = objective.loss(SimpleNamespace(logits=got), labels, [SimpleNamespace(logits=t)], mask)
    total.backward()
    want = s.clone().requires_grad_(True)
    (lm_kd_loss(want, t, mask) if alpha == 0 else next_token_ce(want, labels)).backward()
    assert set(logged) >= {"ce", "kd"} and logged["ce"] > 0 and logged["kd"] > 0
    torch.testing.assert_close(got.grad, want.grad)

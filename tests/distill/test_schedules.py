"""Schedules: endpoints, midpoints, clamping."""

import math

import pytest

from distill.core.errors import UnknownNameError
from distill.objective.schedules import SCHEDULES, constant, cosine, linear, scheduled


@pytest.mark.parametrize("fn", [linear, cosine])
def test_endpoints(fn):
    assert fn(4.0, 1.0, 0.0) == pytest.approx(4.0)
    assert fn(4.0, 1.0, 1.0) == pytest.approx(1.0)


def test_midpoints():
    assert linear(2.0, 1.0, 0.5) == pytest.approx(1.5)
    assert cosine(2.0, 1.0, 0.5) == pytest.approx(1.5)
    assert linear(0.0, 1.0, 0.25) == pytest.approx(0.25)
    assert cosine(0.0, 1.0, 0.25) == pytest.approx((1 - math.cos(math.pi / 4)) / 2)  # slower start than linear


def test_constant_ignores_end_and_progress():
    assert constant(3.0, 1.0, 0.0) == constant(3.0, 1.0, 0.7) == constant(3.0, 1.0, 1.0) == 3.0


@pytest.mark.parametrize("fn", [linear, cosine])
def test_progress_is_clamped(fn):
    assert fn(4.0, 1.0, -0.5) == pytest.approx(4.0)
    assert fn(4.0, 1.0, 1.5) == pytest.approx(1.0)
    assert fn(4.0, 1.0, float("nan")) == pytest.approx(4.0)


def test_scheduled_and_registry():
    assert set(SCHEDULES.names()) == {"constant", "linear", "cosine"}
    assert scheduled("linear", 2.0, None, 0.8) == 2.0
    assert scheduled("Linear", 2.0, 0.0, 0.75) == pytest.approx(0.5)
    with pytest.raises(UnknownNameError, match="did you mean 'cosine'"):
        scheduled("cosin", 1.0, 0.0, 0.5)

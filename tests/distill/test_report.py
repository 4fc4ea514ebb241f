"""Report rendering: the terminal table and the Markdown file carry the same numbers as report.json."""

import json

import pytest
from rich.console import Console

from distill.report.render import render_table, to_markdown, write_report

REPORT = {"task": "sst2", "metric_name": "accuracy", "latency_seq": 128, "stages": [
    {"name": "teacher", "metric": 0.9, "retention": 1.0, "agreement": 1.0, "params": 1000, "size_mb": 4.0,
     "latency_ms": 20.0, "path": "teacher"},
    {"name": "int8", "metric": 0.88, "retention": 0.88 / 0.9, "agreement": 0.95, "params": 100, "size_mb": 0.5,
     "latency_ms": 2.0, "path": "int8"}], "stage_seconds": {"distil": 3.2}, "settings": {"seed": 1}}


def test_markdown_and_json(tmp_path):
    write_report(tmp_path, REPORT)
    assert json.loads((tmp_path / "report.json").read_text())["stages"][1]["metric"] == 0.88
    md = (tmp_path / "report.md").read_text()
    assert "| int8 | 0.8800 | 97.8% | 95.0% | 100 | 0.50 | 2.00 | 10.0× | int8 |" in md
    assert "distil: 3.2 s" in md and "seed: 1" in md
    assert to_markdown(REPORT) == md


def test_rich_table_lists_every_stage():
    console = Console(width=200, record=True)
    console.print(render_table(REPORT))
    text = console.export_text()
    assert "teacher" in text and "int8" in text and "10.0×" in text


def _task(num_labels=2):
    from distill.data.tasks import Task

    return Task("t", num_labels=num_labels)


def _rich_report():
    """REPORT with KL, per-backend latency and the environment."""
    stages = [{**s, "kl_to_teacher": kl, "latencies_ms": {b: s["latency_ms"]}}
              for s, kl, b in zip(REPORT["stages"], (0.0, 0.25), ("torch", "onnxruntime"), strict=True)]
    return {**REPORT, "stages": stages}


def test_kl_to_teacher_is_mean_kl_of_softmaxes():
    import numpy as np

    from distill.evaluate.agreement import kl_to_teacher

    teacher = np.array([[2.0, 0.0], [0.0, 1.0]])
    assert kl_to_teacher(_task(), teacher, teacher) == pytest.approx(0.0, abs=1e-12)
    p, q = np.array([0.8, 0.2]), np.array([0.5, 0.5])
    one = kl_to_teacher(_task(), np.log(q)[None], np.log(p)[None])
    assert one == pytest.approx(float((p * np.log(p / q)).sum()))
    assert kl_to_teacher(_task(1), np.zeros((3, 1)), np.ones((3, 1))) is None


def test_dev_predictions_are_plain_ints():
    import numpy as np

    from distill.evaluate.agreement import dev_predictions

    preds = dev_predictions(_task(), np.array([[0.1, 0.9], [2.0, 1.0]], dtype=np.float32))
    assert preds == [1, 0] and all(type(p) is int for p in preds)
    json.dumps(preds)


def test_gates_on_the_final_stage():
    from distill.report.render import check_gates

    assert check_gates(REPORT) == []
    assert check_gates(REPORT, min_retention=0.97, max_latency_ms=2.0, max_size_mb=0.5) == []
    lines = check_gates(REPORT, min_retention=0.99, max_latency_ms=1.5, max_size_mb=0.25)
    assert lines == ["gate failed: int8 retention 0.9778 < --min-retention 0.99",
                     "gate failed: int8 latency 2 ms > --max-latency-ms 1.5",
                     "gate failed: int8 size 0.5 MB > --max-size-mb 0.25"]
    assert check_gates(REPORT, max_size_mb=1, stage="teacher") == ["gate failed: teacher size 4 MB > --max-size-mb 1"]
    assert "no stage 'nope'" in check_gates(REPORT, min_retention=0.5, stage="nope")[0]


def test_pareto_front_and_confusion():
    from distill.report.render import confusion, confusion_matrices, pareto_front

    assert pareto_front([(4.0, 0.9), (0.5, 0.88), (1.0, 0.85), (0.5, 0.88)]) == [True, True, False, True]
    assert confusion([0, 0, 1, 1], [0, 1, 1, 1], 2) == [[1, 1], [0, 2]]
    preds = {"teacher": [0, 1, 1], "int8": [0, 0, 1]}
    assert confusion_matrices({**REPORT, "predictions": preds}) == {"int8": [[1, 0], [1, 1]]}
    assert confusion_matrices({**REPORT, "predictions": {"teacher": [0.5], "int8": [0.4]}}) == {}


def test_kl_and_backend_columns_appear_only_when_measured():
    md = to_markdown(_rich_report(), env={"python": "3.11", "packages": {"torch": "2.13"}})
    assert "| stage | metric | retention | agreement | KL to teacher | params | size MB | latency torch ms | " \
           "latency onnxruntime ms | speedup | path |" in md
    assert "| int8 | 0.8800 | 97.8% | 95.0% | 0.2500 | 100 | 0.50 | — | 2.00 | 10.0× | int8 |" in md
    assert "- packages.torch: 2.13" in md
    assert "KL to teacher" not in to_markdown(REPORT)


def test_write_report_writes_three_self_contained_files(tmp_path):
    (tmp_path / "env.json").write_text(json.dumps({"python": "3.11.7", "device": "cpu"}))
    written = write_report(tmp_path, {**_rich_report(), "history": {"student": [{"epoch": 1, "loss": 1.0}]}})
    data = json.loads((tmp_path / "report.json").read_text())
    assert data == json.loads(json.dumps(written))
    assert data["environment"]["device"] == "cpu" and [s["speedup"] for s in data["stages"]] == [1.0, 10.0]
    page = (tmp_path / "report.html").read_text()
    assert "://" not in page and "<script" not in page
    assert page.count('src="data:image/png;base64,') == 2  # Pareto and training curves; no pruning, no predictions
    assert 'id="plot-pruning"' not in page and 'id="plot-confusion"' not in page
    assert 'data-key="kl_to_teacher" data-value="0.25">0.2500</td>' in page
    assert "3.11.7" in page and "distil" in page
    assert write_report(tmp_path, data) == written  # regenerating from report.json changes nothing


def test_html_escapes_text():
    from distill.report.render import render_html

    page = render_html({**REPORT, "settings": {"note": "<b>&"}}, env={})
    assert "&lt;b&gt;&amp;" in page and "<b>&" not in page


def test_matplotlib_loads_only_for_plots():
    import subprocess
    import sys

    code = "import sys, distill.report, distill.report.compare; print('matplotlib' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.stdout.strip() == "False", res.stderr


def test_only_epoch_logs_become_training_curves():
    """``prune_steps`` (one record per pruning step) and cache summaries sit in the history too: not curves."""
    from distill.report.render import histories

    history = {"student": [{"epoch": 1, "loss": 1.0}], "prune_steps": [{"step": 1, "params": 10, "metric": 0.5}],
               "teacher_cache": [{"rows": 3}], "quantize_report": {"mode": "dynamic"}}
    assert list(histories({"history": history})) == ["student"]


def _fresh_student_report(kept: float, cut: list[str], *, teacher_collapsed: bool = False) -> dict:
    """A run whose student (layers from scratch) kept ``kept`` of the teacher's accuracy 0.9."""
    student = {**REPORT["stages"][1], "name": "student", "metric": 0.9 * kept, "retention": kept, "path": "student"}
    teacher = {**REPORT["stages"][0], "collapsed": teacher_collapsed}
    return {**REPORT, "stages": [teacher, student, REPORT["stages"][1]],
            "settings": {"target_retention": 0.97}, "history": {
                "fresh_layers": {"init": "teacher-embeddings", "cut_presets": cut}}}


@pytest.mark.parametrize("kept, cut, expected", [
    (0.80, ["mini"], "--student mini"),
    (0.80, ["small", "medium"], "--student small or --student medium"),
    (0.80, [], "no preset is cut from this teacher: pass a pretrained student (--student DIR)"),
    (0.97, ["mini"], None),  # the student holds the target: nothing to say
])
def test_a_fresh_student_far_below_the_teacher_names_the_presets_cut_from_it(tmp_path, kept, cut, expected):
    from distill.report.advice import student_lines

    report = _fresh_student_report(kept, cut)
    lines = student_lines(report)
    if expected is None:
        assert lines == []
        return
    assert lines == [f"the student keeps {kept:.1%} of the teacher's accuracy, under the 97% target, before any "
                     f"compression: its layers started from scratch (--init teacher-embeddings); "
                     + (f"a preset cut from this teacher starts from its layers: {expected}" if cut else expected)
                     + ", or train on more rows."]
    write_report(tmp_path, report)  # the same line in the terminal, report.md and report.html
    console = Console(width=400, record=True)
    console.print(render_table(report))
    assert lines[0][:60] in console.export_text()
    assert f"**{lines[0]}**" in (tmp_path / "report.md").read_text()
    assert 'id="student-advice"' in (tmp_path / "report.html").read_text()


def test_no_student_advice_without_fresh_layers_or_against_a_collapsed_teacher():
    from distill.report.advice import student_lines

    assert student_lines(_fresh_student_report(0.5, ["mini"], teacher_collapsed=True)) == []
    report = _fresh_student_report(0.5, ["mini"])
    assert student_lines({**report, "history": {}}) == []  # a student cut from the teacher: no such record

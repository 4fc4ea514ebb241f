"""``--target-retention``: the pruning search keeps the smallest recovered model holding R of the student's metric,
stops at the first step below it, keeps the unpruned student (and says so) when no step holds it, leaves fixed
ratios alone, and carries its path into report.json, report.md and report.html; bad values of R are one line, exit 2.

The pipeline tests run tiny models end to end; the prune stage's dev metric is replaced by a known function of the
model's FFN width (``ffn now / ffn of the student``: 1.0, then 0.75, 0.5, 0.25 at ratios 0.25, 0.5, 0.75) or of
its hidden width (``hidden now / 128``, the ``tiny`` preset's: a step that cuts the width misses, one on the FFN
alone keeps it), so which steps keep the target is known in advance, whatever tiny random models learn.
"""

from __future__ import annotations

import json
from pathlib import Path

import factories
import pytest
import torch

from distill.cli import main
from distill.core.errors import ConfigError

# ---- the pure parts (compress.prune.search) --------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -0.5, 1.6, float("nan"), True, "0.9"])
def test_bad_targets_are_config_errors(bad):
    from compress.prune.search import check_target

    with pytest.raises(ConfigError, match="--target-retention"):
        check_target(bad)


@pytest.mark.parametrize("bad", [[0.5, 0.25], [0.0, 0.5], [0.5, 1.0], [], [0.5, 0.5]])
def test_bad_search_schedules_are_config_errors(bad):
    from compress.prune.search import check_search

    with pytest.raises(ConfigError, match="--prune-search"):
        check_search(bad)


def test_threshold_allows_the_same_loss_for_negative_metrics():
    from compress.prune.search import keeps, retention, threshold

    assert threshold(0.8, 0.9) == pytest.approx(0.72)
    assert threshold(-0.2, 0.9) == pytest.approx(-0.22)  # Pearson/MCC below 0: the bar does not invert
    assert keeps(0.72, 0.8, 0.9) and not keeps(0.71, 0.8, 0.9)
    assert retention(0.4, 0.8) == pytest.approx(0.5) and retention(0.4, 0.0) is None


def test_pruning_leaves_int8_half_the_allowed_loss():
    from compress.prune.search import pruning_share

    assert pruning_share(0.97, quantized=True) == pytest.approx(0.985)
    assert pruning_share(0.97, quantized=False) == 0.97
    assert pruning_share(1.1, quantized=True) == 1.1  # asking for an improvement: no share to split


def test_search_never_removes_the_last_head():
    """2 heads: 0.75 of them would be none; the step keeps one instead of failing (hidden follows the heads)."""
    from compress.prune.layout import LayerWidths, Layout
    from compress.prune.search import plan_search

    layout = Layout(128, (LayerWidths(2, 64, 512),) * 2)
    plans = plan_search([0.25, 0.5, 0.75], layout)
    assert [p.layers[0].heads for p in plans] == [2, 1, 1]
    assert [p.layers[0].ffn for p in plans] == [384, 256, 128]
    assert [p.hidden for p in plans] == [128, 64, 64]


def test_an_ffn_only_step_keeps_heads_and_width():
    from compress.prune.layout import LayerWidths, Layout
    from compress.prune.plan import plan_widths
    from compress.prune.search import search_step

    layout = Layout(128, (LayerWidths(2, 64, 512),) * 2)
    step = search_step(0.75, layout, layout, scope="ffn")
    assert (step.heads, step.ffn, step.hidden) == (0.0, 0.75, 0.0)
    assert plan_widths(step, layout) == Layout(128, (LayerWidths(2, 64, 128),) * 2)
    with pytest.raises(ConfigError, match="scope"):
        search_step(0.5, layout, layout, scope="width")


# ---- the pipeline ----------------------------------------------------------------------------------------

COMMON = ["--student", "tiny", "--task", "sst2", "--epochs", "1", "--batch-size", "16", "--max-seq-length", "16",
          "--latency-runs", "2", "--quiet"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("retention")
    return {"teacher": factories.save_teacher(tmp / "teacher", tmp),
            "data": factories.write_sst2_like(tmp / "data", n_train=32, n_dev=16), "tmp": tmp}


@pytest.fixture
def ffn_metric(monkeypatch):
    """The prune stage's dev metric: the model's FFN width over the student's (the first model it scores)."""
    from compress.prune.layout import measure
    from distill.core.families import arch_of
    from distill.pipeline.stages import prune

    full: list[int] = []

    def evaluator(task, loader, device="auto"):
        def run(model) -> dict[str, float]:
            ffn = measure(model, arch_of(model)).layers[0].ffn
            full.append(full[0] if full else ffn)
            return {task.main_metric: ffn / full[0]}
        return run

    monkeypatch.setattr(prune, "gathered_evaluator", evaluator)


def _run(inputs: dict, name: str, *extra: str) -> dict:
    out = inputs["tmp"] / name
    assert main(["run", "--teacher", str(inputs["teacher"]), "--data", str(inputs["data"]), *COMMON,
                 "--output-dir", str(out), *extra]) == 0
    return json.loads((out / "report.json").read_text()) | {"_dir": str(out)}


def _params(report: dict, stage: str) -> int:
    return next(s["params"] for s in report["stages"] if s["name"] == stage)


def test_search_stops_at_the_first_step_below_the_target(inputs, ffn_metric):
    report = _run(inputs, "stop", "--target-retention", "0.6", "--prune-search", "0.25,0.5,0.75", "--no-quantize")
    path = report["history"]["prune_steps"]
    # 0.5 cut the width and missed, so it is tried again on the FFN alone (which halves the FFN too: missed)
    assert [(s["ratio"], s["scope"], s["metric"], s["kept"]) for s in path] == [
        (0.25, "all", 0.75, True), (0.5, "all", 0.5, False), (0.5, "ffn", 0.5, False)]
    assert _params(report, "pruned") == path[0]["params"] < _params(report, "student")
    target = report["history"]["prune_target"]
    assert target["met"] and target["kept"] == "ratio 0.25" and target["relative_to"] == "student"
    assert "stopped at ratio 0.5, FFN only: accuracy 0.5000" in target["note"]
    assert report["retention_target"]["met"] is True and report["retention_target"]["target"] == 0.6
    # the path is in every rendering
    out = Path(report["_dir"])
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert "## Retention target" in md and "| 2 | 0.5 | heads, width, FFN | " in md
    assert "| no: retry on the FFN alone |" in md and "| 3 | 0.5 | FFN only | " in md and "| no: stop |" in md
    assert 'id="prune-path"' in page and 'data-key="kept" data-value="false"' in page
    assert page.count('data-key="ratio"') == 3 and 'data-key="scope" data-value="&quot;ffn&quot;"' in page


def test_unreachable_target_keeps_the_unpruned_student_and_says_so(inputs, ffn_metric, capsys):
    report = _run(inputs, "unreachable", "--target-retention", "0.9", "--no-quantize")
    path = report["history"]["prune_steps"]
    assert [(s["ratio"], s["kept"]) for s in path] == [(0.5, False)] * 2  # the default search starts at 0.5
    assert _params(report, "pruned") == _params(report, "student")
    target = report["retention_target"]
    assert target["met"] is False
    assert "target not reachable" in target["notes"][0] and "unpruned student" in target["notes"][0]
    assert report["history"]["prune_target"]["kept"] == "the unpruned student"
    from distill.report.render import render_table

    assert "unpruned student" in str(render_table(report).caption)


def test_fixed_ratios_skip_the_search(inputs, ffn_metric):
    report = _run(inputs, "fixed", "--prune-ffn", "0.5", "--target-retention", "0.9", "--no-quantize")
    path = report["history"]["prune_steps"]
    assert len(path) == 1 and "kept" not in path[0] and path[0]["metric"] == 0.5  # 0.5 of the FFN: no search
    target = report["history"]["prune_target"]
    assert target["kept"] == "fixed ratios" and target["met"] is False and "fixed ratios" in target["note"]
    assert 'id="prune-path"' not in (Path(report["_dir"]) / "report.html").read_text()


def test_int8_is_held_to_the_target(inputs, ffn_metric):
    """Both steps keep 0.2 of the student's metric, above the trivial predictor's; INT8 is then held to the same
    target and reference."""
    report = _run(inputs, "int8", "--target-retention", "0.2", "--prune-search", "0.1,0.25")
    path = report["history"]["prune_steps"]
    assert [(s["ratio"], s["kept"]) for s in path] == [(0.1, True), (0.25, True)]
    int8 = report["history"]["int8_target"]
    assert int8["stage"] == "int8" and int8["reference"] == 1.0  # the student's metric, from the prune stage
    assert report["retention_target"]["notes"][1] == int8["note"]


def score_by_layout(monkeypatch, score) -> None:
    """The prune stage's dev metric becomes ``score(layout)``, a known function of the model's widths
    (``compress.prune.layout.Layout``)."""
    from compress.prune.layout import measure
    from distill.core.families import arch_of
    from distill.pipeline.stages import prune

    def evaluator(task, loader, device="auto"):
        return lambda model: {task.main_metric: score(measure(model, arch_of(model)))}

    monkeypatch.setattr(prune, "gathered_evaluator", evaluator)


@pytest.fixture
def width_metric(monkeypatch):
    """The prune stage's dev metric: the model's hidden width over the ``tiny`` student's (128)."""
    score_by_layout(monkeypatch, lambda layout: layout.hidden / 128)


def test_a_width_cut_that_misses_is_retried_on_the_ffn_alone(inputs, width_metric):
    """0.5 halves heads and width and misses; the same ratio on the FFN alone keeps it, and so does 0.75 after it:
    the kept model has every head and the whole width, a quarter of the FFN, and loads with plain transformers."""
    from transformers import AutoModelForSequenceClassification

    report = _run(inputs, "width", "--target-retention", "0.9", "--no-quantize")
    path = report["history"]["prune_steps"]
    assert [(s["step"], s["ratio"], s["scope"], s["metric"], s["kept"]) for s in path] == [
        (1, 0.5, "all", 0.5, False), (2, 0.5, "ffn", 1.0, True), (3, 0.75, "ffn", 1.0, True)]
    assert _params(report, "pruned") == path[2]["params"] < path[1]["params"] < _params(report, "student")
    target = report["history"]["prune_target"]
    assert target["met"] and target["kept"] == "ratio 0.75, FFN only"
    config = AutoModelForSequenceClassification.from_pretrained(Path(report["_dir"]) / "pruned").config
    assert (config.hidden_size, config.num_attention_heads, config.intermediate_size) == (128, 2, 128)
    from distill.report.render import render_table

    caption = str(render_table(report).caption)
    assert "ratio 0.5: " in caption and "below: retry on the FFN alone" in caption
    assert "ratio 0.75, FFN only: " in caption


def test_a_step_at_the_trivial_predictor_is_not_kept(inputs, monkeypatch):
    """The student scores 0.9 times its FFN share; a 50% target lets 0.5 keep 0.45, but that is no better than the
    majority class (0.625 + margin): the step misses, and so does its FFN-only retry; 0.25 (0.675) is kept."""
    score_by_layout(monkeypatch, lambda layout: 0.9 * layout.layers[0].ffn / 512)
    report = _run(inputs, "floor", "--target-retention", "0.5", "--prune-search", "0.25,0.5,0.75", "--no-quantize")
    assert report["trivial_metric"] + report["collapse_margin"] > 0.45  # the floor this test is about
    path = report["history"]["prune_steps"]
    assert [(s["ratio"], s["scope"], s["kept"]) for s in path] == [(0.25, "all", True), (0.5, "all", False),
                                                                  (0.5, "ffn", False)]
    target = report["history"]["prune_target"]
    assert target["kept"] == "ratio 0.25" and "no better than the trivial predictor" in target["note"]


@pytest.mark.parametrize("quantize", [True, False])
def test_a_step_inside_the_int8_share_is_not_kept_when_int8_follows(inputs, monkeypatch, quantize):
    """Ratio 0.5 keeps 98% of the student: enough for R = 0.97 alone, not for the 98.5% pruning may keep when INT8
    follows (INT8 is held to 97% of the same student and needs the rest)."""
    score_by_layout(monkeypatch, lambda layout: 1.0 - 0.04 * (1 - layout.layers[0].ffn / 512))
    extra = () if quantize else ("--no-quantize",)
    report = _run(inputs, f"share-{quantize}", "--prune-search", "0.5", *extra)
    path = report["history"]["prune_steps"]
    assert path[0]["metric"] == pytest.approx(0.98) and path[0]["kept"] is (not quantize)
    target = report["history"]["prune_target"]
    assert target["target"] == 0.97 and target["threshold"] == pytest.approx(0.985 if quantize else 0.97)
    assert ("98.5% of the student's accuracy (half the 3% that --target-retention 0.97 allows" in target["note"]) \
        is quantize
    from distill.report.retention import path_line

    bar = "0.9850 = 98.5%" if quantize else "0.9700 = 97.0%"  # the terminal's path line names the bar it used
    assert path_line(report).startswith(f"pruning search (a step keeps ≥ {bar} of the student's): ratio 0.5")


def test_the_search_resumes_after_its_last_kept_step(inputs, width_metric, monkeypatch):
    """Killed inside the recovery of step 3 (0.75 on the FFN alone): the resumed run keeps steps 1-2 as they were,
    stays on the FFN alone and ends with the same path and weights as an uninterrupted run."""
    import signal

    from safetensors.torch import load_file

    import distill.train.checkpoint as checkpoint
    from distill.core.interrupts import Interrupted

    want = _run(inputs, "whole", "--target-retention", "0.9", "--no-quantize")
    real = checkpoint.Checkpoints.save

    def save_then_die(self, step, **kwargs):
        path = real(self, step, **kwargs)
        if self.directory.name == "recover-3" and step == 1:
            raise Interrupted(signal.SIGKILL)
        return path

    monkeypatch.setattr(checkpoint.Checkpoints, "save", save_then_die)
    out = inputs["tmp"] / "killed"
    assert main(["run", "--teacher", str(inputs["teacher"]), "--data", str(inputs["data"]), *COMMON,
                 "--output-dir", str(out), "--target-retention", "0.9", "--no-quantize",
                 "--checkpoint-every", "1"]) == 128 + signal.SIGKILL
    assert (out / "checkpoints" / "prune" / "step-2").is_dir()
    monkeypatch.setattr(checkpoint.Checkpoints, "save", real)
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    got = json.loads((out / "report.json").read_text())
    assert got["history"]["prune_steps"] == want["history"]["prune_steps"]
    a, b = (load_file(Path(d) / "pruned" / "model.safetensors") for d in (out, want["_dir"]))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


@pytest.mark.parametrize("value", ["0", "-1", "1.6", "nan"])
def test_bad_target_retention_is_one_line_exit_2(inputs, capsys, value):
    out = inputs["tmp"] / f"bad-{value}"
    assert main(["run", "--teacher", str(inputs["teacher"]), "--data", str(inputs["data"]), *COMMON,
                 "--output-dir", str(out), "--target-retention", value]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--target-retention" in err and "Traceback" not in err
    assert not out.exists()

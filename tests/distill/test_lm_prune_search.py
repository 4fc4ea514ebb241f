"""The retention search of ``--task causal-lm`` (``distill.pipeline.stages.lm_prune``): retention of perplexity as
student / stage, cumulative step ratios, the target line, the path in report.json/.md/.html, and end to end on a
tiny random Llama: a permissive target keeps every step, an impossible one keeps (and quantizes) the unpruned
student, fixed ratios prune once."""

from __future__ import annotations

import json
from pathlib import Path

import lm_factories
import pytest

from distill.cli import main
from distill.core.families.family import Widths
from distill.pipeline.config import RunConfig
from distill.pipeline.stages import lm_prune


def _widths(heads: int, ffn: int) -> Widths:
    return Widths(layers=2, hidden=64, heads=heads, kv_heads=2, head_dim=16, ffn=ffn)


def test_retention_of_perplexity_is_student_over_stage():
    assert lm_prune.retention(10.0, 10.0) == 1.0
    assert lm_prune.retention(20.0, 10.0) == 0.5  # twice the perplexity keeps half
    assert lm_prune.threshold(10.0, 0.97) == pytest.approx(10.309, abs=1e-3)  # ~3% higher allowed
    assert lm_prune.keeps(10.3, 10.0, 0.97) and not lm_prune.keeps(10.4, 10.0, 0.97)


def test_search_steps_are_cumulative_ratios_of_the_student():
    """The second step prunes the kept model further, to the ratio of the *student's* widths."""
    cfg = RunConfig(teacher="t")
    first = lm_prune.step_plan(cfg, 0.5, _widths(4, 96), _widths(4, 96))
    assert (first.heads, first.ffn) == (0.5, 0.5)
    second = lm_prune.step_plan(cfg, 0.75, _widths(4, 96), _widths(2, 48))
    assert round(2 * (1 - second.heads)) == 1 and round(48 * (1 - second.ffn)) == 24
    assert lm_prune.step_plan(cfg, 0.75, _widths(4, 96), _widths(1, 24)).heads == 0.0  # reached: nothing more


def _found(*rows: tuple[float, float, bool]) -> lm_prune.LMSearch:
    steps = [{"step": i, "ratio": r, "params": 1000 - 300 * i, "metric": ppl, "retention": 10.0 / ppl, "kept": k}
             for i, (r, ppl, k) in enumerate(rows, 1)]
    return lm_prune.LMSearch(10.0, 4, steps)


def test_target_lines_say_what_was_kept():
    cfg = RunConfig(teacher="t", target_retention=0.9)
    kept = lm_prune.target_of(cfg, _found((0.5, 10.5, True), (0.75, 14.0, False)), 1000)
    assert kept.met and kept.kept == "ratio 0.5" and "rose to perplexity 14.00" in kept.note
    none = lm_prune.target_of(cfg, _found((0.5, 14.0, False)), 1000)
    assert not none.met and none.kept == "the unpruned student" and none.metric == 10.0
    assert none.note.startswith("target not reachable") and "kept instead: the unpruned student" in none.note
    fixed = lm_prune.target_of(RunConfig(teacher="t", prune_ffn=0.5), _found((0.5, 14.0, False)), 1000)
    assert not fixed.met and "fixed ratios" in fixed.note


def _report(steps_kept: list[bool]) -> dict:
    from distill.pipeline.lm_run import retention_parts
    from distill.pipeline.stages.lm_stages import LMStage

    cfg = RunConfig(teacher="t", target_retention=0.9)
    found = _found(*[(0.25 * (i + 1), 10.5 if k else 14.0, k) for i, k in enumerate(steps_kept)])
    target = lm_prune.target_of(cfg, found, 1000)
    stage = LMStage("pruned", None, Path("p"), {}, search=lm_prune.search_record(found, target, True))
    return {"teacher": "t", "student": "s", "data": "d", "stages": [], "perplexity_convention": "c",
            "trivial_perplexity": 50.0, "continuations": {}, "notes": [], "training": {}, **retention_parts([stage])}


def test_report_renders_the_path_and_the_unreachable_target():
    from distill.report.lm import render_html, table_caption, to_markdown

    report = _report([False])
    assert report["retention_target"]["met"] is False and report["prune_search"]["metric_name"] == "perplexity"
    md = to_markdown(report)
    assert "## Retention target" in md and "| step | ratio |" in md and "no: stop" in md
    assert "target not reachable" in md and "student perplexity / stage perplexity" in md
    html = render_html(report)
    assert 'id="prune-path"' in html and "target not reachable" in html
    assert "pruning search" in table_caption(report) and "ratio 0.25" in table_caption(report)
    assert "14.00 (" in table_caption(report) and "| 14.00 |" in md  # perplexities with 2 decimals, not 4
    assert "Retention target" not in to_markdown({**report, "prune_search": None})


# ---- end to end ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    return lm_factories.write_lm_folder(tmp_path_factory.mktemp("lmtext"))


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("lms")
    return (lm_factories.save_tiny_lm(root / "teacher", "llama", seed=0),
            lm_factories.save_tiny_lm(root / "student", "llama", seed=1, num_hidden_layers=1))


def _run(tmp: Path, models, text: Path, *extra: str) -> tuple[dict, Path]:
    out = tmp / "run"
    code = main(["run", "--teacher", str(models[0]), "--student", str(models[1]), "--task", "causal-lm", "--data",
                 str(text), "--block-size", "16", "--batch-size", "4", "--epochs", "1", "--max-train-samples", "16",
                 "--eval-blocks", "8", "--latency-runs", "1", "--output-dir", str(out), "--quiet", *extra])
    assert code == 0
    return json.loads((out / "report.json").read_text()), out


def test_a_permissive_target_keeps_the_last_ratio_and_records_every_step(tmp_path, text, models):
    report, out = _run(tmp_path, models, text, "--prune-search", "0.25,0.5", "--target-retention", "0.01",
                       "--recover-epochs", "0.5", "--no-quantize")
    search = report["prune_search"]
    steps = search["prune_steps"]
    assert [s["ratio"] for s in steps] == [0.25, 0.5] and all(s["kept"] for s in steps)
    assert steps[1]["params"] < steps[0]["params"] and all(s["recovery_steps"] > 0 for s in steps)
    assert search["prune_target"]["kept"] == "ratio 0.5" and report["retention_target"]["met"] is True
    student, pruned = (row for row in report["stages"] if row["name"] in ("student", "pruned"))
    assert pruned["params"] == steps[1]["params"] < student["params"]
    assert report["training"]["pruned"]["ffn"] == [96, 48] and report["training"]["pruned"]["recovery"]["steps"] > 0
    md = (out / "report.md").read_text()
    assert "Pruning search path" in md and "| 2 | 0.5 |" in md and "every step kept it" in md
    assert 'id="prune-path"' in (out / "report.html").read_text()


def test_an_impossible_target_stops_at_the_first_step_and_quantizes_the_student(tmp_path, text, models):
    report, out = _run(tmp_path, models, text, "--target-retention", "1.5", "--recover-epochs", "0")
    steps = report["prune_search"]["prune_steps"]
    assert len(steps) == 1 and steps[0]["ratio"] == 0.5 and steps[0]["kept"] is False
    target = report["prune_search"]["prune_target"]
    assert target["met"] is False and target["kept"] == "the unpruned student"
    assert report["retention_target"]["notes"][0].startswith("target not reachable")
    rows = {row["name"]: row for row in report["stages"]}
    assert rows["pruned"]["params"] == rows["student"]["params"] == report["training"]["int8"]["params"]
    assert report["training"]["int8"]["from"] == "pruned"
    assert "target not reachable" in (out / "report.md").read_text()


def test_fixed_ratios_still_prune_once(tmp_path, text, models):
    report, _ = _run(tmp_path, models, text, "--prune-ffn", "0.5", "--recover-epochs", "0.5", "--no-quantize")
    search = report["prune_search"]
    assert search["searched"] is False and search["prune_steps"] == []
    assert "fixed ratios" in search["prune_target"]["note"]
    assert report["training"]["pruned"]["ffn"] == [96, 48] and report["training"]["pruned"]["recovery"]["steps"] > 0

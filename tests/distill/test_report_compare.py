"""``distill report``: regenerate one run from its report.json, compare several side by side, gate the final stage."""

import json

import pytest

from distill.core.errors import DataError
from distill.report.compare import compare_runs, report_runs, run_names, write_comparison


def _report(scale: float, student: str) -> dict:
    teacher = {"name": "teacher", "metric": 0.9, "retention": 1.0, "agreement": 1.0, "params": 1000,
               "size_mb": 4.0, "latency_ms": 20.0, "path": "teacher"}
    final = {"name": "int8", "metric": 0.8 * scale, "retention": 0.8 * scale / 0.9, "agreement": 0.9,
             "params": int(100 * scale), "size_mb": 0.5 * scale, "latency_ms": 2.0 * scale, "path": "int8"}
    return {"task": "sst2", "metric_name": "accuracy", "stages": [teacher, final], "wall_seconds": 10.0 * scale,
            "settings": {"student": student}}


def _runs(root, specs) -> list:
    dirs = []
    for name, scale in specs:
        run = root / name
        run.mkdir(parents=True)
        (run / "report.json").write_text(json.dumps(_report(scale, name.split("-")[-1])))
        (run / "env.json").write_text(json.dumps({"python": "3.11"}))
        dirs.append(run)
    return dirs


def test_compare_side_by_side(tmp_path):
    dirs = _runs(tmp_path / "runs", [("sst2-tiny", 1.0), ("sst2-mini", 1.1)])
    comp = compare_runs(dirs)
    assert [r["run"] for r in comp["runs"]] == ["sst2-tiny", "sst2-mini"]
    assert comp["runs"][1]["student"] == "mini" and comp["runs"][0]["speedup"] == 10.0
    fronts = {(p["run"], p["stage"]): p["front_size"] for p in comp["pareto"]}
    assert fronts == {("sst2-tiny", "teacher"): True, ("sst2-tiny", "int8"): True,
                      ("sst2-mini", "teacher"): True, ("sst2-mini", "int8"): True}
    write_comparison(tmp_path / "cmp", dirs)
    page = (tmp_path / "cmp" / "comparison.html").read_text()
    assert page.count("data:image/png;base64,") == 1 and "://" not in page
    assert 'id="stages-0"' in page and 'id="stages-1"' in page
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "| sst2-mini | mini | int8 | 0.8800 | 97.8% | 90.0% | 110 | 0.55 | 2.20 | 9.1× | 11 |" in md
    assert json.loads((tmp_path / "cmp" / "comparison.json").read_text())["runs"][0]["run"] == "sst2-tiny"


def test_report_one_run_regenerates_its_files(tmp_path):
    (run,) = _runs(tmp_path, [("sst2-tiny", 1.0)])
    result = report_runs([run], min_retention=0.95)
    assert result.failures == ["gate failed: int8 retention 0.8889 < --min-retention 0.95"]
    assert {p.name for p in result.written} == {"report.html", "report.md", "report.json"}
    assert json.loads((run / "report.json").read_text())["environment"] == {"python": "3.11"}


def test_report_several_runs_gates_each(tmp_path):
    dirs = _runs(tmp_path, [("a/sst2-tiny", 1.0), ("b/sst2-tiny", 1.2)])
    assert run_names(dirs) == ["a/sst2-tiny", "b/sst2-tiny"]
    result = report_runs(dirs, tmp_path / "out", max_latency_ms=2.1)
    assert result.failures == ["gate failed: b/sst2-tiny: int8 latency 2.4 ms > --max-latency-ms 2.1"]
    assert (tmp_path / "out" / "comparison.html").is_file()


def test_missing_report_and_mixed_tasks_are_user_errors(tmp_path):
    with pytest.raises(DataError, match="no report.json"):
        compare_runs([tmp_path])
    dirs = _runs(tmp_path, [("x", 1.0), ("y", 1.0)])
    other = json.loads((dirs[1] / "report.json").read_text()) | {"task": "mrpc", "metric_name": "f1"}
    (dirs[1] / "report.json").write_text(json.dumps(other))
    with pytest.raises(DataError, match="different tasks"):
        compare_runs(dirs)

"""Report rendering: the terminal table and the Markdown file carry the same numbers as report.json."""

import json

from rich.console import Console

from distill.report import render_table, to_markdown, write_report

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

"""Render a run's scores: a rich table on the terminal, ``report.json`` and ``report.md`` on disk."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from distill.core.artifacts import atomic_write_text, write_json

COLUMNS = (("stage", "name", "{}"), ("metric", "metric", "{:.4f}"), ("retention", "retention", "{:.1%}"),
           ("agreement", "agreement", "{:.1%}"), ("params", "params", "{:,}"), ("size MB", "size_mb", "{:.2f}"),
           ("latency ms", "latency_ms", "{:.2f}"), ("speedup", "speedup", "{:.1f}×"), ("path", "path", "{}"))


def _rows(report: dict) -> list[list[str]]:
    stages = report["stages"]
    base = stages[0]["latency_ms"] if stages else 0.0
    rows = []
    for s in stages:
        values = {**s, "speedup": base / s["latency_ms"] if s["latency_ms"] else 0.0}
        rows.append([fmt.format(values[key]) for _, key, fmt in COLUMNS])
    return rows


def render_table(report: dict) -> Table:
    """The terminal table: one row per stage, teacher first."""
    seq = report.get("latency_seq", 128)
    title = f"{report['task']}: {report['metric_name']} on dev, latency at batch 1 × seq {seq}"
    table = Table(title=title)
    for header, key, _ in COLUMNS:
        table.add_column(header, justify="left" if key in ("name", "path") else "right")
    for row in _rows(report):
        table.add_row(*row)
    return table


def to_markdown(report: dict) -> str:
    """The same table as GitHub Markdown, with the settings that produced it."""
    lines = [f"# Compression report: {report['task']}", "",
             f"Metric: **{report['metric_name']}** on the dev set. Latency: median of {report.get('latency_runs', 30)} "
             f"runs, batch 1, sequence {report.get('latency_seq', 128)}, {report.get('latency_threads', 2)} CPU "
             "threads. Retention = metric / teacher metric; agreement = share of dev predictions equal to the "
             "teacher's.", ""]
    lines.append("| " + " | ".join(h for h, _, _ in COLUMNS) + " |")
    lines.append("|" + "|".join("---" for _ in COLUMNS) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in _rows(report)]
    if report.get("settings"):
        lines += ["", "## Settings", "", "```yaml"]
        lines += [f"{k}: {v}" for k, v in report["settings"].items()]
        lines += ["```"]
    if report.get("stage_seconds"):
        lines += ["", "## Wall time per stage", ""]
        lines += [f"- {k}: {v:.1f} s" for k, v in report["stage_seconds"].items()]
    return "\n".join(lines) + "\n"


def write_report(out_dir: str | Path, report: dict) -> None:
    """Write ``report.json`` and ``report.md`` atomically."""
    out_dir = Path(out_dir)
    write_json(out_dir / "report.json", report)
    atomic_write_text(out_dir / "report.md", to_markdown(report))

"""``distill report RUN_DIR [RUN_DIR ...]``: regenerate one run's report, or compare several runs side by side."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from distill.core.artifacts import atomic_write_text, write_json
from distill.core.errors import DataError
from distill.report.render import (
    cell_html,
    check_gates,
    enrich,
    esc,
    figure_html,
    fmt_cell,
    page_html,
    pareto_points,
    read_json,
    stage_table_html,
    write_report,
)

SUMMARY = (("run", "run", "{}"), ("student", "student", "{}"), ("final stage", "stage", "{}"),
           ("metric", "metric", "{:.4f}"), ("retention", "retention", "{:.1%}"), ("agreement", "agreement", "{:.1%}"),
           ("params", "params", "{:,}"), ("size MB", "size_mb", "{:.2f}"), ("latency ms", "latency_ms", "{:.2f}"),
           ("speedup", "speedup", "{:.1f}×"), ("wall s", "wall_seconds", "{:.0f}"))


@dataclass
class ReportResult:
    """What ``report_runs`` did: the reports read, the files written and the gate failures."""

    reports: dict[str, dict]
    written: list[Path] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def load_run(run_dir: str | Path) -> dict:
    """A run's ``report.json`` with its ``env.json`` as ``environment`` (when the report lacks one)."""
    run_dir = Path(run_dir)
    report = read_json(run_dir / "report.json")
    if report is None:
        raise DataError(f"no report.json in {run_dir}", "pass the --output-dir of a finished `distill run`")
    if not report.get("environment") and (env := read_json(run_dir / "env.json")) is not None:
        report["environment"] = env
    return report


def run_names(run_dirs: Sequence[str | Path]) -> list[str]:
    """Short unique names: the directory names, or paths relative to the common parent when those clash."""
    paths = [Path(p).resolve() for p in run_dirs]
    names = [p.name for p in paths]
    if len(set(names)) == len(names):
        return names
    root = Path(os.path.commonpath(paths)) if len(paths) > 1 else paths[0].parent
    return [str(p.relative_to(root)) or p.name for p in paths]


def _summary(name: str, report: Mapping) -> dict:
    """One comparison row: the run's final stage with its speedup over its own teacher."""
    final = enrich(report)["stages"][-1] if report.get("stages") else {}
    return {"run": name, "student": (report.get("settings") or {}).get("student"), "stage": final.get("name"),
            **{k: final.get(k) for k in ("metric", "retention", "agreement", "params", "size_mb", "latency_ms",
                                         "speedup")}, "wall_seconds": report.get("wall_seconds")}


def compare_runs(run_dirs: Sequence[str | Path]) -> dict:
    """Read several runs of one task: a summary row per run, every stage, and the common Pareto front."""
    if not run_dirs:
        raise DataError("no run directory given", "pass one or more --output-dir of `distill run`")
    reports = dict(zip(run_names(run_dirs), (load_run(d) for d in run_dirs), strict=True))
    tasks = {(r["task"], r["metric_name"]) for r in reports.values()}
    if len(tasks) > 1:
        raise DataError(f"the runs score different tasks or metrics ({', '.join(sorted(map(str, tasks)))})",
                        "compare runs of one task only")
    task, metric = tasks.pop()
    return {"task": task, "metric_name": metric, "runs": [_summary(n, r) for n, r in reports.items()],
            "dirs": {n: str(d) for n, d in zip(reports, run_dirs, strict=True)},
            "pareto": pareto_points(reports), "reports": reports}


def _as_comparison(runs) -> dict:
    """A ``compare_runs`` dict as is, or one built from a list of run directories."""
    return runs if isinstance(runs, Mapping) and "runs" in runs else compare_runs(list(runs))


def comparison_markdown(comp: Mapping) -> str:
    """The side-by-side table as GitHub Markdown."""
    lines = [f"# Run comparison: {comp['task']}", "",
             f"Final stage of each run; metric **{comp['metric_name']}** on dev, speedup over each run's own "
             "teacher. Plots: comparison.html.", "",
             "| " + " | ".join(h for h, _, _ in SUMMARY) + " |", "|" + "|".join("---" for _ in SUMMARY) + "|"]
    lines += ["| " + " | ".join(fmt_cell(f, row.get(k)) for _, k, f in SUMMARY) + " |" for row in comp["runs"]]
    return "\n".join(lines) + "\n"


def summary_table_html(comp: Mapping) -> str:
    """The side-by-side table; cells carry ``data-key``/``data-value`` like the stage tables."""
    head = "".join(f"<th>{esc(h)}</th>" for h, _, _ in SUMMARY)
    rows = "".join(f'<tr data-run="{esc(row["run"])}">' + "".join(cell_html(k, row.get(k), f) for _, k, f in SUMMARY)
                   + "</tr>" for row in comp["runs"])
    return f'<table id="runs"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


def comparison_html(comp: Mapping) -> str:
    """Side-by-side table, one Pareto plot of every stage of every run, then each run's full stage table."""
    title = f"Run comparison: {comp['task']}"
    body = [f"<h1>{esc(title)}</h1>", f'<p class="lead">{esc(comp["metric_name"])} on dev; the last stage of each '
            "run; speedup over each run's own teacher.</p>", "<h2>Runs</h2>", summary_table_html(comp)]
    try:
        from distill.report import plots

        body += ["<h2>Pareto view</h2>", figure_html("plot-pareto", plots.pareto_png(
            comp["pareto"], comp["metric_name"]), "every stage of every run; filled markers are on the common "
            "Pareto front")]
    except ImportError:
        body.append('<p class="note">Plots need matplotlib: <code>pip install matplotlib</code>.</p>')
    for i, (name, report) in enumerate(comp["reports"].items()):
        body += [f"<h2>{esc(name)}</h2>", stage_table_html(report, f"stages-{i}")]
    return page_html(title, body)


def write_comparison(out_dir: str | Path, runs) -> dict:
    """Write ``comparison.json``, ``comparison.md`` and ``comparison.html``; ``runs`` are run dirs or a comparison."""
    comp = _as_comparison(runs)
    out_dir = Path(out_dir)
    write_json(out_dir / "comparison.json", {k: v for k, v in comp.items() if k != "reports"})
    atomic_write_text(out_dir / "comparison.md", comparison_markdown(comp))
    atomic_write_text(out_dir / "comparison.html", comparison_html(comp))
    return comp


def report_runs(run_dirs: Sequence[str | Path], output_dir: str | Path | None = None, *,
                min_retention: float | None = None, max_latency_ms: float | None = None,
                max_size_mb: float | None = None) -> ReportResult:
    """The ``distill report`` command: rewrite each run's report, compare several, check the gates on each."""
    if not run_dirs:
        raise DataError("no run directory given", "pass one or more --output-dir of `distill run`")
    result = ReportResult({})
    if len(run_dirs) > 1:
        comp = compare_runs(run_dirs)
        result.reports = comp["reports"]
        out = Path(output_dir) if output_dir else Path(os.path.commonpath([Path(d).resolve() for d in run_dirs]))
        write_comparison(out, comp)
        result.written += [out / f"comparison.{ext}" for ext in ("html", "md", "json")]
    else:
        result.reports = {run_names(run_dirs)[0]: load_run(run_dirs[0])} if run_dirs else {}
    for (name, report), run_dir in zip(result.reports.items(), run_dirs, strict=True):
        if len(run_dirs) == 1:
            target = Path(output_dir) if output_dir else Path(run_dir)
            write_report(target, report)
            result.written += [target / f"report.{ext}" for ext in ("html", "md", "json")]
        lines = check_gates(report, min_retention, max_latency_ms, max_size_mb)
        result.failures += [line.replace("gate failed: ", f"gate failed: {name}: ") if len(run_dirs) > 1 else line
                            for line in lines]
    return result

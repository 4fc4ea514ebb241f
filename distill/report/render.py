"""Render a run's scores: a rich table on the terminal, ``report.json``, ``report.md`` and a self-contained
``report.html`` (inline CSS, plots as base64 PNG, no external URL) on disk; CI gates on the final stage.

Every public function takes a report as report.json's content (a mapping, e.g. read back by ``distill report``) or
as any object with ``to_json()`` returning it (``distill.pipeline.results.RunReport``)."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from distill.core.artifacts import atomic_write_text, write_json
from distill.core.console import table
from distill.evaluate import collapse
from distill.report import advice, retention

COLUMNS = (("stage", "name", "{}"), ("metric", "metric", "{:.4f}"), ("retention", "retention", "{:.1%}"),
           ("agreement", "agreement", "{:.1%}"), ("params", "params", "{:,}"), ("size MB", "size_mb", "{:.2f}"),
           ("latency ms", "latency_ms", "{:.2f}"), ("speedup", "speedup", "{:.1f}×"), ("path", "path", "{}"))
KL_COLUMN = ("KL to teacher", "kl_to_teacher", "{:.4f}")
LEARNED_COLUMN = ("learned", "learned", "{}")  # shown when a stage collapsed to the trivial predictor
MISSING = "—"
CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1100px;
 padding:0 1rem;color:#1d1d1f;background:#fff}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0}th,td{padding:.25rem .6rem;border-bottom:1px solid #eee}
th{background:#f5f5f7;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
table.kv td:first-child{color:#555;font-family:ui-monospace,monospace}
figure{margin:.5rem 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption,.lead,.note{color:#555}code{font-family:ui-monospace,monospace}
""".strip()
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


class JsonReport(Protocol):
    """A typed report that can say what report.json holds."""

    def to_json(self) -> dict: ...


Report = Mapping | JsonReport


def as_json(report: Report) -> Mapping:
    """report.json's content of ``report`` (a mapping already, or a typed report)."""
    return report if isinstance(report, Mapping) else report.to_json()


# ---- numbers ---------------------------------------------------------------------------------------------

def teacher_row(report: Mapping) -> Mapping | None:
    """The stage named ``teacher``, else the first stage."""
    stages = report.get("stages") or []
    return next((s for s in stages if s.get("name") == "teacher"), stages[0] if stages else None)


def speedup(report: Mapping, stage: Mapping) -> float:
    """Teacher latency / stage latency (0 when either is missing)."""
    base = (teacher_row(report) or {}).get("latency_ms")
    lat = stage.get("latency_ms")
    return round(base / lat, 3) if base and lat else 0.0


def backends(report: Mapping) -> list[str]:
    """Latency backends measured in any stage (``stage["latencies_ms"]``: {backend: ms}), in order of appearance."""
    return list(dict.fromkeys(b for s in report.get("stages", []) for b in (s.get("latencies_ms") or {})))


def stage_values(report: Mapping) -> list[dict]:
    """Each stage's dict with the derived fields the tables show: ``speedup`` and ``latency_<backend>_ms``."""
    rows = []
    for s in report.get("stages", []):
        extra = {f"latency_{b}_ms": v for b, v in (s.get("latencies_ms") or {}).items()}
        rows.append({**s, **extra, "speedup": speedup(report, s), "learned": collapse.mark(s)})
    return rows


def columns(report: Mapping) -> list[tuple[str, str, str]]:
    """(header, key, format) of the stage table: KL and per-backend latency columns only when measured."""
    cols = list(COLUMNS)
    if any(s.get("kl_to_teacher") is not None for s in report.get("stages", [])):
        cols.insert(4, KL_COLUMN)
    if names := backends(report):
        at = [key for _, key, _ in cols].index("latency_ms")
        cols[at:at + 1] = [(f"latency {b} ms", f"latency_{b}_ms", "{:.2f}") for b in names]
    if collapse.collapsed_stages(report):
        cols.insert(2, LEARNED_COLUMN)
    return cols


def fmt_cell(fmt: str, value) -> str:
    """``fmt.format(value)``, or a dash for a missing value."""
    return MISSING if value is None else fmt.format(value)


def _rows(report: Mapping) -> list[list[str]]:
    """The stage table as formatted strings."""
    cols = columns(report)
    return [[fmt_cell(fmt, values.get(key)) for _, key, fmt in cols] for values in stage_values(report)]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """For (cost, metric) points: True where no other point is at most as costly and at least as good, and better."""
    return [not any(c2 <= c and m2 >= m and (c2 < c or m2 > m) for j, (c2, m2) in enumerate(points) if j != i)
            for i, (c, m) in enumerate(points)]


def pareto_points(reports: Mapping[str, Mapping]) -> list[dict]:
    """Every stage of every run as a plot point, flagged when on the common size / latency Pareto front."""
    points = [{"run": run, "stage": s["name"], "metric": s.get("metric"), "size_mb": s.get("size_mb"),
               "latency_ms": s.get("latency_ms")} for run, r in reports.items() for s in r.get("stages", [])]
    points = [p for p in points if p["metric"] is not None]
    for cost, flag in (("size_mb", "front_size"), ("latency_ms", "front_latency")):
        known = [p for p in points if p[cost]]
        for p, on in zip(known, pareto_front([(p[cost], p["metric"]) for p in known]), strict=True):
            p[flag] = on
    return points


def confusion(teacher: Sequence[int], stage: Sequence[int], num_classes: int) -> list[list[int]]:
    """Counts of (teacher class, stage class) over the dev set."""
    matrix = np.zeros((num_classes, num_classes), dtype=int)
    np.add.at(matrix, (np.asarray(teacher, dtype=int), np.asarray(stage, dtype=int)), 1)
    return matrix.tolist()


def class_names(report: Mapping, num_classes: int) -> list[str]:
    """Label names from the report or the task registry, else the class ids."""
    names = list(report.get("label_names") or [])
    if not names:
        try:
            from distill.data.tasks import get_task

            names = list(get_task(report.get("task", "")).label_names)
        except Exception:  # a custom task from a file: no registered names
            names = []
    return names if len(names) == num_classes else [str(i) for i in range(num_classes)]


def confusion_matrices(report: Mapping) -> dict[str, list[list[int]]]:
    """Teacher-vs-stage confusion matrices from ``report["predictions"]`` (classification only)."""
    preds = report.get("predictions") or {}
    teacher = preds.get("teacher")
    if not teacher or any(not isinstance(v, int) for p in preds.values() for v in p):
        return {}
    n = max(max(p) for p in preds.values() if p) + 1
    n = max(n, len(report.get("label_names") or []))
    return {name: confusion(teacher, p, n) for name, p in preds.items() if name != "teacher" and len(p) == len(teacher)}


# ---- gates -----------------------------------------------------------------------------------------------


def check_gates(report: Report, min_retention: float | None = None, max_latency_ms: float | None = None,
                max_size_mb: float | None = None, stage: str | None = None) -> list[str]:
    """Failure lines for the CI gates, checked on ``stage`` (default: the final stage, the last row)."""
    report = as_json(report)
    stages = report.get("stages") or []
    row = stages[-1] if stage is None and stages else next((s for s in stages if s.get("name") == stage), None)
    if row is None:
        return [f"gate failed: no stage {stage!r} in the report" if stage else "gate failed: the report has no stages"]
    gates = (("retention", "retention", min_retention, "--min-retention", "", lambda v, g: v < g),
             ("latency", "latency_ms", max_latency_ms, "--max-latency-ms", " ms", lambda v, g: v > g),
             ("size", "size_mb", max_size_mb, "--max-size-mb", " MB", lambda v, g: v > g))
    lines = collapse.gate_lines(report, row) if min_retention is not None else []
    return lines + [line for what, key, limit, flag, unit, fails in gates if limit is not None
                    if (line := _gate(row, what, key, limit, flag, unit, fails))]


def _gate(row: Mapping, what: str, key: str, limit: float, flag: str, unit: str,
          fails: Callable[[float, float], bool]) -> str | None:
    """One gate's failure line, or None when it passes."""
    value = row.get(key)
    if value is None:
        return f"gate failed: {row.get('name')} has no {what} for {flag} {limit:g}"
    if fails(value, limit):
        sign = "<" if flag.startswith("--min") else ">"
        return f"gate failed: {row.get('name')} {what} {value:.4g}{unit} {sign} {flag} {limit:g}"
    return None


# ---- terminal and Markdown -------------------------------------------------------------------------------


def render_table(report: Report) -> Any:
    """The terminal table: one row per stage, teacher first."""
    report = as_json(report)
    if report.get("kind") == "causal-lm":  # a causal-LM run has its own columns (distill.report.lm)
        from distill.report.lm import render_lm_table

        return render_lm_table(report)
    seq = report.get("latency_seq", 128)
    title = f"{report['task']}: {report['metric_name']} on dev, latency at batch 1 × seq {seq}"
    cols = columns(report)
    right = {header for header, key, _ in cols if key not in ("name", "path")}
    styles = ["bold red" if stage.get("collapsed") else None for stage in report.get("stages", [])]
    lines = ([collapse.note(report)] if collapse.collapsed_stages(report) else []) + advice.student_lines(report)
    lines += retention.caption_lines(report)
    caption = "\n".join(lines) if lines else None
    return table(title, [header for header, _, _ in cols], _rows(report), right, caption=caption, styles=styles)


def _intro(report: Mapping) -> str:
    """The sentence that says what the numbers mean."""
    return (f"Metric: {report['metric_name']} on the dev set. Latency: median of {report.get('latency_runs', 30)} "
            f"runs, batch 1, sequence {report.get('latency_seq', 128)}, {report.get('latency_threads', 2)} CPU "
            "threads. Retention = metric / teacher metric; agreement = share of dev predictions equal to the "
            "teacher's.")


def to_markdown(report: Report, env: Mapping | None = None) -> str:
    """The same table as GitHub Markdown, with the settings, wall times and environment that produced it."""
    report = as_json(report)
    intro = _intro(report).replace(f"Metric: {report['metric_name']}", f"Metric: **{report['metric_name']}**")
    if any(s.get("kl_to_teacher") is not None for s in report.get("stages", [])):
        intro += " KL to teacher = mean KL(teacher ‖ stage) of the dev-set class distributions."
    cols = columns(report)
    lines = [f"# Compression report: {report['task']}", "", intro, ""]
    lines.append("| " + " | ".join(h for h, _, _ in cols) + " |")
    lines.append("|" + "|".join("---" for _ in cols) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in _rows(report)]
    if collapse.collapsed_stages(report):
        lines += ["", f"**{collapse.note(report)}**", ""] + [f"- {line}" for line in collapse.collapse_lines(report)]
    lines += [x for line in advice.student_lines(report) for x in ("", f"**{line}**")]
    lines += retention.markdown_lines(report)
    if report.get("settings"):
        lines += ["", "## Settings", "", "```yaml"]
        lines += [f"{k}: {v}" for k, v in report["settings"].items()]
        lines += ["```"]
    if report.get("stage_seconds"):
        lines += ["", "## Wall time per stage", ""]
        lines += [f"- {k}: {v:.1f} s" for k, v in report["stage_seconds"].items()]
    env = env if env is not None else report.get("environment")
    if env:
        lines += ["", "## Environment", ""] + [f"- {k}: {v}" for k, v in _flatten(env).items()]
    return "\n".join(lines) + "\n"


def _flatten(data: Mapping, prefix: str = "") -> dict[str, object]:
    """Nested dicts as one level of dotted keys."""
    flat: dict[str, object] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# ---- HTML ------------------------------------------------------------------------------------------------


def esc(value) -> str:
    """HTML-escaped text of any value."""
    return html.escape(str(value), quote=True)


def cell_html(key: str, value, fmt: str) -> str:
    """A table cell showing ``value`` formatted, with ``data-key`` and the exact JSON ``data-value``."""
    cls = ' class="num"' if isinstance(value, int | float) and not isinstance(value, bool) else ""
    return f'<td{cls} data-key="{esc(key)}" data-value="{esc(json.dumps(value))}">{esc(fmt_cell(fmt, value))}</td>'


def stage_table_html(report: Mapping, table_id: str = "stages") -> str:
    """The stage table; every cell carries ``data-key`` and the exact JSON ``data-value`` it shows."""
    cols = columns(report)
    head = "".join(f"<th>{esc(h)}</th>" for h, _, _ in cols)
    body = []
    for values in stage_values(report):
        cells = "".join(cell_html(key, values.get(key), fmt) for _, key, fmt in cols)
        body.append(f'<tr data-stage="{esc(values.get("name"))}">{cells}</tr>')
    return f'<table id="{esc(table_id)}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def kv_table_html(data: Mapping, table_id: str) -> str:
    """A two-column key/value table of the scalar entries of ``data`` (nested dicts flattened)."""
    rows = "".join(f'<tr data-key="{esc(k)}"><td>{esc(k)}</td><td>{esc(v)}</td></tr>' for k, v in _flatten(data).items()
                   if not isinstance(v, list | tuple) or len(v) <= 8)
    return f'<table class="kv" id="{esc(table_id)}">{rows}</table>'


def figure_html(plot_id: str, png: bytes, caption: str) -> str:
    """A figure with the PNG inlined as a data URI."""
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure id="{esc(plot_id)}"><img alt="{esc(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def histories(report: Mapping) -> dict[str, list[dict]]:
    """Per-epoch training logs of the trained stages (lists of dicts with an ``epoch`` in ``report["history"]``;
    other lists there, such as ``prune_steps`` or teacher-cache summaries, are not training curves)."""
    hist = report.get("history") or {}
    return {k: v for k, v in hist.items()
            if isinstance(v, list) and v and all(isinstance(r, Mapping) and "epoch" in r for r in v)}


def per_layer_pruning(report: Mapping) -> list[dict]:
    """``history.prune_report.per_layer`` rows, or an empty list."""
    prune = (report.get("history") or {}).get("prune_report") or {}
    rows = prune.get("per_layer") if isinstance(prune, Mapping) else None
    return [r for r in rows if isinstance(r, Mapping)] if isinstance(rows, list) else []


def plots_html(report: Mapping) -> list[str]:
    """The report's figures as HTML (a note instead when matplotlib is missing)."""
    try:
        from distill.report import plots
    except ImportError:
        return ['<p class="note">Plots need matplotlib: <code>pip install matplotlib</code>.</p>']
    metric = report["metric_name"]
    parts = ["<h2>Pareto view</h2>", figure_html("plot-pareto", plots.pareto_png(
        pareto_points({"run": report}), metric), f"{metric} vs size and vs CPU latency; filled markers are "
        "Pareto-optimal (no other stage is smaller or faster and at least as good)")]
    if hist := histories(report):
        parts += ["<h2>Training curves</h2>", figure_html(
            "plot-training", plots.training_png(hist), "loss terms (solid) and dev metric (dashed) per epoch")]
    if layers := per_layer_pruning(report):
        parts += ["<h2>Pruning per layer</h2>", figure_html(
            "plot-pruning", plots.pruning_png(layers), "attention heads and FFN neurons kept in each layer")]
    if matrices := confusion_matrices(report):
        n = len(next(iter(matrices.values())))
        parts += ["<h2>Predictions vs teacher</h2>", figure_html(
            "plot-confusion", plots.confusion_png(matrices, class_names(report, n)),
            "dev-set confusion matrices: teacher's predicted class (rows) vs each stage's (columns)")]
    return parts


def _details_html(report: Mapping) -> list[str]:
    """Scalar summaries of the pruning and quantization steps, when recorded."""
    hist = report.get("history") or {}
    parts = []
    for key, title in (("prune_report", "Pruning"), ("quantize_report", "Quantization")):
        if isinstance(hist.get(key), Mapping):
            data = {k: v for k, v in hist[key].items() if k != "per_layer"}
            parts += [f"<h2>{title}</h2>", kv_table_html(data, key.replace("_", "-"))]
    return parts


def render_html(report: Report, env: Mapping | None = None) -> str:
    """The whole report as one self-contained HTML page (no scripts, no external resources)."""
    report = as_json(report)
    env = env if env is not None else report.get("environment")
    title = f"Compression report: {report['task']}"
    wall = f" Total wall time {report['wall_seconds']:.1f} s." if report.get("wall_seconds") is not None else ""
    kl = " KL to teacher = mean KL(teacher ‖ stage) on dev." if any(
        s.get("kl_to_teacher") is not None for s in report.get("stages", [])) else ""
    body = [f"<h1>{esc(title)}</h1>", f'<p class="lead">{esc(_intro(report) + kl + wall)}</p>',
            "<h2>Stages</h2>", stage_table_html(report),
            *[f'<p class="note"><strong>{esc(line)}</strong></p>' for line in collapse.collapse_lines(report)],
            *[f'<p class="note" id="student-advice"><strong>{esc(line)}</strong></p>'
              for line in advice.student_lines(report)],
            *retention.html_parts(report, esc), *plots_html(report), *_details_html(report)]
    if report.get("stage_seconds"):
        body += ["<h2>Wall time per stage</h2>", kv_table_html(
            {k: f"{v:.1f} s" for k, v in report["stage_seconds"].items()}, "stage-seconds")]
    if report.get("settings"):
        body += ["<h2>Settings</h2>", kv_table_html(report["settings"], "settings")]
    if env:
        body += ["<h2>Environment</h2>", kv_table_html(env, "environment")]
    return page_html(title, body)


def page_html(title: str, body: Sequence[str]) -> str:
    """An HTML document with inline CSS and a CSP that forbids any request but data: images."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link rel="icon" href="data:,"><title>{esc(title)}</title><style>{CSS}</style></head>\n<body>\n'
            + "\n".join(body) + "\n</body></html>\n")


# ---- files -----------------------------------------------------------------------------------------------


def read_json(path: str | Path) -> dict | None:
    """A JSON file's content, or None when it does not exist."""
    path = Path(path)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def enrich(report: Report, env: Mapping | None = None) -> dict:
    """A copy of ``report`` with each stage's ``speedup`` and, when given, the ``environment``."""
    report = as_json(report)
    data = dict(report)
    data["stages"] = [{**s, "speedup": speedup(report, s)} for s in report.get("stages", [])]
    if env is not None:
        data["environment"] = dict(env)
    return data


def write_report(out_dir: str | Path, report: Report, env: Mapping | None = None) -> dict:
    """Write report.json/.md/.html atomically (env: given, else the report's, else OUT_DIR/env.json); returns what
    report.json holds."""
    out_dir = Path(out_dir)
    report = as_json(report)
    if report.get("kind") == "causal-lm":  # distill.report.lm writes a causal-LM run's report
        from distill.report.lm import write_lm_report

        write_lm_report(out_dir, report)
        return dict(report)
    if env is None:
        env = report.get("environment") or read_json(out_dir / "env.json")
    data = enrich(report, env)
    write_json(out_dir / "report.json", data)
    atomic_write_text(out_dir / "report.md", to_markdown(data))
    atomic_write_text(out_dir / "report.html", render_html(data))
    return data

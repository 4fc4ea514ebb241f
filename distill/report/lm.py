"""The report of a causal-LM run (``report.json`` with ``"kind": "causal-lm"``): terminal table, Markdown and HTML.

One row per stage (teacher first): perplexity on the dev text and its ratio to the teacher's, top-1 next-token
agreement, mean per-token KL(teacher ‖ stage), parameters, size, prefill latency and decode tokens/s with the
runtime that gave them; then the greedy continuations of the fixed prompts from every stage side by side, the
perplexity convention, the unigram baseline and what each training stage did. A run that pruned adds the
retention search (``prune_search``: each step's ratio, params, perplexity, retention, kept or not, and the target
line, with "target not reachable" and what was kept instead when no step kept it), rendered by
``distill.report.retention`` as for encoders; for perplexity, retention = student perplexity / stage perplexity.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from distill.core.artifacts import atomic_write_text, write_json
from distill.core.console import table
from distill.report import retention

COLUMNS = (("stage", "name", "s"), ("perplexity", "perplexity", ".2f"), ("× teacher", "perplexity_ratio", ".2f"),
           ("top-1 agree", "agreement", ".3f"), ("KL", "kl", ".3f"), ("params (M)", "params", "M"),
           ("size MB", "size_mb", ".1f"), ("prefill ms", "prefill_ms", ".1f"),
           ("decode tok/s", "decode_tokens_per_s", ".1f"), ("runtime", "runtime", "s"))


def is_lm_report(report: Mapping) -> bool:
    """report.json of a causal-LM run."""
    return report.get("kind") == "causal-lm"


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "–"
    if fmt == "M":
        return f"{value / 1e6:.1f}"
    return format(value, fmt) if fmt != "s" else str(value)


def rows(report: Mapping) -> list[list[str]]:
    """The table's cells, one list per stage."""
    found = [[_cell(stage.get(key), fmt) for _, key, fmt in COLUMNS] for stage in report.get("stages", [])]
    for cells, stage in zip(found, report.get("stages", []), strict=True):
        if stage.get("collapsed"):
            cells[0] += " COLLAPSED"  # no better than the unigram model of the training text
    return found


def caption(report: Mapping) -> str:
    """What the numbers mean: the perplexity convention and the unigram floor."""
    return (f"perplexity: {report.get('perplexity_convention', '')}; unigram baseline "
            f"{report.get('trivial_perplexity')}")


def retention_view(report: Mapping) -> dict:
    """The pruning search in the shape ``distill.report.retention`` renders (the encoder report's keys); empty
    when the run did not prune."""
    search = report.get("prune_search")
    if not search:
        return {}
    metric = search.get("metric_name")
    return {"history": {"prune_steps": search.get("prune_steps") or []}, "path_metric": metric,
            "metric_name": f"{metric} (as retention = student {metric} / stage {metric})",
            "retention_target": report.get("retention_target") or {}}


def convention_line(report: Mapping) -> list[str]:
    """The retention convention for perplexity, and how many dev windows the search scored."""
    search = report.get("prune_search") or {}
    if not search:
        return []
    return [f"Retention of perplexity: {search.get('convention')}; the search scored {search.get('windows')} dev "
            "windows."]


def table_caption(report: Mapping) -> str:
    """The terminal caption: ``caption``, then the search path and the target line."""
    return "\n".join([caption(report), *retention.caption_lines(retention_view(report))])


def render_lm_table(report: Mapping) -> Any:
    """The terminal table."""
    title = f"causal-lm: {report.get('teacher')} → {report.get('student')} on {Path(str(report.get('data'))).name}"
    headers = [h for h, _, _ in COLUMNS]
    return table(title, headers, rows(report), set(headers[1:-1]), caption=table_caption(report))


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _continuations_md(report: Mapping) -> list[str]:
    cont = report.get("continuations") or {}
    stages = cont.get("stages") or {}
    lines = [f"## Greedy continuations ({cont.get('new_tokens')} new tokens)", ""]
    for i, prompt in enumerate(cont.get("prompts", [])):
        lines += [f"**{prompt}**", "", "| stage | continuation |", "|---|---|"]
        lines += [f"| {name} | {_md_cell(texts[i])} |" for name, texts in stages.items()]
        lines.append("")
    return lines


def to_markdown(report: Mapping) -> str:
    """report.md."""
    headers = [h for h, _, _ in COLUMNS]
    lines = [f"# Causal-LM compression report: {report.get('teacher')} → {report.get('student')}", "",
             f"Data: `{report.get('data')}`. {caption(report)}.", "",
             "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(r) + " |" for r in rows(report)]
    lines += ["", "Prefill: batch 1, the stated prompt length; decode: greedy with the KV cache, "
                  f"{(report.get('stages') or [{}])[0].get('new_tokens')} new tokens, "
                  f"{(report.get('stages') or [{}])[0].get('threads')} threads.", ""]
    view = retention_view(report)
    if view:
        lines += retention.markdown_lines(view)[1:] + ["", *convention_line(report), ""]
    lines += _continuations_md(report)
    for note in report.get("notes") or []:
        lines.append(f"- note: {note}")
    lines += ["", "## Training", "", "```json", json.dumps(report.get("training"), indent=1), "```", ""]
    return "\n".join(lines)


def render_html(report: Mapping) -> str:
    """report.html: the same content as report.md, as one self-contained page."""
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h, _, _ in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows(report))
    cont = report.get("continuations") or {}
    parts = [f"<h1>Causal-LM compression report: {esc(str(report.get('teacher')))} → "
             f"{esc(str(report.get('student')))}</h1>", f"<p>{esc(caption(report))}</p>",
             f"<table id='stages'><tr>{head}</tr>{body}</table>"]
    view = retention_view(report)
    if view:
        parts += retention.html_parts(view, lambda v: esc(str(v)))
        parts += [f"<p>{esc(line)}</p>" for line in convention_line(report)]
    parts.append("<h2>Greedy continuations</h2>")
    for i, prompt in enumerate(cont.get("prompts", [])):
        cells = "".join(f"<tr><td>{esc(name)}</td><td>{esc(texts[i])}</td></tr>"
                        for name, texts in (cont.get("stages") or {}).items())
        parts.append(f"<h3>{esc(prompt)}</h3><table class='continuations'>{cells}</table>")
    parts += [f"<p>note: {esc(n)}</p>" for n in report.get("notes") or []]
    parts.append(f"<h2>Training</h2><pre>{esc(json.dumps(report.get('training'), indent=1))}</pre>")
    style = "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>distill causal-lm report</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")


def write_lm_report(out_dir: str | Path, report: Mapping) -> None:
    """report.json, report.md and report.html, each written atomically."""
    out_dir = Path(out_dir)
    write_json(out_dir / "report.json", dict(report))
    atomic_write_text(out_dir / "report.md", to_markdown(report))
    atomic_write_text(out_dir / "report.html", render_html(report))

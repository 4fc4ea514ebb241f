"""The ``--target-retention`` part of a report: the pruning search's path (one row per step tried: cumulative ratio,
what it pruned, params, dev metric, retention of the student's metric, kept or not, retried on the FFN alone or
stopped) and one line per compression stage saying
whether it kept the target and, when not, what was kept instead. ``distill.report.render`` puts them under the stage
table (terminal caption), in ``report.md`` and in ``report.html``; report.json carries them as
``history.prune_steps``, ``history.prune_target``, ``history.int8_target`` and ``retention_target``. A causal-LM
report keeps its search under ``prune_search`` (perplexity as ``metric``) and ``distill.report.lm.retention_view``
hands it here in that shape."""

from __future__ import annotations

import json
from collections.abc import Mapping

PATH_COLUMNS = (("step", "step", "{}"), ("ratio", "ratio", "{:g}"), ("prunes", "scope", "{}"),
                ("params", "params", "{:,}"),
                ("metric", "metric", "{:.4f}"), ("retention", "retention", "{:.1%}"), ("kept", "kept", "{}"))
MISSING = "—"
SCOPE_NAMES = {"all": "heads, width, FFN", "ffn": "FFN only"}


def search_path(report: Mapping) -> list[Mapping]:
    """The pruning search's steps (``history.prune_steps`` rows with a ``kept`` flag; empty for fixed ratios)."""
    steps = (report.get("history") or {}).get("prune_steps") or []
    return [s for s in steps if isinstance(s, Mapping) and "kept" in s]


def target_lines(report: Mapping) -> list[str]:
    """One line per compression stage held to the target (``retention_target.notes``)."""
    return list((report.get("retention_target") or {}).get("notes") or [])


def columns(report: Mapping) -> tuple:
    """``PATH_COLUMNS`` less ``prunes`` when no step records its scope (a causal-LM search prunes one way)."""
    scoped = any(s.get("scope") is not None for s in search_path(report))
    return tuple(c for c in PATH_COLUMNS if scoped or c[1] != "scope")


def headers(report: Mapping) -> list[str]:
    """The path table's column names; ``path_metric`` (e.g. ``perplexity``) names the metric column when given."""
    return [report.get("path_metric") or h if key == "metric" else h for h, key, _ in columns(report)]


def _cell(fmt: str, value) -> str:
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no: stop"
    return fmt.format(value)


def verdict(path: list[Mapping], i: int) -> str:
    """What step ``i`` of the path led to: kept, retried on the FFN alone (a later step tries the same ratio), or
    the end of the search."""
    step = path[i]
    if step.get("kept"):
        return "yes"
    again = i + 1 < len(path) and path[i + 1].get("ratio") == step.get("ratio")
    return "no: retry on the FFN alone" if again else "no: stop"


def _formatted(key: str, fmt: str, path: list[Mapping], i: int) -> str:
    value = path[i].get(key)
    if key == "kept" and isinstance(value, bool):
        return verdict(path, i)
    if key == "scope" and value is not None:
        return SCOPE_NAMES.get(value, str(value))
    return _cell(fmt, value)


def metric_format(report: Mapping) -> str:
    """How the path prints its metric: 4 decimals for task metrics (0..1), 2 for a perplexity (``path_metric``)."""
    return "{:,.2f}" if report.get("path_metric") == "perplexity" else "{:.4f}"


def path_rows(report: Mapping) -> list[list[str]]:
    """The search path as formatted strings, one list per step, in ``PATH_COLUMNS`` order."""
    cols = columns(report)
    formats = [metric_format(report) if key == "metric" else fmt for _, key, fmt in cols]
    path = search_path(report)
    return [[_formatted(key, fmt, path, i) for (_, key, _), fmt in zip(cols, formats, strict=True)]
            for i in range(len(path))]


def path_line(report: Mapping) -> str | None:
    """The search path in one line for the terminal: ``ratio 0.25: 368,258 params, 0.8512 (98.1%) kept; ...``."""
    target = report.get("retention_target") or {}
    path = search_path(report)
    if not path:
        return None
    fmt = metric_format(report)
    steps = "; ".join(f"ratio {s.get('ratio'):g}{', FFN only' if s.get('scope') == 'ffn' else ''}: "
                      f"{s.get('params'):,} params, {_cell(fmt, s.get('metric'))} "
                      f"({_cell('{:.1%}', s.get('retention'))}) "
                      f"{'kept' if s.get('kept') else verdict(path, i).replace('no:', 'below:')}"
                      for i, s in enumerate(path))
    return f"pruning search{_goal(report, target, fmt)}: {steps}"


def _goal(report: Mapping, target: Mapping, fmt: str) -> str:
    """What a step had to keep: the pruning bar of ``history.prune_target`` (``(a step keeps ≥ 0.7464 = 98.5% of the
    student's)``: with INT8 after it, pruning holds only part of the loss --target-retention allows), else the
    target itself (a causal-LM search, whose retention is of perplexity)."""
    prune = (report.get("history") or {}).get("prune_target") or {}
    reference, bar = prune.get("reference"), prune.get("threshold")
    if reference is not None and bar is not None and reference > 0:
        return f" (a step keeps ≥ {fmt.format(bar)} = {bar / reference:.1%} of the student's)"
    return f" (target {target['target']:.0%} of the student's)" if target.get("target") is not None else ""


def caption_lines(report: Mapping) -> list[str]:
    """What the terminal shows under the stage table: the search path, then each stage's target line."""
    line = path_line(report)
    return ([line] if line else []) + target_lines(report)


def markdown_lines(report: Mapping) -> list[str]:
    """The ``## Retention target`` section of report.md (empty when nothing was held to a target)."""
    lines, path = target_lines(report), search_path(report)
    if not lines and not path:
        return []
    target = report.get("retention_target") or {}
    out = ["", "## Retention target", ""]
    if target:
        met = "met" if target.get("met") else "**not met**"
        out += [f"Target: {target['target']:.0%} of the distilled {target.get('relative_to', 'student')}'s "
                f"{report.get('metric_name', 'metric')} ({target['reference']:.4f}): {met}.", ""]
    out += [f"- {line}" for line in lines]
    if path:
        out += ["", "Pruning search path:", "", "| " + " | ".join(headers(report)) + " |",
                "|" + "|".join("---" for _ in columns(report)) + "|"]
        out += ["| " + " | ".join(row) + " |" for row in path_rows(report)]
    return out


def html_parts(report: Mapping, esc) -> list[str]:
    """The retention section of report.html: each stage's line, and the search path as a table whose cells carry
    ``data-key`` and the exact JSON ``data-value`` (``esc``: the renderer's HTML escape)."""
    lines, path = target_lines(report), search_path(report)
    if not lines and not path:
        return []
    target = report.get("retention_target") or {}
    met = "" if not target else ("met" if target.get("met") else "NOT met")
    parts = ['<h2 id="retention-target">Retention target</h2>']
    if target:
        share = esc(format(target["target"], ".0%"))
        parts.append(f'<p class="lead" data-met="{esc(json.dumps(target.get("met")))}">{share} '
                     f"of the distilled {esc(target.get('relative_to', 'student'))}'s metric "
                     f"({esc(round(target['reference'], 4))}): {esc(met)}</p>")
    parts += [f'<p class="note"><strong>{esc(line)}</strong></p>' for line in lines]
    if path:
        head = "".join(f"<th>{esc(h)}</th>" for h in headers(report))
        body = []
        for step, row in zip(path, path_rows(report), strict=True):
            cells = "".join(f'<td data-key="{esc(key)}" data-value="{esc(json.dumps(step.get(key)))}">{esc(text)}</td>'
                            for (_, key, _), text in zip(columns(report), row, strict=True))
            body.append(f"<tr>{cells}</tr>")
        parts.append(f'<table id="prune-path"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>')
    return parts

"""Report figures as PNG bytes: matplotlib is imported lazily here (and only here) and draws on the Agg canvas.

Every function takes plain data (no report dicts) and never touches pyplot's global state.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

DPI = 100
STAGE_MARKERS = {"teacher": "*", "student": "o", "pruned": "s", "int8": "D"}
SKIP_KEYS = {"epoch", "step"}


def _figure(width: float, height: float):
    """A Figure bound to an Agg canvas (no pyplot, no global backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    """Render ``fig`` to PNG bytes without a timestamp or software tag (same data, same bytes)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None}, facecolor="white")
    return buf.getvalue()


def _colour(i: int) -> str:
    """The i-th colour of matplotlib's default cycle."""
    return f"C{i % 10}"


def _front_line(ax, points: list[tuple[float, float]], colour: str) -> None:
    """Draw the Pareto front (cost ascending, metric as a staircase) through ``points``."""
    if len(points) < 2:
        return
    xs, ys = zip(*sorted(points), strict=True)
    ax.step(xs, ys, where="post", color=colour, alpha=0.4, linewidth=1.2)


def _annotate(ax, labelled: list[tuple[float, float, str]]) -> None:
    """Name each point by its stage, once per position (runs sharing a teacher share one label)."""
    at: dict[tuple[float, float], list[str]] = {}
    for x, y, stage in labelled:
        names = at.setdefault((x, y), [])
        if stage not in names:
            names.append(stage)
    for (x, y), names in at.items():
        ax.annotate("/".join(names), (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)


def pareto_png(points: Sequence[Mapping], metric_name: str) -> bytes:
    """Metric vs size and vs latency of every point (see ``report.pareto_points``); Pareto-optimal ones filled."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    fig = _figure(10, 4.2)
    runs = list(dict.fromkeys(p["run"] for p in points))
    for ax, cost, flag, label in zip(fig.subplots(1, 2), ("size_mb", "latency_ms"), ("front_size", "front_latency"),
                                     ("size (MB)", "CPU latency (ms)"), strict=True):
        for r, run in enumerate(runs):
            mine = [p for p in points if p["run"] == run and p.get(cost)]
            for p in mine:
                marker = STAGE_MARKERS.get(p["stage"], "^")
                face = _colour(r) if p.get(flag) else "none"
                ax.scatter(p[cost], p["metric"], marker=marker, s=140 if marker == "*" else 60, facecolors=face,
                           edgecolors=_colour(r), linewidths=1.5, zorder=3)
        _annotate(ax, [(p[cost], p["metric"], p["stage"]) for p in points if p.get(cost)])
        _front_line(ax, [(p[cost], p["metric"]) for p in points if p.get(flag) and p.get(cost)], "0.35")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels (2×10⁰, 3×10⁰, ...) overlap on narrow ranges
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.margins(x=0.12, y=0.08)
        ax.set_xlabel(f"{label}, log scale")
        ax.set_ylabel(metric_name)
        ax.grid(True, alpha=0.3, which="both")
        ax.set_title(f"{metric_name} vs {label.split(' (')[0]}")
    if len(runs) > 1:
        handles = [fig.axes[0].scatter([], [], color=_colour(r), label=run) for r, run in enumerate(runs)]
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(runs), 6), fontsize=9)
    return _png(fig)


def _curve_keys(rows: Sequence[Mapping]) -> tuple[list[str], list[str]]:
    """(loss terms, dev metrics) present in a history: numeric keys, ``dev_*`` ones apart."""
    keys = list(dict.fromkeys(k for row in rows for k, v in row.items()
                              if k not in SKIP_KEYS and isinstance(v, int | float) and not isinstance(v, bool)))
    return [k for k in keys if not k.startswith("dev_")], [k for k in keys if k.startswith("dev_")]


def training_png(histories: Mapping[str, Sequence[Mapping]]) -> bytes:
    """One panel per trained stage: loss terms per epoch (left axis) and the dev metric (right axis, dashed)."""
    from matplotlib.ticker import MaxNLocator

    fig = _figure(min(5.0 * len(histories), 15), 3.8)
    axes = fig.subplots(1, len(histories), squeeze=False)[0]
    for ax, (stage, rows) in zip(axes, histories.items(), strict=True):
        losses, devs = _curve_keys(rows)
        epochs = [row.get("epoch", i + 1) for i, row in enumerate(rows)]
        for i, key in enumerate(losses):
            ax.plot(epochs, [row.get(key) for row in rows], marker="o", color=_colour(i), label=key)
        ax.set_xlabel("epoch")
        if len(epochs) <= 12:  # whole epochs only (one epoch would otherwise get ticks at 0.96, 0.98, ...)
            ax.set_xticks(epochs)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("loss")
        ax.set_title(stage)
        ax.grid(True, alpha=0.3)
        lines = ax.get_lines()
        if devs:
            twin = ax.twinx()
            for j, key in enumerate(devs):
                twin.plot(epochs, [row.get(key) for row in rows], linestyle="--", marker="x",
                          color=_colour(len(losses) + j), label=key)
            twin.set_ylabel("dev metric")
            lines = lines + twin.get_lines()
        if lines:
            ax.legend(lines, [ln.get_label() for ln in lines], fontsize=8, loc="best")
    return _png(fig)


def pruning_png(per_layer: Sequence[Mapping]) -> bytes:
    """Per layer, the share of attention heads and FFN neurons kept (counts when the 'before' sizes are missing)."""
    fig = _figure(max(5.0, 0.7 * len(per_layer) + 2), 3.6)
    ax = fig.subplots()
    layers = [str(row.get("layer", i)) for i, row in enumerate(per_layer)]
    ratio = all(row.get(f"{k}_before") for row in per_layer for k in ("heads", "ffn"))
    width = 0.38
    for offset, key in ((-width / 2, "heads"), (width / 2, "ffn")):
        values = [row.get(key, 0) / row[f"{key}_before"] if ratio else row.get(key, 0) for row in per_layer]
        bars = ax.bar([i + offset for i in range(len(layers))], values, width, label=f"{key} kept")
        labels = [f"{row.get(key, 0)}/{row[f'{key}_before']}" if ratio else str(row.get(key, 0)) for row in per_layer]
        ax.bar_label(bars, labels=labels, fontsize=7, padding=2)
    ax.set_xticks(range(len(layers)), layers)
    ax.set_xlabel("layer")
    ax.set_ylabel("share kept" if ratio else "count kept")
    if ratio:
        ax.set_ylim(0, 1.15)
    ax.legend(fontsize=8)
    ax.set_title("structured pruning per layer")
    return _png(fig)


def confusion_png(matrices: Mapping[str, Sequence[Sequence[int]]], class_names: Sequence[str]) -> bytes:
    """One heat map per stage: rows are the teacher's predicted class, columns the stage's, cells counts."""
    n = len(matrices)
    fig = _figure(min(3.6 * n + 0.6, 15), 3.6)
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (stage, matrix) in zip(axes, matrices.items(), strict=True):
        peak = max((max(row) for row in matrix), default=0) or 1
        ax.imshow(matrix, cmap="Blues", vmin=0, vmax=peak)
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                ax.text(j, i, str(count), ha="center", va="center", fontsize=9,
                        color="white" if count > peak / 2 else "black")
        ticks = range(len(class_names))
        ax.set_xticks(ticks, class_names, fontsize=8, rotation=30 if len(class_names) > 2 else 0)
        ax.set_yticks(ticks, class_names, fontsize=8)
        ax.set_xlabel(f"{stage} prediction")
        ax.set_ylabel("teacher prediction")
        ax.set_title(f"{stage} vs teacher")
    return _png(fig)

"""Figures of the overview page: the step-time breakdown and the always-on per-step metrics."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

#: The breakdown's categories in the analysis's priority order (profiler.analysis.steps), with
#: the labels and colours the page shows. Kept here so figures need no analysis import.
CATEGORY_LABELS: dict[str, str] = {
    "kernel": "Kernel",
    "memcpy": "Memcpy",
    "memset": "Memset",
    "communication": "Communication",
    "runtime": "Runtime",
    "dataloader": "DataLoader",
    "cpu_exec": "CPU exec",
    "other": "Other",
}
CATEGORY_COLORS: dict[str, str] = {
    "kernel": "#4c78a8",
    "memcpy": "#f58518",
    "memset": "#e45756",
    "communication": "#72b7b2",
    "runtime": "#54a24b",
    "dataloader": "#eeca3b",
    "cpu_exec": "#b279a2",
    "other": "#bab0ac",
}
STEP_TIME = "step time"
DATA_WAIT = "data wait"
MEMORY = "memory"
NO_STEPS = "No steps to show"


def step_breakdown_figure(rows: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Stacked bars: each step's time split into the breakdown categories.

    Args:
        rows: one per step, with ``step``, optionally ``rank``, and ``<category>_us`` for each
            category in ``CATEGORY_LABELS`` (missing ones count as 0).

    Returns:
        One bar trace per category, one bar per row, y in microseconds; an empty figure with
        a note when there are no rows.
    """
    if not rows:
        return empty_figure(NO_STEPS)
    values = {c: [float(row.get(f"{c}_us", 0.0)) for row in rows] for c in CATEGORY_LABELS}
    return stacked_categories(
        _step_labels(rows), values, x_title="step", y_title="time (µs)", value_hover="%{y:,.0f} µs"
    )


def stacked_categories(
    x: Sequence[str],
    values: Mapping[str, Sequence[float]],
    *,
    x_title: str,
    y_title: str,
    value_hover: str,
    shares: Mapping[str, Sequence[float]] | None = None,
) -> go.Figure:
    """Stacked bars of the breakdown categories, one trace per category in the usual colours.

    Args:
        x: the bar labels (steps, ranks).
        values: each category's value per bar.
        x_title, y_title: the axis titles.
        value_hover: how the hover shows a value (a plotly template of ``%{y}``).
        shares: each category's percent per bar, shown in the hover after the value.
    """
    figure = go.Figure()
    for category, label in CATEGORY_LABELS.items():
        share = " (%{customdata:.1f}%)" if shares is not None else ""
        figure.add_trace(
            go.Bar(
                name=label,
                x=list(x),
                y=list(values[category]),
                customdata=None if shares is None else list(shares[category]),
                marker_color=CATEGORY_COLORS[category],
                hovertemplate=f"{label}: {value_hover}{share}<extra>%{{x}}</extra>",
            )
        )
    figure.update_layout(
        barmode="stack",
        xaxis={"title": {"text": x_title}, "type": "category"},
        yaxis={"title": {"text": y_title}},
        legend={"title": {"text": "category"}},
        margin={"t": 30},
    )
    return figure


def step_metrics_figure(steps_rows: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Lines over the whole run: step time and data wait, and memory on a second axis.

    Args:
        steps_rows: ``meta/steps.<rank>.jsonl`` lines, each with ``step``, ``dur_us``,
            optionally ``data_wait_us``, ``memory_bytes`` and ``rank``.

    Returns:
        Per rank, a ``step time`` line, a ``data wait`` line where recorded and a ``memory``
        line (right axis) where recorded; names get `` (rank N)`` when there are several
        ranks. An empty figure with a note when there are no rows.
    """
    if not steps_rows:
        return empty_figure(NO_STEPS)
    by_rank: dict[int, list[Mapping[str, Any]]] = {}
    for row in steps_rows:
        by_rank.setdefault(int(row.get("rank", 0)), []).append(row)
    figure = go.Figure()
    for rank, rows in sorted(by_rank.items()):
        suffix = f" (rank {rank})" if len(by_rank) > 1 else ""
        rows = sorted(rows, key=lambda r: r["step"])
        for key, name, axis in (
            ("dur_us", STEP_TIME, "y"),
            ("data_wait_us", DATA_WAIT, "y"),
            ("memory_bytes", MEMORY, "y2"),
        ):
            points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
            if points:
                figure.add_trace(_line(points, name + suffix, axis))
    figure.update_layout(
        xaxis={"title": {"text": "step"}},
        yaxis={"title": {"text": "time (µs)"}},
        yaxis2={"title": {"text": "memory (bytes)"}, "overlaying": "y", "side": "right"},
        legend={"orientation": "h", "y": -0.2},
        margin={"t": 30},
    )
    return figure


def empty_figure(note: str) -> go.Figure:
    """A valid figure with no data and ``note`` in the middle, axes hidden."""
    figure = go.Figure()
    figure.update_layout(
        xaxis={"visible": False},
        yaxis={"visible": False},
        annotations=[
            {
                "text": note,
                "xref": "paper",
                "yref": "paper",
                "x": 0.5,
                "y": 0.5,
                "showarrow": False,
            }
        ],
    )
    return figure


def _line(points: Iterable[tuple[Any, Any]], name: str, axis: str) -> go.Scatter:
    steps, values = zip(*points, strict=True)
    return go.Scatter(x=list(steps), y=list(values), name=name, mode="lines", yaxis=axis)


def _step_labels(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """``step N``, or ``rank R step N`` when the rows come from several ranks."""
    ranks = {row.get("rank", 0) for row in rows}
    if len(ranks) > 1:
        return [f"rank {row.get('rank', 0)} step {row['step']}" for row in rows]
    return [f"step {row['step']}" for row in rows]

"""Figures of the overview page: the step-time breakdown and the always-on per-step metrics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from dashboard.figures import palette
from dashboard.figures.palette import themed_figure

#: The breakdown's categories in the analysis's priority order (profiler.analysis.steps), with
#: the labels the page shows (colours: :mod:`dashboard.figures.palette`). Kept here so figures
#: need no analysis import.
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
CATEGORY_COLORS: dict[str, str] = {c: palette.CATEGORY_COLORS[c] for c in CATEGORY_LABELS}
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
    figure = themed_figure()
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


#: The per-step lines: the row key, the trace name, its y axis and the factor from the row's
#: unit to the axis' (µs -> ms, bytes -> MiB).
STEP_SERIES = (
    ("dur_us", STEP_TIME, "y", 1e-3),
    ("data_wait_us", DATA_WAIT, "y", 1e-3),
    ("memory_bytes", MEMORY, "y2", 1 / 2**20),
)


def step_metrics_figure(steps_rows: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Lines over the whole run: step time and data wait, and memory on a second axis.

    Args:
        steps_rows: ``meta/steps.<rank>.jsonl`` lines, each with ``step``, ``dur_us``,
            optionally ``data_wait_us``, ``memory_bytes`` and ``rank``.

    Returns:
        Per rank, a ``step time`` line, a ``data wait`` line where recorded and a ``memory``
        line (right axis) where recorded; names get `` (rank N)`` when there are several
        ranks. An empty figure with a note when there are no rows. The traces come in the
        order of :func:`step_series`'s keys.
    """
    series = step_series(steps_rows)
    if not series:
        return empty_figure(NO_STEPS)
    ranks = {rank for rank, _ in series}
    names = {key: name for key, name, _, _ in STEP_SERIES}
    axes = {key: axis for key, _, axis, _ in STEP_SERIES}
    figure = themed_figure()
    for (rank, key), (steps, values) in series.items():
        suffix = f" (rank {rank})" if len(ranks) > 1 else ""
        figure.add_trace(_line(steps, values, names[key] + suffix, axes[key]))
    figure.update_layout(
        xaxis={"title": {"text": "step"}},
        yaxis={"title": {"text": "time (ms)"}},
        yaxis2={"title": {"text": "memory (MiB)"}, "overlaying": "y", "side": "right"},
        legend={"orientation": "h", "y": -0.2},
        margin={"t": 30},
    )
    return figure


def step_series(
    steps_rows: Sequence[Mapping[str, Any]],
) -> dict[tuple[int, str], tuple[list[Any], list[Any]]]:
    """The per-step lines' points: ``(rank, key) -> (steps, values)``, ranks in order, each
    rank's rows by step, keys in :data:`STEP_SERIES` order, values in the axes' units (ms,
    MiB); only lines with a point."""
    by_rank: dict[int, list[Mapping[str, Any]]] = {}
    for row in steps_rows:
        by_rank.setdefault(int(row.get("rank", 0)), []).append(row)
    series: dict[tuple[int, str], tuple[list[Any], list[Any]]] = {}
    for rank, rows in sorted(by_rank.items()):
        rows = sorted(rows, key=lambda r: r["step"])
        for key, _, _, scale in STEP_SERIES:
            points = [(r["step"], r[key] * scale) for r in rows if r.get(key) is not None]
            if points:
                steps, values = zip(*points, strict=True)
                series[(rank, key)] = (list(steps), list(values))
    return series


def series_ids(steps_rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The ids (``<rank>:<key>``) of :func:`step_metrics_figure`'s traces, in trace order."""
    return [f"{rank}:{key}" for rank, key in step_series(steps_rows)]


def step_metrics_extension(
    new_rows: Sequence[Mapping[str, Any]], shown: Sequence[str]
) -> tuple[dict[str, list[list[Any]]], list[int]] | None:
    """What ``dcc.Graph``'s ``extendData`` needs to add ``new_rows`` to a figure of
    :func:`step_metrics_figure` whose traces are ``shown`` (:func:`series_ids`).

    Returns:
        ``(update, trace indices)``: for each trace with new points, its new x and y values;
        ``({"x": [], "y": []}, [])`` when there is nothing new; None when a new row needs a
        trace the figure does not have (a new rank, a value first recorded now): the figure
        must then be drawn again.
    """
    update: dict[str, list[list[Any]]] = {"x": [], "y": []}
    indices: list[int] = []
    for (rank, key), (steps, values) in step_series(new_rows).items():
        series = f"{rank}:{key}"
        if series not in shown:
            return None
        indices.append(list(shown).index(series))
        update["x"].append(steps)
        update["y"].append(values)
    return update, indices


def empty_figure(note: str) -> go.Figure:
    """A valid figure with no data and ``note`` in the middle, axes hidden."""
    figure = themed_figure()
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


def _line(steps: list[Any], values: list[Any], name: str, axis: str) -> go.Scatter:
    return go.Scatter(x=steps, y=values, name=name, mode="lines", yaxis=axis)


def _step_labels(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """``step N``, or ``rank R step N`` when the rows come from several ranks."""
    ranks = {row.get("rank", 0) for row in rows}
    if len(ranks) > 1:
        return [f"rank {row.get('rank', 0)} step {row['step']}" for row in rows]
    return [f"step {row['step']}" for row in rows]

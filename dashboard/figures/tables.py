"""Figures of the Operators and Kernels pages: top-n bars and the kernel-type breakdown."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from dashboard.figures.overview import empty_figure
from dashboard.figures.palette import kernel_type_color, themed_figure
from dashboard.figures.text import plain, unique_labels

TOP_N = 15
NO_ROWS = "Nothing to show"
_OVERLAP_HATCH = "/"  # a slice of kernel types overlapping


def top_bar_figure(
    rows: Sequence[Mapping[str, Any]], value_key: str, title: str, *, n: int = TOP_N
) -> go.Figure:
    """Horizontal bars of the ``n`` rows with the largest ``value_key``, largest on top.

    Args:
        rows: rows with ``name`` and ``value_key`` (microseconds).
        value_key: the column to rank and plot, e.g. ``self_us``.
        title: the x axis title.
        n: how many bars.

    Returns:
        One bar trace, y the (shortened) names, x the values; an empty figure with a note when
        there are no rows.
    """
    if not rows:
        return empty_figure(NO_ROWS)
    top = sorted(rows, key=lambda r: (-float(r[value_key]), str(r["name"])))[:n]
    top.reverse()  # plotly draws the first category at the bottom
    names = [str(r["name"]) for r in top]
    figure = themed_figure(
        go.Bar(
            x=[float(r[value_key]) for r in top],
            y=unique_labels(names),
            customdata=[plain(name) for name in names],
            orientation="h",
            name=title,
            hovertemplate="%{customdata}<br>%{x:,.1f} µs<extra></extra>",
        )
    )
    figure.update_layout(
        xaxis={"title": {"text": title}},
        yaxis={"type": "category", "automargin": True},
        height=max(300, 28 * len(top) + 120),
        margin={"t": 30},
    )
    return figure


def kernel_type_figure(rows: Sequence[Mapping[str, Any]]) -> go.Figure:
    """A pie of GPU time by kernel type (and overlap of types).

    Args:
        rows: ``kernel_type`` and ``sum_us`` per type combination.

    Returns:
        One pie trace; an empty figure with a note when there are no rows.
    """
    if not rows:
        return empty_figure(NO_ROWS)
    figure = themed_figure(
        go.Pie(
            labels=[plain(r["kernel_type"]) for r in rows],
            values=[float(r["sum_us"]) for r in rows],
            sort=False,
            # A type in its category's colour; an overlap of types in the first's, hatched.
            marker={
                "colors": [kernel_type_color(str(r["kernel_type"])) for r in rows],
                "pattern": {"shape": [_OVERLAP_HATCH if _overlaps(r) else "" for r in rows]},
                "line": {"color": "white", "width": 1},
            },
            hovertemplate="%{label}: %{value:,.0f} µs (%{percent})<extra></extra>",
        )
    )
    figure.update_layout(margin={"t": 30})
    return figure


def _overlaps(row: Mapping[str, Any]) -> bool:
    return " overlapping " in str(row["kernel_type"])

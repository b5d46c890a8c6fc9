"""Figures of the Diff page: per-category time base vs new, and the largest per-name changes.

Op and kernel names come from trace files: plotly reads ``<...>`` in labels as markup, so every
name is escaped (:func:`plain`) and shows as the text it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from dashboard.figures.overview import CATEGORY_LABELS, empty_figure
from dashboard.figures.palette import (
    BASE_COLOR,
    BETTER_COLOR,
    NEW_COLOR,
    WORSE_COLOR,
    themed_figure,
)
from dashboard.figures.text import plain, unique_labels

BASE = "base"
NEW = "new"
SLOWER_COLOR = WORSE_COLOR
FASTER_COLOR = BETTER_COLOR
TOP_N = 15
NO_CHANGES = "Nothing to compare"


def category_diff_figure(categories: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Grouped bars: each breakdown category's time per step, base and new side by side.

    Args:
        categories: ``trainprof.diff/1`` category rows (``category``, ``base``, ``new``,
            ``delta``, ``delta_pct``; microseconds per step).

    Returns:
        Two bar traces, :data:`BASE` then :data:`NEW`, one bar per category, y in ms; an empty
        figure with a note when there are no rows.
    """
    if not categories:
        return empty_figure(NO_CHANGES)
    labels = [CATEGORY_LABELS.get(str(r["category"]), str(r["category"])) for r in categories]
    hover = [_delta_text(r) for r in categories]
    figure = themed_figure()
    for side, color in ((BASE, BASE_COLOR), (NEW, NEW_COLOR)):
        figure.add_trace(
            go.Bar(
                name=side,
                x=labels,
                y=[float(r[side]) / 1000.0 for r in categories],
                customdata=hover,
                marker_color=color,
                hovertemplate=f"{side}: %{{y:,.3f}} ms<br>%{{customdata}}<extra>%{{x}}</extra>",
            )
        )
    figure.update_layout(
        barmode="group",
        xaxis={"title": {"text": "category"}, "type": "category"},
        yaxis={"title": {"text": "time per step (ms)"}},
        margin={"t": 30},
    )
    return figure


def name_diff_figure(rows: Sequence[Mapping[str, Any]], title: str, *, n: int = TOP_N) -> go.Figure:
    """Horizontal bars of the ``n`` largest changes by size, largest on top.

    Args:
        rows: ``trainprof.diff/1`` op or kernel rows (``name``, ``base``, ``new``, ``delta``,
            ``delta_pct``; microseconds per step).
        title: the x axis title.
        n: how many bars.

    Returns:
        One bar trace, x the deltas in µs (red slower, green faster), y the escaped, shortened
        names; an empty figure with a note when there are no rows.
    """
    if not rows:
        return empty_figure(NO_CHANGES)
    top = sorted(rows, key=lambda r: (-abs(float(r["delta"])), str(r["name"])))[:n]
    top.reverse()  # plotly draws the first category at the bottom
    deltas = [float(r["delta"]) for r in top]
    figure = themed_figure(
        go.Bar(
            x=deltas,
            y=unique_labels([str(r["name"]) for r in top]),
            customdata=[[plain(str(r["name"])), _delta_text(r)] for r in top],
            orientation="h",
            name=title,
            marker_color=[SLOWER_COLOR if d > 0 else FASTER_COLOR for d in deltas],
            hovertemplate="%{customdata[0]}<br>%{customdata[1]}<extra></extra>",
        )
    )
    figure.update_layout(
        xaxis={"title": {"text": title}, "zeroline": True},
        yaxis={"type": "category", "automargin": True},
        height=max(300, 28 * len(top) + 120),
        margin={"t": 30},
    )
    return figure


def _delta_text(row: Mapping[str, Any]) -> str:
    """``base -> new µs (+delta, +pct%)``."""
    pct = row.get("delta_pct")
    share = f"{float(pct):+.1f}%" if pct is not None else "no base time"
    return (
        f"{float(row['base']):,.1f} → {float(row['new']):,.1f} µs per step"
        f" ({float(row['delta']):+,.1f} µs, {share})"
    )

"""The Kernels page's idle-time figure: each GPU stream's idle time, split as HTA splits it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from dashboard.figures.overview import CATEGORY_COLORS, empty_figure
from dashboard.figures.palette import themed_figure

NO_IDLE = "No GPU stream in this run"
#: Each idle category's label and colour: host wait is the host not enqueuing work (CPU
#: execution's colour), kernel wait the launch gap between back-to-back kernels (the runtime's).
IDLE_PARTS: tuple[tuple[str, str, str], ...] = (
    ("host_wait", "host wait", CATEGORY_COLORS["cpu_exec"]),
    ("kernel_wait", "kernel wait", CATEGORY_COLORS["runtime"]),
    ("other", "other", CATEGORY_COLORS["other"]),
)


def idle_time_figure(rows: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Horizontal stacked bars: each stream's idle time in ms, by category.

    Args:
        rows: :func:`dashboard.data.idle.run_idle_time`'s rows (``rank``, ``stream``,
            ``<category>_us`` and ``<category>_pct``).

    Returns:
        One bar trace per category, one bar per stream (``stream S``, or ``rank R stream S``
        when there are several ranks); the hover gives the share of the stream's idle time.
    """
    if not rows:
        return empty_figure(NO_IDLE)
    several = len({row["rank"] for row in rows}) > 1
    labels = [
        f"rank {row['rank']} stream {row['stream']}" if several else f"stream {row['stream']}"
        for row in rows
    ]
    figure = themed_figure()
    for category, label, color in IDLE_PARTS:
        hover = f"{label}: %{{x:,.2f}} ms (%{{customdata:.1f}}%)<extra>%{{y}}</extra>"
        figure.add_trace(
            go.Bar(
                name=label,
                y=labels,
                x=[row[f"{category}_us"] / 1000.0 for row in rows],
                customdata=[row[f"{category}_pct"] for row in rows],
                orientation="h",
                marker_color=color,
                hovertemplate=hover,
            )
        )
    figure.update_layout(
        barmode="stack",
        xaxis={"title": {"text": "idle time (ms)"}},
        yaxis={"type": "category", "autorange": "reversed"},
        height=max(260, 80 + 28 * len(rows)),
        legend={"orientation": "h", "y": -0.25},
        margin={"t": 30},
    )
    return figure

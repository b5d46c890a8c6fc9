"""Figures of the Distributed page: per-rank step time, breakdown and communication overlap."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from dashboard.figures.overview import CATEGORY_LABELS, empty_figure, stacked_categories

NO_RANKS = "No steps in this run"
NO_COMMUNICATION = "No communication kernels in this run"
#: The step-time statistics drawn side by side for each rank: row key -> legend name.
STEP_STATS: dict[str, str] = {
    "step_mean_us": "mean",
    "step_median_us": "median",
    "step_max_us": "max",
}
STRAGGLER_COLOR = "#e45756"
RANK_COLOR = "#4c78a8"


def rank_label(rank: Any) -> str:
    """The axis label of a rank."""
    return f"rank {rank}"


def rank_step_figure(
    ranks: Sequence[Mapping[str, Any]], stragglers: Collection[int] = ()
) -> go.Figure:
    """Grouped bars: each rank's mean, median and max step time side by side, in ms.

    Args:
        ranks: rows with ``rank`` and the keys of :data:`STEP_STATS` (microseconds; None for
            a rank without steps).
        stragglers: ranks to mark (their labels get a ``(straggler)`` suffix).

    Returns:
        One bar trace per statistic, one bar per rank; an empty figure with a note when no
        rank has steps.
    """
    timed = [row for row in ranks if row.get("step_mean_us") is not None]
    if not timed:
        return empty_figure(NO_RANKS)
    labels = [_marked_label(row["rank"], stragglers) for row in timed]
    figure = go.Figure()
    for key, name in STEP_STATS.items():
        figure.add_trace(
            go.Bar(
                name=name,
                x=labels,
                y=[float(row[key]) / 1000.0 for row in timed],
                hovertemplate=f"{name} step: %{{y:,.2f}} ms<extra>%{{x}}</extra>",
            )
        )
    figure.update_layout(
        barmode="group",
        xaxis={"title": {"text": "rank"}, "type": "category"},
        yaxis={"title": {"text": "step time (ms)"}},
        margin={"t": 30},
    )
    return figure


def rank_breakdown_figure(ranks: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Stacked bars: each rank's mean step split into the breakdown categories, in ms.

    Args:
        ranks: rows with ``rank``, ``step_mean_us`` and ``<category>_us`` (time per step) and
            ``<category>_pct`` for each category of ``CATEGORY_LABELS``.

    Returns:
        One bar trace per category, one bar per rank with steps; an empty figure with a note
        when no rank has steps.
    """
    timed = [row for row in ranks if row.get("step_mean_us") is not None]
    if not timed:
        return empty_figure(NO_RANKS)
    return stacked_categories(
        [rank_label(row["rank"]) for row in timed],
        {c: [float(row.get(f"{c}_us") or 0.0) / 1000.0 for row in timed] for c in CATEGORY_LABELS},
        x_title="rank",
        y_title="time per step (ms)",
        value_hover="%{y:,.2f} ms per step",
        shares={c: [float(row.get(f"{c}_pct") or 0.0) for row in timed] for c in CATEGORY_LABELS},
    )


def overlap_figure(ranks: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Bars: the share of each rank's communication-kernel time that compute overlaps.

    Args:
        ranks: rows with ``rank``, ``comm_overlap_pct`` (None without communication) and
            ``comm_kernel_us``.

    Returns:
        One bar trace, one bar per rank with communication kernels, y in percent; an empty
        figure with :data:`NO_COMMUNICATION` when no rank has any.
    """
    shown = [row for row in ranks if row.get("comm_overlap_pct") is not None]
    if not shown:
        return empty_figure(NO_COMMUNICATION)
    figure = go.Figure(
        go.Bar(
            name="overlap",
            x=[rank_label(row["rank"]) for row in shown],
            y=[float(row["comm_overlap_pct"]) for row in shown],
            customdata=[float(row["comm_kernel_us"]) / 1000.0 for row in shown],
            marker_color=RANK_COLOR,
            hovertemplate=(
                "%{y:.1f}% of %{customdata:,.2f} ms of communication overlapped by compute"
                "<extra>%{x}</extra>"
            ),
        )
    )
    figure.update_layout(
        xaxis={"title": {"text": "rank"}, "type": "category"},
        yaxis={"title": {"text": "communication overlapped by compute (%)"}, "range": [0, 100]},
        margin={"t": 30},
    )
    return figure


def _marked_label(rank: Any, stragglers: Collection[int]) -> str:
    label = rank_label(rank)
    return f"{label} (straggler)" if rank in stragglers else label

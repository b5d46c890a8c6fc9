"""Figures of the Distributed page: per-rank step time, breakdown and communication overlap, and
each rank's wait in collectives against its work, step by step."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from dashboard.figures.overview import CATEGORY_LABELS, empty_figure, stacked_categories
from dashboard.figures.palette import BLUE, WORSE_COLOR, rank_color, themed_figure

NO_RANKS = "No steps in this run"
NO_COMMUNICATION = "No communication kernels in this run"
#: The step-time statistics drawn side by side for each rank: row key -> legend name.
STEP_STATS: dict[str, str] = {
    "step_mean_us": "mean",
    "step_median_us": "median",
    "step_max_us": "max",
}
STRAGGLER_COLOR = WORSE_COLOR
RANK_COLOR = BLUE
NO_STEPS = "No profiler steps in this run"
#: Up to this many ranks, wait and work are bars side by side per step; beyond, one heatmap row
#: per rank (64 ranks of bars per step would be slivers).
MAX_BAR_RANKS = 8
WORK_LABEL = "work"
WAIT_LABEL = "wait in collectives"


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
    figure = themed_figure()
    for key, name in STEP_STATS.items():
        figure.add_trace(
            go.Bar(
                name=name,
                x=labels,
                y=[float(row[key]) / 1000.0 for row in timed],
                hovertemplate=f"{name} step: %{{y:,.2f}} ms<extra>%{{x}}</extra>",
            )
        )
    return _grouped(figure, "rank", "step time (ms)")


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
    figure = themed_figure(
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


def wait_work_figure(steps: pd.DataFrame, stragglers: Collection[int] = ()) -> go.Figure:
    """Each rank's step split into its work and its wait inside collectives, step by step.

    Args:
        steps: one row per rank and step: ``rank``, ``step``, ``work_us`` and ``comm_wait_us``.
        stragglers: ranks to mark (their names get a ``(straggler)`` suffix).

    Returns:
        Up to :data:`MAX_BAR_RANKS` ranks: per step, a stacked bar per rank (work, then wait on
        top; the traces ``rank r work``, ``rank r wait in collectives``), in ms. More ranks: one
        heatmap, a row per rank and a column per step, of the wait's share of the step. An
        empty figure saying :data:`NO_STEPS` without steps.
    """
    if steps.empty:
        return empty_figure(NO_STEPS)
    ranks = sorted(int(rank) for rank in steps["rank"].unique())
    if len(ranks) > MAX_BAR_RANKS:
        return _wait_heatmap(steps, ranks, stragglers)
    figure = themed_figure()
    for rank in ranks:
        mine = steps[steps["rank"] == rank].sort_values("step")
        x = [f"step {int(step)}" for step in mine["step"]]
        work = (mine["work_us"] / 1000.0).tolist()
        wait = (mine["comm_wait_us"] / 1000.0).tolist()
        name = _marked_label(rank, stragglers)
        for part, y, base, opacity in (
            (WORK_LABEL, work, None, 1.0),
            (WAIT_LABEL, wait, work, 0.4),
        ):
            figure.add_trace(
                go.Bar(
                    name=f"{name} {part}",
                    x=x,
                    y=y,
                    base=base,
                    offsetgroup=str(rank),
                    legendgroup=str(rank),
                    opacity=opacity,
                    marker_color=STRAGGLER_COLOR if rank in stragglers else rank_color(rank),
                    hovertemplate=f"{part}: %{{y:,.2f}} ms<extra>{name}, %{{x}}</extra>",
                )
            )
    return _grouped(figure, "step", "time (ms): work, then wait on top")


def _wait_heatmap(steps: pd.DataFrame, ranks: list[int], stragglers: Collection[int]) -> go.Figure:
    share = steps.assign(
        pct=100.0 * steps["comm_wait_us"] / (steps["work_us"] + steps["comm_wait_us"])
    ).pivot_table(index="rank", columns="step", values="pct", aggfunc="mean")
    figure = themed_figure(
        go.Heatmap(
            z=share.to_numpy().tolist(),
            x=[f"step {int(step)}" for step in share.columns],
            y=[_marked_label(rank, stragglers) for rank in share.index],
            zmin=0,
            zmax=100,
            colorscale="Blues",
            colorbar={"title": {"text": "wait %"}},
            hovertemplate="%{z:.1f}% of the step waiting in collectives<extra>%{y}, %{x}</extra>",
        )
    )
    figure.update_layout(
        xaxis={"title": {"text": "step"}, "type": "category"},
        yaxis={"title": {"text": "rank"}, "type": "category", "autorange": "reversed"},
        height=max(400, 60 + 12 * len(ranks)),
        margin={"t": 30},
    )
    return figure


def _grouped(figure: go.Figure, x_title: str, y_title: str) -> go.Figure:
    """Bars side by side in each category of the x axis."""
    figure.update_layout(
        barmode="group",
        xaxis={"title": {"text": x_title}, "type": "category"},
        yaxis={"title": {"text": y_title}},
        margin={"t": 30},
    )
    return figure


def _marked_label(rank: Any, stragglers: Collection[int]) -> str:
    label = rank_label(rank)
    return f"{label} (straggler)" if rank in stragglers else label

"""Distributed (``/distributed?run=NAME``): the run's ranks side by side.

Per-rank step time (mean, median, max), the per-rank step breakdown, the stragglers, and how
much of each rank's communication compute overlaps (HTA's definition). A run of one rank says
so and still shows that rank.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dash
from dash import dcc, html

from dashboard.components.grid import Column, data_grid
from dashboard.components.messages import error_banner, notice, page_data
from dashboard.components.page import page_layout, register_body
from dashboard.data.distributed import RunDistributed, run_distributed
from dashboard.figures.distributed import overlap_figure, rank_breakdown_figure, rank_step_figure

dash.register_page(
    __name__, path="/distributed", name="Distributed", title="trainprof: distributed", order=6
)

NO_RANKS = "No trace file of this run could be read: no ranks to show."
COLUMNS = (
    Column("rank", "rank", "count"),
    Column("files", "files", "count"),
    Column("steps", "steps", "count"),
    Column("step_mean_us", "mean step (ms)", "ms"),
    Column("step_median_us", "median step (ms)", "ms"),
    Column("step_max_us", "max step (ms)", "ms"),
    Column("communication_pct", "communication %", "pct"),
    Column("comm_kernel_us", "comm kernels (ms)", "ms"),
    Column("comm_overlap_pct", "comm overlapped %", "pct"),
)


def content(run: str | None = None, **_query: Any) -> html.Div:
    """The ranks of ``run`` (the first run when none is named)."""
    loaded = page_data(run, run_distributed)
    if isinstance(loaded, html.Div):
        return loaded
    run, data = loaded
    heading = [html.H3(f"Ranks of run {run}"), error_banner(data.errors)]
    if not data.ranks:
        return html.Div([*heading, notice("no-ranks", NO_RANKS)])
    straggling = [int(row["rank"]) for row in data.stragglers]
    return html.Div(
        [
            *heading,
            notice("rank-count", rank_count_text(data.ranks)),
            notice("stragglers", stragglers_text(data)),
            html.H4("Step time per rank"),
            dcc.Graph(id="rank-step-time", figure=rank_step_figure(data.ranks, straggling)),
            html.H4("Step breakdown per rank"),
            dcc.Graph(id="rank-breakdown", figure=rank_breakdown_figure(data.ranks)),
            html.H4("Communication overlapped by compute"),
            dcc.Graph(id="rank-overlap", figure=overlap_figure(data.ranks)),
            data_grid("rank-table", COLUMNS, data.ranks),
        ]
    )


layout = page_layout("distributed")
register_body("distributed", content)


def rank_count_text(ranks: Sequence[Mapping[str, Any]]) -> str:
    """How many ranks the run has; a single rank is said plainly."""
    if len(ranks) == 1:
        return (
            f"This run has a single rank (rank {ranks[0]['rank']}): there is nothing to compare "
            "it with, and no stragglers; its figures are below."
        )
    return f"{len(ranks)} ranks: " + ", ".join(str(row["rank"]) for row in ranks) + "."


def stragglers_text(data: RunDistributed) -> str:
    """The stragglers, each with its mean step and the other ranks' median, or that none is."""
    if len(data.ranks) < 2:
        return "Stragglers: none (a single rank)."
    if not data.stragglers:
        return (
            f"No stragglers: no rank's mean step time is more than {data.threshold_pct:.0f}% "
            "above the median of the other ranks'."
        )
    found = [
        f"rank {row['rank']} ({row['step_mean_us'] / 1000:,.2f} ms per step, "
        f"{row['excess_pct']:.1f}% above the others' median of "
        f"{row['others_median_us'] / 1000:,.2f} ms)"
        for row in data.stragglers
    ]
    return f"Stragglers (more than {data.threshold_pct:.0f}% slower): " + "; ".join(found) + "."

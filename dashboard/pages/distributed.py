"""Distributed (``/distributed?run=NAME``): the run's ranks side by side.

The stragglers in words (the rank the others wait for in collectives: which steps, how long,
where its extra time went) and the clock offsets that put the ranks on one clock; each rank's
wait in collectives against its work, step by step; per-rank step time (mean, median, max),
the per-rank step breakdown, and how much of each rank's communication compute overlaps (HTA's
definition). A run of one rank says so and still shows that rank.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import dash
from dash import dcc, html

from dashboard.app import run_href
from dashboard.components.grid import Column, data_grid
from dashboard.components.messages import error_banner, notice, page_data
from dashboard.components.page import page_layout, register_body
from dashboard.data.distributed import (
    RunAlignment,
    RunDistributed,
    Straggler,
    run_alignment,
    run_distributed,
)
from dashboard.data.timeline import RankGroup, run_rank_groups
from dashboard.figures.distributed import (
    overlap_figure,
    rank_breakdown_figure,
    rank_step_figure,
    wait_work_figure,
)
from dashboard.figures.overview import CATEGORY_LABELS

dash.register_page(
    __name__, path="/distributed", name="Distributed", title="trainprof: distributed", order=6
)

NO_RANKS = "No trace file of this run could be read: no ranks to show."
#: The most steps a straggler's sentence lists (the rest are counted).
LISTED_STEPS = 12
#: The most ranks whose clock offsets are listed in words (the table has every rank's).
LISTED_OFFSETS = 8
COLUMNS = (
    Column("rank", "rank", "count"),
    Column("clock_offset_us", "clock offset (µs)", "delta_us"),
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
    loaded = page_data(run, _ranks_data)
    if isinstance(loaded, html.Div):
        return loaded
    run, (data, aligned, groups) = loaded
    heading = [html.H3(f"Ranks of run {run}"), error_banner(data.errors)]
    if not data.ranks:
        return html.Div([*heading, notice("no-ranks", NO_RANKS)])
    straggling = [straggler.rank for straggler in aligned.stragglers]
    offsets = aligned.clock_offset_us
    rows = [{**row, "clock_offset_us": offsets.get(int(row["rank"]))} for row in data.ranks]
    return html.Div(
        [
            *heading,
            notice("rank-count", rank_count_text(data.ranks)),
            notice("stragglers", stragglers_text(aligned)),
            *_timeline_link(run, aligned, groups),
            notice("clock-offsets", offsets_text(aligned)),
            html.H4("Wait in collectives and work, per rank and step"),
            dcc.Graph(id="rank-wait-work", figure=wait_work_figure(aligned.steps, straggling)),
            html.H4("Step time per rank"),
            dcc.Graph(id="rank-step-time", figure=rank_step_figure(data.ranks, straggling)),
            html.H4("Step breakdown per rank"),
            dcc.Graph(id="rank-breakdown", figure=rank_breakdown_figure(data.ranks)),
            html.H4("Communication overlapped by compute"),
            dcc.Graph(id="rank-overlap", figure=overlap_figure(data.ranks)),
            data_grid("rank-table", COLUMNS, rows),
        ]
    )


def _ranks_data(
    root: Path, name: str
) -> tuple[RunDistributed, RunAlignment, tuple[RankGroup, ...]]:
    return run_distributed(root, name), run_alignment(root, name), run_rank_groups(root, name)


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


def stragglers_text(aligned: RunAlignment) -> str:
    """The stragglers in words: the rank the others waited for, in which steps, how long, and
    where its extra time went; or that there is none."""
    if len(aligned.ranks) < 2:
        return "Stragglers: none (a single rank)."
    if not aligned.stragglers:
        return (
            "No stragglers: in no step did the other ranks wait in collectives for one rank "
            f"more than {aligned.threshold_pct:.0f}% of its step."
        )
    return " ".join(_straggler_sentence(s) for s in aligned.stragglers)


def _straggler_sentence(straggler: Straggler) -> str:
    listed = ", ".join(str(step) for step in straggler.steps[:LISTED_STEPS])
    more = len(straggler.steps) - LISTED_STEPS
    if more > 0:
        listed += f" and {more} more"
    text = (
        f"Rank {straggler.rank} is a straggler in {len(straggler.steps)} of "
        f"{straggler.steps_compared} steps "
        f"(step {listed}): the other ranks waited {straggler.excess_us / 1000:,.2f} ms per step "
        f"for it in collectives, {straggler.excess_pct:.1f}% of its step."
    )
    if straggler.category is None:
        return text + " Its extra time is not in any category of its trace."
    label = CATEGORY_LABELS.get(straggler.category, straggler.category)
    return text + (
        f" Its extra time went to {label} ({straggler.category_us / 1000:+,.2f} ms per step "
        "against the other ranks' median)."
    )


def _timeline_link(run: str, aligned: RunAlignment, groups: Sequence[RankGroup]) -> list[Any]:
    """A link to the Timeline's rank group that holds the first straggler (none without one)."""
    if not aligned.stragglers:
        return []
    rank = aligned.stragglers[0].rank
    group = next((g for g in groups if any(r == rank for r, _ in g.files)), None)
    if group is None:
        return []
    href = f"{run_href('/timeline', run)}&file={quote(group.key)}"
    text = f"See rank {rank} beside ranks {group.key.removeprefix('ranks ')} in the Timeline"
    return [dcc.Link(text, href=href, id="straggler-timeline")]


def offsets_text(aligned: RunAlignment) -> str:
    """The clock offset applied to each rank, and how the ranks were aligned."""
    offsets = aligned.clock_offset_us
    if len(offsets) < 2:
        return "Clock offsets: none applied (a single rank)."
    how = (
        "aligned on the ends of the collectives they share"
        if aligned.method == "collectives"
        else "not all aligned: " + "; ".join(aligned.warnings)
    )
    shown = sorted(offsets)[:LISTED_OFFSETS]
    listed = ", ".join(f"rank {rank} {offsets[rank] / 1000:+,.3f} ms" for rank in shown)
    if len(offsets) > len(shown):
        listed += f", and {len(offsets) - len(shown)} more ranks (in the table below)"
    return f"Clock offsets applied to put the ranks on rank {shown[0]}'s clock ({how}): {listed}."

"""Kernels (``/kernels?run=NAME``): the run's GPU kernels, their types, the costliest ones, and
each stream's idle time split into host wait, kernel wait and other, as HTA splits it.

A CPU-only run gets a note instead. Kernel names are table cells and figure labels: text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dash
from dash import dcc, html

from dashboard.components.grid import Column, data_grid
from dashboard.components.messages import error_banner, page_data
from dashboard.components.page import page_layout, register_body
from dashboard.data.idle import KERNEL_WAIT_US, run_idle_time
from dashboard.data.tables import run_kernels, run_table_errors
from dashboard.figures.idle import idle_time_figure
from dashboard.figures.tables import kernel_type_figure, top_bar_figure

dash.register_page(__name__, path="/kernels", name="Kernels", title="trainprof: kernels", order=3)

NO_KERNELS = "No GPU kernels in this run"
COLUMNS = (
    Column("name", "name", wide=True),
    Column("kernel_type", "type"),
    Column("calls", "calls", "count"),
    Column("total_us", "total µs", "us"),
    Column("mean_us", "mean µs", "us"),
    Column("grid", "grid"),
    Column("block", "block"),
    Column("occupancy_pct", "occupancy %", "pct"),
)
IDLE_COLUMNS = (
    Column("rank", "rank", "count"),
    Column("stream", "stream", "count"),
    Column("host_wait_us", "host wait ms", "ms"),
    Column("kernel_wait_us", "kernel wait ms", "ms"),
    Column("other_us", "other ms", "ms"),
    Column("idle_us", "idle ms", "ms"),
    Column("host_wait_pct", "host wait %", "pct"),
    Column("kernel_wait_pct", "kernel wait %", "pct"),
    Column("other_pct", "other %", "pct"),
)
IDLE_NOTE = (
    "The gap before each GPU work item on its stream: host wait when its launch call began "
    "after the previous item ended (the host was not enqueuing work fast enough), kernel wait "
    f"when shorter than {KERNEL_WAIT_US:g} µs (launch overhead between back-to-back kernels), "
    "other for the rest (a wait on another stream, a synchronisation). As HTA's "
    "get_idle_time_breakdown; each file's last step is left out, as HTA leaves it out."
)


def content(run: str | None = None, **_query: Any) -> html.Div:
    """The kernels of ``run`` (the first run when none is named)."""
    loaded = page_data(
        run,
        lambda root, name: (
            run_kernels(root, name),
            run_table_errors(root, name),
            run_idle_time(root, name),
        ),
    )
    if isinstance(loaded, html.Div):
        return loaded
    run, ((kernels, types), errors, idle) = loaded
    heading = [html.H3(f"Kernels of run {run}"), error_banner(errors)]
    if not kernels:
        return html.Div([*heading, html.Div(NO_KERNELS, id="no-kernels")])
    return html.Div([*heading, *kernel_sections(kernels, types), *idle_sections(idle)])


layout = page_layout("kernels")
register_body("kernels", content)


def kernel_sections(kernels: list[dict[str, Any]], types: list[dict[str, Any]]) -> list[Any]:
    """The table and the two figures for a run with kernels."""
    return [
        html.H4("Kernels"),
        data_grid("kernels-table", COLUMNS, kernels),
        html.H4("GPU time by kernel type"),
        dcc.Graph(id="kernel-types", figure=kernel_type_figure(types)),
        html.H4("Top kernels by total time"),
        dcc.Graph(id="kernels-top", figure=top_bar_figure(kernels, "total_us", "total time (µs)")),
    ]


def idle_sections(rows: Sequence[Mapping[str, Any]]) -> list[Any]:
    """Each stream's idle time by category: the figure and the table."""
    return [
        html.H4("GPU idle time by stream"),
        html.P(IDLE_NOTE, id="idle-note"),
        dcc.Graph(id="idle-time", figure=idle_time_figure(rows)),
        data_grid("idle-table", IDLE_COLUMNS, rows),
    ]

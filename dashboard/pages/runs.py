"""Runs (``/runs``): every run under the root in one table, and runs side by side.

One row per run from its ``meta/`` alone (status, start, steps, mean step, data-wait share,
GPU utilisation, peak memory; no trace is read), sortable and filterable. A run's name opens
its Overview; two selected rows give a link to their Diff (the earlier run as the base); every
selected run is compared below the table (:mod:`dashboard.data.compare`): their step-time
distributions in one figure, their step breakdowns as stacked bars in the Overview's colours in
another (a run without traces on its step logs).
The rows are read again at each poll of the shell, in place: sorting and selection stay.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

import dash
import dash_ag_grid as dag
from dash import Input, Output, State, dcc, html

from dashboard.app import BASE_PARAM, RUN_PARAM, run_href
from dashboard.components.grid import Column, data_grid
from dashboard.components.messages import no_runs
from dashboard.components.page import page_layout, register_body
from dashboard.data.compare import compare_runs
from dashboard.data.run_table import run_rows
from dashboard.data.runs import current_root
from dashboard.figures.runs import breakdown_figure, step_distribution_figure

dash.register_page(__name__, path="/runs", name="Runs", title="trainprof: runs", order=-1)

GRID = "runs-table"
DIFF_LINK = "runs-diff"
FIGURE = "runs-steps"
BREAKDOWN = "runs-breakdown"
PICK_TWO = "Select two runs to diff them; select any to compare their steps."
COLUMNS = (
    Column("name", "run", wide=True, link=True),
    Column("status", "status"),
    Column("reason", "why"),
    Column("started", "started (UTC)"),
    Column("steps", "steps", "count"),
    Column("mean_step_us", "mean step ms", "ms"),
    Column("data_wait_pct", "data wait %", "pct"),
    Column("gpu_util_pct", "GPU util %", "pct"),
    Column("peak_memory_bytes", "peak memory bytes", "bytes"),
    Column("trace_files", "trace files", "count"),
)


def content(**_query: Any) -> html.Div:
    """The table of every run under the root, the diff link and the comparison figure."""
    root = current_root()
    rows = [row.to_dict() for row in run_rows(root)]
    if not rows:
        return no_runs(root)
    return html.Div(
        [
            html.H3(f"Runs ({len(rows)})"),
            data_grid(GRID, COLUMNS, rows, row_id="name", select_rows=True),
            html.Div(PICK_TWO, id=DIFF_LINK, style={"margin": "0.5em 0"}),
            html.H4("Step time"),
            dcc.Graph(id=FIGURE, figure=step_distribution_figure({})),
            html.H4("Step breakdown"),
            dcc.Graph(id=BREAKDOWN, figure=breakdown_figure([])),
        ]
    )


layout = page_layout(
    "runs",
    [dag.AgGrid(id=GRID), html.Div(id=DIFF_LINK), dcc.Graph(id=FIGURE), dcc.Graph(id=BREAKDOWN)],
)
register_body("runs", content)


def diff_pair(selected: Sequence[Mapping[str, Any]]) -> tuple[str, str] | None:
    """``(run, base)`` of two selected rows: the later-started run against the earlier one
    (by name when a start is unknown); None unless exactly two are selected."""
    if len(selected) != 2:
        return None
    first, second = sorted(selected, key=lambda r: (r.get("started_unix_s") or 0.0, r["name"]))
    return str(second["name"]), str(first["name"])


def diff_link(selected: Sequence[Mapping[str, Any]]) -> Any:
    """The link to the Diff of two selected runs, or the hint to select two."""
    pair = diff_pair(selected)
    if pair is None:
        return PICK_TWO
    run, base = pair
    href = "/diff?" + urlencode({RUN_PARAM: run, BASE_PARAM: base}, safe="/")
    return dcc.Link(f"Diff {run} against {base}", href=href, id="runs-diff-link")


@dash.callback(
    Output(DIFF_LINK, "children"),
    Output(FIGURE, "figure"),
    Output(BREAKDOWN, "figure"),
    Input(GRID, "selectedRows"),
    prevent_initial_call=True,
)
def compare(selected: list[dict[str, Any]] | None) -> tuple[Any, Any, Any]:
    """The diff link of two selected runs, and the step-time and breakdown figures of every
    selected one."""
    selected = selected or []
    runs = compare_runs(current_root(), [str(row["name"]) for row in selected])
    steps = step_distribution_figure({run.name: run.step_us for run in runs})
    return diff_link(selected), steps, breakdown_figure(runs)


@dash.callback(
    Output(GRID, "rowData"),
    Input("refresh", "n_intervals"),
    State(GRID, "rowData"),
    prevent_initial_call=True,
)
def refresh_rows(_tick: int | None, shown: list[dict[str, Any]] | None) -> Any:
    """The rows again at each poll of the shell, sent only when they changed (a new run, a new
    status, new steps): the grid keeps its sorting, filters and selection (rows keep their
    ``getRowId``), which drawing the page again would lose."""
    rows = [row.to_dict() for row in run_rows(current_root())]
    return dash.no_update if rows == shown else rows


@dash.callback(
    Output("url", "href", allow_duplicate=True),
    Input(GRID, "cellClicked"),
    prevent_initial_call=True,
)
def open_run(clicked: dict[str, Any] | None) -> Any:
    """A click on a run's name opens its Overview."""
    if not clicked or clicked.get("colId") != "name" or not clicked.get("value"):
        return dash.no_update
    return run_href("/", str(clicked["value"]))

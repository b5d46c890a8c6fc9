"""Operators (``/operators?run=NAME``): the run's CPU ops as a sortable, filterable table.

A toggle regroups the table by input shape; a bar chart shows the ops with the most self time.
Op names and shapes are table cells, which Dash renders as text.
"""

from __future__ import annotations

from typing import Any

import dash
from dash import Input, Output, State, dcc, html
from dash.development.base_component import Component

from dashboard.app import run_from_search
from dashboard.components.grid import Column, column_defs, data_grid
from dashboard.components.messages import error_banner, page_data, pick_run
from dashboard.components.page import page_layout, register_body
from dashboard.data.fetch import Problem, fetch
from dashboard.data.runs import current_root
from dashboard.data.tables import run_ops, run_table_errors
from dashboard.figures.tables import top_bar_figure

dash.register_page(
    __name__, path="/operators", name="Operators", title="trainprof: operators", order=2
)

BY_SHAPE = "shape"


def content(run: str | None = None, **_query: Any) -> html.Div:
    """The operators of ``run`` (the first run when none is named)."""
    loaded = page_data(
        run, lambda root, name: (run_ops(root, name, by_shape=False), run_table_errors(root, name))
    )
    if isinstance(loaded, html.Div):
        return loaded
    run, (rows, errors) = loaded
    return html.Div(
        [
            html.H3(f"Operators of run {run}"),
            error_banner(errors),
            dcc.Checklist(
                id="group-by-shape",
                options=[{"label": " group by input shape", "value": BY_SHAPE}],
                value=[],
            ),
            ops_table(rows, by_shape=False),
            html.H4("Top ops by self time"),
            dcc.Graph(id="ops-top", figure=top_bar_figure(rows, "self_us", "self time (µs)")),
        ]
    )


def ops_columns(*, by_shape: bool) -> list[Column]:
    """The table's columns: name, [input shapes,] calls, self, total and mean time."""
    shape = [Column("input_dims", "input shapes", wide=True)] if by_shape else []
    return [
        Column("name", "name", wide=True),
        *shape,
        Column("calls", "calls", "count"),
        Column("self_us", "self µs", "us"),
        Column("total_us", "total µs", "us"),
        Column("mean_us", "mean µs", "us"),
    ]


def ops_table(rows: list[dict[str, Any]], *, by_shape: bool) -> Component:
    """The sortable, filterable table of ``rows``."""
    return data_grid("ops-table", ops_columns(by_shape=by_shape), rows)


@dash.callback(
    Output("ops-table", "rowData"),
    Output("ops-table", "columnDefs"),
    Input("group-by-shape", "value"),
    State("url", "search"),
    prevent_initial_call=True,
)
def regroup(grouping: list[str] | None, search: str | None) -> tuple[Any, Any]:
    """Rebuild the table for the toggle, on the run in the URL."""
    by_shape = BY_SHAPE in (grouping or [])
    root = current_root()
    run = pick_run(root, run_from_search(search))
    if run is None:
        return dash.no_update, dash.no_update
    rows = fetch(root, run, lambda root, name: run_ops(root, name, by_shape=by_shape))
    if isinstance(rows, Problem):  # the page's banner already says why
        return dash.no_update, dash.no_update
    return rows, column_defs(ops_columns(by_shape=by_shape))


layout = page_layout(
    "operators", [dcc.Checklist(id="group-by-shape"), ops_table([], by_shape=False)]
)
register_body("operators", content)

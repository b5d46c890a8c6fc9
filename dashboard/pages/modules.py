"""Modules (``/modules?run=NAME``): the ``nn.Module`` tree, summed over the run's trace files.

A treemap sized by forward plus backward time, and a table of each module's calls and times.
A run without trainprof's module ranges gets a note. Paths are figure labels and table cells.
"""

from __future__ import annotations

from typing import Any

import dash
from dash import dcc, html

from dashboard.components.grid import Column, data_grid
from dashboard.components.messages import (
    error_banner,
    notice,
    page_data,
)
from dashboard.components.page import page_layout, register_body
from dashboard.data.memory import run_modules
from dashboard.figures.memory import NO_MODULES, module_tree_figure

dash.register_page(__name__, path="/modules", name="Modules", title="trainprof: modules", order=5)

COLUMNS = (
    Column("path", "path", wide=True),
    Column("class_name", "class"),
    Column("calls", "calls", "count"),
    Column("forward_us", "forward µs", "us"),
    Column("backward_us", "backward µs", "us"),
    Column("self_us", "self µs", "us"),
)


def content(run: str | None = None, **_query: Any) -> html.Div:
    """The module tree of ``run`` (the first run when none is named)."""
    loaded = page_data(run, run_modules)
    if isinstance(loaded, html.Div):
        return loaded
    run, modules = loaded
    heading = [html.H3(f"Modules of run {run}"), error_banner(modules.errors)]
    if not modules.rows:
        return html.Div([*heading, notice("no-modules", NO_MODULES)])
    rows = [dict(row) for row in modules.rows]
    return html.Div(
        [
            *heading,
            html.H4("Forward plus backward time per module"),
            dcc.Graph(id="module-tree", figure=module_tree_figure(rows)),
            html.H4("Modules"),
            data_grid("modules-table", COLUMNS, rows),
        ]
    )


layout = page_layout("modules")
register_body("modules", content)

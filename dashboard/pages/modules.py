"""Modules (``/modules?run=NAME``): the ``nn.Module`` tree, summed over the run's trace files.

A treemap sized by forward plus backward time, and a table of each module's calls and times.
A run without trainprof's module ranges gets a note. Paths are figure labels and table cells.
"""

from __future__ import annotations

from typing import Any

import dash
from dash import dash_table, dcc, html
from dash.dash_table.Format import Format, Scheme

from dashboard.components.messages import (
    error_banner,
    notice,
    page_data,
)
from dashboard.data.memory import run_modules
from dashboard.figures.memory import NO_MODULES, module_tree_figure

dash.register_page(__name__, path="/modules", name="Modules", title="trainprof: modules", order=5)

PAGE_SIZE = 25
_MICROS = Format(precision=1, scheme=Scheme.fixed)
COLUMNS: list[dict[str, Any]] = [
    {"name": "path", "id": "path"},
    {"name": "class", "id": "class_name"},
    {"name": "calls", "id": "calls", "type": "numeric"},
    {"name": "forward µs", "id": "forward_us", "type": "numeric", "format": _MICROS},
    {"name": "backward µs", "id": "backward_us", "type": "numeric", "format": _MICROS},
    {"name": "self µs", "id": "self_us", "type": "numeric", "format": _MICROS},
]


def layout(run: str | None = None, **_query: Any) -> html.Div:
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
            dash_table.DataTable(  # type: ignore[attr-defined]  # generated at import
                id="modules-table",
                columns=COLUMNS,
                data=rows,
                sort_action="native",
                filter_action="native",
                page_size=PAGE_SIZE,
                style_cell={"textAlign": "left", "maxWidth": "40em", "whiteSpace": "normal"},
                style_table={"overflowX": "auto"},
            ),
        ]
    )

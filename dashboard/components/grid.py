"""Sortable, filterable tables (dash-ag-grid), one way for every page.

Every table comes with a "Download CSV" button: AG Grid's own export (dash-ag-grid's
``exportDataAsCsv`` prop, set by one callback for every grid, :func:`register_csv_export`)
of the rows as filtered and sorted, with raw numbers in the unit of their header (no
rounding, no thousands separators), named ``<grid id>.csv``.

Cells are rendered as text by AG Grid (no HTML cell renderers), so trace contents such as
op and kernel names can never inject markup. The value formatters are fixed strings here,
never built from trace contents.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import dash
import dash_ag_grid as dag
from dash import MATCH, Input, State, html

Kind = Literal["text", "count", "rate", "us", "ms", "bytes", "pct", "delta_us", "delta_pct"]
PAGE_SIZE = 25
#: The pattern id type of every grid's CSV button; its ``grid`` key names the grid.
CSV_BUTTON = "grid-csv"
CSV_LABEL = "Download CSV"
_LINK_STYLE = {"color": "#1a0dab", "textDecoration": "underline", "cursor": "pointer"}
# d3-format specifier and divisor per kind; dash-ag-grid evaluates "function" formatters with
# d3 in scope. "ms" shows a microsecond value in milliseconds.
_FORMATS: dict[str, tuple[str, int]] = {
    "count": (",d", 1),
    "rate": (",.2f", 1),
    "us": (",.1f", 1),
    "ms": (",.2f", 1000),
    "bytes": (",d", 1),
    "pct": (".1f", 1),
    "delta_us": ("+,.1f", 1),
    "delta_pct": ("+.1f", 1),
}


@dataclass(frozen=True)
class Column:
    """One column of a grid.

    Attributes:
        field: the row key it shows.
        header: its title.
        kind: how values are formatted and filtered: text, or a number (:data:`Kind`; ``ms``
            shows a value in microseconds as milliseconds, ``delta_*`` are signed).
        wide: whether it takes the spare width (names).
        link: whether its cells look like links (a page's ``cellClicked`` callback follows
            them; the cell stays text).
    """

    field: str
    header: str
    kind: Kind = "text"
    wide: bool = False
    link: bool = False


def column_defs(columns: Sequence[Column]) -> list[dict[str, Any]]:
    """AG Grid's ``columnDefs`` for ``columns``."""
    return [_column_def(column) for column in columns]


def data_grid(
    grid_id: str,
    columns: Sequence[Column],
    rows: Sequence[Mapping[str, Any]],
    *,
    page_size: int = PAGE_SIZE,
    row_id: str | None = None,
    select_rows: bool = False,
) -> html.Div:
    """A table of ``rows`` under ``columns``, sortable and filterable on every column, paged,
    with its CSV download button above it.

    Args:
        grid_id: the AgGrid's id.
        columns: what to show.
        rows: the data, in the order shown until the user sorts.
        page_size: rows per page.
        row_id: the field that identifies a row: new ``rowData`` then keeps the selection.
        select_rows: rows can be selected (checkboxes); the grid's ``selectedRows`` says which.

    Returns:
        The button (id ``{"type": CSV_BUTTON, "grid": grid_id}``) and the AgGrid, in a Div.
    """
    options: dict[str, Any] = {}
    if select_rows:
        options["rowSelection"] = {"mode": "multiRow", "enableClickSelection": False}
    grid = dag.AgGrid(
        id=grid_id,
        columnDefs=column_defs(columns),
        rowData=[dict(row) for row in rows],
        defaultColDef={
            "sortable": True,
            "filter": True,
            "floatingFilter": True,
            "resizable": True,
            "minWidth": 100,
            # The CSV holds raw numbers (no thousands separators), in the header's unit.
            "useValueFormatterForExport": False,
        },
        dashGridOptions={
            "pagination": True,
            "paginationPageSize": page_size,
            "domLayout": "autoHeight",
            "enableCellTextSelection": True,
            "tooltipShowDelay": 300,
            # Few columns: render them all, so a narrow window can still scroll to any.
            "suppressColumnVirtualisation": True,
            **options,
        },
        csvExportParams={"fileName": f"{grid_id}.csv"},
        style={"width": "100%"},
        **({"getRowId": f"params.data.{row_id}"} if row_id else {}),
    )
    button = html.Button(
        CSV_LABEL,
        id={"type": CSV_BUTTON, "grid": grid_id},
        title="the rows as filtered and sorted, with raw values",
        style={"marginBottom": "0.3em"},
    )
    return html.Div([button, grid])


def grid_of(table: html.Div) -> dag.AgGrid:
    """The AgGrid inside what :func:`data_grid` returned."""
    return next(child for child in table.children if isinstance(child, dag.AgGrid))


def register_csv_export(app: dash.Dash) -> None:
    """Give every grid's CSV button (:func:`data_grid`) its callback, once per app."""

    @app.callback(
        Input({"type": CSV_BUTTON, "grid": MATCH}, "n_clicks"),
        State({"type": CSV_BUTTON, "grid": MATCH}, "id"),
        prevent_initial_call=True,
    )
    def export_csv(clicks: int | None, button: dict[str, str]) -> None:
        """Ask the button's grid for AG Grid's CSV export (the browser downloads the file)."""
        if clicks:
            dash.set_props(button["grid"], {"exportDataAsCsv": True})


def _column_def(column: Column) -> dict[str, Any]:
    spec: dict[str, Any] = {"field": column.field, "headerName": column.header}
    if column.kind == "text":
        spec["filter"] = "agTextColumnFilter"
        spec["tooltipField"] = column.field  # long kernel names are cut in the cell
    else:
        spec["filter"] = "agNumberColumnFilter"
        spec["type"] = "rightAligned"
        fmt, divisor = _FORMATS[column.kind]
        if divisor != 1:  # the value itself is scaled: sorted, filtered and exported so
            data = f"params.data[{json.dumps(column.field)}]"
            spec["valueGetter"] = {"function": f"{data} == null ? null : {data} / {divisor}"}
        spec["valueFormatter"] = {
            "function": f"params.value == null ? '' : d3.format('{fmt}')(params.value)"
        }
    if column.link:
        spec["cellStyle"] = _LINK_STYLE
    if column.wide:
        spec["flex"] = 2
        spec["minWidth"] = 240
    return spec

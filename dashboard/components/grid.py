"""Sortable, filterable tables (dash-ag-grid), one way for every page.

Cells are rendered as text by AG Grid (no HTML cell renderers), so trace contents such as
op and kernel names can never inject markup. The value formatters are fixed strings here,
never built from trace contents.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import dash_ag_grid as dag

Kind = Literal["text", "count", "rate", "us", "ms", "bytes", "pct", "delta_us", "delta_pct"]
PAGE_SIZE = 25
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
    """

    field: str
    header: str
    kind: Kind = "text"
    wide: bool = False


def column_defs(columns: Sequence[Column]) -> list[dict[str, Any]]:
    """AG Grid's ``columnDefs`` for ``columns``."""
    return [_column_def(column) for column in columns]


def data_grid(
    grid_id: str,
    columns: Sequence[Column],
    rows: Sequence[Mapping[str, Any]],
    *,
    page_size: int = PAGE_SIZE,
) -> dag.AgGrid:
    """A table of ``rows`` under ``columns``, sortable and filterable on every column, paged.

    Args:
        grid_id: the component id.
        columns: what to show.
        rows: the data, in the order shown until the user sorts.
        page_size: rows per page.

    Returns:
        The AgGrid component.
    """
    return dag.AgGrid(
        id=grid_id,
        columnDefs=column_defs(columns),
        rowData=[dict(row) for row in rows],
        defaultColDef={
            "sortable": True,
            "filter": True,
            "floatingFilter": True,
            "resizable": True,
            "minWidth": 100,
        },
        dashGridOptions={
            "pagination": True,
            "paginationPageSize": page_size,
            "domLayout": "autoHeight",
            "enableCellTextSelection": True,
            "tooltipShowDelay": 300,
            # Few columns: render them all, so a narrow window can still scroll to any.
            "suppressColumnVirtualisation": True,
        },
        style={"width": "100%"},
    )


def _column_def(column: Column) -> dict[str, Any]:
    spec: dict[str, Any] = {"field": column.field, "headerName": column.header}
    if column.kind == "text":
        spec["filter"] = "agTextColumnFilter"
        spec["tooltipField"] = column.field  # long kernel names are cut in the cell
    else:
        spec["filter"] = "agNumberColumnFilter"
        spec["type"] = "rightAligned"
        fmt, divisor = _FORMATS[column.kind]
        value = "params.value" if divisor == 1 else f"params.value / {divisor}"
        spec["valueFormatter"] = {
            "function": f"params.value == null ? '' : d3.format('{fmt}')({value})"
        }
    if column.wide:
        spec["flex"] = 2
        spec["minWidth"] = 240
    return spec

"""The shared table: column kinds, formatters, and rows passed through as given."""

from __future__ import annotations

from dashboard.components.grid import Column, column_defs, data_grid, grid_of


def test_numbers_are_formatted_and_filtered_as_numbers_and_text_as_text() -> None:
    defs = column_defs(
        [Column("name", "name", wide=True), Column("calls", "calls", "count"),
         Column("self_us", "self µs", "us"), Column("peak_bytes", "peak", "bytes"),
         Column("occupancy_pct", "occupancy %", "pct")]
    )  # fmt: skip

    by_field = {d["field"]: d for d in defs}
    assert (
        by_field["name"]["filter"] == "agTextColumnFilter"
        and "valueFormatter" not in by_field["name"]
    )
    assert by_field["name"]["flex"] == 2
    formats = {f: by_field[f]["valueFormatter"]["function"] for f in by_field if f != "name"}
    assert "d3.format(',d')" in formats["calls"] and "d3.format(',.1f')" in formats["self_us"]
    assert (
        "d3.format(',d')" in formats["peak_bytes"]
        and "d3.format('.1f')" in formats["occupancy_pct"]
    )
    assert all(by_field[f]["filter"] == "agNumberColumnFilter" for f in formats)
    assert all("cellRenderer" not in d for d in defs)  # cells are text, never HTML


def test_grid_keeps_row_order_and_pages() -> None:
    rows = [{"name": "<b>x</b>", "calls": 2}, {"name": "a", "calls": 1}]

    grid = grid_of(data_grid("t", [Column("name", "name"), Column("calls", "calls", "count")],
                             rows, page_size=7))  # fmt: skip

    assert grid.rowData == rows and grid.rowData[0] is not rows[0]
    assert grid.dashGridOptions["pagination"] and grid.dashGridOptions["paginationPageSize"] == 7

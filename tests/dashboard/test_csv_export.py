"""Every table downloads as CSV: the shared grid's button sets AG Grid's ``exportDataAsCsv``,
and in Chromium the file lands in the download directory with the rows as filtered."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.support.ui import WebDriverWait

from dashboard.components.grid import (
    CSV_BUTTON,
    CSV_LABEL,
    Column,
    column_defs,
    data_grid,
    grid_of,
)
from tests.dashboard.browser import WAIT_S, grid_column, open_path
from tests.dashboard.runs import SAMPLE
from tests.dashboard.status_runs import PEAK_BYTES, RUNS, status_root


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    with status_root(tmp_path / "traces") as root:
        shutil.copytree(SAMPLE, root / "sample", ignore=shutil.ignore_patterns("cache"))
        yield root


def test_every_grid_comes_with_its_csv_button_and_file_name() -> None:
    table = data_grid("ops-table", [Column("name", "name")], [{"name": "a"}])

    button, grid = table.children
    assert button.id == {"type": CSV_BUTTON, "grid": "ops-table"} and button.children == CSV_LABEL
    assert grid is grid_of(table) and grid.id == "ops-table"
    assert grid.csvExportParams == {"fileName": "ops-table.csv"}
    assert not getattr(grid, "exportDataAsCsv", False)  # set only when the button is clicked
    assert grid.defaultColDef["useValueFormatterForExport"] is False  # raw numbers


def test_a_scaled_column_holds_its_values_in_the_headers_unit() -> None:
    (spec,) = column_defs([Column("step_us", "step ms", "ms")])

    assert spec["valueGetter"]["function"] == (
        'params.data["step_us"] == null ? null : params.data["step_us"] / 1000'
    )
    assert "/ 1000" not in spec["valueFormatter"]["function"]


def _allow_downloads(dash_duo: Any) -> Path:
    folder = Path(dash_duo.download_path)
    dash_duo.driver.execute_cdp_cmd(
        "Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(folder)}
    )
    return folder


def _download(dash_duo: Any, grid_id: str, folder: Path) -> list[dict[str, str]]:
    """Click ``grid_id``'s CSV button; the rows of the file it downloads."""
    target = folder / f"{grid_id}.csv"
    button = dash_duo.wait_for_element(
        f'button[id*="{CSV_BUTTON}"][id*="{grid_id}"]', timeout=WAIT_S
    )
    button.click()
    WebDriverWait(dash_duo.driver, WAIT_S).until(
        lambda _: target.is_file() and target.stat().st_size > 0,
        f"no {target.name} downloaded: {sorted(p.name for p in folder.iterdir())}",
    )
    with target.open(newline="", encoding="utf-8-sig") as file:
        return list(csv.DictReader(file))


@pytest.mark.browser
def test_the_runs_table_downloads_as_csv_with_raw_values(dash_duo: Any, root: Path) -> None:
    open_path(dash_duo, root, "/runs")
    folder = _allow_downloads(dash_duo)
    grid_column(dash_duo, "runs-table", "name")

    rows = _download(dash_duo, "runs-table", folder)

    by_name = {row["run"]: row for row in rows}
    assert set(by_name) == {spec.name for spec in RUNS} | {"sample"}
    for spec in RUNS:
        assert by_name[spec.name]["status"] == spec.status
        mean_us = sum(spec.step_us) / len(spec.step_us)
        # raw numbers in the header's unit: not rounded, no thousands separators
        assert float(by_name[spec.name]["mean step ms"]) == pytest.approx(mean_us / 1000)
        assert by_name[spec.name]["peak memory bytes"] == str(PEAK_BYTES + len(spec.step_us) - 1)
    assert dash_duo.get_logs() == []


@pytest.mark.browser
def test_a_filtered_table_on_another_page_downloads_only_what_it_shows(
    dash_duo: Any, root: Path
) -> None:
    open_path(dash_duo, root, "/operators?run=sample")
    folder = _allow_downloads(dash_duo)
    names = grid_column(dash_duo, "ops-table", "name")
    wanted = names[0]
    dash_duo.driver.execute_script(
        "dash_ag_grid.getApi('ops-table').setFilterModel("
        "{name: {filterType: 'text', type: 'equals', filter: arguments[0]}});",
        wanted,
    )
    WebDriverWait(dash_duo.driver, WAIT_S).until(
        lambda _: grid_column(dash_duo, "ops-table", "name") == [wanted], "filter not applied"
    )

    rows = _download(dash_duo, "ops-table", folder)

    assert [row["name"] for row in rows] == [wanted]

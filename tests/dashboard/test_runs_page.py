"""The Runs page: one row per run from its ``meta/`` (each status as the store writes it), the
step-time comparison figure, and in Chromium the table, its sorting and the way to the Diff."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dash
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from dashboard.app import create_app
from dashboard.data.run_table import run_rows, step_durations
from dashboard.figures.runs import PICK_RUNS, step_distribution_figure
from profiler.store.liveness import HEARTBEAT_STALE_S
from tests.dashboard.browser import (
    WAIT_S,
    figure_traces,
    grid_cell,
    grid_column,
    number,
    open_path,
    query_value,
    wait_for_url,
)
from tests.dashboard.status_runs import PEAK_BYTES, RUNS, StatusRun, status_root, write_run

GRID = "runs-table"


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    with status_root(tmp_path / "traces") as root:
        yield root


def test_each_run_is_one_row_with_its_status_and_step_log_figures(root: Path) -> None:
    rows = {row.name: row for row in run_rows(root)}

    assert {name: row.status for name, row in rows.items()} == {s.name: s.status for s in RUNS}
    assert rows["crashed"].reason == "loss is NaN"
    assert rows["full_disk"].reason == "no space left on device"
    assert rows["killed"].reason == "SIGTERM"
    for spec in RUNS:
        row = rows[spec.name]
        mean = sum(spec.step_us) / len(spec.step_us)
        assert row.steps == len(spec.step_us) and row.mean_step_us == pytest.approx(mean)
        assert row.data_wait_pct == pytest.approx(100 * spec.wait_us / mean)
        assert row.peak_memory_bytes == PEAK_BYTES + len(spec.step_us) - 1
        assert row.gpu_util_pct == spec.gpu_util_pct
        assert row.started is not None and row.trace_files == 0


def test_a_running_run_whose_heartbeat_stopped_lists_as_interrupted(root: Path) -> None:
    later = time.time() + 10 * HEARTBEAT_STALE_S

    live = next(row for row in run_rows(root, now=later) if row.name == "live")

    assert live.status == "interrupted" and "no heartbeat since" in str(live.reason)


def test_a_root_without_runs_lists_none_and_traces_without_meta_have_no_status(
    tmp_path: Path,
) -> None:
    assert run_rows(tmp_path / "absent") == []
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "host_1.1700000000001.pt.trace.json").write_text('{"traceEvents": []}')

    (row,) = run_rows(tmp_path)

    assert (row.name, row.status, row.steps, row.mean_step_us) == ("plain", None, 0, None)
    assert row.started is None and row.trace_files == 1


def test_step_durations_are_each_named_runs_finished_steps(root: Path) -> None:
    durations = step_durations(root, ["live", "done", "nothing", "../outside"])

    assert durations == {"live": [5_000.0, 5_000.0, 6_000.0, 8_000.0],
                         "done": [10_000.0, 12_000.0, 14_000.0]}  # fmt: skip


def test_the_figure_has_one_violin_per_run_in_ms_and_escapes_names() -> None:
    figure = step_distribution_figure({"a<b>": [1_000.0, 3_000.0], "empty": []})

    assert [trace.type for trace in figure.data] == ["violin", "violin"]
    assert figure.data[0].name == "a&lt;b&gt;" and list(figure.data[0].y) == [1.0, 3.0]
    assert "no logged steps" in figure.data[1].name and len(figure.data[1].y) == 0
    assert figure.layout.yaxis.title.text == "step time (ms)"


def test_the_figure_of_no_runs_asks_for_a_selection() -> None:
    figure = step_distribution_figure({})

    assert not figure.data and figure.layout.annotations[0].text == PICK_RUNS


def test_two_selected_runs_diff_the_later_against_the_earlier(root: Path) -> None:
    create_app(root)  # pages register with an app
    page = next(p for p in dash.page_registry.values() if p["path"] == "/runs")
    diff_pair = sys.modules[page["module"]].diff_pair

    early = {"name": "b", "started_unix_s": 1.0}
    late = {"name": "a", "started_unix_s": 2.0}

    assert diff_pair([late, early]) == ("a", "b") == diff_pair([early, late])
    assert diff_pair([early]) is None and diff_pair([early, late, early]) is None


def _select(dash_duo: Any, name: str) -> None:
    row = f'#{GRID} .ag-center-cols-container .ag-row[row-id="{name}"]'
    box = dash_duo.wait_for_element(
        f"{row} .ag-selection-checkbox input, {row} .ag-checkbox-input", timeout=WAIT_S
    )
    box.click()


@pytest.mark.browser
def test_the_runs_page_lists_every_run_with_its_status_and_sorts(dash_duo: Any, root: Path) -> None:
    open_path(dash_duo, root, "/runs")

    names = grid_column(dash_duo, GRID, "name")
    statuses = dict(zip(names, grid_column(dash_duo, GRID, "status"), strict=True))
    assert statuses == {spec.name: spec.status for spec in RUNS}
    nav = [link.text for link in dash_duo.find_elements("#nav a")]
    assert nav[0] == "Runs"

    header = f'#{GRID} .ag-header-cell[col-id="mean_step_us"] .ag-header-cell-label'
    dash_duo.find_element(header).click()  # ascending

    def sorted_by_mean(_: Any) -> bool:
        shown = [number(text) for text in grid_column(dash_duo, GRID, "mean_step_us")]
        return len(shown) == len(RUNS) and shown == sorted(shown)

    WebDriverWait(dash_duo.driver, WAIT_S).until(sorted_by_mean, "not sorted by mean step")
    means = {spec.name: sum(spec.step_us) / len(spec.step_us) for spec in RUNS}
    assert grid_column(dash_duo, GRID, "name") == sorted(means, key=means.__getitem__)
    assert dash_duo.get_logs() == []


@pytest.mark.browser
def test_selected_runs_are_compared_and_two_open_their_diff(dash_duo: Any, root: Path) -> None:
    open_path(dash_duo, root, "/runs")
    grid_column(dash_duo, GRID, "name")

    for name in ("done", "live", "crashed"):
        _select(dash_duo, name)
    WebDriverWait(dash_duo.driver, WAIT_S).until(
        lambda _: len(figure_traces(dash_duo, "runs-steps")) == 3, "no violin per selected run"
    )
    drawn = {trace["name"]: trace["y"] for trace in figure_traces(dash_duo, "runs-steps")}
    assert drawn["done"] == [10.0, 12.0, 14.0] and drawn["crashed"] == [30.0, 50.0]
    assert "#runs-diff-link" not in dash_duo.driver.page_source

    _select(dash_duo, "crashed")  # two left: the diff link shows
    link = dash_duo.wait_for_element("#runs-diff-link", timeout=WAIT_S)
    link.click()

    url = wait_for_url(dash_duo, lambda u: "/diff" in u)
    assert {query_value(url), query_value(url, "base")} == {"done", "live"}
    dash_duo.wait_for_element("#diff-base", timeout=WAIT_S)


@pytest.mark.browser
def test_a_runs_name_opens_its_overview(dash_duo: Any, root: Path) -> None:
    open_path(dash_duo, root, "/runs")
    WebDriverWait(dash_duo.driver, WAIT_S).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, grid_cell(GRID, "name"))
    )
    cell = next(
        c
        for c in dash_duo.driver.find_elements(By.CSS_SELECTOR, grid_cell(GRID, "name"))
        if c.text == "killed"
    )
    cell.click()

    url = wait_for_url(dash_duo, lambda u: "/runs" not in u)
    assert query_value(url) == "killed"


@pytest.mark.browser
def test_a_new_run_shows_up_in_place_keeping_the_selection(dash_duo: Any, root: Path) -> None:
    open_path(dash_duo, root, "/runs", refresh_s=0.5)
    grid_column(dash_duo, GRID, "name")
    _select(dash_duo, "done")
    dash_duo.wait_for_element("#runs-steps .violin", timeout=WAIT_S)

    write_run(root, len(RUNS), StatusRun("newcomer", "complete", (1_000.0,), 0.0))

    WebDriverWait(dash_duo.driver, WAIT_S).until(
        lambda _: "newcomer" in grid_column(dash_duo, GRID, "name"), "the new run never listed"
    )
    selected = dash_duo.driver.execute_script(
        "return dash_ag_grid.getApi(arguments[0]).getSelectedRows().map(r => r.name);", GRID
    )
    assert selected == ["done"]

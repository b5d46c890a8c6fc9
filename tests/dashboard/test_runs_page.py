"""The Runs page: one row per run from its ``meta/`` (each status as the store writes it), the
comparison of several runs (step times, step breakdowns: light-only runs on their step logs,
traced runs on their traces), and in Chromium the table, its sorting, the comparison figures
and the way to the Diff."""

from __future__ import annotations

import shutil
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
from dashboard.data.compare import compare_runs
from dashboard.data.overview import run_summary
from dashboard.data.run_table import run_rows, step_durations
from dashboard.figures.overview import CATEGORY_COLORS, CATEGORY_LABELS
from dashboard.figures.runs import (
    PICK_RUNS,
    STEP_LOG_ONLY,
    breakdown_figure,
    step_distribution_figure,
)
from profiler.store.liveness import HEARTBEAT_STALE_S
from tests.conftest import REFERENCE_TRACES
from tests.dashboard.browser import (
    WAIT_S,
    figure_traces,
    grid_cell,
    grid_column,
    number,
    open_path,
    plotly_data,
    query_value,
    wait_for_url,
)
from tests.dashboard.status_runs import PEAK_BYTES, RUNS, StatusRun, status_root, write_run

GRID = "runs-table"
TRACED = "gpu"  # a run of one reference GPU trace (3 steps), no meta/: torch.profiler's own


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    with status_root(tmp_path / "traces") as root:
        yield root


@pytest.fixture
def mixed(root: Path) -> Path:
    """A run of each status (step logs only) and one run of a GPU trace alone."""
    (root / TRACED).mkdir()
    shutil.copy(REFERENCE_TRACES / "hta" / "nccl.json.gz", root / TRACED)
    return root


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


def test_light_only_runs_compare_on_their_step_logs(mixed: Path) -> None:
    done, crashed = compare_runs(mixed, ["done", "nothing", "crashed"])

    assert (done.name, crashed.name) == ("done", "crashed")
    assert done.step_us == (10_000.0, 12_000.0, 14_000.0) and done.step_source == "step log"
    assert done.breakdown_source == "step log"
    assert {c: us for c, us in done.breakdown_us.items() if us} == {
        "dataloader": 1_000.0, "other": 11_000.0}  # fmt: skip
    assert crashed.breakdown_us["dataloader"] == 15_000.0
    assert sum(crashed.breakdown_us.values()) == pytest.approx(40_000.0)  # the mean step


def test_a_traced_run_compares_on_its_traces_as_its_summary_splits_them(mixed: Path) -> None:
    (traced,) = compare_runs(mixed, [TRACED])
    summary = run_summary(mixed, TRACED)
    (report,) = summary.summary["traces"]

    assert traced.step_source == traced.breakdown_source == "trace"
    assert len(traced.step_us) == report["steps"]["count"] == 3
    assert sum(traced.step_us) / 3 == pytest.approx(report["steps"]["mean_us"], abs=0.01)
    step_us = sum(traced.breakdown_us.values())
    shares = {c: 100 * us / step_us for c, us in traced.breakdown_us.items()}
    assert shares == pytest.approx(report["step_breakdown_pct"], abs=0.01)
    assert traced.breakdown_us["kernel"] > 0 and traced.breakdown_us["communication"] > 0


def test_the_breakdown_figure_stacks_each_runs_mean_step_in_the_overviews_colours(
    mixed: Path,
) -> None:
    runs = compare_runs(mixed, ["done", TRACED])

    figure = breakdown_figure(runs)

    assert [bar.name for bar in figure.data] == list(CATEGORY_LABELS.values())
    assert [bar.marker.color for bar in figure.data] == list(CATEGORY_COLORS.values())
    assert figure.layout.barmode == "stack"
    assert list(figure.data[0].x) == [f"done ({STEP_LOG_ONLY})", TRACED]
    heights = [sum(bar.y[at] for bar in figure.data) for at in range(2)]
    assert heights[0] == pytest.approx(12.0)  # done's mean step, ms
    assert heights[1] == pytest.approx(sum(runs[1].step_us) / 3 / 1000, rel=1e-3)
    shares = [sum(bar.customdata[at] for bar in figure.data) for at in range(2)]
    assert shares == pytest.approx([100.0, 100.0])
    assert not breakdown_figure([]).data


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
def test_selected_runs_are_compared_and_two_open_their_diff(dash_duo: Any, mixed: Path) -> None:
    open_path(dash_duo, mixed, "/runs")
    grid_column(dash_duo, GRID, "name")

    for name in ("done", TRACED, "crashed"):
        _select(dash_duo, name)
    WebDriverWait(dash_duo.driver, WAIT_S).until(
        lambda _: len(figure_traces(dash_duo, "runs-steps")) == 3, "no violin per selected run"
    )
    drawn = {trace["name"]: trace["y"] for trace in figure_traces(dash_duo, "runs-steps")}
    assert drawn["done"] == [10.0, 12.0, 14.0] and drawn["crashed"] == [30.0, 50.0]
    assert len(drawn[TRACED]) == 3  # its trace's steps
    bars = plotly_data(
        dash_duo, "runs-breakdown", "return d.map(t => [t.name, t.marker.color, t.x]);"
    )
    assert [(name, color) for name, color, _ in bars] == list(
        zip(CATEGORY_LABELS.values(), CATEGORY_COLORS.values(), strict=True)
    )
    assert bars[0][2] == [f"done ({STEP_LOG_ONLY})", TRACED, f"crashed ({STEP_LOG_ONLY})"]
    assert "#runs-diff-link" not in dash_duo.driver.page_source

    _select(dash_duo, "crashed")  # two left: the diff link shows
    link = dash_duo.wait_for_element("#runs-diff-link", timeout=WAIT_S)
    link.click()

    url = wait_for_url(dash_duo, lambda u: "/diff" in u)
    assert {query_value(url), query_value(url, "base")} == {"done", TRACED}
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

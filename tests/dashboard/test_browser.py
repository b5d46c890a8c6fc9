"""The real dashboard in headless Chromium: rendering, run picking, bad runs, deep links."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from dashboard.data.overview import run_summary
from dashboard.data.tables import run_kernels, run_ops
from dashboard.figures.overview import CATEGORY_LABELS, DATA_WAIT, MEMORY, STEP_TIME
from tests.conftest import REFERENCE_TRACES
from tests.dashboard.browser import (
    WAIT_S,
    figure_traces,
    grid_cell,
    grid_column,
    number,
    open_path,
    pick,
    query_value,
    wait_for_url,
)
from tests.dashboard.runs import CORRUPT_FILE, SAMPLE

pytestmark = pytest.mark.browser

REFERENCE_TRACE = REFERENCE_TRACES / "hta" / "two_ranks_rank-0.json.gz"
REFERENCE_RUN = "reference/two_ranks"
NAV_ORDER = ["Runs", "Overview", "Steps", "Timeline", "Operators", "Kernels", "Memory",
             "Modules", "Distributed", "Diff"]  # fmt: skip


@pytest.fixture
def trace_root(tmp_path: Path) -> Path:
    """A root of runs outside the checkout: the sample, a corrupt run, and a reference run."""
    root = tmp_path / "traces"
    shutil.copytree(SAMPLE, root / "sample")
    corrupt = root / "corrupt"
    corrupt.mkdir()
    (corrupt / CORRUPT_FILE).write_bytes(b"\x1f\x8b this is not <b>gzip</b> at all")
    (root / REFERENCE_RUN).mkdir(parents=True)
    shutil.copy(REFERENCE_TRACE, root / REFERENCE_RUN)
    return root


def open_page(dash_duo: Any, root: Path, query: str) -> None:
    """Serve the app over ``root`` and open ``/`` with ``query``."""
    open_path(dash_duo, root, f"/{query}")


def test_overview_renders_the_sample_run(dash_duo: Any, trace_root: Path) -> None:
    open_page(dash_duo, trace_root, "?run=sample")
    dash_duo.wait_for_contains_text("h3", "Run sample", timeout=WAIT_S)
    expected = run_summary(trace_root, "sample")

    breakdown = figure_traces(dash_duo, "step-breakdown")
    assert [t["name"] for t in breakdown] == list(CATEGORY_LABELS.values())
    assert {t["type"] for t in breakdown} == {"bar"}
    assert all(len(t["y"]) == len(expected.breakdown) == 6 for t in breakdown)
    dataloader = next(t for t in breakdown if t["name"] == "DataLoader")
    assert dataloader["y"] == pytest.approx([row["dataloader_us"] for row in expected.breakdown])

    metrics = figure_traces(dash_duo, "step-metrics")
    assert [t["name"] for t in metrics] == [STEP_TIME, DATA_WAIT, MEMORY]
    assert all(len(t["y"]) == len(expected.steps) == 20 for t in metrics)

    assert "CPU-only run" in dash_duo.find_element("#gpu-metrics").text
    findings = dash_duo.find_elements("#recommendations li")
    assert len(findings) == len(expected.recommendations) >= 1  # once per rule, not per window
    assert "waits for the next batch" in findings[0].text
    assert "seen in 2 of 2 trace file(s)" in findings[0].text
    assert "2.13.0+cpu" in dash_duo.find_element("#environment").text
    assert not dash_duo.find_element("#error-banner").is_displayed()
    assert dash_duo.get_logs() == []


def test_picking_a_run_updates_url_and_page(dash_duo: Any, trace_root: Path) -> None:
    if not (trace_root / REFERENCE_RUN).is_dir():
        pytest.skip(f"reference trace not found at {REFERENCE_TRACE}")
    open_page(dash_duo, trace_root, "?run=sample")
    dash_duo.wait_for_contains_text("h3", "Run sample", timeout=WAIT_S)

    pick(dash_duo, "#run-picker", REFERENCE_RUN)

    wait_for_url(dash_duo, lambda url: query_value(url) == REFERENCE_RUN)
    dash_duo.wait_for_contains_text("h3", f"Run {REFERENCE_RUN}", timeout=WAIT_S)
    dash_duo.wait_for_contains_text("#gpu-metrics", "SM efficiency", timeout=WAIT_S)
    assert "44.5%" in dash_duo.find_element("#gpu-metrics").text  # its GPU utilisation
    breakdown = figure_traces(dash_duo, "step-breakdown")
    kernel = next(t for t in breakdown if t["name"] == "Kernel")
    assert len(kernel["y"]) > 0 and max(kernel["y"]) > 0


def test_corrupt_run_shows_banner_and_page_keeps_working(dash_duo: Any, trace_root: Path) -> None:
    open_page(dash_duo, trace_root, "?run=corrupt")

    dash_duo.wait_for_contains_text("#error-banner", CORRUPT_FILE, timeout=WAIT_S)
    banner = dash_duo.find_element("#error-banner")
    assert banner.is_displayed()
    assert "<b>" not in banner.get_attribute("innerHTML")  # shown as text, never as HTML
    figure_traces(dash_duo, "step-breakdown")  # an empty figure, still drawn

    pick(dash_duo, "#run-picker", "sample")
    wait_for_url(dash_duo, lambda url: query_value(url) == "sample")
    dash_duo.wait_for_contains_text("h3", "Run sample", timeout=WAIT_S)
    assert len(figure_traces(dash_duo, "step-breakdown")) == len(CATEGORY_LABELS)


def test_path_traversal_is_refused(dash_duo: Any, trace_root: Path) -> None:
    open_page(dash_duo, trace_root, "?run=../../etc")

    dash_duo.wait_for_contains_text("#run-refused", "Refused run", timeout=WAIT_S)
    assert "../../etc" in dash_duo.find_element("#run-refused").text
    assert not dash_duo.find_elements("#step-breakdown")


def test_recommendation_link_keeps_the_run(dash_duo: Any, trace_root: Path) -> None:
    open_page(dash_duo, trace_root, "?run=sample")
    page = run_summary(trace_root, "sample").summary["traces"][0]["recommendations"][0]["page"]
    link = dash_duo.wait_for_element("#recommendations a.rec-link", timeout=WAIT_S)

    link.click()

    url = wait_for_url(dash_duo, lambda url: urlsplit(url).path == page)
    assert query_value(url) == "sample"


def test_operators_table_starts_with_the_most_self_time(dash_duo: Any, trace_root: Path) -> None:
    open_path(dash_duo, trace_root, "/operators?run=sample")
    expected = run_ops(trace_root, "sample", by_shape=False)

    selfs = [number(text) for text in grid_column(dash_duo, "ops-table", "self_us")]
    assert len(selfs) == 25  # one page of the table
    assert selfs[0] == max(selfs) == pytest.approx(expected[0]["self_us"], abs=0.05)
    assert grid_column(dash_duo, "ops-table", "name")[0] == expected[0]["name"]
    assert not dash_duo.find_elements('#ops-table .ag-header-cell[col-id="input_dims"]')
    (bar,) = figure_traces(dash_duo, "ops-top")
    assert bar["type"] == "bar" and len(bar["y"]) == 15
    assert not dash_duo.find_element("#error-banner").is_displayed()

    dash_duo.find_element("#group-by-shape input").click()

    grouped = run_ops(trace_root, "sample", by_shape=True)
    assert grid_column(dash_duo, "ops-table", "input_dims")[0] == grouped[0]["input_dims"]
    assert dash_duo.get_logs() == []


def test_kernels_page_shows_table_and_type_chart(dash_duo: Any, trace_root: Path) -> None:
    if not (trace_root / REFERENCE_RUN).is_dir():
        pytest.skip(f"reference trace not found at {REFERENCE_TRACE}")
    open_path(dash_duo, trace_root, f"/kernels?run={REFERENCE_RUN}")
    kernels, types = run_kernels(trace_root, REFERENCE_RUN)

    totals = [number(text) for text in grid_column(dash_duo, "kernels-table", "total_us")]
    assert totals[0] == pytest.approx(kernels[0]["total_us"], abs=0.05)
    assert grid_column(dash_duo, "kernels-table", "grid")[0] == kernels[0]["grid"]
    (pie,) = figure_traces(dash_duo, "kernel-types")
    assert pie["type"] == "pie"
    labels = dash_duo.driver.execute_script(
        "return Array.from(document.querySelector('#kernel-types .js-plotly-plot').data[0].labels);"
    )
    assert labels == [t["kernel_type"] for t in types]
    (bar,) = figure_traces(dash_duo, "kernels-top")
    assert len(bar["y"]) == 15
    assert dash_duo.get_logs() == []


def test_kernels_page_of_a_cpu_only_run_says_so(dash_duo: Any, trace_root: Path) -> None:
    open_path(dash_duo, trace_root, "/kernels?run=sample")

    dash_duo.wait_for_contains_text("#no-kernels", "No GPU kernels in this run", timeout=WAIT_S)
    assert not dash_duo.find_elements("#kernels-table")
    assert not dash_duo.find_elements("#run-refused, #run-unknown")
    assert not dash_duo.find_element("#error-banner").is_displayed()


@pytest.mark.parametrize("page", ["/operators", "/kernels"])
def test_table_pages_show_the_banner_and_refusals(
    dash_duo: Any, trace_root: Path, page: str
) -> None:
    open_path(dash_duo, trace_root, f"{page}?run=corrupt")
    dash_duo.wait_for_contains_text("#error-banner", CORRUPT_FILE, timeout=WAIT_S)
    assert "<b>" not in dash_duo.find_element("#error-banner").get_attribute("innerHTML")

    dash_duo.wait_for_page(url=f"{dash_duo.server_url}{page}?run=../../etc", timeout=WAIT_S)
    dash_duo.wait_for_contains_text("#run-refused", "../../etc", timeout=WAIT_S)
    dash_duo.wait_for_page(url=f"{dash_duo.server_url}{page}?run=nope", timeout=WAIT_S)
    dash_duo.wait_for_contains_text("#run-unknown", "nope", timeout=WAIT_S)


def test_nav_lists_the_table_pages_and_keeps_the_run(dash_duo: Any, trace_root: Path) -> None:
    open_page(dash_duo, trace_root, "?run=sample")
    dash_duo.wait_for_contains_text("#nav", "Kernels", timeout=WAIT_S)
    links = dash_duo.find_elements("#nav a")
    assert [a.text for a in links] == NAV_ORDER

    next(a for a in links if a.text == "Operators").click()

    url = wait_for_url(dash_duo, lambda url: urlsplit(url).path == "/operators")
    assert query_value(url) == "sample"
    dash_duo.wait_for_element(grid_cell("ops-table", "name"), timeout=WAIT_S)

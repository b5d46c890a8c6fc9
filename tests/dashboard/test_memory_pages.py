"""The Memory and Modules pages: their data, their figures, and the pages in headless Chromium."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from dashboard.data.memory import MemorySeries, run_memory, run_modules
from dashboard.figures.memory import (
    NO_MODULES,
    NO_SAMPLES,
    PEAK,
    format_bytes,
    memory_figure,
    module_tree_figure,
    module_tree_values,
)
from profiler.analysis.memory import memory_peak, module_memory
from profiler.analysis.modules import module_table
from profiler.analysis.table import load_trace
from tests.dashboard.browser import WAIT_S, grid_cell, grid_column, open_path, plotly_data
from tests.dashboard.runs import CORRUPT_FILE, PLAIN_FILE, SAMPLE, plain_trace

SMALL_CNN = [
    "model",
    "features",
    *(f"features.{i}" for i in range(8)),
    "classifier",
    *(f"classifier.{i}" for i in range(4)),
]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A root of runs: the sample, a plain trace without ranges or memory, a corrupt file."""
    root = tmp_path / "traces"
    shutil.copytree(SAMPLE, root / "sample")
    (root / "plain").mkdir()
    (root / "plain" / PLAIN_FILE).write_text(json.dumps(plain_trace()))
    (root / "corrupt").mkdir()
    (root / "corrupt" / CORRUPT_FILE).write_bytes(b"\x1f\x8b this is not <b>gzip</b> at all")
    return root


def sample_traces(root: Path) -> list[Any]:
    return [load_trace(p) for p in sorted((root / "sample").glob("*.json.gz"))]


# Data -------------------------------------------------------------------------------------------


def test_run_memory_peak_is_the_highest_file_peak(root: Path) -> None:
    peaks = [memory_peak(trace) for trace in sample_traces(root)]

    memory = run_memory(root, "sample")

    assert memory.errors == ()
    assert len(memory.series) == len(peaks) == 2
    assert memory.peak is not None
    best = max((p for p in peaks if p is not None), key=lambda p: p.allocated_bytes)
    assert memory.peak["allocated_bytes"] == best.allocated_bytes
    assert memory.peak["ts_us"] == best.ts_us
    assert memory.peak["device"] == best.device
    assert memory.peak["module"] == best.module and memory.peak["op"] == best.op
    assert memory.peak["module"] is not None  # the sample's peak lies inside a module range
    series = next(s for s in memory.series if s.trace == memory.peak["trace"])
    assert max(series.allocated_bytes) == best.allocated_bytes
    assert series.t_ms[series.allocated_bytes.index(best.allocated_bytes)] == pytest.approx(
        memory.peak["t_ms"]
    )
    assert all(s.t_ms[0] >= 0 and list(s.t_ms) == sorted(s.t_ms) for s in memory.series)


def test_run_memory_module_rows_are_each_files_module_memory(root: Path) -> None:
    expected = [module_memory(trace) for trace in sample_traces(root)]

    rows = run_memory(root, "sample").modules

    assert len(rows) == sum(len(frame) for frame in expected)
    assert [r["path"] for r in rows] == [p for f in expected for p in f["path"]]
    assert [r["peak_bytes"] for r in rows] == pytest.approx(
        [v for f in expected for v in f["peak_bytes"]]
    )
    backward = [None if pd.isna(v) else v for f in expected for v in f["backward_delta_bytes"]]
    assert [r["backward_delta_bytes"] for r in rows] == backward


def test_run_modules_sums_module_table_over_files(root: Path) -> None:
    tables = pd.concat([module_table(trace) for trace in sample_traces(root)])
    sums = tables.groupby("path")[["calls", "forward_us", "backward_us"]].sum()

    rows = run_modules(root, "sample").rows

    assert [r["path"] for r in rows] == SMALL_CNN
    for row in rows:
        assert row["calls"] == sums.loc[row["path"], "calls"]
        assert row["forward_us"] == pytest.approx(sums.loc[row["path"], "forward_us"])
        assert row["backward_us"] == pytest.approx(sums.loc[row["path"], "backward_us"])
        assert row["self_us"] == pytest.approx(row["forward_self_us"] + row["backward_self_us"])
    assert {r["path"]: r["parent"] for r in rows}["features.0"] == "features"


def test_runs_without_ranges_or_samples_are_empty(root: Path) -> None:
    memory, modules = run_memory(root, "plain"), run_modules(root, "plain")
    assert memory.series == () and memory.peak is None and memory.modules == ()
    assert memory.errors == () and modules.rows == () and modules.errors == ()


def test_unreadable_files_are_named_and_bad_names_refused(root: Path) -> None:
    assert CORRUPT_FILE in run_memory(root, "corrupt").errors[0]
    assert CORRUPT_FILE in run_modules(root, "corrupt").errors[0]
    for accessor in (run_memory, run_modules):
        with pytest.raises(ValueError):
            accessor(root, "../../etc")
        with pytest.raises(LookupError):
            accessor(root, "nope")


def test_results_are_cached_until_a_file_changes(root: Path) -> None:
    first = run_memory(root, "sample")
    assert run_memory(root, "sample") is first
    modules = run_modules(root, "sample")
    assert run_modules(root, "sample") is modules

    shutil.copy(root / "plain" / PLAIN_FILE, root / "sample")

    assert run_memory(root, "sample") is not first
    assert len(run_memory(root, "sample").series) == 2  # the new file has no samples
    assert run_modules(root, "sample") is not modules


# Figures ----------------------------------------------------------------------------------------


def _series(trace: str, reserved: bool) -> MemorySeries:
    return MemorySeries(
        trace=trace,
        device="cuda:0",
        source="kineto",
        t_ms=(0.0, 1.5, 3.0),
        allocated_bytes=(10, 30, 20),
        reserved_bytes=(40.0, 40.0, None) if reserved else None,
    )


PEAK_ROW = {
    "trace": "a",
    "t_ms": 1.5,
    "allocated_bytes": 30,
    "device": "cuda:0",
    "module": "features.0",
    "module_class": "Conv2d",
    "module_phase": "forward",
    "op": "aten::conv2d",
}


def test_memory_figure_draws_one_line_per_series_and_the_peak() -> None:
    figure = memory_figure([_series("a", reserved=True), _series("b", reserved=False)], PEAK_ROW)

    names = [t.name for t in figure.data]
    assert names == ["allocated: a (cuda:0)", "reserved: a (cuda:0)", "allocated: b (cuda:0)", PEAK]
    assert list(figure.data[0].x) == [0.0, 1.5, 3.0]
    assert list(figure.data[0].y) == [10, 30, 20]
    assert list(figure.data[1].y) == [40.0, 40.0, None]
    peak = figure.data[-1]
    assert list(peak.x) == [1.5] and list(peak.y) == [30]
    assert "features.0" in peak.hovertext[0] and "aten::conv2d" in peak.hovertext[0]


def test_memory_figure_without_samples_says_so() -> None:
    figure = memory_figure([], None)
    assert len(figure.data) == 0
    assert figure.layout.annotations[0].text == NO_SAMPLES
    assert [t.name for t in memory_figure([_series("a", reserved=False)], None).data] == [
        "allocated: a (cuda:0)"
    ]


def test_format_bytes() -> None:
    assert format_bytes(512) == "512 B"
    assert format_bytes(5 * 1024 * 1024) == "5.0 MiB"


TREE = [
    {"path": "model", "parent": "", "class_name": "M", "forward_us": 10.0, "backward_us": 5.0},
    {"path": "a", "parent": "model", "class_name": "A", "forward_us": 4.0, "backward_us": 2.0},
    {"path": "a.0", "parent": "a", "class_name": "L", "forward_us": 3.0, "backward_us": 1.0},
    {"path": "b", "parent": "model", "class_name": "B", "forward_us": 5.0, "backward_us": 1.0},
]


def test_module_tree_figure_is_one_treemap_of_the_rows() -> None:
    (treemap,) = module_tree_figure(TREE).data

    assert treemap.type == "treemap"
    assert list(treemap.ids) == ["model", "a", "a.0", "b"]
    assert list(treemap.parents) == ["", "model", "a", "model"]
    assert list(treemap.values) == [15.0, 6.0, 4.0, 6.0]  # forward + backward, as given
    assert treemap.branchvalues == "total"


def test_module_tree_values_never_leave_a_parent_below_its_children() -> None:
    rows = [dict(TREE[0], forward_us=1.0, backward_us=0.0), *TREE[1:]]
    assert module_tree_values(rows) == [12.0, 6.0, 4.0, 6.0]
    orphan = [{"path": "x.y", "parent": "x", "class_name": "C", "forward_us": 1, "backward_us": 1}]
    assert list(module_tree_figure(orphan).data[0].parents) == [""]


def test_module_tree_figure_without_rows_says_so() -> None:
    figure = module_tree_figure([])
    assert len(figure.data) == 0
    assert figure.layout.annotations[0].text == NO_MODULES


# Browser ----------------------------------------------------------------------------------------


@pytest.mark.browser
def test_memory_page_shows_the_chart_and_the_peak(dash_duo: Any, root: Path) -> None:
    open_path(dash_duo, root, "/memory?run=sample")
    dash_duo.wait_for_contains_text("#memory-peak", "Peak", timeout=WAIT_S)
    memory = run_memory(root, "sample")
    assert memory.peak is not None

    text = dash_duo.find_element("#memory-peak").text
    assert format_bytes(memory.peak["allocated_bytes"]) in text
    assert str(memory.peak["module"]) in text and str(memory.peak["op"]) in text
    traces = plotly_data(
        dash_duo,
        "memory-timeline",
        "return d.map(t => ({name: t.name, type: t.type, n: (t.y || []).length,"
        " max: Math.max(...(t.y || [])), hover: t.hovertext || null}));",
    )
    assert [t["type"] for t in traces] == ["scatter"] * 3
    assert [t["n"] for t in traces[:2]] == [len(s.t_ms) for s in memory.series]
    assert traces[-1]["name"] == PEAK
    assert traces[-1]["max"] == memory.peak["allocated_bytes"]
    assert str(memory.peak["module"]) in traces[-1]["hover"][0]
    dash_duo.wait_for_element(grid_cell("module-memory-table", "path"), timeout=WAIT_S)
    assert not dash_duo.find_element("#error-banner").is_displayed()
    assert dash_duo.get_logs() == []


@pytest.mark.browser
def test_modules_page_shows_the_tree_and_the_table(dash_duo: Any, root: Path) -> None:
    open_path(dash_duo, root, "/modules?run=sample")
    dash_duo.wait_for_element(grid_cell("modules-table", "path"), timeout=WAIT_S)

    (tree,) = plotly_data(
        dash_duo,
        "module-tree",
        "return d.map(t => ({type: t.type, ids: Array.from(t.ids),"
        " parents: Array.from(t.parents)}));",
    )
    assert tree["type"] == "treemap"
    assert tree["ids"] == SMALL_CNN
    assert tree["parents"][SMALL_CNN.index("features.0")] == "features"
    dash_duo.wait_for_contains_text("#module-tree", "features.0", timeout=WAIT_S)
    assert grid_column(dash_duo, "modules-table", "path") == SMALL_CNN
    assert not dash_duo.find_element("#error-banner").is_displayed()
    assert dash_duo.get_logs() == []


@pytest.mark.browser
def test_pages_of_a_plain_run_say_what_is_missing(dash_duo: Any, root: Path) -> None:
    open_path(dash_duo, root, "/memory?run=plain")
    dash_duo.wait_for_contains_text("#no-memory", NO_SAMPLES, timeout=WAIT_S)
    assert not dash_duo.find_elements("#memory-timeline")

    dash_duo.wait_for_page(url=f"{dash_duo.server_url}/modules?run=plain", timeout=WAIT_S)
    dash_duo.wait_for_contains_text("#no-modules", NO_MODULES, timeout=WAIT_S)
    assert not dash_duo.find_elements("#module-tree")


@pytest.mark.browser
@pytest.mark.parametrize("page", ["/memory", "/modules"])
def test_new_pages_show_the_banner_and_refusals(dash_duo: Any, root: Path, page: str) -> None:
    open_path(dash_duo, root, f"{page}?run=corrupt")
    dash_duo.wait_for_contains_text("#error-banner", CORRUPT_FILE, timeout=WAIT_S)
    assert "<b>" not in dash_duo.find_element("#error-banner").get_attribute("innerHTML")

    dash_duo.wait_for_page(url=f"{dash_duo.server_url}{page}?run=../../etc", timeout=WAIT_S)
    dash_duo.wait_for_contains_text("#run-refused", "../../etc", timeout=WAIT_S)
    dash_duo.wait_for_page(url=f"{dash_duo.server_url}{page}?run=nope", timeout=WAIT_S)
    dash_duo.wait_for_contains_text("#run-unknown", "nope", timeout=WAIT_S)


@pytest.mark.browser
def test_nav_lists_the_new_pages(dash_duo: Any, root: Path) -> None:
    open_path(dash_duo, root, "/?run=sample")
    dash_duo.wait_for_contains_text("#nav", "Modules", timeout=WAIT_S)
    links = {a.text: a.get_attribute("href") for a in dash_duo.find_elements("#nav a")}
    assert links["Memory"].endswith("/memory?run=sample")
    assert links["Modules"].endswith("/modules?run=sample")

    dash_duo.find_element("#nav a[href='/modules?run=sample']").click()

    dash_duo.wait_for_element(grid_cell("modules-table", "path"), timeout=WAIT_S)

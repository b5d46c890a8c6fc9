"""The Distributed page: its data, its figures, its text, and the page in headless Chromium."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import dash
import pytest
from dash import html

from dashboard.app import create_app
from dashboard.data.distributed import run_distributed
from dashboard.figures.distributed import (
    NO_COMMUNICATION,
    NO_RANKS,
    STEP_STATS,
    overlap_figure,
    rank_breakdown_figure,
    rank_step_figure,
)
from dashboard.figures.overview import CATEGORY_LABELS
from profiler.analysis.distributed import STRAGGLER_PCT, comm_comp_overlap
from profiler.analysis.steps import CATEGORIES, step_breakdown
from profiler.analysis.table import load_trace
from tests.analysis.test_distributed import slowed_copy
from tests.dashboard.browser import WAIT_S, figure_traces, grid_column, open_path, plotly_data
from tests.dashboard.runs import CORRUPT_FILE, SAMPLE

TWO_RANKS = ("two_ranks_rank-0.json.gz", "two_ranks_rank-1.json.gz")


@pytest.fixture
def root(tmp_path: Path, reference_traces: Path) -> Path:
    """Runs: the two-rank reference, it with rank 1 slowed 1.3x, the sample, a corrupt file."""
    root = tmp_path / "traces"
    shutil.copytree(SAMPLE, root / "sample")
    (root / "two").mkdir()
    for name in TWO_RANKS:
        shutil.copy(reference_traces / "hta" / name, root / "two" / name)
    (root / "slow").mkdir()
    shutil.copy(reference_traces / "hta" / TWO_RANKS[0], root / "slow" / TWO_RANKS[0])
    slowed_copy(reference_traces / "hta" / TWO_RANKS[1], root / "slow" / TWO_RANKS[1], 1.3)
    shutil.copytree(SAMPLE, root / "broken")
    (root / "broken" / CORRUPT_FILE).write_bytes(b"\x1f\x8b not <b>gzip</b>")
    return root


def page_layout(root: Path, **query: str) -> html.Div:
    """The page's content for ``query``, called directly inside the app's context."""
    app = create_app(root)
    page = next(p for p in dash.page_registry.values() if p["path"] == "/distributed")
    with app.server.app_context():
        return sys.modules[page["module"]].content(**query)


def element(tree: Any, element_id: str) -> Any:
    """The component with ``element_id`` in a layout tree, or None."""
    if getattr(tree, "id", None) == element_id:
        return tree
    children = getattr(tree, "children", None)
    for child in children if isinstance(children, list) else [children]:
        if child is not None and not isinstance(child, str):
            found = element(child, element_id)
            if found is not None:
                return found
    return None


# Data -------------------------------------------------------------------------------------------


def test_run_distributed_rows_are_each_ranks_breakdown(root: Path) -> None:
    data = run_distributed(root, "two")

    assert data.errors == () and data.stragglers == ()
    assert data.threshold_pct == STRAGGLER_PCT
    assert [row["rank"] for row in data.ranks] == [0, 1]
    for name, row in zip(TWO_RANKS, data.ranks, strict=True):
        trace = load_trace(root / "two" / name)
        breakdown = step_breakdown(trace)
        assert row["steps"] == len(breakdown)
        assert row["step_mean_us"] == pytest.approx(breakdown["dur_us"].mean())
        assert row["kernel_us"] == pytest.approx(breakdown["kernel_us"].mean())
        overlap = comm_comp_overlap(trace)
        assert row["comm_overlap_pct"] == pytest.approx(overlap.overlap_pct)


def test_a_slowed_rank_is_the_straggler(root: Path) -> None:
    data = run_distributed(root, "slow")

    (straggler,) = data.stragglers
    means = {row["rank"]: row["step_mean_us"] for row in data.ranks}
    assert straggler["rank"] == 1
    assert straggler["excess_pct"] == pytest.approx(100 * (means[1] / means[0] - 1))


def test_single_rank_run_and_unreadable_files(root: Path) -> None:
    (row,) = run_distributed(root, "sample").ranks
    assert (row["rank"], row["files"]) == (0, 2)
    assert row["comm_overlap_pct"] is None  # no NaN in what the page gets

    broken = run_distributed(root, "broken")
    assert len(broken.errors) == 1 and CORRUPT_FILE in broken.errors[0]
    assert broken.ranks == run_distributed(root, "sample").ranks


def test_bad_names_are_refused_and_results_cached(root: Path) -> None:
    with pytest.raises(ValueError):
        run_distributed(root, "../../etc")
    with pytest.raises(LookupError):
        run_distributed(root, "nope")
    first = run_distributed(root, "sample")
    assert run_distributed(root, "sample") is first
    shutil.copy(root / "two" / TWO_RANKS[1], root / "sample")
    assert [row["rank"] for row in run_distributed(root, "sample").ranks] == [0, 1]


# Figures ----------------------------------------------------------------------------------------

RANKS: list[dict[str, Any]] = [
    {"rank": 0, "step_mean_us": 1000.0, "step_median_us": 900.0, "step_max_us": 1500.0,
     "kernel_us": 600.0, "kernel_pct": 60.0, "other_us": 400.0, "other_pct": 40.0,
     "comm_kernel_us": 500.0, "comm_overlap_pct": 25.0},
    {"rank": 1, "step_mean_us": 2000.0, "step_median_us": 2100.0, "step_max_us": 2500.0,
     "kernel_us": 500.0, "kernel_pct": 25.0, "other_us": 1500.0, "other_pct": 75.0,
     "comm_kernel_us": 0.0, "comm_overlap_pct": None},
]  # fmt: skip


def test_rank_step_figure_puts_the_statistics_side_by_side() -> None:
    figure = rank_step_figure(RANKS, stragglers=[1])

    assert [t.name for t in figure.data] == list(STEP_STATS.values())
    assert figure.layout.barmode == "group"
    assert list(figure.data[0].x) == ["rank 0", "rank 1 (straggler)"]
    for trace, key in zip(figure.data, STEP_STATS, strict=True):
        assert list(trace.y) == [row[key] / 1000 for row in RANKS]


def test_rank_breakdown_figure_stacks_the_categories() -> None:
    figure = rank_breakdown_figure(RANKS)

    assert [t.name for t in figure.data] == list(CATEGORY_LABELS.values())
    assert figure.layout.barmode == "stack"
    kernel = figure.data[list(CATEGORY_LABELS).index("kernel")]
    assert list(kernel.y) == [0.6, 0.5] and list(kernel.customdata) == [60.0, 25.0]
    stacks = [sum(t.y[i] for t in figure.data) for i in range(2)]
    assert stacks == pytest.approx([row["step_mean_us"] / 1000 for row in RANKS])


def test_overlap_figure_shows_ranks_with_communication() -> None:
    (bars,) = overlap_figure(RANKS).data
    assert list(bars.x) == ["rank 0"] and list(bars.y) == [25.0]
    empty = overlap_figure(RANKS[1:])
    assert len(empty.data) == 0 and empty.layout.annotations[0].text == NO_COMMUNICATION


def test_figures_without_steps_say_so() -> None:
    untimed = [{"rank": 0, "step_mean_us": None, "comm_overlap_pct": None}]
    for figure in (rank_step_figure(untimed), rank_breakdown_figure(untimed)):
        assert len(figure.data) == 0 and figure.layout.annotations[0].text == NO_RANKS


# Layout, called directly ------------------------------------------------------------------------


def test_layout_names_the_straggler_and_its_lead(root: Path) -> None:
    data = run_distributed(root, "slow")
    (straggler,) = data.stragglers

    text = element(page_layout(root, run="slow"), "stragglers").children

    assert "rank 1" in text and f"{straggler['excess_pct']:.1f}% above" in text
    even = element(page_layout(root, run="two"), "stragglers").children
    assert even.startswith("No stragglers") and f"{STRAGGLER_PCT:.0f}%" in even


def test_layout_of_a_single_rank_says_so(root: Path) -> None:
    tree = page_layout(root, run="sample")
    assert "single rank (rank 0)" in element(tree, "rank-count").children
    assert "none" in element(tree, "stragglers").children
    assert element(tree, "rank-step-time") is not None


# Browser ----------------------------------------------------------------------------------------


@pytest.mark.browser
def test_distributed_page_of_the_two_rank_reference_run(dash_duo: Any, root: Path) -> None:
    open_path(dash_duo, root, "/distributed?run=two")
    dash_duo.wait_for_contains_text("#rank-count", "2 ranks", timeout=WAIT_S)
    data = run_distributed(root, "two")

    steps = figure_traces(dash_duo, "rank-step-time")
    assert [t["name"] for t in steps] == list(STEP_STATS.values())
    assert steps[0]["y"] == pytest.approx([row["step_mean_us"] / 1000 for row in data.ranks])
    breakdown = figure_traces(dash_duo, "rank-breakdown")
    assert len(breakdown) == len(CATEGORIES)
    kernel = next(t for t in breakdown if t["name"] == CATEGORY_LABELS["kernel"])
    assert kernel["y"] == pytest.approx([row["kernel_us"] / 1000 for row in data.ranks])
    (overlap,) = figure_traces(dash_duo, "rank-overlap")
    assert overlap["y"] == pytest.approx([row["comm_overlap_pct"] for row in data.ranks])
    assert dash_duo.find_element("#stragglers").text.startswith("No stragglers")
    assert grid_column(dash_duo, "rank-table", "rank") == ["0", "1"]
    means = grid_column(dash_duo, "rank-table", "step_mean_us")
    assert means == [f"{r['step_mean_us'] / 1000:,.2f}" for r in data.ranks]
    assert not dash_duo.find_element("#error-banner").is_displayed()
    assert dash_duo.get_logs() == []


@pytest.mark.browser
def test_distributed_page_of_the_sample_and_a_straggler(dash_duo: Any, root: Path) -> None:
    open_path(dash_duo, root, "/distributed?run=sample")
    dash_duo.wait_for_contains_text("#rank-count", "single rank", timeout=WAIT_S)
    (row,) = run_distributed(root, "sample").ranks
    steps = figure_traces(dash_duo, "rank-step-time")
    assert steps[0]["y"] == pytest.approx([row["step_mean_us"] / 1000])
    assert len(figure_traces(dash_duo, "rank-breakdown")) == len(CATEGORIES)
    note = plotly_data(dash_duo, "rank-overlap", "return d.length;")
    assert note == 0
    dash_duo.wait_for_contains_text("#rank-overlap", NO_COMMUNICATION, timeout=WAIT_S)

    dash_duo.wait_for_page(url=f"{dash_duo.server_url}/distributed?run=slow", timeout=WAIT_S)
    dash_duo.wait_for_contains_text("#stragglers", "Stragglers", timeout=WAIT_S)
    assert "rank 1" in dash_duo.find_element("#stragglers").text
    labels = plotly_data(dash_duo, "rank-step-time", "return Array.from(d[0].x);")
    assert labels == ["rank 0", "rank 1 (straggler)"]


@pytest.mark.browser
def test_distributed_page_banner_and_refusals(dash_duo: Any, root: Path) -> None:
    open_path(dash_duo, root, "/distributed?run=broken")
    dash_duo.wait_for_contains_text("#error-banner", CORRUPT_FILE, timeout=WAIT_S)
    assert "<b>" not in dash_duo.find_element("#error-banner").get_attribute("innerHTML")
    figure_traces(dash_duo, "rank-step-time")  # the readable windows still show

    dash_duo.wait_for_page(url=f"{dash_duo.server_url}/distributed?run=../../etc", timeout=WAIT_S)
    dash_duo.wait_for_contains_text("#run-refused", "../../etc", timeout=WAIT_S)
    dash_duo.wait_for_page(url=f"{dash_duo.server_url}/distributed?run=nope", timeout=WAIT_S)
    dash_duo.wait_for_contains_text("#run-unknown", "nope", timeout=WAIT_S)

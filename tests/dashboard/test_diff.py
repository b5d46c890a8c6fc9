"""The Diff page: its data, its figures, its layout and callback, and the page in Chromium."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import dash
import pytest
from dash import html

from dashboard.app import create_app
from dashboard.data.diff import other_runs, run_diff
from dashboard.figures.diff import (
    BASE,
    FASTER_COLOR,
    NEW,
    NO_CHANGES,
    SLOWER_COLOR,
    category_diff_figure,
    name_diff_figure,
)
from dashboard.figures.overview import CATEGORY_LABELS
from dashboard.figures.text import plain
from profiler.analysis.diff import diff_runs
from profiler.analysis.table import load
from tests.dashboard.browser import (
    WAIT_S,
    figure_traces,
    grid_column,
    open_path,
    pick,
    query_value,
    wait_for_url,
)
from tests.dashboard.runs import CORRUPT_FILE, PLAIN_FILE, SAMPLE, plain_trace
from tests.dashboard.test_distributed import element


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Runs: the sample, a copy of it, a one-op run, and the sample beside a corrupt file."""
    root = tmp_path / "traces"
    shutil.copytree(SAMPLE, root / "sample")
    shutil.copytree(SAMPLE, root / "sample_copy")
    (root / "plain").mkdir()
    (root / "plain" / PLAIN_FILE).write_text(json.dumps(plain_trace()))
    shutil.copytree(SAMPLE, root / "broken")
    (root / "broken" / CORRUPT_FILE).write_bytes(b"\x1f\x8b not <b>gzip</b>")
    return root


@pytest.fixture
def gpu_root(tmp_path: Path, reference_traces: Path) -> Path:
    """The reference before/after pair as two runs."""
    root = tmp_path / "gpu"
    for run, name in (("control", "diff_control.json.gz"), ("test", "diff_test.json.gz")):
        (root / run).mkdir(parents=True)
        shutil.copy(reference_traces / "hta" / name, root / run / name)
    return root


def diff_page() -> dict[str, Any]:
    return next(p for p in dash.page_registry.values() if p["path"] == "/diff")


def page_layout(root: Path, **query: str) -> html.Div:
    """The page's content for ``query``, called directly inside the app's context."""
    app = create_app(root)
    with app.server.app_context():
        return sys.modules[diff_page()["module"]].content(**query)


# Data -------------------------------------------------------------------------------------------


def test_run_diff_is_diff_runs_of_the_two_runs(root: Path) -> None:
    expected = diff_runs(load(root / "plain"), load(root / "sample"))

    result = run_diff(root, "plain", "sample")

    assert (result.base, result.new, result.errors) == ("plain", "sample", ())
    assert result.diff == expected
    assert result.diff is not None and result.diff["step_us"]["delta"] > 0


def test_two_copies_of_a_run_change_nothing(root: Path) -> None:
    result = run_diff(root, "sample", "sample_copy").diff
    assert result is not None
    assert result["steps"] == {"base": 6, "new": 6}
    assert result["step_us"]["delta"] == 0
    assert all(r["delta"] == 0 for r in result["categories"] + result["ops"])
    assert result["kernels"] == []  # CPU only


@pytest.mark.slow
def test_run_diff_of_the_reference_pair(gpu_root: Path) -> None:
    expected = diff_runs(load(gpu_root / "control"), load(gpu_root / "test"))
    result = run_diff(gpu_root, "control", "test")
    assert result.errors == () and result.diff == expected
    assert result.diff["kernels"]


def test_unreadable_files_are_named_with_their_run(root: Path) -> None:
    result = run_diff(root, "broken", "sample")

    assert result.errors == (f"broken/{CORRUPT_FILE}: {result.errors[0].split(': ', 1)[1]}",)
    assert result.diff == run_diff(root, "sample_copy", "sample").diff  # the rest compared


def test_bad_names_are_refused_and_pairs_cached(root: Path) -> None:
    for base, new in (("../../etc", "sample"), ("sample", "../../etc")):
        with pytest.raises(ValueError):
            run_diff(root, base, new)
    for base, new in (("nope", "sample"), ("sample", "nope")):
        with pytest.raises(LookupError):
            run_diff(root, base, new)
    first = run_diff(root, "plain", "sample")
    assert run_diff(root, "plain", "sample") is first
    assert run_diff(root, "sample", "plain") is not first
    (root / "plain" / PLAIN_FILE).write_text(json.dumps(plain_trace()) + " ")
    assert run_diff(root, "plain", "sample") is not first


def test_other_runs_are_every_run_but_this_one(root: Path) -> None:
    assert other_runs(root, "sample") == ("broken", "plain", "sample_copy")
    with pytest.raises(LookupError):
        other_runs(root, "nope")


# Figures ----------------------------------------------------------------------------------------

CATEGORIES: list[dict[str, Any]] = [
    {"category": "kernel", "base": 1000.0, "new": 1500.0, "delta": 500.0, "delta_pct": 50.0},
    {"category": "other", "base": 0.0, "new": 200.0, "delta": 200.0, "delta_pct": None},
]
OPS: list[dict[str, Any]] = [
    {"name": "aten::mm", "base": 100.0, "new": 50.0, "delta": -50.0, "delta_pct": -50.0},
    {"name": "<b>evil</b>", "base": 0.0, "new": 80.0, "delta": 80.0, "delta_pct": None},
    {"name": "aten::add", "base": 10.0, "new": 11.0, "delta": 1.0, "delta_pct": 10.0},
]


def test_category_diff_figure_puts_base_and_new_side_by_side() -> None:
    figure = category_diff_figure(CATEGORIES)

    assert [t.name for t in figure.data] == [BASE, NEW]
    assert figure.layout.barmode == "group"
    assert list(figure.data[0].x) == [CATEGORY_LABELS["kernel"], CATEGORY_LABELS["other"]]
    assert list(figure.data[0].y) == [1.0, 0.0] and list(figure.data[1].y) == [1.5, 0.2]
    assert "+500.0 µs" in figure.data[1].customdata[0]


def test_name_diff_figure_ranks_by_size_and_escapes_names() -> None:
    (bars,) = name_diff_figure(OPS, "Δ", n=2).data

    # The two largest changes by size, the largest on top (plotly draws bottom-up).
    assert list(bars.x) == [-50.0, 80.0]
    assert list(bars.y) == ["aten::mm", "&lt;b&gt;evil&lt;/b&gt;"]
    assert list(bars.marker.color) == [FASTER_COLOR, SLOWER_COLOR]
    assert bars.customdata[1][0] == plain("<b>evil</b>")


def test_diff_figures_without_rows_say_so() -> None:
    for figure in (category_diff_figure([]), name_diff_figure([], "Δ")):
        assert len(figure.data) == 0 and figure.layout.annotations[0].text == NO_CHANGES


# Layout and callback, called directly -----------------------------------------------------------


def test_without_a_base_the_page_asks_for_one(root: Path) -> None:
    tree = page_layout(root, run="sample")
    assert element(tree, "diff-pick-base") is not None
    picker = element(tree, "diff-base")
    assert picker.options == ["broken", "plain", "sample_copy"] and picker.value is None
    assert element(tree, "diff-categories") is None


@pytest.mark.parametrize(
    ("base", "notice"), [("../../etc", "base-refused"), ("nope", "base-unknown")]
)
def test_a_bad_base_gets_its_notice(root: Path, base: str, notice: str) -> None:
    tree = page_layout(root, run="sample", base=base)
    assert base in element(tree, notice).children
    assert element(tree, "diff-base") is not None and element(tree, "diff-categories") is None


def test_picking_a_base_keeps_the_run_in_the_url(root: Path) -> None:
    create_app(root)
    choose_base = sys.modules[diff_page()["module"]].choose_base

    search = choose_base("plain", "?run=sample%20copy&base=old")

    assert query_value(f"http://x/diff{search}", "run") == "sample copy"
    assert query_value(f"http://x/diff{search}", "base") == "plain"
    assert choose_base(None, "?run=sample") is dash.no_update


# Browser ----------------------------------------------------------------------------------------


def _category_ys(result: dict[str, Any], side: str) -> list[float]:
    return [row[side] / 1000 for row in result["categories"]]


@pytest.mark.browser
@pytest.mark.slow
def test_diff_page_of_the_reference_pair(dash_duo: Any, gpu_root: Path) -> None:
    open_path(dash_duo, gpu_root, "/diff?run=test&base=control")
    dash_duo.wait_for_contains_text("#diff-step", "Mean step", timeout=WAIT_S * 3)
    result = run_diff(gpu_root, "control", "test").diff
    assert result is not None

    base, new = figure_traces(dash_duo, "diff-categories")
    assert (base["name"], new["name"]) == (BASE, NEW)
    assert base["y"] == pytest.approx(_category_ys(result, "base"))
    assert new["y"] == pytest.approx(_category_ys(result, "new"))
    (ops,) = figure_traces(dash_duo, "diff-ops")
    assert len(ops["y"]) == min(15, len(result["ops"]))
    (kernels,) = figure_traces(dash_duo, "diff-kernels")
    assert len(kernels["y"]) > 0
    assert grid_column(dash_duo, "diff-ops-table", "name")[0] == result["ops"][0]["name"]
    delta = grid_column(dash_duo, "diff-ops-table", "delta")[0]
    assert delta == f"{result['ops'][0]['delta']:+,.1f}"
    assert not dash_duo.find_element("#error-banner").is_displayed()
    assert dash_duo.get_logs() == []


@pytest.mark.browser
def test_picking_a_base_updates_the_url_and_the_figure(dash_duo: Any, root: Path) -> None:
    open_path(dash_duo, root, "/diff?run=sample_copy")
    dash_duo.wait_for_element("#diff-pick-base", timeout=WAIT_S)

    pick(dash_duo, "#diff-base", "sample")

    url = wait_for_url(dash_duo, lambda url: query_value(url, "base") == "sample")
    assert query_value(url) == "sample_copy"
    dash_duo.wait_for_contains_text("#diff-step", "Mean step", timeout=WAIT_S)
    same = run_diff(root, "sample", "sample_copy").diff
    assert same is not None
    base, new = figure_traces(dash_duo, "diff-categories")
    assert base["y"] == pytest.approx(new["y"])
    assert new["y"] == pytest.approx(_category_ys(same, "new"))
    assert not dash_duo.find_elements("#diff-kernels")  # CPU only

    pick(dash_duo, "#diff-base", "plain")

    wait_for_url(dash_duo, lambda url: query_value(url, "base") == "plain")
    other = run_diff(root, "plain", "sample_copy").diff
    assert other is not None
    dash_duo.wait_for_contains_text("#diff-step", "in plain", timeout=WAIT_S)
    base, new = figure_traces(dash_duo, "diff-categories")
    assert base["y"] == pytest.approx(_category_ys(other, "base"))
    assert base["y"] != pytest.approx(new["y"])
    assert query_value(dash_duo.driver.current_url) == "sample_copy"
    assert dash_duo.get_logs() == []


@pytest.mark.browser
def test_bad_names_give_notices(dash_duo: Any, root: Path) -> None:
    open_path(dash_duo, root, "/diff?run=sample&base=../../etc")
    dash_duo.wait_for_contains_text("#base-refused", "../../etc", timeout=WAIT_S)
    for query, notice, name in (
        ("run=sample&base=nope", "base-unknown", "nope"),
        ("run=nope&base=sample", "run-unknown", "nope"),
        ("run=../../etc&base=sample", "run-refused", "../../etc"),
    ):
        dash_duo.wait_for_page(url=f"{dash_duo.server_url}/diff?{query}", timeout=WAIT_S)
        dash_duo.wait_for_contains_text(f"#{notice}", name, timeout=WAIT_S)
    dash_duo.wait_for_page(url=f"{dash_duo.server_url}/diff?run=broken&base=sample", timeout=WAIT_S)
    dash_duo.wait_for_contains_text("#error-banner", CORRUPT_FILE, timeout=WAIT_S)
    assert "<b>" not in dash_duo.find_element("#error-banner").get_attribute("innerHTML")
    figure_traces(dash_duo, "diff-categories")

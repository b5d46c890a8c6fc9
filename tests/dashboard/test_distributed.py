"""The Distributed page: its data, its figures, its text, and the page in headless Chromium."""

from __future__ import annotations

import gzip
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import dash
import pandas as pd
import pytest
from dash import html

from dashboard.app import create_app
from dashboard.data.distributed import run_alignment, run_distributed
from dashboard.figures.distributed import (
    MAX_BAR_RANKS,
    NO_COMMUNICATION,
    NO_RANKS,
    NO_STEPS,
    STEP_STATS,
    WAIT_LABEL,
    WORK_LABEL,
    overlap_figure,
    rank_breakdown_figure,
    rank_step_figure,
    wait_work_figure,
)
from dashboard.figures.overview import CATEGORY_LABELS
from profiler.analysis.distributed import STRAGGLER_PCT, analyze_traces, comm_comp_overlap
from profiler.analysis.rank_frames import wall_offset_us
from profiler.analysis.steps import CATEGORIES, step_breakdown
from profiler.analysis.table import load_trace
from tests.dashboard.browser import WAIT_S, figure_traces, grid_column, open_path, plotly_data
from tests.dashboard.runs import CORRUPT_FILE, SAMPLE

TWO_RANKS = ("two_ranks_rank-0.json.gz", "two_ranks_rank-1.json.gz")
# The straggler run: rank 1's clock reads 5 ms ahead, and it works 30 ms more before each
# all_reduce, which ends at the same moment on both ranks; rank 0 waits inside it.
STEP_US, AHEAD_US, WORK_US, EXTRA_US, STEPS = 48_000, 5_000, 10_000, 30_000, 3


def straggler_trace(rank: int, clock_us: float, work_us: float) -> dict[str, Any]:
    """A gloo rank's trace of :data:`STEPS` steps: work (an op), then an all_reduce that ends
    45 ms into the step on the common clock (``clock_us``: how far ahead the rank's clock is)."""
    events = []
    for step in range(1, STEPS + 1):
        start = 1_000_000 + (step - 1) * 50_000 + clock_us
        where = {"pid": 100 + rank, "tid": 1, "args": {}}
        events += [
            {"ph": "X", "cat": "user_annotation", "name": f"ProfilerStep#{step}", "ts": start,
             "dur": STEP_US, **where},
            {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": start + 100, "dur": work_us,
             **where},
            {"ph": "X", "cat": "user_annotation", "name": "gloo:all_reduce",
             "ts": start + 100 + work_us, "dur": 45_000 - 100 - work_us, **where},
        ]  # fmt: skip
    info = {"rank": rank, "world_size": 2}
    return {"schemaVersion": 1, "distributedInfo": info, "traceEvents": events}


def write_straggler_run(run_dir: Path) -> None:
    """Two ranks in ``run_dir``: rank 1 the straggler, on a clock :data:`AHEAD_US` ahead."""
    run_dir.mkdir(parents=True)
    for rank, clock_us, work_us in ((0, 0, WORK_US), (1, AHEAD_US, WORK_US + EXTRA_US)):
        trace = straggler_trace(rank, clock_us, work_us)
        path = run_dir / f"host_{rank}.1700000000000.pt.trace.json.gz"
        path.write_bytes(gzip.compress(json.dumps(trace).encode()))


@pytest.fixture
def root(tmp_path: Path, reference_traces: Path) -> Path:
    """Runs: the two-rank reference, a synthetic straggler, the sample, a corrupt file."""
    root = tmp_path / "traces"
    shutil.copytree(SAMPLE, root / "sample")
    (root / "two").mkdir()
    for name in TWO_RANKS:
        shutil.copy(reference_traces / "hta" / name, root / "two" / name)
    write_straggler_run(root / "slow")
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

    assert data.errors == ()
    assert [row["rank"] for row in data.ranks] == [0, 1]
    for name, row in zip(TWO_RANKS, data.ranks, strict=True):
        trace = load_trace(root / "two" / name)
        breakdown = step_breakdown(trace)
        assert row["steps"] == len(breakdown)
        assert row["step_mean_us"] == pytest.approx(breakdown["dur_us"].mean())
        assert row["kernel_us"] == pytest.approx(breakdown["kernel_us"].mean())
        overlap = comm_comp_overlap(trace)
        assert row["comm_overlap_pct"] == pytest.approx(overlap.overlap_pct)


def test_alignment_of_the_two_rank_reference_is_the_analysis(root: Path) -> None:
    aligned = run_alignment(root, "two")

    traces = [load_trace(root / "two" / name) for name in TWO_RANKS]
    report = analyze_traces(traces)
    assert aligned.files == ((0, TWO_RANKS[0]), (1, TWO_RANKS[1])) and aligned.ranks == (0, 1)
    assert aligned.clock_offset_us == report.clock_offset_us and aligned.method == "collectives"
    assert aligned.clock_offset_us[1] != 0  # the two hosts' clocks differ
    assert aligned.file_offsets_us == {
        name: wall_offset_us(trace) + report.clock_offset_us[trace.rank]
        for name, trace in zip(TWO_RANKS, traces, strict=True)
    }
    assert aligned.stragglers == report.stragglers == ()
    steps = aligned.steps
    assert len(steps) == sum(len(step_breakdown(trace)) for trace in traces)
    assert list(steps["work_us"] + steps["comm_wait_us"]) == pytest.approx(list(steps["dur_us"]))
    assert (steps["comm_wait_us"] > 0).all() and aligned.errors == aligned.warnings == ()


def test_the_rank_the_others_wait_for_is_the_straggler(root: Path) -> None:
    aligned = run_alignment(root, "slow")

    assert aligned.clock_offset_us == {0: 0.0, 1: pytest.approx(-AHEAD_US)}
    (straggler,) = aligned.stragglers
    assert straggler.rank == 1 and straggler.steps == tuple(range(1, STEPS + 1))
    assert straggler.excess_us == pytest.approx(EXTRA_US)
    assert straggler.excess_pct == pytest.approx(100 * EXTRA_US / STEP_US)
    assert straggler.category == "cpu_exec"
    waits = aligned.steps.groupby("rank")["comm_wait_us"].mean()
    assert waits[0] - waits[1] == pytest.approx(EXTRA_US)  # the fast rank waits for it
    # Every step is as long on both ranks: the mean step time cannot tell them apart.
    (row0, row1) = run_distributed(root, "slow").ranks
    assert row0["step_mean_us"] == row1["step_mean_us"]


def test_single_rank_run_and_unreadable_files(root: Path) -> None:
    (row,) = run_distributed(root, "sample").ranks
    assert (row["rank"], row["files"]) == (0, 2)
    assert row["comm_overlap_pct"] is None  # no NaN in what the page gets

    broken = run_distributed(root, "broken")
    assert len(broken.errors) == 1 and CORRUPT_FILE in broken.errors[0]
    assert broken.ranks == run_distributed(root, "sample").ranks
    aligned = run_alignment(root, "broken")
    assert len(aligned.errors) == 1 and CORRUPT_FILE in aligned.errors[0]
    assert aligned.ranks == (0,) and aligned.clock_offset_us == {0: 0.0}
    assert aligned.stragglers == () and len(aligned.files) == 2


def test_bad_names_are_refused_and_results_cached(root: Path) -> None:
    with pytest.raises(ValueError):
        run_distributed(root, "../../etc")
    with pytest.raises(LookupError):
        run_distributed(root, "nope")
    first = run_distributed(root, "sample")
    assert run_distributed(root, "sample") is first
    assert run_alignment(root, "sample") is run_alignment(root, "sample")
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
    empty = wait_work_figure(pd.DataFrame(columns=["rank", "step", "work_us", "comm_wait_us"]))
    assert len(empty.data) == 0 and empty.layout.annotations[0].text == NO_STEPS


def _steps(ranks: int, steps: int = 2) -> pd.DataFrame:
    """Rank r works (r + 1) ms and waits (10 - r) ms in step s, plus s ms of work."""
    rows = [
        {"rank": r, "step": s, "work_us": 1000.0 * (r + 1 + s), "comm_wait_us": 1000.0 * (10 - r)}
        for r in range(ranks)
        for s in range(1, steps + 1)
    ]
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # any order in, steps in order out


def test_wait_work_figure_stacks_wait_on_work_per_rank_and_step() -> None:
    figure = wait_work_figure(_steps(2), stragglers=[1])

    names = [t.name for t in figure.data]
    assert names == [
        f"rank 0 {WORK_LABEL}", f"rank 0 {WAIT_LABEL}",
        f"rank 1 (straggler) {WORK_LABEL}", f"rank 1 (straggler) {WAIT_LABEL}",
    ]  # fmt: skip
    work0, wait0, work1, wait1 = figure.data
    assert list(work0.x) == ["step 1", "step 2"] and list(work0.y) == [2.0, 3.0]
    assert list(wait0.y) == [10.0, 10.0] and list(wait0.base) == list(work0.y)  # wait on top
    assert list(work1.y) == [3.0, 4.0] and list(wait1.y) == [9.0, 9.0]
    assert work0.offsetgroup == wait0.offsetgroup != work1.offsetgroup
    assert work1.marker.color != work0.marker.color


def test_wait_work_figure_of_many_ranks_is_a_heatmap_of_the_wait_share() -> None:
    ranks = MAX_BAR_RANKS + 1
    (heat,) = wait_work_figure(_steps(ranks), stragglers=[3]).data

    assert heat.type == "heatmap" and len(heat.y) == ranks and "rank 3 (straggler)" in heat.y
    assert list(heat.x) == ["step 1", "step 2"]
    assert heat.z[2][0] == pytest.approx(100 * 8 / (4 + 8))  # rank 2, step 1: wait over step


# Layout, called directly ------------------------------------------------------------------------


def test_layout_names_the_straggler_its_steps_and_its_lead(root: Path) -> None:
    tree = page_layout(root, run="slow")

    text = element(tree, "stragglers").children
    assert text.startswith(f"Rank 1 is a straggler in {STEPS} of {STEPS} steps (step 1, 2, 3)")
    assert f"waited {EXTRA_US / 1000:,.2f} ms per step" in text
    assert f"{100 * EXTRA_US / STEP_US:.1f}% of its step" in text
    assert CATEGORY_LABELS["cpu_exec"] in text
    offsets = element(tree, "clock-offsets").children
    assert "aligned on the ends of the collectives" in offsets
    assert f"rank 1 {-AHEAD_US / 1000:+,.3f} ms" in offsets
    assert element(tree, "rank-wait-work") is not None
    link = element(tree, "straggler-timeline")
    assert link.href == "/timeline?run=slow&file=ranks%200-1" and "rank 1" in link.children
    even_tree = page_layout(root, run="two")
    even = element(even_tree, "stragglers").children
    assert even.startswith("No stragglers") and f"{STRAGGLER_PCT:.0f}%" in even
    assert element(even_tree, "straggler-timeline") is None


def test_layout_says_which_ranks_stay_on_their_own_clocks(root: Path) -> None:
    (root / "unmatched").mkdir()
    for rank, op in ((0, "all_reduce"), (1, "broadcast")):  # no collective in common
        trace = straggler_trace(rank, AHEAD_US * rank, WORK_US)
        for event in trace["traceEvents"]:
            event["name"] = event["name"].replace("all_reduce", op)
        (root / "unmatched" / f"h_{rank}.1.pt.trace.json").write_text(json.dumps(trace))

    text = element(page_layout(root, run="unmatched"), "clock-offsets").children

    assert run_alignment(root, "unmatched").method == "wall_clock"
    assert "not all aligned: no collective of rank(s) 1 matches rank 0's" in text
    assert "rank 1 +0.000 ms" in text


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
    steps = run_alignment(root, "two").steps.sort_values(["rank", "step"])
    drawn = {t["name"]: t["y"] for t in figure_traces(dash_duo, "rank-wait-work")}
    for rank, mine in steps.groupby("rank"):
        assert drawn[f"rank {rank} {WORK_LABEL}"] == pytest.approx(list(mine["work_us"] / 1000))
        assert drawn[f"rank {rank} {WAIT_LABEL}"] == pytest.approx(
            list(mine["comm_wait_us"] / 1000)
        )
    assert "rank 1 -0." in dash_duo.find_element("#clock-offsets").text
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
    dash_duo.wait_for_contains_text("#stragglers", "Rank 1 is a straggler", timeout=WAIT_S)
    assert f"waited {EXTRA_US / 1000:,.2f} ms per step" in dash_duo.find_element("#stragglers").text
    labels = plotly_data(dash_duo, "rank-step-time", "return Array.from(d[0].x);")
    assert labels == ["rank 0", "rank 1 (straggler)"]
    drawn = {t["name"]: t["y"] for t in figure_traces(dash_duo, "rank-wait-work")}
    late = drawn[f"rank 1 (straggler) {WORK_LABEL}"]
    assert [a - b for a, b in zip(late, drawn[f"rank 0 {WORK_LABEL}"], strict=True)] == (
        pytest.approx([EXTRA_US / 1000] * STEPS)
    )
    assert f"rank 1 {-AHEAD_US / 1000:+,.3f} ms" in dash_duo.find_element("#clock-offsets").text

    dash_duo.find_element("#straggler-timeline").click()
    dash_duo.wait_for_contains_text("#timeline-status", "2 ranks on one clock", timeout=WAIT_S)
    labels = plotly_data(dash_duo, "timeline", "return document.querySelector("
                         "'#timeline .js-plotly-plot')._fullLayout.yaxis.ticktext;")  # fmt: skip
    assert {label.split(" · ")[0] for label in labels} == {"rank 0", "rank 1"}
    # On the common clock the all_reduce of step 1 ends at the same x on both ranks.
    ends = plotly_data(
        dash_duo,
        "timeline",
        "return d.flatMap(t => Array.from(t.hovertext).map((h, i) => [h, t.x[i], t.y[i]]))"
        ".filter(p => p[0] && p[0].startsWith('gloo:all_reduce'));",
    )
    first_end = {}
    for _, x, y in ends[2::3]:  # each segment's end point
        first_end.setdefault(int(y), x)
    assert len(first_end) == 2
    assert min(first_end.values()) == pytest.approx(max(first_end.values()), abs=1e-3)


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

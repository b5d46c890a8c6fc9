"""The Timeline page: its figure, its status and details, its data, and the page in Chromium."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import dash
import numpy as np
import pandas as pd
import pytest
from selenium.webdriver.support.ui import WebDriverWait

from dashboard.app import create_app
from dashboard.components.timeline import (
    WHOLE,
    details_panel,
    match_text,
    status_text,
    x_window,
)
from dashboard.data.distributed import run_alignment
from dashboard.data.timeline import (
    RANKS_PER_VIEW,
    run_event,
    run_rank_groups,
    run_ranks_timeline,
    run_steps,
    run_timeline,
    run_trace_files,
    trace_file,
)
from dashboard.figures.text import plain
from dashboard.figures.timeline import (
    DIMMED_OPACITY,
    MAX_HEIGHT_PX,
    MIN_HEIGHT_PX,
    NO_EVENTS,
    RANKS_AXIS,
    STEP_BAND_COLOR,
    figure_height,
    ranks_timeline_figure,
    search_matches,
    step_bands,
    timeline_figure,
    to_ms,
    to_us,
)
from profiler.analysis.table import load_trace
from profiler.analysis.timeline import prepare_timeline, timeline_view
from profiler.analysis.timeline_details import event_details
from profiler.analysis.timeline_ranks import RankTrace, ranks_view
from tests.conftest import REFERENCE_TRACES
from tests.dashboard.browser import WAIT_S, open_path, pick, plotly_data
from tests.dashboard.runs import SAMPLE
from tests.dashboard.test_distributed import straggler_trace

HTA = REFERENCE_TRACES / "hta"
TRICKY = "<b>bold</b> & co"
CLICK_HINT = "Click an event for its details."  # the empty details panel, as the page says it


TWO_RANKS = tuple(f"two_ranks_rank-{rank}.json.gz" for rank in (0, 1))


def _trace(events: list[dict[str, Any]], rank: int | None = None) -> dict[str, Any]:
    trace: dict[str, Any] = {"schemaVersion": 1, "traceEvents": events}
    if rank is not None:
        trace["distributedInfo"] = {"rank": rank}
    return trace


def _op(name: str, ts: float, dur: float, tid: int = 1) -> dict[str, Any]:
    return {"ph": "X", "cat": "cpu_op", "name": name, "pid": 1, "tid": tid, "ts": ts, "dur": dur}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The sample run, two reference GPU traces and a run with a tricky name."""
    root = tmp_path / "traces"
    shutil.copytree(SAMPLE, root / "sample")
    (root / "tricky").mkdir()
    events = [_op("outer", 0, 100), _op(TRICKY, 10, 20)]
    (root / "tricky" / "w.1.pt.trace.json").write_text(json.dumps(_trace(events)))
    for name in ("two_ranks_rank-0", "diff_control"):
        (root / "reference" / name).mkdir(parents=True)
        shutil.copy(HTA / f"{name}.json.gz", root / "reference" / name)
    (root / "ranks").mkdir()
    for name in TWO_RANKS:
        shutil.copy(HTA / name, root / "ranks")
    return root


def _many_ranks(run_dir: Path, ranks: int, windows: int) -> None:
    """``ranks`` ranks of ``windows`` one-op windows each, rank 3's second window missing."""
    run_dir.mkdir()
    for rank in range(ranks):
        for window in range(windows):
            if (rank, window) == (3, 1):
                continue
            trace = _trace([_op(f"op{rank}.{window}", 1000.0 * window, 10)], rank)
            name = f"host_{rank:02d}.{1700000000000 + window}.pt.trace.json"
            (run_dir / name).write_text(json.dumps(trace))


def _reference(root: Path, name: str) -> Path:
    return root / "reference" / name / f"{name}.json.gz"


# Figure ----------------------------------------------------------------------------------------


def test_exact_figure_draws_each_event_as_a_segment_with_its_row(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps(_trace([_op("outer", 0, 100), _op(TRICKY, 10, 20, tid=2)])))
    view = timeline_view(load_trace(path))

    figure = timeline_figure(view, revision="t.json")

    (cpu,) = figure["data"]
    assert cpu["type"] == "scattergl" and cpu["name"] == "cpu_op (2)"
    rows = [r for r in cpu["customdata"] if r is not None]
    assert rows == [r for r in view.shapes["row"] for _ in range(3)]
    assert cpu["x"][:4] == [0.0, 0.05, 0.1, None]  # ms from the first event: start, middle, end
    assert cpu["y"][4] == 1.0  # second lane
    assert all("<b>" not in text for text in cpu["hovertext"] if text)
    assert plain(TRICKY) in cpu["hovertext"][4]
    layout = figure["layout"]
    assert layout["uirevision"] == "t.json"
    assert layout["yaxis"]["ticktext"] == [plain(lane.label) for lane in view.lanes]


def test_aggregated_figure_draws_bins_by_busy_fraction() -> None:
    trace = load_trace(_first(SAMPLE))
    view = timeline_view(trace, max_shapes=40)
    assert view.aggregated

    figure = timeline_figure(view)

    assert [t["name"].split(" (")[0] for t in figure["data"]] == [
        "busy 0-25%", "busy 25-50%", "busy 50-75%", "busy 75-100%",
    ]  # fmt: skip
    drawn = sum(len([x for x in t["x"] if x is not None]) // 3 for t in figure["data"])
    assert drawn == view.shape_count
    assert all(r is None for t in figure["data"] for r in t["customdata"])
    busy = view.shapes["busy_us"].to_numpy() / view.bin_us
    full = [t for t in figure["data"] if t["name"].startswith("busy 75-100%")][0]
    assert len([x for x in full["x"] if x is not None]) // 3 == int((busy > 0.75).sum())


def _rows(trace: dict[str, Any]) -> list[int]:
    """The event rows a trace draws, one per segment."""
    return [r for r in trace["customdata"][::4]]


def test_search_outlines_the_matching_events_and_dims_the_rest() -> None:
    trace = load_trace(_first(SAMPLE))
    view = timeline_view(trace)
    names = view.shapes.set_index("row")["name"]
    wanted = {row for row, name in names.items() if "addmm" in str(name).lower()}
    assert 0 < len(wanted) < len(names)

    figure = timeline_figure(view, search=" AddMM ")

    rims = [t for t in figure["data"] if t["name"].startswith("matching")]
    assert [t["name"] for t in rims] == [f'matching "AddMM" ({len(wanted):,})']
    assert set(_rows(rims[0])) == wanted and rims[0]["hoverinfo"] == "skip"
    dimmed = [t for t in figure["data"] if t.get("opacity") == DIMMED_OPACITY]
    bright = figure["data"][figure["data"].index(rims[0]) + 1 :]
    assert {r for t in bright for r in _rows(t)} == wanted
    assert {r for t in dimmed for r in _rows(t)} == set(names.index) - wanted
    assert all(t["line"]["width"] < rims[0]["line"]["width"] for t in bright)
    assert int(search_matches(view, "ADDMM").sum()) == len(wanted)


def test_a_blank_search_or_an_aggregated_view_highlights_nothing() -> None:
    trace = load_trace(_first(SAMPLE))
    exact, binned = timeline_view(trace), timeline_view(trace, max_shapes=40)
    assert search_matches(exact, "  ") is None and search_matches(binned, "addmm") is None
    assert timeline_figure(exact, search="  ") == timeline_figure(exact)
    assert timeline_figure(binned, search="addmm") == timeline_figure(binned)
    assert search_matches(exact, "no such op").sum() == 0
    assert match_text("", None) == "" and match_text(" ", 3) == ""
    assert match_text("mm", 1234) == '1,234 events in view match "mm".'
    assert "zoom in" in match_text("mm", None)


def _step(number: int, ts: float, dur: float, gpu: bool = False) -> dict[str, Any]:
    if not gpu:
        return {**_op(f"ProfilerStep#{number}", ts, dur), "cat": "user_annotation"}
    return {
        "ph": "X", "cat": "gpu_user_annotation", "name": f"ProfilerStep#{number}", "pid": 0,
        "tid": 7, "ts": ts, "dur": dur, "args": {"device": 0, "stream": 7},
    }  # fmt: skip


def test_steps_are_the_host_profiler_step_ranges_in_time_order(tmp_path: Path) -> None:
    (tmp_path / "steps").mkdir()
    events = [
        _step(4, 0, 100), _op("a", 10, 20), _step(5, 100, 50), _step(6, 150, 30, ),
        _step(5, 120, 200, gpu=True),  # Kineto's copy on a GPU stream: not the step's range
        _op("ProfilerStep#x", 5, 1), _op("ProfilerStep#6", 150, 40, tid=2),  # the same step
    ]  # fmt: skip
    (tmp_path / "steps" / "w.1.pt.trace.json").write_text(json.dumps(_trace(events)))

    steps = run_steps(tmp_path, "steps", None)

    assert not isinstance(steps, str)
    assert steps.to_dict("list") == {
        "step": [4, 5, 6], "start_us": [0.0, 100.0, 150.0], "end_us": [100.0, 150.0, 190.0],
    }  # fmt: skip
    sample = run_steps(SAMPLE.parent, SAMPLE.name, _first(SAMPLE).name)
    trace_events = load_trace(_first(SAMPLE)).events
    names = trace_events["name"].astype(str)
    assert not isinstance(sample, str) and len(sample) > 1
    assert sorted(sample["step"]) == sorted(
        int(n.removeprefix("ProfilerStep#")) for n in names if n.startswith("ProfilerStep#")
    )


def test_steps_are_shaded_every_other_one_and_each_numbered() -> None:
    trace = load_trace(_first(SAMPLE))
    view = timeline_view(trace)
    origin = view.span_us[0]
    steps = pd.DataFrame(
        {"step": [7, 8, 9], "start_us": origin + np.array([0.0, 1000.0, 3000.0]),
         "end_us": origin + np.array([1000.0, 3000.0, 3500.0])}
    )  # fmt: skip

    layout = timeline_figure(view, steps=steps)["layout"]

    assert [(b["x0"], b["x1"]) for b in layout["shapes"]] == [(0.0, 1.0), (3.0, 3.5)]
    assert {b["fillcolor"] for b in layout["shapes"]} == {STEP_BAND_COLOR}
    assert all(b["layer"] == "below" for b in layout["shapes"])
    assert [(a["text"], a["x"]) for a in layout["annotations"]] == [
        ("step 7", 0.5), ("step 8", 2.0), ("step 9", 3.25)
    ]  # fmt: skip
    assert (layout["shapes"], layout["annotations"]) == step_bands(view, steps)
    assert "shapes" not in timeline_figure(view, steps=steps.iloc[:0])["layout"]


def test_height_grows_with_lanes_between_a_floor_and_a_cap() -> None:
    heights = [figure_height(lanes) for lanes in range(0, 200)]
    assert heights[0] == heights[1] == MIN_HEIGHT_PX
    assert heights[-1] == MAX_HEIGHT_PX
    assert heights == sorted(heights)
    grows = [h for h in heights if MIN_HEIGHT_PX < h < MAX_HEIGHT_PX]
    assert len(grows) > 10 and len(set(grows)) == len(grows)
    view = timeline_view(load_trace(_first(SAMPLE)))
    assert timeline_figure(view)["layout"]["height"] == figure_height(len(view.lanes))


def test_figure_of_a_trace_without_events_says_so(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps(_trace([])))
    figure = timeline_figure(timeline_view(load_trace(path)))
    assert figure["data"] == [] and figure["layout"]["annotations"][0]["text"] == NO_EVENTS


def test_ranks_figure_draws_each_ranks_lanes_as_a_group_on_the_common_clock(
    tmp_path: Path,
) -> None:
    indexes = []
    for rank, tids in ((0, (1,)), (1, (1, 2))):
        path = tmp_path / f"r{rank}.json"
        path.write_text(json.dumps(_trace([_op(f"op{tid}", 0, 100, tid) for tid in tids], rank)))
        indexes.append(prepare_timeline(load_trace(path)))
    traces = [
        RankTrace(0, "rank 0", indexes[0], 0.0, "r0.json", 0.0),
        RankTrace(1, "rank 1", indexes[1], 2000.0, "r1.json", 1500.0),
    ]

    figure = ranks_timeline_figure(ranks_view(traces), revision="ranks 0-1")

    (cpu,) = figure["data"]
    assert cpu["x"][0::4] == [0.0, 2.0, 2.0]  # rank 1's ops 2 ms later on the common clock
    assert cpu["y"][0::4] == [0.0, 1.0, 2.0]
    layout = figure["layout"]
    labels = layout["yaxis"]["ticktext"]
    assert [label.split(" · ")[0] for label in labels] == ["rank 0", "rank 1", "rank 1"]
    assert [shape["y0"] for shape in layout["shapes"]] == [1 - 0.3]  # between the two ranks
    notes = [note["text"] for note in layout["annotations"]]
    assert notes == ["rank 0 (clock offset +0.0 µs)", "rank 1 (clock offset +1,500.0 µs)"]
    assert layout["xaxis"]["title"]["text"] == RANKS_AXIS and layout["uirevision"] == "ranks 0-1"
    assert ranks_timeline_figure(ranks_view([]))["data"] == []


def test_ms_and_us_convert_both_ways() -> None:
    view = timeline_view(load_trace(_first(SAMPLE)))
    assert to_us(view, to_ms(view, view.span_us[0] + 1234.5)) == pytest.approx(
        view.span_us[0] + 1234.5
    )


# Status, relayout, details ---------------------------------------------------------------------


def test_status_says_exact_or_aggregated() -> None:
    trace = load_trace(_first(SAMPLE))
    exact, binned = timeline_view(trace), timeline_view(trace, max_shapes=40)
    assert status_text(exact) == f"{len(trace.events):,} events drawn exactly"
    text = status_text(binned)
    assert text.startswith(f"aggregated: {len(trace.events):,} events in {binned.shape_count:,}")
    assert "zoom in" in text


def test_x_window_reads_plotlys_relayout_events() -> None:
    assert x_window({"xaxis.range[0]": 5, "xaxis.range[1]": 2.5}) == (2.5, 5.0)
    assert x_window({"xaxis.range": [1, 2]}) == (1.0, 2.0)
    assert x_window({"xaxis.autorange": True}) == WHOLE
    assert x_window({"autosize": True}) is None and x_window(None) is None


def test_details_panel_is_text() -> None:
    trace = load_trace(_first(SAMPLE))
    row = int(trace.events.index[trace.events["name"] == "aten::addmm"][0])
    details = event_details(trace, row)

    panel = details_panel(details, float(trace.events["ts_us"].min()))

    texts = _texts(panel)
    assert "aten::addmm" in texts
    assert any(t.startswith("nn.Module: classifier") for t in texts)  # a stack line
    assert details.args["input_dims"] in texts


def _texts(component: Any) -> list[str]:
    """Every string in a component tree, depth first."""
    if isinstance(component, str):
        return [component]
    children = getattr(component, "children", None)
    children = children if isinstance(children, list) else [children] if children else []
    return [text for child in children for text in _texts(child)]


# Data ------------------------------------------------------------------------------------------


def test_run_files_and_the_view_of_each(root: Path) -> None:
    files = run_trace_files(root, "sample")
    assert list(files) == sorted(p.name for p in SAMPLE.glob("*.json.gz"))
    for file in files:
        trace = load_trace(SAMPLE / file)
        view = run_timeline(root, "sample", file)
        assert not isinstance(view, str)
        assert view.event_count == len(trace.events)
        assert set(view.shapes["row"]) == set(trace.events.index)
    first = run_timeline(root, "sample")
    assert not isinstance(first, str) and first.event_count == len(
        load_trace(SAMPLE / files[0]).events
    )
    assert run_timeline(root, "sample", files[0]) is run_timeline(root, "sample", files[0])


def test_run_timeline_zooms(root: Path) -> None:
    trace = load_trace(_first(SAMPLE))
    start_us = float(trace.events["ts_us"].min()) + 1000.0
    end_us = start_us + 2000.0
    events = trace.events
    expected = set(events.index[(events["ts_us"] <= end_us) & (events["end_us"] >= start_us)])

    view = run_timeline(root, "sample", _first(SAMPLE).name, start_us, end_us)

    assert not isinstance(view, str) and set(view.shapes["row"]) == expected


@pytest.mark.parametrize("file", ["../x", "../sample/" + "x.json", "/etc/passwd", "..", ""])
def test_file_names_outside_the_run_are_refused(root: Path, file: str) -> None:
    with pytest.raises(ValueError):
        run_timeline(root, "sample", file)
    with pytest.raises(ValueError):
        run_event(root, "sample", file, 0)


def test_unknown_files_runs_and_rows_are_lookup_errors(root: Path) -> None:
    with pytest.raises(LookupError):
        trace_file(root, "sample", "nope.json")
    with pytest.raises(LookupError):
        run_trace_files(root, "nope")
    with pytest.raises(ValueError):
        run_trace_files(root, "../..")
    with pytest.raises(LookupError):
        run_event(root, "sample", None, 10**9)


def test_run_event_is_event_details_of_the_file(root: Path) -> None:
    path = _reference(root, "two_ranks_rank-0")
    trace = load_trace(path)
    row = int(trace.events.index[trace.events["name"] == "cudaLaunchKernel"][3])

    details = run_event(root, "reference/two_ranks_rank-0", path.name, row)

    assert details == event_details(trace, row, index=prepare_timeline(trace))


def test_a_two_rank_run_is_one_group_on_the_aligned_clock(root: Path) -> None:
    aligned = run_alignment(root, "ranks")
    traces = [load_trace(root / "ranks" / name) for name in TWO_RANKS]

    (group,) = run_rank_groups(root, "ranks")
    view = run_ranks_timeline(root, "ranks", group.key)

    assert group.key == "ranks 0-1" and group.files == ((0, TWO_RANKS[0]), (1, TWO_RANKS[1]))
    assert group.shifts_us == tuple(aligned.file_offsets_us[name] for name in TWO_RANKS)
    assert group.clock_offsets_us == (0.0, aligned.clock_offset_us[1])
    assert not isinstance(view, str) and not view.view.aggregated
    assert view.view.event_count == sum(len(trace.events) for trace in traces)
    for lane_group, trace, shift in zip(view.groups, traces, group.shifts_us, strict=True):
        assert lane_group.file == f"two_ranks_rank-{trace.rank}.json.gz"
        lanes = view.view.lanes[lane_group.first_lane : lane_group.first_lane + lane_group.lanes]
        assert all(lane.label.startswith(f"rank {trace.rank} · ") for lane in lanes)
        mine = view.view.shapes[view.view.shapes["lane"].between(
            lane_group.first_lane, lane_group.first_lane + lane_group.lanes - 1
        )].set_index("row")  # fmt: skip
        expected = trace.events.loc[mine.index, "ts_us"] + shift
        assert list(mine["start_us"]) == pytest.approx(list(expected))
    assert run_ranks_timeline(root, "ranks", group.key) is view  # the whole view is cached
    assert run_rank_groups(root, "sample") == ()  # one rank, two windows: no group
    binned = run_ranks_timeline(root, "ranks", group.key, max_shapes=500)
    assert not isinstance(binned, str) and binned.view.aggregated
    assert binned.view.shape_count <= 500


def test_many_ranks_are_drawn_a_bounded_group_at_a_time(root: Path) -> None:
    ranks, windows = RANKS_PER_VIEW + 2, 2
    _many_ranks(root / "many", ranks, windows)

    groups = run_rank_groups(root, "many")

    assert [g.key for g in groups] == [
        f"ranks 0-{RANKS_PER_VIEW - 1} window 1", f"ranks {RANKS_PER_VIEW}-{ranks - 1} window 1",
        f"ranks 0-{RANKS_PER_VIEW} window 2", f"ranks {ranks - 1} window 2",
    ]  # fmt: skip
    assert all(len(g.files) <= RANKS_PER_VIEW for g in groups)
    drawn = sorted(file for g in groups for _, file in g.files)
    assert drawn == sorted(run_trace_files(root, "many"))
    for group in groups:
        view = run_ranks_timeline(root, "many", group.key)
        assert not isinstance(view, str)
        assert [g.rank for g in view.groups] == [rank for rank, _ in group.files]
        names = set(view.view.shapes["name"])
        assert names == {f"op{rank}.{group.window}" for rank, _ in group.files}
    with pytest.raises(LookupError):
        run_ranks_timeline(root, "many", "ranks 0-99")


def test_an_unreadable_file_is_a_message(root: Path) -> None:
    (root / "sample" / "bad.pt.trace.json.gz").write_bytes(b"\x1f\x8b not gzip")
    message = run_timeline(root, "sample", "bad.pt.trace.json.gz")
    assert isinstance(message, str) and "bad.pt.trace.json.gz" in message


# Page and callbacks, called directly --------------------------------------------------------


def _page_module(root: Path) -> Any:
    app = create_app(root)
    page = next(p for p in dash.page_registry.values() if p["path"] == "/timeline")
    return app, sys.modules[page["module"]]


def _element(tree: Any, element_id: str) -> Any:
    if getattr(tree, "id", None) == element_id:
        return tree
    children = getattr(tree, "children", None)
    for child in children if isinstance(children, list) else [children]:
        found = _element(child, element_id) if child is not None else None
        if found is not None:
            return found
    return None


@pytest.mark.parametrize(
    ("file", "notice"),
    [("../x", "file-refused"), ("a/b.json", "file-refused"), ("no.json", "file-unknown")],
)
def test_layout_refuses_files_outside_the_run(root: Path, file: str, notice: str) -> None:
    app, page = _page_module(root)
    with app.server.app_context():
        tree = page.content(run="sample", file=file)
    assert file in _element(tree, notice).children
    assert _element(tree, "timeline") is None


def test_layout_shows_the_picked_file(root: Path) -> None:
    files = run_trace_files(root, "sample")
    app, page = _page_module(root)
    with app.server.app_context():
        tree = page.content(run="sample", file=files[1])
    assert _element(tree, "timeline-file").value == files[1]
    assert [o["value"] for o in _element(tree, "timeline-file").options] == list(files)
    events = load_trace(root / "sample" / files[1]).events
    assert _element(tree, "timeline-status").children == f"{len(events):,} events drawn exactly"


def test_layout_shades_and_numbers_the_files_steps(root: Path) -> None:
    file = _first(SAMPLE).name
    steps = run_steps(root, "sample", file)
    app, page = _page_module(root)
    with app.server.app_context():
        tree = page.content(run="sample", file=file)
    layout = _element(tree, "timeline").figure["layout"]
    assert not isinstance(steps, str) and len(steps) > 1
    assert [a["text"] for a in layout["annotations"]] == [f"step {n}" for n in steps["step"]]
    assert len(layout["shapes"]) == (len(steps) + 1) // 2


def test_layout_opens_on_the_step_a_link_names(root: Path) -> None:
    """The Steps page links a slow step's window with ``step=N``: the Timeline opens zoomed
    onto that step's ``ProfilerStep#N`` (its events only), and whole for a step the file lacks."""
    file = _first(SAMPLE).name
    steps = run_steps(root, "sample", file)
    assert not isinstance(steps, str) and len(steps) > 1
    step = steps.iloc[1]
    number = int(step["step"])
    app, page = _page_module(root)
    with app.server.app_context():
        whole = page.content(run="sample", file=file)
        zoomed = page.content(run="sample", file=file, step=str(number))
        absent = page.content(run="sample", file=file, step="99999")
    # The range is the step's own: centred where the whole view numbers it, as long as it is.
    label = f"step {number}"
    whole_layout = _element(whole, "timeline").figure["layout"]
    centre = next(a["x"] for a in whole_layout["annotations"] if a["text"] == label)
    x_range = _element(zoomed, "timeline").figure["layout"]["xaxis"]["range"]
    assert sum(x_range) / 2 == pytest.approx(centre)
    assert x_range[1] - x_range[0] == pytest.approx((step["end_us"] - step["start_us"]) / 1000)
    count = lambda tree: int(_element(tree, "timeline-status").children.split()[0].replace(",", ""))  # noqa: E731
    assert 0 < count(zoomed) < count(whole)
    assert "range" not in _element(absent, "timeline").figure["layout"]["xaxis"]
    assert count(absent) == count(whole)


def test_layout_of_an_unreadable_file_shows_the_banner(root: Path) -> None:
    (root / "broken").mkdir()
    (root / "broken" / "w.1.pt.trace.json.gz").write_bytes(b"\x1f\x8b <b>not gzip</b>")
    app, page = _page_module(root)
    with app.server.app_context():
        tree = page.content(run="broken")
    banner = _element(tree, "error-banner")
    assert getattr(banner, "hidden", False) is False
    assert "w.1.pt.trace.json.gz" in str(banner.children)
    assert _element(tree, "timeline-file").value == "w.1.pt.trace.json.gz"


def test_show_event_fills_the_details_of_the_clicked_row(root: Path) -> None:
    files = run_trace_files(root, "sample")
    events = load_trace(root / "sample" / files[0]).events
    row = int(events.index[events["name"] == "aten::addmm"][0])
    app, page = _page_module(root)
    with app.server.app_context():
        panel, flow = page.show_event({"points": [{"customdata": row}]}, files[0], "?run=sample")
        binned, _ = page.show_event({"points": [{"customdata": None}]}, files[0], "?run=sample")
    assert _element(panel, "event-name").children == "aten::addmm"
    assert flow == {"file": files[0], "flows": []}  # an op: no flow of its own
    assert "zoom in" in binned


def test_a_run_of_several_ranks_opens_on_them_and_clicks_find_each_ranks_event(
    root: Path,
) -> None:
    (group,) = run_rank_groups(root, "ranks")
    view = run_ranks_timeline(root, "ranks", group.key)
    assert not isinstance(view, str)
    one = view.groups[1]
    events = load_trace(root / "ranks" / one.file).events
    row = int(events.index[events["name"] == "cudaLaunchKernel"][0])
    app, page = _page_module(root)
    with app.server.app_context():
        tree = page.content(run="ranks")
        panel, flow = page.show_event(
            {"points": [{"customdata": row, "y": one.first_lane + 1.2}]}, group.key, "?run=ranks"
        )
        patch = page.draw_flow(flow, group.key, "?run=ranks")
        zoomed = page._view_of(root, "ranks", group.key, (10.0, 12.0))
    dropdown = _element(tree, "timeline-file")
    assert dropdown.value == group.key
    assert [o["value"] for o in dropdown.options] == [group.key, *TWO_RANKS]
    status = _element(tree, "timeline-status").children
    assert status == f"2 ranks on one clock; {view.view.event_count:,} events drawn exactly"
    assert _element(panel, "event-name").children == "cudaLaunchKernel"
    assert "[4045]" in str(panel)  # rank 1's process, not rank 0's
    ((launch, kernel),) = flow["flows"]  # on the common clock and rank 1's lanes
    assert launch[0] == events.loc[row, "ts_us"] + one.offset_us
    assert one.holds(launch[1]) and one.holds(kernel[1]) and launch[1] < kernel[1]
    operations = patch.to_plotly_json()["operations"]
    (drawn,) = [op["params"]["value"] for op in operations if op["location"][-1] == "annotations"]
    assert len(drawn) == len(view.groups) + 1  # each group's note, and the arrow
    origin = view.view.span_us[0]
    assert (zoomed.view.start_us, zoomed.view.end_us) == (origin + 10_000.0, origin + 12_000.0)


def test_ranks_left_on_their_own_clocks_are_said_above_the_group(root: Path) -> None:
    (root / "unmatched").mkdir()
    for rank in (0, 1):
        trace = straggler_trace(rank, 0, 10_000)
        for event in trace["traceEvents"]:  # rank 1's collectives match none of rank 0's
            event["name"] = event["name"].replace(
                "all_reduce", "broadcast" if rank else "all_reduce"
            )
        (root / "unmatched" / f"h_{rank}.1.pt.trace.json").write_text(json.dumps(trace))
    app, page = _page_module(root)
    with app.server.app_context():
        tree = page.content(run="unmatched")
        single = page.content(run="unmatched", file="h_0.1.pt.trace.json")
        even = page.content(run="ranks")
    assert "rank(s) 1" in _element(tree, "timeline-clock").children
    assert _element(single, "timeline-clock") is None  # one file: no clocks to align
    assert _element(even, "timeline-clock") is None


def _first(run_dir: Path) -> Path:
    return sorted(run_dir.glob("*.json.gz"))[0]


# Browser ---------------------------------------------------------------------------------------

DRAWN = "return d.reduce((n, t) => n + Array.from(t.x).filter(v => v !== null).length / 3, 0);"


def _graph_listens(dash_duo: Any, event: str) -> None:
    """Wait until dcc.Graph has bound its handler of plotly's ``event`` (after the first draw):
    an event emitted sooner goes unheard."""
    script = (
        "const gd = document.querySelector('#timeline .js-plotly-plot');"
        f"return !!(gd && gd._ev && gd._ev.listeners('{event}').length);"
    )
    WebDriverWait(dash_duo.driver, WAIT_S).until(lambda driver: driver.execute_script(script))


def _zoom(dash_duo: Any, low_ms: float, high_ms: float) -> None:
    _graph_listens(dash_duo, "plotly_relayout")
    dash_duo.driver.execute_script(
        "const gd = document.querySelector('#timeline .js-plotly-plot');"
        f"Plotly.relayout(gd, {{'xaxis.range[0]': {low_ms}, 'xaxis.range[1]': {high_ms}}});"
    )


def _click_row(dash_duo: Any, row: int, lowest_lane: int = 0) -> None:
    """Emit plotly's click on the first point that carries ``row`` on lane ``lowest_lane`` or
    below (rows are per file: ranks' files share them), as a real click would."""
    found = plotly_data(
        dash_duo,
        "timeline",
        f"for (let c = 0; c < d.length; c++) {{ for (let p = 0; p < d[c].y.length; p++) {{"
        f" if (d[c].customdata[p] === {row} && d[c].y[p] >= {lowest_lane})"
        f" return [c, p, d[c].x[p], d[c].y[p]]; }} }} return null;",
    )
    assert found is not None, f"row {row} is not drawn"
    _graph_listens(dash_duo, "plotly_click")
    curve, point, x, y = found
    dash_duo.driver.execute_script(
        "const gd = document.querySelector('#timeline .js-plotly-plot');"
        f"gd.emit('plotly_click', {{points: [{{curveNumber: {curve}, pointNumber: {point},"
        f" x: {x}, y: {y}}}]}});"
    )


def _overlapping(events: Any, origin_us: float, low_ms: float, high_ms: float) -> int:
    start_us, end_us = origin_us + low_ms * 1000, origin_us + high_ms * 1000
    return int(((events["ts_us"] <= end_us) & (events["end_us"] >= start_us)).sum())


@pytest.mark.browser
def test_timeline_of_our_sample_zooms_and_shows_an_op(dash_duo: Any, root: Path) -> None:
    files = run_trace_files(root, "sample")
    trace = load_trace(root / "sample" / files[0])
    events = trace.events
    open_path(dash_duo, root, "/timeline?run=sample")
    dash_duo.wait_for_contains_text("#timeline-status", "drawn exactly", timeout=WAIT_S)
    assert plotly_data(dash_duo, "timeline", DRAWN) == len(events)
    labels = plotly_data(dash_duo, "timeline", "return document.querySelector("
                         "'#timeline .js-plotly-plot')._fullLayout.yaxis.ticktext;")  # fmt: skip
    assert any("trainprof" in label for label in labels)

    row = int(events.index[events["name"] == "aten::addmm"][0])
    _click_row(dash_duo, row)
    dash_duo.wait_for_text_to_equal("#event-name", "aten::addmm", timeout=WAIT_S)
    assert "nn.Module: classifier" in dash_duo.find_element("#event-stack").text

    origin = float(events["ts_us"].min())
    low_ms, high_ms = 5.0, 7.0
    expected = _overlapping(events, origin, low_ms, high_ms)
    assert 0 < expected < len(events)
    _zoom(dash_duo, low_ms, high_ms)
    dash_duo.wait_for_text_to_equal(
        "#timeline-status", f"{expected:,} events drawn exactly", timeout=WAIT_S
    )
    assert plotly_data(dash_duo, "timeline", DRAWN) == expected

    pick(dash_duo, "#timeline-file", files[1])
    other = load_trace(root / "sample" / files[1]).events
    dash_duo.wait_for_text_to_equal(
        "#timeline-status", f"{len(other):,} events drawn exactly", timeout=WAIT_S
    )
    assert plotly_data(dash_duo, "timeline", DRAWN) == len(other)
    dash_duo.wait_for_text_to_equal("#event-details", CLICK_HINT, timeout=WAIT_S)
    assert dash_duo.get_logs() == []


@pytest.mark.browser
def test_search_highlights_the_matches_in_view(dash_duo: Any, root: Path) -> None:
    events = load_trace(_first(root / "sample")).events
    matching = events[events["name"].str.lower().str.contains("addmm", regex=False)]
    open_path(dash_duo, root, "/timeline?run=sample")
    dash_duo.wait_for_contains_text("#timeline-status", "drawn exactly", timeout=WAIT_S)
    search = dash_duo.find_element("#timeline-search")
    search.send_keys("ADDMM\n")
    dash_duo.wait_for_text_to_equal(
        "#timeline-matches", f'{len(matching):,} events in view match "ADDMM".', timeout=WAIT_S
    )
    rim = 'return d.filter(t => t.name.startsWith("matching")).map(t => t.customdata.length / 4);'
    assert plotly_data(dash_duo, "timeline", rim) == [len(matching)]

    origin = float(events["ts_us"].min())
    low_ms, high_ms = ((matching["ts_us"].quantile(q) - origin) / 1000 for q in (0.25, 0.75))
    expected = _overlapping(matching, origin, low_ms, high_ms)
    assert 0 < expected < len(matching)
    _zoom(dash_duo, low_ms, high_ms)
    dash_duo.wait_for_text_to_equal(
        "#timeline-matches", f'{expected:,} events in view match "ADDMM".', timeout=WAIT_S
    )
    assert plotly_data(dash_duo, "timeline", rim) == [expected]
    assert dash_duo.get_logs() == []


@pytest.mark.browser
def test_timeline_of_a_big_gpu_trace_is_aggregated_until_zoomed(dash_duo: Any, root: Path) -> None:
    path = _reference(root, "diff_control")
    events = load_trace(path).events
    open_path(dash_duo, root, "/timeline?run=reference/diff_control")
    dash_duo.wait_for_contains_text("#timeline-status", "aggregated", timeout=WAIT_S)
    status = dash_duo.find_element("#timeline-status").text
    assert status.startswith(f"aggregated: {len(events):,} events in ")
    bins = plotly_data(dash_duo, "timeline", DRAWN)
    assert f"in {bins:,} bins" in status and 0 < bins <= 50_000

    origin = float(events["ts_us"].min())
    expected = _overlapping(events, origin, 100.0, 104.0)
    _zoom(dash_duo, 100.0, 104.0)
    dash_duo.wait_for_text_to_equal(
        "#timeline-status", f"{expected:,} events drawn exactly", timeout=WAIT_S
    )
    assert plotly_data(dash_duo, "timeline", DRAWN) == expected != bins

    dash_duo.driver.execute_script(
        "Plotly.relayout(document.querySelector('#timeline .js-plotly-plot'),"
        " {'xaxis.autorange': true});"
    )
    dash_duo.wait_for_text_to_equal("#timeline-status", status, timeout=WAIT_S)
    assert dash_duo.get_logs() == []


@pytest.mark.browser
def test_clicking_a_launch_shows_its_kernel(dash_duo: Any, root: Path) -> None:
    path = _reference(root, "two_ranks_rank-0")
    events = load_trace(path).events
    row = int(events.index[events["name"] == "cudaLaunchKernel"][7])
    correlation = events.loc[row, "correlation"]
    kernel = events[(events["kind"] == "kernel") & (events["correlation"] == correlation)]
    open_path(dash_duo, root, "/timeline?run=reference/two_ranks_rank-0")
    dash_duo.wait_for_contains_text("#timeline-status", "drawn exactly", timeout=WAIT_S)
    labels = plotly_data(dash_duo, "timeline", "return document.querySelector("
                         "'#timeline .js-plotly-plot')._fullLayout.yaxis.ticktext;")  # fmt: skip
    assert "GPU 0 stream 7" in labels

    _click_row(dash_duo, row)

    dash_duo.wait_for_text_to_equal("#event-name", "cudaLaunchKernel", timeout=WAIT_S)
    assert str(kernel["name"].iloc[0])[:40] in dash_duo.find_element("#event-launched").text
    assert str(int(correlation)) in dash_duo.find_element("#event-details").text
    assert dash_duo.get_logs() == []


@pytest.mark.browser
def test_names_are_text_and_bad_files_get_a_notice(dash_duo: Any, root: Path) -> None:
    open_path(dash_duo, root, "/timeline?run=tricky")
    dash_duo.wait_for_contains_text("#timeline-status", "2 events drawn exactly", timeout=WAIT_S)
    events = load_trace(root / "tricky" / "w.1.pt.trace.json").events
    _click_row(dash_duo, int(events.index[events["name"] == TRICKY][0]))
    dash_duo.wait_for_text_to_equal("#event-name", TRICKY, timeout=WAIT_S)
    assert "<b>" not in dash_duo.find_element("#event-details").get_attribute("innerHTML")
    assert "outer" in dash_duo.find_element("#event-stack").text

    dash_duo.wait_for_page(
        url=f"{dash_duo.server_url}/timeline?run=sample&file=../x", timeout=WAIT_S
    )
    dash_duo.wait_for_contains_text("#file-refused", "../x", timeout=WAIT_S)
    dash_duo.wait_for_page(
        url=f"{dash_duo.server_url}/timeline?run=sample&file=no.json", timeout=WAIT_S
    )
    dash_duo.wait_for_contains_text("#file-unknown", "no.json", timeout=WAIT_S)
    dash_duo.wait_for_page(url=f"{dash_duo.server_url}/timeline?run=../../etc", timeout=WAIT_S)
    dash_duo.wait_for_contains_text("#run-refused", "../../etc", timeout=WAIT_S)


def test_view_rows_are_numpy_free_in_the_figure() -> None:
    view = timeline_view(load_trace(_first(SAMPLE)))
    figure = timeline_figure(view)
    values = [v for t in figure["data"] for key in ("x", "y", "customdata") for v in t[key]]
    assert not any(isinstance(v, np.generic) for v in values)


@pytest.mark.browser
def test_timeline_of_a_two_rank_run_shows_both_ranks_lanes(dash_duo: Any, root: Path) -> None:
    (group,) = run_rank_groups(root, "ranks")
    view = run_ranks_timeline(root, "ranks", group.key)
    assert not isinstance(view, str)
    open_path(dash_duo, root, "/timeline?run=ranks")
    dash_duo.wait_for_contains_text("#timeline-status", "2 ranks on one clock", timeout=WAIT_S)
    assert plotly_data(dash_duo, "timeline", DRAWN) == view.view.event_count
    labels = plotly_data(dash_duo, "timeline", "return document.querySelector("
                         "'#timeline .js-plotly-plot')._fullLayout.yaxis.ticktext;")  # fmt: skip
    assert {label.split(" · ")[0] for label in labels} == {"rank 0", "rank 1"}
    assert (
        labels.index(next(x for x in labels if x.startswith("rank 1"))) == view.groups[1].first_lane
    )

    one = view.groups[1]
    events = load_trace(root / "ranks" / one.file).events
    row = int(events.index[events["name"] == "cudaLaunchKernel"][0])
    _click_row(dash_duo, row, one.first_lane)
    dash_duo.wait_for_text_to_equal("#event-name", "cudaLaunchKernel", timeout=WAIT_S)
    assert "[4045]" in dash_duo.find_element("#event-details").text  # rank 1's process

    zoomed = run_ranks_timeline(
        root, "ranks", group.key, view.view.span_us[0] + 100_000, view.view.span_us[0] + 104_000
    )
    assert not isinstance(zoomed, str) and 0 < zoomed.view.event_count < view.view.event_count
    _zoom(dash_duo, 100.0, 104.0)
    dash_duo.wait_for_text_to_equal(
        "#timeline-status",
        f"2 ranks on one clock; {zoomed.view.event_count:,} events drawn exactly",
        timeout=WAIT_S,
    )
    assert plotly_data(dash_duo, "timeline", DRAWN) == zoomed.view.event_count

    pick(dash_duo, "#timeline-file", TWO_RANKS[1])
    count = len(load_trace(root / "ranks" / TWO_RANKS[1]).events)
    dash_duo.wait_for_text_to_equal(
        "#timeline-status", f"{count:,} events drawn exactly", timeout=WAIT_S
    )
    assert dash_duo.get_logs() == []

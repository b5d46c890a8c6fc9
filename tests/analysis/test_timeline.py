"""The timeline: lanes, exact and aggregated views, and an event's details, each checked against
a direct computation over ``trace.events``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from profiler.analysis.table import GPU_KINDS, TraceTable, load_trace
from profiler.analysis.timeline import (
    MAX_BINS_PER_LANE,
    STREAM_KINDS,
    prepare_timeline,
    timeline_view,
)
from profiler.analysis.timeline_details import MAX_LINKED, event_details
from tests.conftest import REFERENCE_TRACES

SAMPLE = Path(__file__).resolve().parents[2] / "traces" / "sample"
HTA = REFERENCE_TRACES / "hta"


@pytest.fixture(scope="module")
def rank0() -> TraceTable:
    return load_trace(HTA / "two_ranks_rank-0.json.gz")


@pytest.fixture(scope="module")
def control() -> TraceTable:
    return load_trace(HTA / "diff_control.json.gz")


def overlapping_rows(trace: TraceTable, start_us: float, end_us: float) -> set[int]:
    events = trace.events
    hit = (events["ts_us"] <= end_us) & (events["end_us"] >= start_us)
    return set(events.index[hit])


def union_within(intervals: list[tuple[float, float]], low: float, high: float) -> float:
    """Length of the union of ``intervals`` clipped to ``[low, high]``, by a plain sweep."""
    clipped = sorted((max(s, low), min(e, high)) for s, e in intervals if e >= low and s <= high)
    total, reach = 0.0, -np.inf
    for start, end in clipped:
        if end > max(start, reach):
            total += end - max(start, reach)
        reach = max(reach, end)
    return total


def write_trace(path: Path, events: list[dict[str, Any]]) -> TraceTable:
    path.write_text(json.dumps({"schemaVersion": 1, "traceEvents": events}))
    return load_trace(path)


def op(name: str, ts: float, dur: float, tid: int = 1, cat: str = "cpu_op") -> dict[str, Any]:
    return {"ph": "X", "cat": cat, "name": name, "pid": 1, "tid": tid, "ts": ts, "dur": dur}


# Lanes -----------------------------------------------------------------------------------------


def test_lanes_are_the_traces_threads_then_its_streams(rank0: TraceTable) -> None:
    events = rank0.events
    index = prepare_timeline(rank0)
    host = events[~events["kind"].isin(STREAM_KINDS)]
    gpu = events[events["kind"].isin(GPU_KINDS)]
    expected_host = sorted(set(zip(host["pid"], host["tid"], strict=True)))
    expected_gpu = sorted(set(zip(gpu["device"], gpu["stream"], strict=True)))

    lanes = index.lanes
    assert [(lane.pid, lane.tid) for lane in lanes if not lane.gpu] == expected_host
    assert [(lane.device, lane.stream) for lane in lanes if lane.gpu] == expected_gpu
    assert [lane.gpu for lane in lanes] == sorted(lane.gpu for lane in lanes)  # threads first
    assert [lane.label for lane in lanes if lane.gpu] == [
        f"GPU {d} stream {s}" for d, s in expected_gpu
    ]
    threads = rank0.threads
    names = {
        (p, t): name for p, t, name in threads[["pid", "tid", "thread_name"]].itertuples(False)
    }
    for lane in lanes:
        if not lane.gpu and (lane.pid, lane.tid) in names:
            assert names[(lane.pid, lane.tid)].strip() in lane.label
    # Every event sits on the lane of its thread or its stream.
    lane_of = index.lane
    for position in np.flatnonzero(events["kind"].isin(GPU_KINDS).to_numpy())[:200]:
        lane = lanes[lane_of[position]]
        assert (lane.device, lane.stream) == tuple(events[["device", "stream"]].iloc[position])
    for position in np.flatnonzero(~events["kind"].isin(STREAM_KINDS).to_numpy())[:200]:
        lane = lanes[lane_of[position]]
        assert (lane.pid, lane.tid) == tuple(events[["pid", "tid"]].iloc[position])


# Exact views -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [(0.0, 1.0), (0.3, 0.35), (0.5, 0.5001)])
def test_an_exact_view_is_the_events_overlapping_the_window(
    rank0: TraceTable, fraction: tuple[float, float]
) -> None:
    first, last = rank0.events["ts_us"].min(), rank0.events["end_us"].max()
    start_us, end_us = (first + f * (last - first) for f in fraction)

    view = timeline_view(rank0, start_us, end_us)

    assert not view.aggregated
    expected = overlapping_rows(rank0, start_us, end_us)
    assert set(view.shapes["row"]) == expected
    assert view.shape_count == view.event_count == len(expected)
    events = rank0.events.loc[view.shapes["row"]]
    assert list(view.shapes["name"]) == list(events["name"].astype(str))
    assert list(view.shapes["kind"]) == list(events["kind"].astype(str))
    assert np.array_equal(view.shapes["start_us"], events["ts_us"])


def test_exact_depth_follows_the_stack(tmp_path: Path) -> None:
    trace = write_trace(
        tmp_path / "t.json",
        [op("step", 0, 100, cat="user_annotation"), op("outer", 10, 50), op("inner", 20, 10)],
    )
    shapes = timeline_view(trace).shapes.set_index("name")
    assert shapes.loc[["step", "outer", "inner"], "depth"].tolist() == [0, 1, 2]


# Aggregated views ------------------------------------------------------------------------------


@pytest.mark.parametrize("max_shapes", [8, 100, 5_000])  # diff_control has 8 lanes
def test_aggregated_views_stay_within_max_shapes(control: TraceTable, max_shapes: int) -> None:
    index = prepare_timeline(control)

    view = timeline_view(index, max_shapes=max_shapes)

    assert view.aggregated
    assert view.event_count == len(control.events)
    assert view.shape_count <= max_shapes
    assert view.bins_per_lane == max(1, min(max_shapes // len(index.lanes), MAX_BINS_PER_LANE))
    assert (view.shapes["row"] == -1).all()


def test_bins_hold_the_busy_time_and_count_of_their_lane(control: TraceTable) -> None:
    index = prepare_timeline(control)
    first, last = index.span_us
    start_us, end_us = first + 0.2 * (last - first), first + 0.6 * (last - first)

    view = timeline_view(index, start_us, end_us, max_shapes=400)

    assert view.aggregated and view.event_count == len(overlapping_rows(control, start_us, end_us))
    edges = np.linspace(start_us, end_us, view.bins_per_lane + 1)
    for lane_number in range(len(index.lanes)):
        on_lane = control.events[index.lane == lane_number]
        spans = list(zip(on_lane["ts_us"], on_lane["end_us"], strict=True))
        bins = view.shapes[view.shapes["lane"] == lane_number]
        busy_us, counts = _bin_columns(bins, edges)
        for low, high, busy, count in zip(edges[:-1], edges[1:], busy_us, counts, strict=True):
            assert busy == pytest.approx(union_within(spans, low, high), abs=1e-6)
            last_bin = high == edges[-1]
            started = on_lane["ts_us"] <= high if last_bin else on_lane["ts_us"] < high
            assert count == int((started & (on_lane["end_us"] >= low)).sum())


def _bin_columns(bins: pd.DataFrame, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Busy time and count per bin of ``edges``, zero where the view left an empty bin out."""
    at = np.searchsorted(edges, bins["start_us"].to_numpy())
    busy, count = np.zeros(len(edges) - 1), np.zeros(len(edges) - 1, dtype=int)
    busy[at], count[at] = bins["busy_us"], bins["events"]
    return busy, count


def test_a_bins_name_is_the_one_with_most_self_time(tmp_path: Path) -> None:
    # One step around two ops; aten::b runs longer than aten::a, inside a tiny wrapper.
    events = [
        op("ProfilerStep#1", 0, 100, cat="user_annotation"),
        op("aten::a", 0, 30),
        op("wrapper", 40, 50),
        op("aten::b", 41, 48),
        op("other_thread_op", 0, 100, tid=2),
    ]
    trace = write_trace(tmp_path / "t.json", events)

    view = timeline_view(trace, 0, 100, max_shapes=4)  # 5 events, 2 lanes: 2 bins each

    assert view.aggregated and view.bins_per_lane == 2
    thread = view.shapes[view.shapes["lane"] == 0]
    # Self time in [0, 50): a 30, step 10, b 9, wrapper 1; in [50, 100]: b 39, step 10, wrapper 1.
    assert list(thread["name"]) == ["aten::a", "aten::b"]
    assert list(thread["busy_us"]) == pytest.approx([50.0, 50.0])
    assert list(thread["events"]) == [4, 3]
    assert list(thread["kind"]) == ["cpu_op", "cpu_op"]


def test_an_empty_trace_has_no_lanes(tmp_path: Path) -> None:
    view = timeline_view(write_trace(tmp_path / "t.json", []))
    assert view.lanes == () and view.shape_count == 0 and not view.aggregated


def test_max_shapes_below_one_is_refused(rank0: TraceTable) -> None:
    with pytest.raises(ValueError, match="max_shapes"):
        timeline_view(rank0, max_shapes=0)


# Details ---------------------------------------------------------------------------------------


def test_a_launch_links_to_the_gpu_work_of_its_correlation(rank0: TraceTable) -> None:
    events = rank0.events
    index = prepare_timeline(rank0)
    launches = events.index[(events["name"] == "cudaLaunchKernel") & (events["correlation"] >= 0)]
    assert len(launches) > 10
    for row in launches[:: len(launches) // 10]:
        correlation = events.loc[row, "correlation"]
        expected = events.index[
            events["kind"].isin(GPU_KINDS) & (events["correlation"] == correlation)
        ]

        details = event_details(rank0, row, index=index)

        assert {ref.row for ref in details.launched} == set(expected)
        assert details.launched_count == len(expected) >= 1
        assert details.args["correlation"] == correlation


def test_gpu_work_names_its_launch_and_the_op_around_it(rank0: TraceTable) -> None:
    events = rank0.events
    index = prepare_timeline(rank0)
    kernels = events.index[events["kind"] == "kernel"]
    for row in kernels[:: len(kernels) // 8]:
        correlation = events.loc[row, "correlation"]
        call_rows = events.index[
            events["kind"].isin(["runtime", "driver"]) & (events["correlation"] == correlation)
        ]

        details = event_details(rank0, row, index=index)

        assert [ref.row for ref in details.launched_by] == list(call_rows)
        call = events.loc[call_rows[0]]
        around = events[
            (events["kind"] == "cpu_op")
            & (events["pid"] == call["pid"])
            & (events["tid"] == call["tid"])
            & (events["ts_us"] <= call["ts_us"])
            & (events["end_us"] >= call["end_us"])
        ]
        innermost = around.sort_values(["ts_us", "end_us"], ascending=[True, False]).tail(1)
        assert details.launch_op is not None
        assert details.launch_op.row == innermost.index[0]
        assert details.args["grid"] == events.loc[row, "grid"] != ""


def test_a_step_lists_at_most_max_linked_of_its_launches(control: TraceTable) -> None:
    events = control.events
    step = events.index[events["name"].astype(str).str.startswith("ProfilerStep#")][0]
    inside = events[
        (events["tid"] == events.loc[step, "tid"])
        & (events["ts_us"] >= events.loc[step, "ts_us"])
        & (events["end_us"] <= events.loc[step, "end_us"])
        & (events["kind"] == "runtime")
        & (events["correlation"] >= 0)
    ]
    expected = events["kind"].isin(GPU_KINDS) & events["correlation"].isin(inside["correlation"])

    details = event_details(control, step)

    assert details.launched_count == int(expected.sum()) > MAX_LINKED
    assert len(details.launched) == MAX_LINKED
    assert [r.start_us for r in details.launched] == sorted(r.start_us for r in details.launched)


def test_an_op_of_our_sample_has_its_module_ranges_in_its_stack() -> None:
    trace = load_trace(sorted(SAMPLE.glob("*.json.gz"))[0])
    events = trace.events
    row = events.index[events["name"] == "aten::addmm"][0]
    event = events.loc[row]
    enclosing = events[
        (events["pid"] == event["pid"])
        & (events["tid"] == event["tid"])
        & (events["ts_us"] <= event["ts_us"])
        & (events["end_us"] >= event["end_us"])
        & (events.index != row)
    ].sort_values(["ts_us", "end_us"], ascending=[True, False])

    details = event_details(trace, row)

    stack = [ref.name for ref in details.stack]
    assert stack == list(enclosing["name"].astype(str))
    assert any(name.startswith("nn.Module: classifier") for name in stack)
    assert details.event.name == "aten::addmm" and details.launched == ()
    assert details.args["input_dims"] == event["input_dims"]


def test_an_unknown_row_is_a_lookup_error(rank0: TraceTable) -> None:
    with pytest.raises(LookupError):
        event_details(rank0, len(rank0.events) + 5)

"""Timeline: a trace as lanes, viewed at a level of detail that a browser can draw.

Lanes: one per host thread ``(pid, tid)`` for CPU-side events, and one per GPU ``(device,
stream)`` for GPU work (kernels, memcpy, memset) and what Kineto puts beside it on a stream (GPU
annotations, syncs); host threads first, then streams, each in id order.

Level of detail: :func:`timeline_view` of a window gives the events overlapping it, exactly, when
they number at most ``max_shapes``; else, per lane, fixed bins across the window with their busy
time, event count and dominant name, so a million-event trace answers with a bounded view.

Nesting: every event gets its depth on its lane by torch's stack rule
(:func:`profiler.analysis.ops.nest_parents`). Exact views carry the depth, so a figure can draw a
stack as rows. Bins cover every depth: a bin's busy time is the union of its lane's events within
it (the same as the union of the top-level ones), and its name is the one with the most self time
in it (the innermost event running at each instant), so a bin shows ``aten::addmm`` rather than
the ``ProfilerStep#3`` around it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from profiler.analysis.devices import DEVICE_KINDS, device_model
from profiler.analysis.ops import nest_parents
from profiler.analysis.table import MISSING_INT, TraceTable
from profiler.analysis.timeline_bins import LaneRanges, bin_lane, lane_ranges

DEFAULT_MAX_SHAPES = 50_000
# More bins than a screen has pixels across show nothing more.
MAX_BINS_PER_LANE = 2_000
# Kinds drawn on a GPU stream's lane: GPU work and what Kineto writes on streams beside it.
STREAM_KINDS = (*DEVICE_KINDS, "gpu_user_annotation", "sync")
SHAPE_COLUMNS = [
    "row", "lane", "depth", "start_us", "end_us", "name", "kind", "busy_us", "events",
]  # fmt: skip


@dataclass(frozen=True)
class Lane:
    """One row of the timeline.

    Attributes:
        label: ``<process> [pid] <thread>`` for a host thread, ``GPU d stream s`` for a stream
            (``MTIA d stream s``... on other devices).
        gpu: whether it is a GPU stream.
        pid, tid: the host thread (-1 on a stream's lane).
        device, stream: the GPU stream (-1 on a thread's lane).
        max_depth: the deepest nesting on it over the whole trace (0: nothing nests), so a
            figure can give each level of its stack the same sub-row in every view.
    """

    label: str
    gpu: bool
    pid: int
    tid: int
    device: int
    stream: int
    max_depth: int = 0


@dataclass(frozen=True, eq=False)
class TimelineIndex:
    """A trace prepared for fast views: arrays over ``trace.events``' rows (sorted by start).

    Build it with :func:`prepare_timeline`; treat it as read-only.

    Attributes:
        lanes: the lanes, in drawing order.
        span_us: the first start and the last end of any event.
        rows: each event's ``trace.events`` index label.
        start_us, end_us: each event's start and end (an end never before its start).
        lane, depth, parent: each event's lane, its depth there, and its parent's position
            (:func:`~profiler.analysis.ops.nest_parents`, -1 at top level).
        name_code, names: each event's name as a code into ``names``.
        kind_code, kinds: each event's kind as a code into ``kinds``.
        reach_us: the running maximum of ``end_us``: where a window's overlapping events begin.
        ends_sorted_us: ``end_us`` sorted: how many events end before a time.
        ranges: per-lane sorted starts and ends, busy intervals and self-time segments.
    """

    lanes: tuple[Lane, ...]
    span_us: tuple[float, float]
    rows: np.ndarray
    start_us: np.ndarray
    end_us: np.ndarray
    lane: np.ndarray
    depth: np.ndarray
    parent: np.ndarray
    name_code: np.ndarray
    names: np.ndarray
    kind_code: np.ndarray
    kinds: np.ndarray
    reach_us: np.ndarray
    ends_sorted_us: np.ndarray
    ranges: LaneRanges

    def __len__(self) -> int:
        return len(self.start_us)


@dataclass(frozen=True, eq=False)
class TimelineView:
    """What to draw of the window ``[start_us, end_us]``.

    Attributes:
        start_us, end_us: the window.
        lanes: every lane of the trace (the y axis stays put while zooming).
        span_us: the whole trace's first start and last end.
        aggregated: False: ``shapes`` are the events overlapping the window; True: bins.
        event_count: how many events overlap the window.
        bins_per_lane: how many bins each lane was cut into (0 when exact).
        bin_us: the width of a bin (0 when exact).
        shapes: one row per shape to draw (:data:`SHAPE_COLUMNS`): ``row`` (the event's
            ``trace.events`` label; -1 for a bin), ``lane`` (position in ``lanes``), ``depth``
            (0 for a bin), ``start_us``, ``end_us``, ``name`` (a bin's: the name with the most
            self time in it), ``kind`` (the kind of that name), ``busy_us`` (an event's duration
            in the window; a bin's busy time: the union of its lane's events within it) and
            ``events`` (1; a bin's: the events overlapping it). Empty bins are left out.
    """

    start_us: float
    end_us: float
    lanes: tuple[Lane, ...]
    span_us: tuple[float, float]
    aggregated: bool
    event_count: int
    bins_per_lane: int
    bin_us: float
    shapes: pd.DataFrame

    @property
    def shape_count(self) -> int:
        """How many shapes the view draws."""
        return len(self.shapes)


def prepare_timeline(trace: TraceTable) -> TimelineIndex:
    """Index ``trace`` for :func:`timeline_view`: lanes, nesting and per-lane sorted arrays.

    Linear-logarithmic in the number of events; do it once per trace and keep the result.
    """
    events = trace.events
    lanes, lane = _lanes(trace)
    start = events["ts_us"].to_numpy(np.float64)
    end = np.maximum(events["end_us"].to_numpy(np.float64), start)
    nesting = pd.DataFrame({"pid": lane, "tid": 0, "ts_us": start, "end_us": end})
    parent = nest_parents(nesting).astype(np.int32)  # narrow ints: 1M events index in ~100 MB
    depth = _depths(parent)
    deepest = np.zeros(len(lanes), dtype=np.int64)
    np.maximum.at(deepest, lane, depth)
    lanes = tuple(
        dataclasses.replace(one, max_depth=int(most))
        for one, most in zip(lanes, deepest, strict=True)
    )
    name_code, names = pd.factorize(events["name"].astype(object).to_numpy())
    kind_code, kinds = pd.factorize(events["kind"].astype(object).to_numpy())
    name_code, kind_code = name_code.astype(np.int32), kind_code.astype(np.int8)
    span = (float(start.min()), float(end.max())) if len(start) else (0.0, 0.0)
    return TimelineIndex(
        lanes=lanes,
        span_us=span,
        rows=events.index.to_numpy(),
        start_us=start,
        end_us=end,
        lane=lane,
        depth=depth,
        parent=parent,
        name_code=name_code,
        names=np.asarray(names, dtype=object),
        kind_code=kind_code,
        kinds=np.asarray(kinds, dtype=object),
        reach_us=np.maximum.accumulate(end) if len(end) else end,
        ends_sorted_us=np.sort(end),
        ranges=lane_ranges(start, end, lane, depth, parent, name_code, len(lanes)),
    )


def timeline_view(
    source: TraceTable | TimelineIndex,
    start_us: float | None = None,
    end_us: float | None = None,
    *,
    max_shapes: int = DEFAULT_MAX_SHAPES,
    bins_per_lane: int | None = None,
) -> TimelineView:
    """The shapes to draw for the window ``[start_us, end_us]`` (None: the trace's first start
    or last end).

    An event overlaps the window when it starts no later than its end and ends no sooner than
    its start. When at most ``max_shapes`` events do, the view holds them exactly; else each
    lane is cut into ``min(max_shapes // lanes, MAX_BINS_PER_LANE)`` equal bins (at least one)
    and the view holds the bins that have events, so it never holds more than ``max_shapes``
    shapes unless the trace has more lanes than that.

    Args:
        source: a trace, or its :func:`prepare_timeline` (much faster for repeated views).
        start_us, end_us: the window, in the trace's microseconds.
        max_shapes: the most shapes a view may hold.
        bins_per_lane: decide the level of detail here instead (several traces drawn as one,
            :mod:`profiler.analysis.timeline_ranks`): 0 for exact events, else this many bins
            per lane; None: by ``max_shapes``.

    Returns:
        The view; ``view.shape_count`` is how many shapes it draws.

    Raises:
        ValueError: ``max_shapes`` is below 1.
    """
    if max_shapes < 1:
        raise ValueError(f"max_shapes must be at least 1, not {max_shapes}")
    index = source if isinstance(source, TimelineIndex) else prepare_timeline(source)
    low = index.span_us[0] if start_us is None else float(start_us)
    high = index.span_us[1] if end_us is None else float(end_us)
    low, high = min(low, high), max(low, high)
    count = overlapping_count(index, low, high)
    bins = (
        lane_bins(count, len(index.lanes), max_shapes) if bins_per_lane is None else bins_per_lane
    )
    if bins <= 0:
        shapes, bins, width = _exact_shapes(index, low, high), 0, 0.0
    else:
        shapes, width = _binned_shapes(index, low, high, bins), (high - low) / bins
    return TimelineView(
        start_us=low,
        end_us=high,
        lanes=index.lanes,
        span_us=index.span_us,
        aggregated=bins > 0,
        event_count=count,
        bins_per_lane=bins,
        bin_us=width,
        shapes=shapes,
    )


def lane_bins(events: int, lanes: int, max_shapes: int = DEFAULT_MAX_SHAPES) -> int:
    """How many bins per lane a view of ``events`` events on ``lanes`` lanes draws: 0 (exact)
    when the events fit in ``max_shapes``, else as many as fit (at least one, at most
    :data:`MAX_BINS_PER_LANE`)."""
    if events <= max_shapes:
        return 0
    return max(1, min(max_shapes // max(1, lanes), MAX_BINS_PER_LANE))


def overlapping_count(index: TimelineIndex, start_us: float, end_us: float) -> int:
    """How many events overlap ``[start_us, end_us]``: two binary searches."""
    started = np.searchsorted(index.start_us, end_us, side="right")
    ended = np.searchsorted(index.ends_sorted_us, start_us, side="left")
    return int(started - ended)


def overlapping(index: TimelineIndex, start_us: float, end_us: float) -> np.ndarray:
    """Positions of the events overlapping ``[start_us, end_us]``, in start order."""
    first = np.searchsorted(index.reach_us, start_us, side="left")
    last = np.searchsorted(index.start_us, end_us, side="right")
    candidates = np.arange(first, max(first, last))
    return candidates[index.end_us[candidates] >= start_us]


def _exact_shapes(index: TimelineIndex, start_us: float, end_us: float) -> pd.DataFrame:
    at = overlapping(index, start_us, end_us)
    start, end = index.start_us[at], index.end_us[at]
    return pd.DataFrame(
        {
            "row": index.rows[at],
            "lane": index.lane[at],
            "depth": index.depth[at],
            "start_us": start,
            "end_us": end,
            "name": index.names[index.name_code[at]],
            "kind": index.kinds[index.kind_code[at]],
            "busy_us": np.minimum(end, end_us) - np.maximum(start, start_us),
            "events": np.ones(len(at), dtype=np.int64),
        },
        columns=SHAPE_COLUMNS,
    )


def _binned_shapes(index: TimelineIndex, start_us: float, end_us: float, bins: int) -> pd.DataFrame:
    edges = np.linspace(start_us, end_us, bins + 1)
    frames = [bin_lane(index.ranges, lane, edges) for lane in range(len(index.lanes))]
    frame = pd.concat(frames, ignore_index=True)
    named = frame["name_code"].to_numpy() >= 0
    codes = np.maximum(frame.pop("name_code").to_numpy(), 0)
    # A name's kind: that of its first event (a name belongs to one kind in practice).
    first = pd.Series(np.arange(len(index.name_code))).groupby(index.name_code).first()
    kind_of_name = index.kind_code[first.to_numpy()] if len(first) else np.empty(0, np.int64)
    frame["name"] = np.where(named, index.names[codes] if len(index.names) else "", "")
    frame["kind"] = np.where(named, index.kinds[kind_of_name[codes]] if named.any() else "", "")
    frame["row"] = -1
    frame["depth"] = 0
    return frame[SHAPE_COLUMNS]


def _lanes(trace: TraceTable) -> tuple[tuple[Lane, ...], np.ndarray]:
    """The lanes, host threads first, and each event's lane."""
    events = trace.events
    on_stream = events["kind"].isin(STREAM_KINDS).to_numpy()
    device = np.where(events["device"] >= 0, events["device"], events["pid"])
    stream = np.where(events["stream"] >= 0, events["stream"], events["tid"])
    keys = pd.DataFrame(
        {
            "gpu": on_stream,
            "a": np.where(on_stream, device, events["pid"]),
            "b": np.where(on_stream, stream, events["tid"]),
        }
    )
    lane = keys.groupby(["gpu", "a", "b"], sort=True).ngroup().to_numpy(np.int32)
    unique = keys.drop_duplicates().sort_values(["gpu", "a", "b"])
    labels = _label_maker(trace)
    lanes = tuple(labels(bool(gpu), int(a), int(b)) for gpu, a, b in unique.itertuples(False))
    return lanes, lane


def _label_maker(trace: TraceTable) -> Callable[[bool, int, int], Lane]:
    """A function giving the lane of ``(gpu, pid or device, tid or stream)``, named."""
    processes = dict(zip(trace.processes["pid"], trace.processes["process_name"], strict=True))
    threads = {
        (pid, tid): name
        for pid, tid, name in trace.threads[["pid", "tid", "thread_name"]].itertuples(False)
    }
    device = device_model(trace.device).label  # "GPU", "MTIA"...

    def lane(gpu: bool, a: int, b: int) -> Lane:
        if gpu:
            return Lane(f"{device} {a} stream {b}", True, -1, -1, a, b)
        if a == MISSING_INT and b == MISSING_INT:  # Kineto's "Spans" lane: pid and tid are text
            return Lane("spans", False, a, b, -1, -1)
        process = str(processes.get(a, "")).strip()
        thread = str(threads.get((a, b), "") or f"tid {b}").strip()
        label = f"{process} [{a}] {thread}" if process else f"pid {a} {thread}"
        return Lane(label, False, a, b, -1, -1)

    return lane


def _depths(parent: np.ndarray) -> np.ndarray:
    """Each event's number of ancestors, climbing one level per round."""
    depth = np.zeros(len(parent), dtype=np.int32)
    up = parent.copy()
    live = np.flatnonzero(up >= 0)
    while live.size:
        depth[live] += 1
        up[live] = parent[up[live]]
        live = live[up[live] >= 0]
    return depth

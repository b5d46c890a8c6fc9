"""One timeline event in detail: its args, its stack, and the CPU/GPU work linked to it.

Launches are linked as the kernel statistics link them (:func:`profiler.analysis.kernels.
launch_links`): a runtime or driver call and GPU work sharing a ``correlation`` id, the id
Kineto's ``ac2g`` flow events carry from the one to the other. Here any such call counts,
synchronous copies and graph launches included. :attr:`EventDetails.flows` are the arrows a
timeline draws for the event: from a launch call to its own GPU work, or to GPU work from the
call that launched it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from profiler.analysis.devices import DEVICE_KINDS
from profiler.analysis.kernels import launch_links
from profiler.analysis.table import MISSING_INT, TraceTable
from profiler.analysis.timeline import TimelineIndex, prepare_timeline

# The most linked events listed; the count says how many there are in all.
MAX_LINKED = 100
# The most flow arrows drawn for one event (a graph launch can start hundreds of kernels).
MAX_FLOWS = 16
_HOST_CALL_KINDS = ("runtime", "driver")
_OP_KIND = "cpu_op"
_BASIC_COLUMNS = frozenset({"name", "cat", "kind", "pid", "tid", "ts_us", "dur_us", "end_us"})


@dataclass(frozen=True)
class EventRef:
    """An event named in another's details.

    Attributes:
        row: its ``trace.events`` index label.
        name, kind: its name and kind.
        lane: its lane's label.
        start_us, dur_us: its start and duration.
        lane_at: its lane's position in the trace's lanes (``TimelineIndex.lanes``).
        depth: its nesting depth on that lane (0: top level).
    """

    row: int
    name: str
    kind: str
    lane: str
    start_us: float
    dur_us: float
    lane_at: int = -1
    depth: int = 0


@dataclass(frozen=True)
class EventDetails:
    """What the timeline shows of one event.

    Attributes:
        event: the event itself.
        cat: its category as the trace wrote it.
        args: the arg columns it has a value in (shapes, grid, block, stream, correlation...).
        stack: the events enclosing it on its lane, outermost first (on a thread: Python
            functions, module ranges, ops; on a stream: GPU annotations).
        launched: for a host event, the GPU work launched by the runtime and driver calls
            inside it on its thread (for such a call, its own work), in start order, at most
            :data:`MAX_LINKED`; ``launched_count`` counts them all.
        launched_by: for GPU work, the runtime or driver call(s) that launched it.
        launch_op: for GPU work, the innermost CPU op around its launch call, if any.
        flows: ``(launch call, GPU work)`` pairs to draw as arrows: for a runtime or driver
            call, to each piece of its own work; for GPU work, from each call that launched
            it; none for other events. At most :data:`MAX_FLOWS`.
    """

    event: EventRef
    cat: str
    args: dict[str, Any]
    stack: tuple[EventRef, ...]
    launched: tuple[EventRef, ...]
    launched_count: int
    launched_by: tuple[EventRef, ...]
    launch_op: EventRef | None
    flows: tuple[tuple[EventRef, EventRef], ...] = ()


def event_details(
    trace: TraceTable, row: int, *, index: TimelineIndex | None = None
) -> EventDetails:
    """The details of the event at index label ``row`` of ``trace.events``.

    Args:
        trace: a loaded trace.
        row: the event's index label (a timeline view's ``row``).
        index: ``prepare_timeline(trace)``, when the caller keeps one (else built here).

    Raises:
        LookupError: ``trace.events`` has no row ``row``.
    """
    events = trace.events
    if row not in events.index:
        raise LookupError(f"no event {row} in {trace.path.name}")
    index = prepare_timeline(trace) if index is None else index
    at = int(events.index.get_loc(row))
    on_gpu = str(events["kind"].iat[at]) in DEVICE_KINDS
    callers = _callers(events, at) if on_gpu else np.empty(0, np.int64)
    work = np.empty(0, np.int64) if on_gpu else _launched(events, index, at)
    event = _ref(events, index, at)
    launched = tuple(_ref(events, index, int(p)) for p in work[:MAX_LINKED])
    launched_by = tuple(_ref(events, index, int(p)) for p in callers)
    return EventDetails(
        event=event,
        cat=str(events["cat"].iat[at]),
        args=_args(events.iloc[at]),
        stack=tuple(_ref(events, index, p) for p in _ancestors(index, at)),
        launched=launched,
        launched_count=len(work),
        launched_by=launched_by,
        launch_op=_launch_op(events, index, callers),
        flows=_flows(event, launched, launched_by),
    )


def _flows(
    event: EventRef, launched: tuple[EventRef, ...], launched_by: tuple[EventRef, ...]
) -> tuple[tuple[EventRef, EventRef], ...]:
    """The event's own flows: a launch call's to its work, GPU work's from its calls."""
    if event.kind in DEVICE_KINDS:
        return tuple((call, event) for call in launched_by[:MAX_FLOWS])
    if event.kind in _HOST_CALL_KINDS:
        return tuple((event, work) for work in launched[:MAX_FLOWS])
    return ()


def _ref(events: pd.DataFrame, index: TimelineIndex, at: int) -> EventRef:
    return EventRef(
        row=int(index.rows[at]),
        name=str(events["name"].iat[at]),
        kind=str(events["kind"].iat[at]),
        lane=index.lanes[index.lane[at]].label,
        start_us=float(events["ts_us"].iat[at]),
        dur_us=float(events["dur_us"].iat[at]),
        lane_at=int(index.lane[at]),
        depth=int(index.depth[at]),
    )


def _args(event: pd.Series) -> dict[str, Any]:
    """The event's other columns that hold a value (not -1, NaN or "")."""
    values: dict[str, Any] = {}
    for column, value in event.items():
        plain = value.item() if isinstance(value, np.generic) else value
        missing = (
            plain == MISSING_INT or plain == "" or (isinstance(plain, float) and math.isnan(plain))
        )
        if str(column) not in _BASIC_COLUMNS and not missing:
            values[str(column)] = plain
    return values


def _ancestors(index: TimelineIndex, at: int) -> list[int]:
    """Positions of the events enclosing ``at`` on its lane, outermost first."""
    chain: list[int] = []
    up = int(index.parent[at])
    while up >= 0:
        chain.append(up)
        up = int(index.parent[up])
    return chain[::-1]


def _launched(events: pd.DataFrame, index: TimelineIndex, at: int) -> np.ndarray:
    """Positions of the GPU work launched by calls inside host event ``at`` on its lane."""
    start, end = index.start_us[at], index.end_us[at]
    first = np.searchsorted(index.start_us, start, side="left")
    last = np.searchsorted(index.start_us, end, side="right")
    inside = np.arange(first, last)
    inside = inside[(index.lane[inside] == index.lane[at]) & (index.end_us[inside] <= end)]
    kinds = events["kind"].to_numpy()[inside]
    calls = inside[np.isin(kinds, _HOST_CALL_KINDS)]
    correlation = events["correlation"].to_numpy()
    wanted = correlation[calls][correlation[calls] >= 0]
    if not len(wanted):
        return np.empty(0, np.int64)
    linked = np.union1d(calls, np.flatnonzero(np.isin(correlation, wanted)))
    links = launch_links(events.iloc[linked], calls=None)
    work = events.index.get_indexer(links["work"].unique())
    return np.sort(work)  # positions follow start order


def _callers(events: pd.DataFrame, at: int) -> np.ndarray:
    """Positions of the host calls that launched GPU event ``at`` (same correlation id)."""
    correlation = int(events["correlation"].iat[at])
    if correlation < 0:
        return np.empty(0, np.int64)
    same = np.flatnonzero(events["correlation"].to_numpy() == correlation)
    links = launch_links(events.iloc[same], calls=None)
    return np.sort(events.index.get_indexer(links["call"].unique()))


def _launch_op(events: pd.DataFrame, index: TimelineIndex, callers: np.ndarray) -> EventRef | None:
    """The innermost CPU op enclosing the first launch call, if any."""
    if not len(callers):
        return None
    for up in reversed(_ancestors(index, int(callers[0]))):
        if str(events["kind"].iat[up]) == _OP_KIND:
            return _ref(events, index, up)
    return None

"""Several ranks' timelines as one: each rank's lanes a group, every group on the aligned clock.

Each rank's trace keeps its own :class:`~profiler.analysis.timeline.TimelineIndex`; a view of
the aligned window ``[start_us, end_us]`` asks each index for the window shifted back by the
rank's clock offset (aligned time = the trace's time + ``offset_us``), then shifts the shapes
forward and stacks the groups' lanes. The level of detail is decided once for all groups, from
the events overlapping the window in every rank together, so a view never mixes exact events
with bins and never holds more than ``max_shapes`` shapes unless there are more lanes than that;
every group's bins share the same edges on the aligned clock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from profiler.analysis.timeline import (
    DEFAULT_MAX_SHAPES,
    SHAPE_COLUMNS,
    TimelineIndex,
    TimelineView,
    lane_bins,
    overlapping_count,
    timeline_view,
)


@dataclass(frozen=True, eq=False)
class RankTrace:
    """One trace of a rank, to draw as a group of lanes.

    Attributes:
        rank: the rank.
        label: the group's name (``rank 3``; ``rank 3 window 2`` when a rank has several files).
        index: the trace's :func:`~profiler.analysis.timeline.prepare_timeline`.
        offset_us: what to add to the trace's times to put them on the aligned clock.
        file: the trace file's name, for whoever reads an event of it back.
        clock_offset_us: the part of ``offset_us`` that the alignment found (the rest is the
            trace's own time base), to show.
    """

    rank: int
    label: str
    index: TimelineIndex
    offset_us: float = 0.0
    file: str = ""
    clock_offset_us: float = 0.0


@dataclass(frozen=True)
class LaneGroup:
    """Where one :class:`RankTrace`'s lanes lie in a :class:`RanksView`.

    Attributes:
        rank, label, offset_us, file, clock_offset_us: as in the :class:`RankTrace`.
        first_lane: its first lane's position in the view's lanes.
        lanes: how many lanes it has.
    """

    rank: int
    label: str
    offset_us: float
    file: str
    clock_offset_us: float
    first_lane: int
    lanes: int

    def holds(self, lane: int) -> bool:
        """Whether lane position ``lane`` is one of the group's."""
        return self.first_lane <= lane < self.first_lane + self.lanes


@dataclass(frozen=True, eq=False)
class RanksView:
    """The ranks' view of an aligned window.

    Attributes:
        view: one :class:`~profiler.analysis.timeline.TimelineView` of every group: lanes
            labelled ``<group label> · <lane label>``, times on the aligned clock, ``row`` the
            event's row in its own trace.
        groups: the groups, in drawing order.
    """

    view: TimelineView
    groups: tuple[LaneGroup, ...]

    def group_of(self, lane: int) -> LaneGroup | None:
        """The group that lane position ``lane`` belongs to (None: no such lane)."""
        return next((group for group in self.groups if group.holds(lane)), None)


def ranks_view(
    traces: Sequence[RankTrace],
    start_us: float | None = None,
    end_us: float | None = None,
    *,
    max_shapes: int = DEFAULT_MAX_SHAPES,
) -> RanksView:
    """The shapes to draw of ``traces`` over the aligned window ``[start_us, end_us]`` (None:
    the first start or last end of any of them, aligned).

    Args:
        traces: the ranks' traces, in drawing order.
        start_us, end_us: the window on the aligned clock.
        max_shapes: the most shapes the view may hold, all groups together.

    Returns:
        The view and its groups.

    Raises:
        ValueError: ``max_shapes`` is below 1.
    """
    if max_shapes < 1:
        raise ValueError(f"max_shapes must be at least 1, not {max_shapes}")
    span = _aligned_span(traces)
    low = span[0] if start_us is None else float(start_us)
    high = span[1] if end_us is None else float(end_us)
    low, high = min(low, high), max(low, high)
    count = sum(overlapping_count(t.index, low - t.offset_us, high - t.offset_us) for t in traces)
    lanes = sum(len(t.index.lanes) for t in traces)
    bins = lane_bins(count, lanes, max_shapes)
    parts, groups, first = [], [], 0
    for trace in traces:
        part = timeline_view(
            trace.index, low - trace.offset_us, high - trace.offset_us, bins_per_lane=bins
        )
        parts.append(_shifted(part.shapes, trace.offset_us, first))
        lanes_of = len(part.lanes)
        groups.append(
            LaneGroup(
                trace.rank, trace.label, trace.offset_us, trace.file, trace.clock_offset_us,
                first, lanes_of,
            )
        )  # fmt: skip
        first += lanes_of
    view = TimelineView(
        start_us=low,
        end_us=high,
        lanes=tuple(
            dataclasses.replace(lane, label=f"{trace.label} · {lane.label}")
            for trace in traces
            for lane in trace.index.lanes
        ),
        span_us=span,
        aggregated=bins > 0,
        event_count=count,
        bins_per_lane=bins,
        bin_us=(high - low) / bins if bins else 0.0,
        shapes=pd.concat(parts, ignore_index=True) if parts else _no_shapes(),
    )
    return RanksView(view=view, groups=tuple(groups))


def _aligned_span(traces: Sequence[RankTrace]) -> tuple[float, float]:
    """The first start and last end of any trace with events, on the aligned clock."""
    spans = [
        (t.index.span_us[0] + t.offset_us, t.index.span_us[1] + t.offset_us)
        for t in traces
        if len(t.index)
    ]
    if not spans:
        return (0.0, 0.0)
    return (min(s[0] for s in spans), max(s[1] for s in spans))


def _shifted(shapes: pd.DataFrame, offset_us: float, first_lane: int) -> pd.DataFrame:
    return shapes.assign(
        lane=shapes["lane"] + first_lane,
        start_us=shapes["start_us"] + offset_us,
        end_us=shapes["end_us"] + offset_us,
    )


def _no_shapes() -> pd.DataFrame:
    return pd.DataFrame(columns=SHAPE_COLUMNS)

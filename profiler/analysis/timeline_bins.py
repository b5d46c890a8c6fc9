"""Per-lane arrays behind the timeline's bins, and one lane's bins over a window.

Built once per trace (:func:`lane_ranges`), so that each view costs binary searches plus work in
proportion to what it shows. Every array is grouped by lane, each lane's part sorted by time,
with ``*_ptr`` marking where lane ``l`` begins (``ptr[l]``) and ends (``ptr[l + 1]``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True, eq=False)
class LaneRanges:
    """Sorted per-lane arrays (see the module docstring for the ``*_ptr`` layout).

    Attributes:
        event_ptr, starts_us, ends_us: each lane's event starts, and its event ends, sorted.
        busy_ptr, busy_start_us, busy_end_us: each lane's busy intervals (the union of its
            events: disjoint, touching ones merged); ``busy_before_us``: the busy time of all
            earlier intervals of the whole array (subtract the lane's first to make it the
            lane's own).
        segment_ptr, segment_start_us, segment_end_us, segment_name: each lane's self-time
            segments: the stretches in which one event is the innermost running, with that
            event's name code.
    """

    event_ptr: np.ndarray
    starts_us: np.ndarray
    ends_us: np.ndarray
    busy_ptr: np.ndarray
    busy_start_us: np.ndarray
    busy_end_us: np.ndarray
    busy_before_us: np.ndarray
    segment_ptr: np.ndarray
    segment_start_us: np.ndarray
    segment_end_us: np.ndarray
    segment_name: np.ndarray


def lane_ranges(
    start_us: np.ndarray,
    end_us: np.ndarray,
    lane: np.ndarray,
    depth: np.ndarray,
    parent: np.ndarray,
    name_code: np.ndarray,
    lanes: int,
) -> LaneRanges:
    """Group events by lane and derive each lane's busy intervals and self-time segments.

    Args:
        start_us, end_us: the events' starts (sorted) and ends (never before their starts).
        lane: each event's lane, in ``range(lanes)``.
        depth, parent: each event's nesting on its lane (parent positions, -1 at top level).
        name_code: each event's name code.
        lanes: how many lanes there are.
    """
    order = np.argsort(lane, kind="stable")  # starts stay sorted within each lane
    sorted_lanes = lane[order]
    bounds = np.arange(lanes + 1)
    by_end = np.lexsort((end_us, lane))
    busy_lane, busy_start, busy_end = _busy(sorted_lanes, start_us[order], end_us[order])
    lengths = busy_end - busy_start
    segment_lane, segment_start, segment_end, owner = _segments(
        start_us, end_us, lane, depth, parent
    )
    return LaneRanges(
        event_ptr=np.searchsorted(sorted_lanes, bounds),
        starts_us=start_us[order],
        ends_us=end_us[by_end],
        busy_ptr=np.searchsorted(busy_lane, bounds),
        busy_start_us=busy_start,
        busy_end_us=busy_end,
        busy_before_us=np.concatenate([[0.0], np.cumsum(lengths)]),
        segment_ptr=np.searchsorted(segment_lane, bounds),
        segment_start_us=segment_start,
        segment_end_us=segment_end,
        segment_name=name_code[owner],
    )


def _busy(
    lane: np.ndarray, start: np.ndarray, end: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per lane, the union of ``[start, end]`` intervals (grouped by lane, sorted by start)."""
    if len(start) == 0:
        return lane, start, end
    reach = pd.Series(end).groupby(lane).cummax().to_numpy()
    new_lane = np.r_[True, lane[1:] != lane[:-1]]
    first = np.flatnonzero(new_lane | np.r_[True, start[1:] > reach[:-1]])
    return lane[first], start[first], np.maximum.reduceat(end, first)


def _segments(
    start: np.ndarray, end: np.ndarray, lane: np.ndarray, depth: np.ndarray, parent: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each lane's self-time segments: lane, start, end and the innermost event (its owner).

    Walking a lane's starts and ends in time order, a start hands the lane to the event that
    starts, an end to the parent of the event that ends. At equal times ends go first, the
    innermost first, and starts the outermost first, so nested events that share an edge
    hand over in stack order. Events that overlap without nesting make this approximate.
    """
    count = len(start)
    b_lane = np.concatenate([lane, lane])
    b_time = np.concatenate([start, end])
    b_is_start = np.concatenate([np.ones(count, np.int8), np.zeros(count, np.int8)])
    b_tie = np.concatenate([depth, -depth])
    b_owner = np.concatenate([np.arange(count), parent])
    order = np.lexsort((b_tie, b_is_start, b_time, b_lane))
    b_lane, b_time, b_owner = b_lane[order], b_time[order], b_owner[order]
    same = np.flatnonzero(b_lane[1:] == b_lane[:-1])
    seg_start, seg_end, owner = b_time[same], b_time[same + 1], b_owner[same]
    keep = (owner >= 0) & (seg_end > seg_start)
    return b_lane[same][keep], seg_start[keep], seg_end[keep], owner[keep]


def bin_lane(ranges: LaneRanges, lane: int, edges: np.ndarray) -> pd.DataFrame:
    """Lane ``lane`` cut into the bins between ``edges``; only bins with events.

    A bin is ``[edges[k], edges[k + 1])``, the last one closed. An event counts in every bin it
    overlaps (it starts before the bin ends and ends no sooner than the bin starts).

    Returns:
        ``lane``, ``start_us``, ``end_us``, ``busy_us`` (the lane's busy time within the bin),
        ``events`` and ``name_code`` (the name with the most self time in the bin, -1 when
        only instants fall in it).
    """
    events = slice(ranges.event_ptr[lane], ranges.event_ptr[lane + 1])
    starts, ends = ranges.starts_us[events], ranges.ends_us[events]
    started = np.searchsorted(starts, edges[1:], side="left")
    started[-1] = np.searchsorted(starts, edges[-1], side="right")
    counts = started - np.searchsorted(ends, edges[:-1], side="left")
    keep = np.flatnonzero(counts > 0)
    return pd.DataFrame(
        {
            "lane": lane,
            "start_us": edges[:-1][keep],
            "end_us": edges[1:][keep],
            "busy_us": np.diff(_covered(ranges, lane, edges))[keep],
            "events": counts[keep],
            "name_code": _dominant(ranges, lane, edges)[keep],
        }
    )


def _covered(ranges: LaneRanges, lane: int, times: np.ndarray) -> np.ndarray:
    """The lane's busy time before each of ``times``."""
    first, last = ranges.busy_ptr[lane], ranges.busy_ptr[lane + 1]
    if first == last:
        return np.zeros(len(times))
    starts, ends = ranges.busy_start_us[first:last], ranges.busy_end_us[first:last]
    before = ranges.busy_before_us[first:last] - ranges.busy_before_us[first]
    at = np.searchsorted(starts, times, side="right") - 1
    held = np.maximum(at, 0)  # the interval starting at or before each time
    inside = np.clip(times - starts[held], 0.0, ends[held] - starts[held])
    return np.where(at >= 0, before[held] + inside, 0.0)


def _dominant(ranges: LaneRanges, lane: int, edges: np.ndarray) -> np.ndarray:
    """Per bin, the name code with the most self time in it (-1 for none)."""
    first, last = ranges.segment_ptr[lane], ranges.segment_ptr[lane + 1]
    low = first + np.searchsorted(ranges.segment_end_us[first:last], edges[0], side="right")
    high = first + np.searchsorted(ranges.segment_start_us[first:last], edges[-1], side="left")
    best = np.full(len(edges) - 1, -1, dtype=np.int64)
    if high <= low:
        return best
    names = ranges.segment_name[low:high]
    segment, bin_of, overlap = _segment_bins(
        ranges.segment_start_us[low:high], ranges.segment_end_us[low:high], edges
    )
    width = int(names.max()) + 1
    keys, inverse = np.unique(bin_of * width + names[segment], return_inverse=True)
    totals = np.bincount(inverse.ravel(), weights=overlap)
    key_bin = keys // width
    order = np.lexsort((-totals, key_bin))  # per bin, most time first; ties: smallest code
    leader = order[np.r_[True, key_bin[order][1:] != key_bin[order][:-1]]]
    best[key_bin[leader]] = keys[leader] % width
    return best


def _segment_bins(
    start: np.ndarray, end: np.ndarray, edges: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One (segment, bin, overlap) triple per bin each segment reaches into. Segments are
    disjoint, so there are at most as many triples as segments plus bins."""
    bins = len(edges) - 1
    first_bin = np.clip(np.searchsorted(edges, start, side="right") - 1, 0, bins - 1)
    last_bin = np.clip(np.searchsorted(edges, end, side="left") - 1, 0, bins - 1)
    span = np.maximum(last_bin, first_bin) - first_bin + 1
    segment = np.repeat(np.arange(len(start)), span)
    bin_of = first_bin[segment] + np.arange(len(segment)) - np.repeat(np.cumsum(span) - span, span)
    overlap = np.minimum(end[segment], edges[bin_of + 1])
    overlap -= np.maximum(start[segment], edges[bin_of])
    return segment, bin_of, overlap

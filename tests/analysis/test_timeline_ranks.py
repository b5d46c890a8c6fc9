"""Several ranks' timelines as one view: lane groups, the aligned clock, one level of detail."""

from __future__ import annotations

import numpy as np
import pytest

from profiler.analysis.table import TraceTable, load_trace
from profiler.analysis.timeline import prepare_timeline, timeline_view
from profiler.analysis.timeline_ranks import RankTrace, ranks_view
from tests.conftest import REFERENCE_TRACES

HTA = REFERENCE_TRACES / "hta"
OFFSET_US = -170.0  # what the alignment finds for rank 1 of the reference (any value will do)


@pytest.fixture(scope="module")
def traces() -> list[TraceTable]:
    return [load_trace(HTA / f"two_ranks_rank-{rank}.json.gz") for rank in (0, 1)]


@pytest.fixture(scope="module")
def ranks(traces: list[TraceTable]) -> list[RankTrace]:
    return [
        RankTrace(t.rank, f"rank {t.rank}", prepare_timeline(t), OFFSET_US * t.rank, f"f{t.rank}")
        for t in traces
    ]


def test_each_rank_is_a_group_of_its_lanes_shifted_onto_the_common_clock(
    traces: list[TraceTable], ranks: list[RankTrace]
) -> None:
    whole = ranks_view(ranks)
    view = whole.view

    assert not view.aggregated and view.event_count == sum(len(t.events) for t in traces)
    zero, one = whole.groups
    assert (zero.rank, zero.first_lane, one.rank, one.first_lane) == (0, 0, 1, zero.lanes)
    assert len(view.lanes) == zero.lanes + one.lanes
    own = [timeline_view(r.index) for r in ranks]
    assert [lane.label for lane in view.lanes] == [
        f"rank {r.rank} · {lane.label}" for r, part in zip(ranks, own, strict=True)
        for lane in part.lanes
    ]  # fmt: skip
    second = view.shapes[view.shapes["lane"] >= one.first_lane]
    expected = own[1].shapes.sort_values("row").reset_index(drop=True)
    second = second.sort_values("row").reset_index(drop=True)
    assert list(second["row"]) == list(expected["row"])
    assert list(second["start_us"]) == pytest.approx(list(expected["start_us"] + OFFSET_US))
    assert list(second["lane"]) == list(expected["lane"] + one.first_lane)
    spans = [r.index.span_us for r in ranks]
    assert view.span_us == (
        min(spans[0][0], spans[1][0] + OFFSET_US),
        max(spans[0][1], spans[1][1] + OFFSET_US),
    )
    assert whole.group_of(one.first_lane) == one and whole.group_of(len(view.lanes)) is None


def test_a_window_is_read_on_the_common_clock(ranks: list[RankTrace]) -> None:
    low = ranks[1].index.span_us[0] + OFFSET_US + 1000.0
    high = low + 3000.0

    view = ranks_view(ranks, low, high).view

    for rank in ranks:
        own = timeline_view(rank.index, low - rank.offset_us, high - rank.offset_us)
        mine = view.shapes[view.shapes["row"].isin(own.shapes["row"])]
        assert len(own.shapes) > 0
        assert (mine["end_us"] >= low).all() and (mine["start_us"] <= high).all()
    assert view.event_count == sum(
        timeline_view(r.index, low - r.offset_us, high - r.offset_us).event_count for r in ranks
    )


@pytest.mark.parametrize("max_shapes", [1, 300, 5_000])
def test_too_many_events_bin_every_group_alike(ranks: list[RankTrace], max_shapes: int) -> None:
    whole = ranks_view(ranks, max_shapes=max_shapes)
    view = whole.view

    assert view.aggregated and view.event_count > max_shapes
    lanes = len(view.lanes)
    assert view.bins_per_lane == max(1, max_shapes // lanes)
    assert view.shape_count <= max(max_shapes, lanes)
    assert (view.shapes["row"] == -1).all()
    # Every group's bins share the edges of the whole window.
    edges = np.linspace(view.start_us, view.end_us, view.bins_per_lane + 1)
    assert np.isin(np.round(view.shapes["start_us"].to_numpy(), 3), np.round(edges, 3)).all()


def test_no_ranks_is_an_empty_view_and_max_shapes_is_checked(ranks: list[RankTrace]) -> None:
    empty = ranks_view([])
    assert empty.view.lanes == () and empty.view.shape_count == 0 and empty.groups == ()
    with pytest.raises(ValueError):
        ranks_view(ranks, max_shapes=0)

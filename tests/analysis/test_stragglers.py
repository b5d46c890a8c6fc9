"""profiler.analysis.stragglers: clock offsets from collective ends, and the rank the others
wait for, on small synthetic frames built as ranks of a synchronous job would record them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from profiler.analysis.rank_frames import COLLECTIVE_COLUMNS, STEP_COLUMNS
from profiler.analysis.steps import CATEGORIES
from profiler.analysis.stragglers import (
    MATCH_TOLERANCE_US,
    STRAGGLER_PCT,
    analyze_ranks,
    others_median,
    shortest_half_median,
)

STEP_US = 10_000.0
COLLECTIVES_PER_STEP = 2
TRANSFER_US = 500.0


def synchronous_job(
    clock_us: dict[int, float], extra_us: dict[int, float], steps: int = 4, keyed: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Frames of a job whose ranks meet in every collective: each step, every rank computes
    ``STEP_US / 2`` (plus its ``extra_us``, as CPU work) before each of the step's collectives;
    each collective starts when the last rank arrives and ends ``TRANSFER_US`` later, the same
    moment everywhere. Each rank records true times plus its ``clock_us`` (its clock's error)."""
    ranks = sorted(clock_us)
    step_rows, ends = [], []
    now = 0.0
    for step in range(steps):
        start = now
        for ordinal in range(COLLECTIVES_PER_STEP):
            work = {r: STEP_US / 2 / COLLECTIVES_PER_STEP + extra_us.get(r, 0.0) for r in ranks}
            arrive = {r: now + work[r] for r in ranks}
            done = max(arrive.values()) + TRANSFER_US
            key = f"0/all_reduce/{step}/{ordinal}"
            for r in ranks:
                rank_key = key if keyed else f"rank{r}/{step}/{ordinal}"
                ends.append((r, rank_key, step, arrive[r] + clock_us[r], done + clock_us[r]))
            now = done
        for r in ranks:
            waited = (now - start) - STEP_US / 2 - COLLECTIVES_PER_STEP * extra_us.get(r, 0.0)
            step_rows.append(
                _step_row(r, step, start + clock_us[r], now - start, waited, extra_us.get(r, 0.0))
            )
    return (
        pd.DataFrame(step_rows, columns=list(STEP_COLUMNS)),
        pd.DataFrame(ends, columns=list(COLLECTIVE_COLUMNS)),
    )


def _step_row(
    rank: int, step: int, start: float, dur: float, waited: float, extra: float
) -> tuple[float, ...]:
    work = dur - waited
    categories = dict.fromkeys(CATEGORIES, 0.0)
    categories["communication"] = waited
    categories["cpu_exec"] = work - COLLECTIVES_PER_STEP * extra
    categories["kernel"] = COLLECTIVES_PER_STEP * extra  # where the straggler's extra went
    pre = STEP_US / 2 / COLLECTIVES_PER_STEP + extra
    return (rank, step, start, start + dur, dur, waited, pre, *categories.values())


def test_known_clock_offsets_are_recovered() -> None:
    clock = {0: 0.0, 1: 12_345.5, 2: -987.25}
    steps, ends = synchronous_job(clock, {})
    report = analyze_ranks(steps, ends)
    assert report.method == "collectives"
    assert report.ranks == (0, 1, 2)
    for rank, error in clock.items():
        # The offset is what puts the rank on rank 0's clock: minus its error.
        assert report.clock_offset_us[rank] == pytest.approx(-error)
    assert report.matched_collectives == dict.fromkeys(clock, 4 * COLLECTIVES_PER_STEP)
    assert report.warnings == ()


def test_the_late_rank_is_named_with_its_steps_excess_and_category() -> None:
    extra = 1_500.0
    steps, ends = synchronous_job({0: 0.0, 1: 50_000.0, 2: -30_000.0}, {1: extra})
    report = analyze_ranks(steps, ends)
    assert [s.rank for s in report.stragglers] == [1]
    found = report.stragglers[0]
    assert found.steps == (0, 1, 2, 3)
    assert found.steps_compared == 4
    # Late by `extra` at each of the step's collectives: the others wait that long for it.
    assert found.excess_us == pytest.approx(COLLECTIVES_PER_STEP * extra)
    step_us = STEP_US / 2 + COLLECTIVES_PER_STEP * (extra + TRANSFER_US)
    assert found.excess_pct == pytest.approx(100 * COLLECTIVES_PER_STEP * extra / step_us)
    assert found.category == "kernel"
    assert found.category_us == pytest.approx(COLLECTIVES_PER_STEP * extra)
    # Every rank's step is equally long: step time alone could not tell.
    assert steps.groupby("step")["dur_us"].nunique().eq(1).all()


def test_equal_ranks_have_no_straggler() -> None:
    steps, ends = synchronous_job({0: 0.0, 1: 7.0, 2: 3.0, 3: -2.0}, {})
    report = analyze_ranks(steps, ends)
    assert report.stragglers == ()
    assert report.steps["late_us"].abs().max() == pytest.approx(0.0, abs=1e-6)


def test_lateness_under_the_threshold_is_jitter() -> None:
    step_us = STEP_US / 2 + COLLECTIVES_PER_STEP * TRANSFER_US
    extra = 0.5 * STRAGGLER_PCT / 100 * step_us / COLLECTIVES_PER_STEP  # half the bar
    steps, ends = synchronous_job({0: 0.0, 1: 0.0}, {1: extra})
    report = analyze_ranks(steps, ends)
    assert report.stragglers == ()
    assert report.steps.loc[report.steps["rank"] == 1, "late_us"].gt(0).all()
    assert analyze_ranks(steps, ends, threshold_pct=STRAGGLER_PCT / 4).stragglers[0].rank == 1


def test_no_matching_collective_falls_back_to_wall_clock_with_a_warning() -> None:
    extra = 2_000.0
    steps, ends = synchronous_job({0: 0.0, 1: 0.0}, {1: extra}, keyed=False)
    report = analyze_ranks(steps, ends)
    assert report.method == "wall_clock"
    assert report.clock_offset_us == {0: 0.0, 1: 0.0}
    assert report.matched_collectives[1] == 0
    assert len(report.warnings) == 1 and "rank(s) 1" in report.warnings[0]
    # The straggler is still found, from how much less it waited than the others.
    assert [s.rank for s in report.stragglers] == [1]
    assert report.stragglers[0].excess_us == pytest.approx(COLLECTIVES_PER_STEP * extra)


def test_mismatched_keys_do_not_move_the_offset() -> None:
    """A rank's n-th collective may be another group's (groups unrecorded): those keys' ends
    disagree by far more than the tolerance and are left out."""
    steps, ends = synchronous_job({0: 0.0, 1: 400.0}, {})
    wrong = ends[(ends["rank"] == 1) & ends["key"].str.endswith("/1")].index[:3]
    ends.loc[wrong, "end_us"] += 60 * MATCH_TOLERANCE_US
    report = analyze_ranks(steps, ends)
    assert report.clock_offset_us[1] == pytest.approx(-400.0)
    assert report.matched_collectives[1] == len(ends[ends["rank"] == 1]) - 3


def test_one_rank_is_its_own_reference() -> None:
    steps, ends = synchronous_job({0: 0.0}, {})
    report = analyze_ranks(steps, ends)
    assert report.ranks == (0,)
    assert report.clock_offset_us == {0: 0.0}
    assert report.stragglers == ()


def test_shortest_half_median_ignores_a_minority_of_outliers() -> None:
    values = np.array([10.0, 10.5, 9.5, 10.2, 900.0, -400.0, 75.0])
    assert shortest_half_median(values) == pytest.approx(10.0, abs=0.5)
    assert shortest_half_median(np.array([3.0])) == 3.0


def test_the_report_serialises_with_string_rank_keys() -> None:
    steps, ends = synchronous_job({0: 0.0, 1: 100.0}, {1: 3_000.0})
    out = analyze_ranks(steps, ends).to_dict()
    assert out["clock_offset_us"] == {"0": 0.0, "1": -100.0}
    assert out["stragglers"][0]["rank"] == 1
    assert out["stragglers"][0]["steps"] == [0, 1, 2, 3]
    assert out["method"] == "collectives"


def test_the_others_median_is_each_rows_group_without_it() -> None:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"key": rng.integers(0, 7, 300), "value": rng.normal(size=300).round(1)})
    got = others_median(frame, "key", "value")
    for index, key in frame["key"].items():
        group = frame[frame["key"] == key]
        others = group.drop(index)["value"]
        expected = np.median(others) if len(others) else np.nan
        assert got[index] == pytest.approx(expected, nan_ok=True)

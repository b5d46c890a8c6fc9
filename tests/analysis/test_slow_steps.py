"""Slow steps in the step logs: the rule profiler.on_anomaly opens windows on."""

from __future__ import annotations

from typing import Any

import pytest

from profiler.analysis.slow_steps import (
    SLOW_STEP_COLUMNS,
    slow_steps,
)


def steps(durations: list[float], rank: int = 0, deep: set[int] = frozenset()) -> list[Any]:
    return [
        {"step": i, "dur_us": d, "rank": rank, "deep": i in deep} for i, d in enumerate(durations)
    ]


def test_a_step_over_twice_the_median_of_those_before_it_is_slow() -> None:
    # Ten steps of 10 ms, then 25 ms (2.5x), 19 ms (1.9x: not slow), 10 ms.
    found = slow_steps(steps([10_000.0] * 10 + [25_000.0, 19_000.0, 10_000.0]))
    assert list(found.columns) == list(SLOW_STEP_COLUMNS)
    assert found.to_dict("records") == [
        {"rank": 0, "step": 10, "dur_us": 25_000.0, "median_us": 10_000.0, "ratio": 2.5}
    ]


def test_the_median_of_an_even_count_is_the_upper_middle_as_the_trigger_takes_it() -> None:
    before = [1000.0 * (i + 1) for i in range(10)]  # 1..10 ms: middle two 5 and 6 ms
    found = slow_steps(steps([*before, 12_500.0]))
    assert found[["step", "median_us"]].to_dict("records") == [{"step": 10, "median_us": 6000.0}]
    assert slow_steps(steps([*before, 11_500.0])).empty  # 2x 5.5 ms would call it slow


def test_no_step_is_judged_before_min_steps() -> None:
    durations = [10_000.0] * 9 + [50_000.0]  # the 10th step has only 9 before it
    assert slow_steps(steps(durations)).empty
    assert list(slow_steps(steps(durations), min_steps=5)["step"]) == [9]


def test_a_step_must_also_exceed_the_median_by_min_excess() -> None:
    tiny = [100.0] * 10 + [900.0]  # 9x the median but only 0.8 ms more
    assert slow_steps(steps(tiny)).empty
    assert list(slow_steps(steps(tiny), min_excess_us=500.0)["step"]) == [10]


def test_deep_steps_are_judged_but_left_out_of_the_median() -> None:
    # Steps 10-12 are in a deep window and 3x slower (the profiler's cost): they are slow
    # against the steps before, and the median of step 13 ignores them.
    durations = [10_000.0] * 10 + [30_000.0] * 3 + [21_000.0]
    found = slow_steps(steps(durations, deep={10, 11, 12}))
    assert list(found["step"]) == [10, 11, 12, 13]
    assert list(found["median_us"]) == [10_000.0] * 4


def test_the_median_covers_the_last_history_steps() -> None:
    # 40 steps of 10 ms, then 10 of 30 ms (slow until the median moves), then 50 ms: 1.7x the
    # median of the last 10 steps (30 ms), 5x that of the last 50 (10 ms).
    durations = [10_000.0] * 40 + [30_000.0] * 10 + [50_000.0]
    assert list(slow_steps(steps(durations), history=10)["step"]) == [40, 41, 42, 43, 44]
    assert list(slow_steps(steps(durations), history=50)["step"]) == [*range(40, 50), 50]


def test_each_rank_against_its_own_steps() -> None:
    records = steps([10_000.0] * 12, rank=0) + steps([40_000.0] * 11 + [90_000.0], rank=1)
    found = slow_steps(records)
    assert found[["rank", "step"]].to_dict("records") == [{"rank": 1, "step": 11}]


def test_empty_logs_and_bad_arguments() -> None:
    assert slow_steps([]).empty
    assert list(slow_steps([]).columns) == list(SLOW_STEP_COLUMNS)
    with pytest.raises(ValueError, match="factor > 1"):
        slow_steps([], factor=1.0)

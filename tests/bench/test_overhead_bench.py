"""bench/overhead.py's step-interleaved statistics: the rare steps (the phase split put in
place, a timed step, the step log's flush) are charged at their rate in a real run, over the
ordinary pairs' median, so the "whole" figure counts what the median and the trimmed mean pass
over."""

from __future__ import annotations

import pytest

from bench.overhead import FLUSHES, INSTALLS, ORDINARY, TIMED, rare_costs, trimmed_mean


def test_rare_steps_are_charged_at_their_rate_over_the_ordinary_median() -> None:
    deltas = [10.0, 8.0, 12.0, 10.0, 10.0, 40.0, 50.0, 70.0, 510.0, 310.0]
    kinds = [ORDINARY] * 5 + [INSTALLS, INSTALLS, TIMED, FLUSHES, FLUSHES]
    rows = [1] * 8 + [50, 30]
    costs = rare_costs(deltas, kinds, rows, every=10, steps_per_flush=40.0)
    assert costs[INSTALLS] == pytest.approx((45.0 - 10.0) / 10)  # median 45 over 10, 1 in 10
    assert costs[TIMED] == pytest.approx((70.0 - 10.0) / 10)
    assert costs[FLUSHES] == pytest.approx(10.0)  # (500 / 50 + 300 / 30) / 2 µs a row, a step
    assert costs["steps_per_flush"] == 40.0


def test_a_kind_no_pair_saw_costs_nothing() -> None:
    costs = rare_costs([5.0, 7.0, 6.0], [ORDINARY] * 3, [1, 1, 1], every=48, steps_per_flush=0.0)
    assert costs[INSTALLS] == costs[TIMED] == costs[FLUSHES] == 0.0


def test_the_trimmed_mean_drops_each_tail() -> None:
    values = [float(v) for v in range(1, 21)] + [1000.0]  # one preempted step
    assert trimmed_mean(values) == pytest.approx(sum(range(2, 21)) / 19)

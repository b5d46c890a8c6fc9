"""bench/overhead.py's step-interleaved statistics: the rare steps (the phase split put in
place, a timed step, the step log's flush) are charged at their rate in a real run, over the
ordinary steps, so the "whole" figure counts what the median and the trimmed mean pass over."""

from __future__ import annotations

import pytest

from bench.overhead import FLUSHES, INSTALLS, ORDINARY, TIMED, rare_costs, trimmed_mean


def steps(*rows: tuple[float, float, float]) -> list[dict[str, float]]:
    """ "On" steps' sections in µs: (forward, opt.step, prof.step) and a noisy backward."""
    return [
        {"next": 1.0, "forward": f, "loss+backward": 900.0 + 97 * i, "opt.step": o,
         "zero_grad": 1.0, "prof.step": p}
        for i, (f, o, p) in enumerate(rows)
    ]  # fmt: skip


def test_rare_steps_are_charged_at_their_rate_from_the_sections_their_work_lands_in() -> None:
    sections = steps(
        *[(500.0, 100.0, 5.0)] * 3,  # ordinary
        (500.0, 100.0, 45.0), (500.0, 100.0, 25.0),  # installs: median 35, 30 over ordinary
        (520.0, 110.0, 35.0),  # timed: 20 + 10 + 30 over ordinary
        (500.0, 100.0, 505.0), (500.0, 100.0, 305.0),  # flushes
    )  # fmt: skip
    kinds = [ORDINARY] * 3 + [INSTALLS, INSTALLS, TIMED, FLUSHES, FLUSHES]
    # The split is timed one step in 10; 2.5 ms steps: the flush comes once in 400 steps.
    costs = rare_costs(sections, kinds, {INSTALLS: 0.1, TIMED: 0.1, FLUSHES: 1 / 400})
    assert costs[INSTALLS] == pytest.approx(30.0 / 10)
    assert costs[TIMED] == pytest.approx(60.0 / 10)
    assert costs[FLUSHES] == pytest.approx(400.0 / 400)  # median of 500 and 300 over 5


def test_a_kind_no_step_saw_costs_nothing() -> None:
    rates = {INSTALLS: 1 / 48, TIMED: 1 / 48, FLUSHES: 1 / 400}
    costs = rare_costs(steps(*[(5.0, 7.0, 6.0)] * 3), [ORDINARY] * 3, rates)
    assert costs[INSTALLS] == costs[TIMED] == costs[FLUSHES] == 0.0


def test_the_trimmed_mean_drops_each_tail() -> None:
    values = [float(v) for v in range(1, 21)] + [1000.0]  # one preempted step
    assert trimmed_mean(values) == pytest.approx(sum(range(2, 21)) / 19)

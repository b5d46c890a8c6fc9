"""bench/payload.py's figures: the live Overview's CPU ratio, and the bench's measuring code
run on the real app (a small trace, a short log)."""

from __future__ import annotations

from pathlib import Path

from bench.payload import REPO, STEP_COUNTS, measure_live, ratios


def test_the_ratio_is_the_cpu_at_100k_steps_over_1k() -> None:
    live = {STEP_COUNTS[0]: {"cpu_s": 0.5}, STEP_COUNTS[-1]: {"cpu_s": 0.6}}

    (ratio,) = ratios({}, live)

    assert ratio.name == "live_overview_cpu_100k_over_1k" and abs(ratio.value - 1.2) < 1e-9
    assert ratios({}, {STEP_COUNTS[0]: {"cpu_s": 0.0}, STEP_COUNTS[-1]: {"cpu_s": 1.0}}) == []


def test_a_live_poll_sends_the_same_bytes_at_any_length(tmp_path: Path) -> None:
    del tmp_path
    short, long = measure_live(REPO, 100, 3, 5), measure_live(REPO, 2_000, 3, 5)

    # Three polls of five new steps each: only the step numbers' digits differ.
    assert 0 < short["bytes"] <= long["bytes"] < short["bytes"] + 200

"""bench/ranks.py and the synchronised runs bench/synth.py writes for it: the simulated ranks
line up on their collectives, the slow one is found, and the bench reports each mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.ranks import MODES, SLOW_RANK, Result, measure, ratios
from bench.run import BENCHES
from bench.synth import Timing, write_ranks
from profiler.analysis.summary import summarize


def skew_us(rank: int) -> float:
    """The host clock skew write_ranks gives ``rank``, in us (its own formula, re-derived)."""
    return (rank * 7_919 % 2_001 - 1_000) * 1.0


def test_synchronised_ranks_align_on_their_collectives_and_name_the_slow_one(
    tmp_path: Path,
) -> None:
    write_ranks(tmp_path / "run", 1_500, ranks=4, slow_rank=3, slow_ms=4.0, steps=3)
    found = summarize(tmp_path / "run")["distributed"]
    assert found["method"] == "collectives"
    # The ranks that wait share every duration, so aligning them undoes the skew alone.
    for rank in (1, 2):
        expected = -(skew_us(rank) - skew_us(0))
        assert found["clock_offset_us"][str(rank)] == pytest.approx(expected, abs=1.0)
    (straggler,) = found["stragglers"]
    assert straggler["rank"] == 3 and straggler["steps"] == [0, 1, 2]
    assert straggler["category"] == "dataloader"
    assert straggler["category_us"] == pytest.approx(4_000.0, rel=0.01)
    assert Timing(seed="0").slow_us == 0.0


def test_growth_ratios_divide_the_larger_count_by_the_smaller() -> None:
    results = [
        Result(
            ranks, mode, seconds=ranks / 10, peak_bytes=ranks * 1e6 + 50e6, reps=1, stragglers=(1,)
        )  # fmt: skip
        for ranks in (64, 256)
        for mode in MODES
    ]
    found = {r.name: r for r in ratios(results)}
    assert found["view, local time growth 256/64"].value == pytest.approx(4.0)
    assert found["build memory growth 256/64"].value == pytest.approx(306 / 114)
    target = found["cross-rank view of 256 ranks from their summaries"]
    assert target.value == pytest.approx(25.6) and target.met is True


def test_the_runner_knows_the_bench() -> None:
    (bench,) = [b for b in BENCHES if b.name == "ranks"]
    assert bench.script == Path("bench/ranks.py") and "--quick" in bench.quick_args


@pytest.mark.slow
def test_every_mode_runs_and_finds_the_slow_rank(tmp_path: Path) -> None:
    results = measure(4, 1_500, reps=1, cache_dir=tmp_path)
    assert [r.mode for r in results] == list(MODES)
    for result in results:
        assert result.ranks == 4 and result.seconds > 0 and result.peak_bytes >= 0
        assert result.stragglers == (SLOW_RANK,)

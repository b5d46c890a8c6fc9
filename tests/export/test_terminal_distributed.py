"""The terminal summary's cross-rank panel: the straggler and the clocks, said in words."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from profiler.analysis.stragglers import analyze_ranks
from profiler.export.terminal import render_summary
from tests.analysis.test_stragglers import synchronous_job


def _text(distributed: dict[str, Any] | None) -> str:
    summary = {"schema": "trainprof.summary/1", "traces": [], "distributed": distributed}
    console = Console(width=300, record=True)
    for renderable in render_summary(summary):
        console.print(renderable)
    return console.export_text()


def _entry(**job: Any) -> dict[str, Any]:
    return {"run": "traces/ddp", **analyze_ranks(*synchronous_job(**job)).to_dict()}


def test_the_straggler_and_the_offsets_are_said_in_words() -> None:
    text = _text(_entry(clock_us={0: 0.0, 1: 2_500.0}, extra_us={1: 1_500.0}))
    assert "clocks aligned on collective ends to rank 0's: rank 1 -2.50 ms" in text
    assert "the other ranks wait 3.00 ms for it in step(s) 0, 1, 2, 3 (4 of 4 steps)" in text
    assert "its extra time is in kernel (+3.00 ms per step over the others)" in text
    assert "No straggler" not in text


def test_even_ranks_and_the_wall_clock_fallback() -> None:
    text = _text(_entry(clock_us={0: 0.0, 1: 0.0}, extra_us={}, keyed=False))
    assert "clocks not aligned on collectives (wall clock): rank 1 +0.0 us" in text
    assert "no collective of rank(s) 1 matches rank 0's" in text
    assert "No straggler: no rank keeps the others waiting." in text


def test_one_rank_has_no_panel() -> None:
    assert "Ranks:" not in _text(None)

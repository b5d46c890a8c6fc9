"""The always-on path's short way through a step (``StepMetrics.roll``) writes what the long one
would: memory read when due and carried in between, rows handed over once a second, every step
once. A fake clock moves a fixed tick at each reading, so nothing here depends on how fast the
machine is; the memory probe and the step log are the real ones (the probe is only counted)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from torch import nn

import profiler
from profiler.capture import step_metrics
from profiler.capture.memory import MemoryProbe
from profiler.capture.step_sinks import StepSinks
from tests.capture.test_session import TickingClock
from tests.conftest import read_steps

TICK_NS = 30_000_000  # one clock reading per light step: each step takes 30 ms of fake time
STEPS = 80


@pytest.fixture
def readings(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Every RSS reading the step metrics take: (fake clock at the reading, bytes read)."""
    clock = TickingClock(TICK_NS)
    monkeypatch.setattr(step_metrics, "_now", clock)
    # One phase-timed step (the first) and no other: this is about the untimed steps.
    monkeypatch.setattr(step_metrics, "PHASE_COST_NS", 10**15)
    taken: list[tuple[int, int]] = []
    real = MemoryProbe.rss_bytes

    def counted(self: MemoryProbe) -> int:
        value = real(self)
        taken.append((clock.now_ns, value))
        return value

    monkeypatch.setattr(MemoryProbe, "rss_bytes", counted)
    return taken


def light_run(tmp_path: Path, batches: list[int] | None = None) -> tuple[Any, list[dict]]:
    """STEPS light steps with no model work: each step is one tick of the fake clock."""
    model = nn.Linear(2, 2)
    with profiler.profile(
        model, out_dir=tmp_path, run_name="light", schedule=None, system_metrics=False
    ) as prof:
        for _ in range(STEPS):
            prof.step()
    assert prof.store.steps_path is not None
    return prof, read_steps(prof.store.steps_path)


def test_memory_is_read_when_due_and_carried_by_the_steps_between(
    tmp_path: Path, readings: list[tuple[int, int]]
) -> None:
    _, steps = light_run(tmp_path)
    assert [s["step"] for s in steps] == list(range(STEPS))
    # 30 ms steps and a reading due 100 ms after the last: one step in four reads, not each.
    assert STEPS // 4 - 1 <= len(readings) <= STEPS // 4 + 2, readings
    gaps = [b - a for (a, _), (b, _) in zip(readings, readings[1:], strict=False)]
    assert all(step_metrics.RSS_INTERVAL_NS <= gap < step_metrics.RSS_INTERVAL_NS + TICK_NS
               for gap in gaps[:-1]), gaps  # fmt: skip
    # Each step carries the latest reading at its end; its peak is at least its start's.
    values = iter(readings)
    latest = 0
    previous_end = None
    for s in steps:
        end_us = s["start_unix_us"] + s["dur_us"]
        if s["memory_bytes"] != latest:
            latest = next(value for _, value in values if value == s["memory_bytes"])
        assert s["memory_bytes"] == latest and s["peak_memory_bytes"] >= latest
        assert s["dur_us"] == pytest.approx(TICK_NS / 1000, abs=0.2) or s["step"] == STEPS - 1
        if previous_end is not None:  # each step starts at the previous one's end
            assert s["start_unix_us"] == pytest.approx(previous_end, abs=0.2)
        previous_end = end_us
        assert s["forward_us"] is None or s["step"] == 0


def test_rows_reach_the_step_log_about_once_a_second(
    tmp_path: Path, readings: list[tuple[int, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[list[int]] = []
    write = StepSinks.write

    def counted(self: StepSinks, records: list[dict[str, Any]]) -> None:
        batches.append([r["step"] for r in records])
        write(self, records)

    monkeypatch.setattr(StepSinks, "write", counted)
    _, steps = light_run(tmp_path)
    assert [step for batch in batches for step in batch] == list(range(STEPS))
    # 80 steps of 30 ms: two full seconds while training (34 steps each, the first one's
    # second counted from the session's start), the rest at the end of the run.
    sizes = [len(batch) for batch in batches]
    assert len(sizes) == 3 and all(33 <= size <= 35 for size in sizes[:2]), sizes

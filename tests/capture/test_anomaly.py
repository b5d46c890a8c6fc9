"""profiler.on_anomaly: windows open after the slow steps, and only there.

The detector and the session are driven by a fake clock (the step metrics' clock, advanced by
the test), so the step times are the ones injected; one real run checks the same end to end.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import profiler
from profiler.capture import step_metrics
from profiler.capture.anomaly import AnomalySchedule
from tests.capture.helpers import meta_of
from tests.conftest import read_steps, read_trace

NORMAL_NS = 1_000_000  # 1 ms
SLOW_NS = 10 * NORMAL_NS


def step_times(steps: int, slow: set[int], *, jitter: bool = True) -> list[int]:
    """Step times: 1 ms give or take 5% (a fixed pattern), ten times that at ``slow``."""
    return [
        SLOW_NS if step in slow else NORMAL_NS + (step % 7 - 3) * 15_000 * jitter
        for step in range(steps)
    ]


def triggered(schedule: AnomalySchedule, times: list[int]) -> list[int]:
    """The steps at which the detector opens a window, when the steps take ``times``.

    As in a session: the steps of a window (warmup and active) are not observed.
    """
    detector, opened, skip = schedule.detector(), [], 0
    for step, step_ns in enumerate(times):
        if skip:
            skip -= 1
            continue
        trigger = detector.observe(step, step_ns)
        if trigger is not None:
            opened.append(step)
            skip = schedule.warmup + schedule.active
    return opened


def test_windows_open_after_the_slow_steps_only() -> None:
    schedule = profiler.on_anomaly(factor=2.0, active=3, max_windows=5, cooldown=5)
    assert triggered(schedule, step_times(120, {30, 70, 100})) == [30, 70, 100]
    # Steady steps, however long the run, open nothing.
    assert triggered(schedule, step_times(500, set())) == []


def test_the_trigger_says_why() -> None:
    detector = profiler.on_anomaly(factor=3.0).detector()
    times = step_times(40, {25})
    found = [t for step, ns in enumerate(times) if (t := detector.observe(step, ns))]
    assert len(found) == 1
    trigger = found[0]
    assert trigger["kind"] == "anomaly" and trigger["step"] == 25
    assert trigger["step_us"] == SLOW_NS / 1000
    assert trigger["median_us"] == pytest.approx(NORMAL_NS / 1000, rel=0.05)
    assert trigger["factor"] == 3.0


def test_no_window_before_min_steps() -> None:
    schedule = profiler.on_anomaly(min_steps=10, cooldown=0)
    assert triggered(schedule, step_times(40, {3, 9, 10, 25})) == [10, 25]


def test_max_windows() -> None:
    schedule = profiler.on_anomaly(max_windows=2, cooldown=0)
    assert triggered(schedule, step_times(200, {20, 50, 80, 110})) == [20, 50]


def test_cooldown_keeps_one_slow_patch_to_one_window() -> None:
    patch = set(range(30, 45))  # fifteen slow steps in a row
    schedule = profiler.on_anomaly(active=3, cooldown=20, max_windows=5)
    # The window (warmup + 3) follows step 30; the rest of the patch falls in the cooldown.
    assert triggered(schedule, step_times(100, patch)) == [30]
    # Without a cooldown the patch opens window after window.
    assert triggered(
        profiler.on_anomaly(active=3, cooldown=0, max_windows=5), step_times(100, patch)
    ) == [30, 35, 40]


def test_a_slower_regime_moves_the_median() -> None:
    # The run gets 3x slower for good at step 40: one window at the change, then the median
    # catches up and the new pace is normal.
    times = [NORMAL_NS] * 40 + [3 * NORMAL_NS] * 160
    schedule = profiler.on_anomaly(history=50, cooldown=30, max_windows=5)
    assert triggered(schedule, times) == [40]


TINY_NS = 40_000  # 40 us: a step far too short for a window to be worth it


def test_jitter_on_tiny_steps_opens_nothing() -> None:
    """5x the median, but only 160 us beyond it: under the 1 ms floor."""
    jitter = [5 * TINY_NS if step in {20, 45, 70} else TINY_NS for step in range(100)]
    assert triggered(profiler.on_anomaly(cooldown=0), jitter) == []
    assert triggered(profiler.on_anomaly(cooldown=0, min_excess_ms=0), jitter) == [20, 45, 70]
    # The floor is in milliseconds beyond the median: 1.2 ms past 40 us passes it, 0.9 does not.
    stalls = {20: TINY_NS + 1_200_000, 45: TINY_NS + 900_000}
    times = [stalls.get(step, TINY_NS) for step in range(70)]
    assert triggered(profiler.on_anomaly(cooldown=0), times) == [20]
    assert triggered(profiler.on_anomaly(cooldown=0, min_excess_ms=0.5), times) == [20, 45]


def test_the_floor_holds_in_a_session(tmp_path: Path, fake_clock: FakeClock) -> None:
    jitter = [5 * TINY_NS if step == 25 else TINY_NS for step in range(40)]
    assert run_loop(tmp_path / "a", profiler.on_anomaly(), jitter, fake_clock).trace_files == []
    prof = run_loop(tmp_path / "b", profiler.on_anomaly(min_excess_ms=0.1), jitter, fake_clock)
    assert [w["trigger"]["step"] for w in windows(prof)] == [25]
    assert meta_of(prof.run_dir)["config"]["schedule"]["min_excess_ms"] == 0.1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"factor": 1.0}, "factor must be a finite number > 1"),
        ({"factor": float("nan")}, "factor must be a finite number > 1"),
        ({"factor": "2"}, "factor must be a number"),
        ({"factor": True}, "factor must be a number"),
        ({"active": 0}, "active must be an int >= 1"),
        ({"max_windows": 0}, "max_windows must be an int >= 1"),
        ({"warmup": -1}, "warmup must be an int >= 0"),
        ({"cooldown": 2.5}, "cooldown must be an int >= 0"),
        ({"min_steps": 0}, "min_steps must be an int >= 1"),
        ({"min_steps": 60, "history": 50}, "min_steps \\(60\\) cannot exceed history \\(50\\)"),
        ({"min_excess_ms": -1}, "min_excess_ms must be a finite number >= 0"),
        ({"min_excess_ms": float("inf")}, "min_excess_ms must be a finite number >= 0"),
        ({"min_excess_ms": "1"}, "min_excess_ms must be a finite number >= 0"),
    ],
)
def test_config_errors_raise_when_built(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        profiler.on_anomaly(**kwargs)


def test_config_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        profiler.on_anomaly(2.0)  # type: ignore[misc]
    with pytest.raises(TypeError, match="on_anomaly"):
        profiler.profile(nn.Linear(2, 2), schedule=lambda step: None)  # type: ignore[arg-type]


class FakeClock:
    """The step metrics' clock, advanced by hand."""

    def __init__(self) -> None:
        self.ns = 1_000_000_000

    def __call__(self) -> int:
        return self.ns


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeClock]:
    clock = FakeClock()
    monkeypatch.setattr(step_metrics, "_now", clock)
    yield clock


def run_loop(out: Path, schedule: Any, times: list[int], clock: FakeClock | None) -> Any:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    x = torch.randn(4, 8)
    with profiler.profile(
        model, out_dir=out, run_name="r", schedule=schedule, system_metrics=False
    ) as prof:
        for step_ns in times:
            model(x).sum().backward()
            if clock is None:
                time.sleep(step_ns / 1e9)
            else:
                clock.ns += step_ns
            prof.step()
    return prof


def windows(prof: Any) -> list[dict[str, Any]]:
    return [read_trace(path)["trainprof"]["window"] for path in prof.trace_files]


def profiler_steps(path: Path) -> list[int]:
    names = {e["name"] for e in read_trace(path)["traceEvents"] if e.get("ph") == "X"}
    return sorted(int(n.split("#")[1]) for n in names if n.startswith("ProfilerStep#"))


def test_session_opens_windows_after_injected_slow_steps(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    schedule = profiler.on_anomaly(factor=2.0, active=2, max_windows=2, cooldown=5)
    prof = run_loop(tmp_path, schedule, step_times(70, {15, 30, 50}), fake_clock)

    found = windows(prof)
    # Warmup at slow + 1, then two recorded steps; the third slow step is past max_windows.
    assert [(w["first_step"], w["last_step"]) for w in found] == [(17, 18), (32, 33)]
    assert [w["trigger"]["step"] for w in found] == [15, 30]
    assert all(w["trigger"]["kind"] == "anomaly" for w in found)
    assert found[0]["trigger"]["step_us"] == SLOW_NS / 1000
    # Kineto names the run's own steps.
    assert [profiler_steps(path) for path in prof.trace_files] == [[17, 18], [32, 33]]
    # The step log marks exactly those steps deep.
    deep = [
        line["step"] for line in read_steps(prof.run_dir / "meta" / "steps.0.jsonl") if line["deep"]
    ]
    assert deep == [17, 18, 32, 33]
    meta = meta_of(prof.run_dir)
    assert [t["step"] for t in meta["triggers"]] == [15, 30]
    assert meta["config"]["schedule"]["kind"] == "on_anomaly"


def test_steady_run_writes_no_trace(tmp_path: Path, fake_clock: FakeClock) -> None:
    prof = run_loop(tmp_path, profiler.on_anomaly(), step_times(60, set()), fake_clock)
    assert prof.trace_files == []
    assert "triggers" not in meta_of(prof.run_dir)


def test_real_slow_step_is_followed_by_a_window(tmp_path: Path) -> None:
    # Steps are a 2 ms sleep; step 25 sleeps 300 ms, 150x: a loaded machine cannot fake that,
    # and at factor 30 a stall would need to pass 60 ms to make a normal step look slow.
    slow = 25
    times = [300_000_000 if step == slow else 2_000_000 for step in range(40)]
    schedule = profiler.on_anomaly(factor=30.0, active=3, max_windows=3, cooldown=0)
    prof = run_loop(tmp_path, schedule, times, None)
    found = {w["trigger"]["step"]: w for w in windows(prof)}
    assert slow in found, found
    assert (found[slow]["first_step"], found[slow]["last_step"]) == (slow + 2, slow + 4)


def test_without_warmup_the_window_starts_at_the_next_step(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    with pytest.warns(UserWarning, match="warmup"):  # torch's own word on warmup=0
        prof = run_loop(
            tmp_path, profiler.on_anomaly(warmup=0, active=2), step_times(30, {15}), fake_clock
        )
    (found,) = windows(prof)
    assert (found["first_step"], found["last_step"]) == (16, 17)
    assert profiler_steps(prof.trace_files[0]) == [16, 17]
    steps = read_steps(prof.run_dir / "meta" / "steps.0.jsonl")
    assert [line["step"] for line in steps if line["deep"]] == [16, 17]

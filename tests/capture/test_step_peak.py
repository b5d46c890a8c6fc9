"""``peak_memory_bytes`` on CPU is the highest RSS seen within each step, not the process peak.

The background sampler is replaced by one that never starts its thread: the tests take its
readings themselves, inside the steps, so nothing depends on the 100 ms timer.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import profiler
from profiler.capture import session as session_module
from profiler.capture.memory import MemoryProbe, StepPeak
from profiler.capture.system import SystemSampler
from tests.conftest import read_steps

BUFFER_BYTES = 400 * 1024**2
BIG_STEP = 5
STEPS = 10


class ManualSampler(SystemSampler):
    """A sampler whose readings the test takes (no thread, no timer)."""

    made: list[ManualSampler] = []

    def start(self) -> None:
        ManualSampler.made.append(self)


@pytest.fixture
def manual_sampler(monkeypatch: pytest.MonkeyPatch) -> list[ManualSampler]:
    ManualSampler.made = []
    monkeypatch.setattr(session_module, "SystemSampler", ManualSampler)
    return ManualSampler.made


def touched_buffer() -> np.ndarray[Any, Any]:
    """BUFFER_BYTES that are really resident (every page written)."""
    return np.ones(BUFFER_BYTES // 8, dtype=np.float64)


def train(tmp_path: Path, samplers: list[ManualSampler], *, sample: bool) -> list[dict[str, Any]]:
    """A small loop whose step BIG_STEP allocates, touches and frees a large buffer."""
    torch.manual_seed(0)
    model = nn.Linear(16, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with profiler.profile(
        model, out_dir=tmp_path, run_name="peak", schedule=None, system_metrics=True
    ) as prof:
        (sampler,) = samplers
        for step in range(STEPS):
            model(torch.randn(8, 16)).sum().backward()
            opt.step()
            opt.zero_grad()
            if step == BIG_STEP:
                buffer = touched_buffer()
                if sample:
                    sampler.sample_once()  # the reading the 10 Hz timer would take mid-step
                del buffer
            elif sample:
                sampler.sample_once()
            prof.step()
    assert prof.store.steps_path is not None
    return read_steps(prof.store.steps_path)


def test_the_step_that_allocates_peaks_and_the_next_ones_drop_back(
    tmp_path: Path, manual_sampler: list[ManualSampler]
) -> None:
    steps = train(tmp_path, manual_sampler, sample=True)
    peaks = [s["peak_memory_bytes"] for s in steps]
    assert [s["step"] for s in steps] == list(range(STEPS))
    before = statistics.median(peaks[1:BIG_STEP])
    after = statistics.median(peaks[BIG_STEP + 1 :])
    # The buffer is on top of what the loop holds in the step that made it (most of it: RSS
    # has page-granular noise, and the allocator may reuse a little of what was free).
    assert peaks[BIG_STEP] - before > 0.7 * BUFFER_BYTES, peaks
    # The steps after it peak where the steps before did, not at the process's peak.
    assert abs(after - before) < 0.2 * BUFFER_BYTES, peaks
    assert peaks[BIG_STEP] - max(peaks[BIG_STEP + 1 :]) > 0.7 * BUFFER_BYTES, peaks
    for s in steps:  # a step's peak covers what was resident at its end
        assert s["peak_memory_bytes"] >= s["memory_bytes"] > 0


def test_without_a_sampler_reading_a_step_keeps_its_boundary_readings(
    tmp_path: Path, manual_sampler: list[ManualSampler]
) -> None:
    steps = train(tmp_path, manual_sampler, sample=False)
    for s in steps:
        assert s["peak_memory_bytes"] >= s["memory_bytes"] > 0
    # No reading saw the buffer: no step carries it.
    peaks = [s["peak_memory_bytes"] for s in steps]
    assert max(peaks) - min(peaks) < 0.5 * BUFFER_BYTES, peaks


def test_step_peak_keeps_the_highest_reading_of_each_window() -> None:
    peak = StepPeak()
    assert peak.take() == 0  # nothing read in this window
    peak.feed(300)
    peak.feed(100)
    assert peak.take() == 300
    assert peak.take() == 0  # the window was reset
    peak.feed(50)
    assert peak.take() == 50


def test_a_reading_from_a_closed_window_is_not_counted_in_the_next() -> None:
    peak = StepPeak()
    peak.feed(10)
    epoch = peak.epoch
    assert peak.take() == 10
    # The sampler read the epoch before the step ended and wrote after: that late write is
    # tagged with the old epoch, so the new window does not take it.
    peak.window = (epoch, 999)
    assert peak.take() == 0


def test_cuda_step_bytes_reads_current_and_peak_from_one_stats_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The shape torch's _cuda_memoryStats returns (c10's DeviceStats, stat type "all").
    stats = {"allocated_bytes": {"all": {"current": 5, "peak": 9, "allocated": 20, "freed": 15}}}
    calls: list[None] = []

    def nested(device: Any = None) -> dict[str, Any]:
        calls.append(None)
        return stats

    monkeypatch.setattr(torch.cuda, "memory_stats_as_nested_dict", nested)
    probe = MemoryProbe("cuda")
    assert probe.cuda_step_bytes() == (5, 9)
    assert len(calls) == 1
    stats = {}  # CUDA not initialised yet: torch returns an empty dict
    assert probe.cuda_step_bytes() == (0, 0)

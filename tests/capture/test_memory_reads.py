"""Memory is read only where it can have changed; every module boundary still gets its sample."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
import torch
from torch import nn

from profiler.capture.module_hooks import ModuleTracer


class CountingProbe:
    """A memory probe whose readings are 1, 2, 3... so a reading taken again shows."""

    def __init__(self, reuse_ns: int = 0) -> None:
        self.reads = 0
        self.reuse_ns = reuse_ns

    def reader(self) -> Callable[[], int]:
        def read() -> int:
            self.reads += 1
            return self.reads

        return read


class Residual(nn.Module):
    """Runs an op of its own between its children: its children must read."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x) + x)


def traced(
    model: nn.Module, reuse_ns: int = 0, tick_ns: int = 1
) -> tuple[ModuleTracer, CountingProbe]:
    """``model`` traced by a probe that counts its reads, on a fake clock that moves ``tick_ns``
    each time it is read."""
    probe = CountingProbe(reuse_ns)
    clock = itertools.count(step=tick_ns)
    tracer = ModuleTracer([model], probe, lambda: next(clock))  # type: ignore[arg-type]
    tracer.attach()
    return tracer, probe


def samples(tracer: ModuleTracer) -> list[int]:
    return [int(reading) for _, reading in tracer.take().memory]  # type: ignore[call-overload]


@pytest.fixture(autouse=True)
def _no_grad_nodes() -> object:
    with torch.no_grad():  # no backward lane needed here
        yield


def test_a_sequentials_children_take_the_last_reading_again() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Sequential(nn.Linear(4, 4)))
    tracer, probe = traced(model)
    model(torch.randn(2, 4))
    tracer.detach()
    # Boundaries in order: root start, 0 start/end, 1 start/end, 2 start, 2.0 start/end, 2 end,
    # root end: 2 per module, each read only after a child ran.
    assert samples(tracer) == [1, 1, 2, 2, 3, 3, 3, 4, 4, 4]
    assert probe.reads == 4


def test_ops_between_children_are_read_around() -> None:
    model = nn.Sequential(Residual())
    tracer, probe = traced(model)
    model(torch.randn(2, 4))
    tracer.detach()
    # root start, Residual start (again), a start/end (read: Residual is no Sequential),
    # b start/end, Residual end (read), root end (again).
    assert samples(tracer) == [1, 1, 2, 3, 4, 5, 6, 6]
    assert probe.reads == 6


def test_a_hook_or_a_call_from_outside_the_loop_reads() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    handle = model[1].register_forward_pre_hook(lambda module, args: None)
    tracer, probe = traced(model)
    model(torch.randn(2, 4))
    model[1](torch.randn(2, 4))  # not from the Sequential's loop
    handle.remove()
    tracer.detach()
    # root start, 0 start (again), 0 end, 1 start (its pre-hook ran: read), 1 end, root end
    # (read: a hooked child is not counted as the loop's); then 1 alone: start and end read.
    assert samples(tracer) == [1, 1, 2, 3, 4, 5, 6, 7]


def test_an_exception_leaves_no_quiet_state() -> None:
    class Boom(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom")

    model = nn.Sequential(nn.Linear(4, 4), Boom())
    tracer, _ = traced(model)
    with pytest.raises(RuntimeError):
        model(torch.randn(2, 4))
    model[0](torch.randn(2, 4))  # after the exception, a child called alone reads
    tracer.detach()
    # root start, 0 start (again), 0 end, Boom start (again), no end; then 0 alone reads.
    assert samples(tracer) == [1, 1, 2, 2, 3, 4]


# Boundaries of nn.Sequential(Residual()): root start, Residual start (the loop's: taken again),
# a start/end, b start/end, Residual end, root end (the loop's). The clock moves tick_ns a reading.
# 10 ns: 0 read; 20 (a start) 20 ns since it: again; 30 read; 40, 50 again; 60 read.
# 30 ns: every boundary is past the window of the last read: each reads but the loop's own.
@pytest.mark.parametrize(
    ("tick_ns", "expected"),
    [(10, [1, 1, 1, 2, 2, 2, 3, 3]), (30, [1, 1, 2, 3, 4, 5, 6, 6])],
)
def test_a_reading_younger_than_the_reuse_window_is_taken_again(
    tick_ns: int, expected: list[int]
) -> None:
    """A boundary reads memory only once ``reuse_ns`` (25 ns here) has passed since the last
    system call, as well as where the loop of a Sequential ran nothing since."""
    model = nn.Sequential(Residual())
    tracer, probe = traced(model, reuse_ns=25, tick_ns=tick_ns)
    model(torch.randn(2, 4))
    tracer.detach()
    assert samples(tracer) == expected
    assert probe.reads == max(expected)


def test_the_window_is_rss_only() -> None:
    """RSS grows only as pages are touched (rate-bound); CUDA's allocator hands out gigabytes
    at once, so a CUDA reading is never taken again on account of its age."""
    from profiler.capture.memory import RSS_FRESH_NS, MemoryProbe

    assert MemoryProbe("cpu").reuse_ns == RSS_FRESH_NS > 0
    assert MemoryProbe("cuda").reuse_ns == 0


def test_a_cuda_reading_is_one_statistics_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a GPU here, the allocator's statistics are given in the shape torch's C++ side
    returns them; the reading must agree with torch's own memory_allocated/memory_reserved
    (which read the same call, then flatten it) and make that call once, not twice."""
    from profiler.capture.memory import MemoryProbe

    calls = []

    def stats(device: object = None) -> dict[str, object]:
        calls.append(device)
        pools = {"all": {"current": 0}, "large_pool": {"current": 0}}
        return {
            "allocated_bytes": {**pools, "all": {"current": 4096, "peak": 8192}},
            "reserved_bytes": {**pools, "all": {"current": 2 << 20, "peak": 2 << 20}},
            "num_alloc_retries": 0,
        }

    monkeypatch.setattr(torch.cuda.memory, "memory_stats_as_nested_dict", stats)
    monkeypatch.setattr(torch.cuda, "memory_stats_as_nested_dict", stats)
    read = MemoryProbe("cuda").reader()
    reading = read()
    assert len(calls) == 1
    assert reading == (torch.cuda.memory_allocated(), torch.cuda.memory_reserved())
    assert reading == (4096, 2 << 20)
    assert MemoryProbe.values(reading) == {"allocated_bytes": 4096, "reserved_bytes": 2 << 20}
    monkeypatch.setattr(torch.cuda, "memory_stats_as_nested_dict", lambda: {})
    assert MemoryProbe("cuda").reader()() == (0, 0)  # CUDA not initialised: as torch's


@pytest.mark.cuda
def test_a_cuda_reading_matches_torchs_counters() -> None:
    from profiler.capture.memory import MemoryProbe

    kept = torch.empty(1 << 20, device="cuda")
    assert MemoryProbe("cuda").reader()() == (
        torch.cuda.memory_allocated(),
        torch.cuda.memory_reserved(),
    )
    del kept

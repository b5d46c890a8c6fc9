"""Map our ``perf_counter_ns`` readings onto the timestamps Kineto writes.

Kineto writes ``ts`` in microseconds relative to the trace's ``baseTimeNanoseconds`` on its own
(TSC-derived) clock. Our hooks read ``time.perf_counter_ns`` because it is cheap and monotonic. At
the start of each window we emit a marker range through Kineto and note our clock around it; the
marker's ``ts`` in the written file then pins the offset to within a microsecond or two. If the
marker is missing, the wall clock mapping (good to tens of microseconds) is used instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from profiler.events import CLOCK_SYNC_NAME

# A marker whose enter took longer than this was probably preempted; try again (up to
# MARKER_ATTEMPTS times, keeping the tightest) since the error is up to half that time.
MARKER_TIGHT_NS = 20_000
MARKER_ATTEMPTS = 8


@dataclass(frozen=True)
class ClockMarker:
    """Our clock's reading at the moment Kineto recorded the named clock-sync marker."""

    perf_ns: int
    name: str = CLOCK_SYNC_NAME


class Clock:
    """Our clock (``perf_counter_ns``) and its relation to the wall clock, fixed at creation."""

    def __init__(self) -> None:
        # Take the tightest of a few paired readings: a context switch between them would skew it.
        pairs = []
        for _ in range(5):
            before = time.perf_counter_ns()
            wall = time.time_ns()
            after = time.perf_counter_ns()
            pairs.append((after - before, wall - (before + after) // 2))
        self.wall_minus_perf_ns = min(pairs)[1]

    #: The current reading of our clock: ``perf_counter_ns`` itself, not a function calling it
    #: (a call less at each module boundary, and no frame of ours in ``with_stack`` traces).
    now_ns = staticmethod(time.perf_counter_ns)

    def unix_us(self, perf_ns: int) -> float:
        """A reading of our clock as unix time in microseconds."""
        return (perf_ns + self.wall_minus_perf_ns) / 1000

    def mark(self) -> ClockMarker:
        """Emit clock-sync markers into the active Kineto session; return the tightest one."""
        import torch

        # The ops' C++ callables, called through partials: with with_stack, a call from Python
        # (torch's Python wrappers, or a built-in called directly) leaves a frame that crosses
        # the marker's edge (see module_hooks._enter).
        enter = _callable(torch.ops.profiler._record_function_enter_new.default)
        leave = _callable(torch.ops.profiler._record_function_exit._RecordFunction)
        best: tuple[int, ClockMarker] | None = None
        for attempt in range(MARKER_ATTEMPTS):
            name = f"{CLOCK_SYNC_NAME}#{attempt}"
            before = time.perf_counter_ns()
            handle = partial(enter, name, None)()
            after = time.perf_counter_ns()
            partial(leave, handle)()
            gap = after - before
            if best is None or gap < best[0]:
                best = (gap, ClockMarker(perf_ns=(before + after) // 2, name=name))
            if gap <= MARKER_TIGHT_NS:
                break
        assert best is not None
        return best[1]

    def to_trace(
        self, *, base_ns: int, marker: ClockMarker | None, marker_ts_us: float | None
    ) -> Callable[[int], float]:
        """A function from our clock's readings to the trace's ``ts`` (microseconds)."""
        if marker is not None and marker_ts_us is not None:
            origin_ts, origin_perf = marker_ts_us, marker.perf_ns
            return lambda perf_ns: round(origin_ts + (perf_ns - origin_perf) / 1000, 3)
        base_us = base_ns / 1000
        return lambda perf_ns: round(self.unix_us(perf_ns) - base_us, 3)


def _callable(op: Any) -> Any:
    """The C++ callable behind a torch op overload (the overload itself where it has none)."""
    return getattr(op, "_op", op)

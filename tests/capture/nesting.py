"""A nesting validator for decoded traces: complete events on one thread must form a forest.

Perfetto (and the Chrome viewer) draw the complete events (``"ph": "X"``) of one (pid, tid) as a
stack of slices, and drop a slice that overlaps another without nesting in it (see
docs/architecture.md, "Peers"). :func:`nesting_violations` finds every such pair.

Rules:

- Times are compared in integer nanoseconds: ``start = round(ts * 1000)``,
  ``end = start + round(dur * 1000)``. Kineto writes ``ts`` and ``dur`` as microseconds with three
  decimals, so this is the value it meant; comparing the floats themselves would call two ranges
  that meet at the same nanosecond overlapping whenever the two sums round differently.
- Ends are inclusive: a range that ends at the instant the next one starts is disjoint from it,
  and a child may start at its parent's start and end at its parent's end.
- Of two ranges that start at the same instant the longer is the parent (two of the same length
  nest either way), as Perfetto orders them.
- Zero-length ranges nest anywhere they start (inside or at an edge of an enclosing range).
- Events without a numeric ``ts``, or with a ``dur`` that is missing or negative, are skipped.

A pair is *ours* when either event is one trainprof adds or rewrites (:func:`is_ours`); tests
assert there are none of those, and only report torch's own overlapping pairs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from profiler.events import (
    CLOCK_SYNC_NAME,
    DATALOADER_PREFIX,
    MODULE_PREFIX,
    PHASE_COMPLETE,
    TRAINPROF_KEY,
)


@dataclass(frozen=True)
class Slice:
    """One complete event, its times in integer trace nanoseconds."""

    name: str
    start_ns: int
    end_ns: int
    ours: bool

    @property
    def ts_us(self) -> float:
        return self.start_ns / 1000

    @property
    def dur_us(self) -> float:
        return (self.end_ns - self.start_ns) / 1000

    def __str__(self) -> str:
        return f"{self.name!r} ts={self.ts_us:.3f} dur={self.dur_us:.3f}"


@dataclass(frozen=True)
class Violation:
    """Two complete events on one thread that overlap without nesting (``first`` starts first)."""

    pid: Any
    tid: Any
    first: Slice
    second: Slice

    @property
    def ours(self) -> bool:
        """Whether trainprof added or rewrote either event."""
        return self.first.ours or self.second.ours

    def __str__(self) -> str:
        return f"pid={self.pid} tid={self.tid}: {self.first} / {self.second}"


def is_ours(event: Mapping[str, Any]) -> bool:
    """Whether trainprof writes or rewrites ``event``: module ranges (forward and backward lane),
    DataLoader waits, the clock-sync markers (``trainprof::clock_sync#<n>``), anything carrying a
    ``trainprof`` arg."""
    name = event.get("name")
    if isinstance(name, str) and (
        name.startswith((MODULE_PREFIX, DATALOADER_PREFIX, CLOCK_SYNC_NAME))
    ):
        return True
    args = event.get("args")
    return isinstance(args, Mapping) and TRAINPROF_KEY in args


def nesting_violations(trace: Mapping[str, Any]) -> list[Violation]:
    """Every pair of complete events on one (pid, tid) that overlap without nesting.

    Args:
        trace: a decoded trace document (``{"traceEvents": [...]}``) or its events list.

    Returns:
        The offending pairs, by thread and then by time.
    """
    events = trace["traceEvents"] if isinstance(trace, Mapping) else trace
    threads: dict[tuple[Any, Any], list[Slice]] = {}
    for event in _complete(events):
        start = round(event["ts"] * 1000)
        threads.setdefault((event.get("pid"), event.get("tid")), []).append(
            Slice(
                str(event.get("name", "")),
                start,
                start + round(event["dur"] * 1000),
                is_ours(event),
            )
        )
    violations: list[Violation] = []
    for (pid, tid), slices in threads.items():
        violations += (Violation(pid, tid, a, b) for a, b in _overlaps(slices))
    return violations


def _complete(events: Iterable[Any]) -> Iterable[Mapping[str, Any]]:
    for event in events:
        if not isinstance(event, Mapping) or event.get("ph") != PHASE_COMPLETE:
            continue
        ts, dur = event.get("ts"), event.get("dur")
        if _number(ts) and _number(dur) and dur >= 0:
            yield event


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _overlaps(slices: list[Slice]) -> Iterable[tuple[Slice, Slice]]:
    """Pairs that overlap without nesting, by a sweep over starts (longest first at a tie).

    ``open_`` holds the slices still open at the current start. One that started no later
    and ends at or past the new one's end contains it; one that ends before it (but after its
    start) crosses it. Nested slices keep ``open_`` as deep as the stack, so this is O(n * depth).
    """
    slices.sort(key=lambda s: (s.start_ns, -s.end_ns))
    open_: list[Slice] = []
    for new in slices:
        open_ = [s for s in open_ if s.end_ns > new.start_ns]
        for old in open_:
            if old.end_ns < new.end_ns:
                yield old, new
        open_.append(new)


def format_violations(violations: Iterable[Violation], limit: int = 20) -> str:
    """A few violations, one a line, for an assertion message."""
    listed = list(violations)
    lines = [str(v) for v in listed[:limit]]
    if len(listed) > limit:
        lines.append(f"... and {len(listed) - limit} more")
    return "\n".join(lines)

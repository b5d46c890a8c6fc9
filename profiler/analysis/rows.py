"""The tables of events other than complete and flow events: counter samples, allocator
events (as columns: one per allocation or free, with ``profile_memory``) and thread and process
names (as rows: a few)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import msgspec
import numpy as np
import pandas as pd

from profiler.analysis.columns import (
    Columns,
    ColumnsPart,
    Items,
    decode_args,
    ids,
    int_id,
    select,
    strings,
    values,
)
from profiler.analysis.decode import ANY_DECODER, EVENTS_DECODER, Event
from profiler.analysis.event_args import MemoryArgs
from profiler.analysis.scanned import ScannedPiece
from profiler.events import PHASE_COUNTER, PHASE_INSTANT, PHASE_METADATA

MEMORY_EVENT = "[memory]"
COUNTER_COLUMNS = ["name", "pid", "ts_us", "series", "value"]
MEMORY_COLUMNS: dict[str, Any] = {
    "ts_us": np.float64, "pid": np.int64, "tid": np.int64, "bytes": np.int64,
    "total_allocated": np.int64, "total_reserved": np.int64, "device_type": np.int64,
    "device_id": np.int64,
}  # fmt: skip
_INSTANT_PHASES = (PHASE_INSTANT, "I")
_ROW_PHASES = (PHASE_COUNTER, PHASE_METADATA)


_MEMORY_LIST_DECODER = msgspec.json.Decoder(list[MemoryArgs])
# (column, MemoryArgs field) for the allocator's args.
_MEMORY_ARGS = [
    ("bytes", "alloc_bytes"), ("total_allocated", "total_allocated"),
    ("total_reserved", "total_reserved"), ("device_type", "device_type"),
    ("device_id", "device_id"),
]  # fmt: skip


class RowsPart(NamedTuple):
    """What :class:`Rows` holds, to be added to another (picklable)."""

    counters: list[tuple[Any, ...]]
    memory: ColumnsPart
    threads: list[tuple[int, int, str]]
    processes: list[tuple[int, int, str]]


class Rows:
    """Counter samples, allocator events and thread/process names."""

    def __init__(self) -> None:
        self.counters: list[tuple[Any, ...]] = []
        self.memory = Columns(MEMORY_COLUMNS)
        self.threads: list[tuple[int, int, str]] = []
        self.processes: list[tuple[int, int, str]] = []

    def add(self, events: Items, fraction_read: float) -> None:
        """Take a piece's events that are neither complete nor flows (in file order).

        Args:
            events: the events.
            fraction_read: how far through the file's text the piece ends.
        """
        phases, names = strings(events, "ph"), strings(events, "name")
        memory = np.isin(phases, _INSTANT_PHASES) & (names == MEMORY_EVENT)
        if memory.any():
            self._memory(select(events, memory), fraction_read)
        # Only counters and names become rows: other instants (most of these) are passed over.
        rows = select(events, ~memory & np.isin(phases, _ROW_PHASES))
        if isinstance(rows, ScannedPiece):  # their args are read whole: decoded as they are
            rows = EVENTS_DECODER.decode(rows.text_of_events()) if len(rows) else []
        for event in rows:
            self._add(event)

    def _add(self, event: Event) -> None:
        if event.ph == PHASE_COUNTER:
            self._counter(event)
        elif event.ph == PHASE_METADATA and event.name in ("thread_name", "process_name"):
            args = ANY_DECODER.decode(event.args)
            name = args.get("name", "") if isinstance(args, dict) else ""
            rows = self.threads if event.name == "thread_name" else self.processes
            rows.append(
                (int_id(event.pid), int_id(event.tid), name if isinstance(name, str) else "")
            )

    def part(self) -> RowsPart:
        """The rows so far, for another :class:`Rows` to :meth:`extend` with."""
        return RowsPart(self.counters, self.memory.part(), self.threads, self.processes)

    def extend(self, part: RowsPart, arrays: Iterator[np.ndarray] | None = None) -> None:
        """Add the rows of ``part`` (from the events after these) after these; ``arrays``: the
        allocator events' columns where ``part`` holds none (:meth:`Columns.extend`)."""
        self.counters.extend(part.counters)
        self.memory.extend(part.memory, arrays)
        self.threads.extend(part.threads)
        self.processes.extend(part.processes)

    def frames(self) -> dict[str, pd.DataFrame]:
        """``counters``, ``memory``, ``threads`` and ``processes`` as DataFrames."""
        return {
            "counters": pd.DataFrame(self.counters, columns=COUNTER_COLUMNS),
            "memory": self._memory_frame(),
            "threads": _names(self.threads, "thread_name"),
            "processes": _names(self.processes, "process_name"),
        }

    def _counter(self, event: Event) -> None:
        values = ANY_DECODER.decode(event.args)
        if not isinstance(values, dict):
            return
        for series, value in values.items():
            number = _number(value)
            if number is not None:
                self.counters.append((event.name, int_id(event.pid), event.ts, series, number))

    def _memory(self, events: Items, fraction_read: float) -> None:
        columns = self.memory
        rows = columns.reserve(len(events), fraction_read)
        columns.put("ts_us", rows, values(events, "ts", np.float64))
        columns.put("pid", rows, ids(events, "pid"))
        columns.put("tid", rows, ids(events, "tid"))
        args = decode_args(_MEMORY_LIST_DECODER, events)
        for column, field in _MEMORY_ARGS:
            columns.put(column, rows, values(args, field, np.int64))
        columns.commit(rows)

    def _memory_frame(self) -> pd.DataFrame:
        ts = self.memory.buffers["ts_us"][: self.memory.size]
        order = np.argsort(ts, kind="stable") if ts.size > 1 else None
        return self.memory.frame(order)


def _number(value: Any) -> float | None:
    """A counter's sample as a float; None for what is not a number or beyond a float."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def _names(rows: list[tuple[int, int, str]], column: str) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["pid", "tid", column])
    # Kineto writes some thread names twice; one row per lane keeps joins on (pid, tid) 1:1.
    if column == "thread_name":
        return frame.drop_duplicates(["pid", "tid"], keep="last", ignore_index=True)
    return frame.drop(columns="tid").drop_duplicates("pid", keep="last", ignore_index=True)

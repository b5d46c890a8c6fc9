"""Turn a trace's event pieces into its tables: :class:`TableBuilder`.

Per piece, complete events become columns (their args decoded in one call over the piece, as
one JSON array), flow events become columns, and the few others (counters, allocator instants,
names) become rows; the piece's structs are then dropped.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from profiler.analysis.columns import (
    ARGS_LIST_DECODER,
    CATEGORY,
    EVENT_COLUMNS,
    FLOW_COLUMNS,
    FLOW_PHASES,
    GPU_ARG_COLUMNS,
    GPU_KINDS,
    GPU_RARE_DEFAULTS,
    GPU_RARE_FIELDS,
    HOST_ARG_COLUMNS,
    HOST_RARE_DEFAULTS,
    HOST_RARE_FIELDS,
    RARE_ARG_COLUMNS,
    ArgsError,
    Columns,
    ColumnsPart,
    Items,
    Vocabulary,
    compact_text,
    decode_args,
    differs,
    ids,
    raw_texts,
    select,
    values,
)
from profiler.analysis.decode import MISSING_INT, EventStream, Piece
from profiler.analysis.devices import KIND_BY_CATEGORY
from profiler.analysis.rows import Rows, RowsPart
from profiler.events import PHASE_COMPLETE


@dataclass(frozen=True)
class Tables:
    """What a load builds, before it becomes a ``TraceTable``.

    Attributes:
        events: complete events sorted by start; ``flows``: flow events in file order.
        counters, memory, threads, processes: see ``TraceTable``.
        event_count: events of every phase.
    """

    events: pd.DataFrame
    flows: pd.DataFrame
    counters: pd.DataFrame
    memory: pd.DataFrame
    threads: pd.DataFrame
    processes: pd.DataFrame
    event_count: int


class BuilderPart(NamedTuple):
    """A :class:`TableBuilder`'s tables before they are finished (picklable)."""

    events: ColumnsPart
    flows: ColumnsPart
    rows: RowsPart
    event_count: int


class TableBuilder:
    """Takes a trace's events piece by piece (:meth:`add`), then hands back :class:`Tables`."""

    def __init__(self) -> None:
        self.event_count = 0
        self._events = Columns({c: t for c, t in EVENT_COLUMNS.items() if c != "end_us"})
        self._flows = Columns(FLOW_COLUMNS)
        self._rows = Rows()
        self._kind_of_cat: list[int] = []  # the kind's code for each category's code
        self._gpu_kind: list[bool] = []  # per kind code
        self._phases = Vocabulary()  # phases as codes: compared in C, not a string per event
        self._complete = self._phases.code(PHASE_COMPLETE)
        # Flow phases are numbered next, 1 to 3: a flow's code is at most the last (a compare,
        # where np.isin cost 0.1-0.6 ms a piece).
        self._last_flow = max(self._phases.code(phase) for phase in FLOW_PHASES)

    def add(self, events: Piece, fraction_read: float = 1.0) -> None:
        """Take one piece's events (in file order).

        Args:
            events: the piece's events.
            fraction_read: how far through the file's text the piece ends (sizes the tables).

        Raises:
            EventError: an event's args are not what the tables read; names the event.
        """
        first = self.event_count
        self.event_count += len(events)
        try:
            self._add(events, fraction_read)
        except ArgsError as exc:  # (only msgspec's pieces: the scanner leaves it bad args)
            raise exc.event_error(typing.cast(list[Any], events), first) from exc.error

    def _add(self, events: Piece, fraction_read: float) -> None:
        phases = self._phases.codes(events, len(events), field="ph")
        complete = phases == self._complete
        if complete.all():
            self._add_complete(events, fraction_read)
            return
        self._add_complete(select(events, complete), fraction_read)
        flows = ~complete & (phases <= self._last_flow)
        if flows.any():
            self._add_flows(select(events, flows), fraction_read)
        others = ~(complete | flows)
        if others.any():
            self._rows.add(select(events, others), fraction_read)

    def part(self) -> BuilderPart:
        """The tables so far, unfinished, for another builder to :meth:`absorb`."""
        return BuilderPart(
            self._events.part(), self._flows.part(), self._rows.part(), self.event_count
        )

    def absorb(self, part: BuilderPart, arrays: Iterator[np.ndarray] | None = None) -> None:
        """Add the events of another builder's :meth:`part` after these: the tables are then
        those of one builder that took both's pieces, in order.

        Args:
            part: the other builder's tables.
            arrays: their columns one by one (events', flows', allocator events'), where
                ``part`` holds none (:meth:`Columns.extend`).
        """
        self._events.extend(part.events, arrays)
        self._flows.extend(part.flows, arrays)
        self._rows.extend(part.rows, arrays)
        self.event_count += part.event_count

    def finish(self) -> Tables:
        """The tables, events sorted by start (stable, so ties keep file order)."""
        ts = self._events.buffers["ts_us"][: self._events.size]
        order: np.ndarray | None = None
        if ts.size > 1 and not (ts[1:] >= ts[:-1]).all():
            order = np.argsort(ts, kind="stable")
        del ts
        events = self._events.frame(order)
        end = events.columns.get_loc("dur_us") + 1
        events.insert(end, "end_us", events["ts_us"].to_numpy() + events["dur_us"].to_numpy())
        return Tables(
            events=events,
            flows=self._flows.frame(None),
            event_count=self.event_count,
            **self._rows.frames(),
        )

    def _add_complete(self, events: Items, fraction_read: float) -> None:
        if not events:
            return
        ts = values(events, "ts", np.float64)
        if np.isnan(ts).any():  # no start, no place in the timeline
            events = select(events, ~np.isnan(ts))
            ts = ts[~np.isnan(ts)]
        columns = self._events
        rows = columns.reserve(len(events), fraction_read)
        columns.put("ts_us", rows, ts)
        columns.put("dur_us", rows, values(events, "dur", np.float64))
        columns.put("pid", rows, ids(events, "pid"))
        columns.put("tid", rows, ids(events, "tid"))
        columns.put_strings("name", rows, events, "name")
        gpu = self._add_categories(rows, events)
        self._add_args(rows, decode_args(ARGS_LIST_DECODER, events), gpu)
        columns.commit(rows)

    def _add_categories(self, rows: slice, events: Items) -> np.ndarray:
        """Add ``cat`` and ``kind`` of ``events``; returns which rows are GPU work."""
        columns = self._events
        cat_codes = columns.put_strings("cat", rows, events, "cat")
        kinds = columns.vocabularies["kind"]
        for cat in list(columns.vocabularies["cat"].index)[len(self._kind_of_cat) :]:
            kind = KIND_BY_CATEGORY.get(cat.lower(), "other")
            self._kind_of_cat.append(kinds.code(kind))
            self._gpu_kind.extend([False] * (len(kinds.index) - len(self._gpu_kind)))
            self._gpu_kind[kinds.index[kind]] = kind in GPU_KINDS
        kind_codes = np.array(self._kind_of_cat, dtype=np.int32)[cat_codes]
        columns.put("kind", rows, kind_codes)
        return np.array(self._gpu_kind, dtype=bool)[kind_codes]

    def _add_args(self, rows: slice, args: Items, gpu: np.ndarray) -> None:
        columns = self._events
        external = values(args, "external_id", np.int64)
        columns.put("correlation", rows, values(args, "correlation", np.int64))
        # Launch and copy details exist only on GPU work, shapes and sequence numbers on host
        # ops: read those over the rows that have them (a ninth of the events are GPU work,
        # typically).
        gpu_at, host_at = np.flatnonzero(gpu), np.flatnonzero(~gpu)
        gpu_args, host_args = select(args, gpu), select(args, ~gpu)
        # The others: read over the rows that have any of them.
        host_rare = differs(host_args, HOST_RARE_FIELDS, HOST_RARE_DEFAULTS)
        rare = np.zeros(len(args), bool)
        rare[host_at] = host_rare
        rare[gpu_at] = differs(gpu_args, GPU_RARE_FIELDS, GPU_RARE_DEFAULTS)
        self._texts(rows, "input_dims", host_args, host_at, np.flatnonzero(host_rare).tolist())
        self._texts(rows, "grid", gpu_args, gpu_at)
        self._texts(rows, "block", gpu_args, gpu_at)
        for column, field, dtype, _ in GPU_ARG_COLUMNS:
            missing = np.nan if dtype is np.float64 else MISSING_INT
            columns.put_at(column, rows, gpu_at, values(gpu_args, field, dtype), missing)
        for column, field, dtype, _ in HOST_ARG_COLUMNS:
            columns.put_at(column, rows, host_at, values(host_args, field, dtype), MISSING_INT)
        stream = np.full(len(args), MISSING_INT, np.int64)
        stream[gpu_at] = ids(gpu_args, "stream")
        at = np.flatnonzero(rare)
        some = select(args, rare)
        external_2021 = np.full(len(args), MISSING_INT, np.int64)
        external_2021[at] = values(some, "external_id_2021", np.int64)
        columns.put("external_id", rows, np.maximum(external, external_2021))
        stream[at] = ids(some, "stream")
        stream[stream == 0xFFFFFFFF] = MISSING_INT  # Kineto writes -1 as unsigned 32-bit there
        columns.put("stream", rows, stream)
        for column, field, dtype, _ in HOST_ARG_COLUMNS:
            columns.buffers[column][rows][at] = values(some, field, dtype)
        for column, field, dtype, _ in RARE_ARG_COLUMNS:
            if dtype == CATEGORY:
                columns.put_scattered(column, rows, at, some, field=field)
            else:
                columns.put_at(column, rows, at, values(some, field, dtype), MISSING_INT)

    def _texts(
        self, rows: slice, column: str, args: Items, at: np.ndarray, older: Sequence[int] = ()
    ) -> None:
        """A list-valued arg (shapes, grid, block) as compact text, at rows ``at`` of ``rows``;
        ``older``: which of ``args`` may spell the shapes as 2021's traces do (few traces)."""
        # Normalise each distinct text once, not each event's: shapes repeat across many ops.
        if not older:
            self._events.put_scattered(column, rows, at, args, compact_text, column)
            return
        texts, previous = raw_texts(args, column), raw_texts(args, "input_dims_2021")
        for index in older:
            texts[index] = texts[index] or previous[index]
        self._events.put_scattered(column, rows, at, texts, compact_text)

    def _add_flows(self, events: Items, fraction_read: float) -> None:
        flows = self._flows
        rows = flows.reserve(len(events), fraction_read)
        flows.put("id", rows, ids(events, "id"))
        flows.put_strings("ph", rows, events, "ph")
        flows.put_strings("cat", rows, events, "cat")
        flows.put("pid", rows, ids(events, "pid"))
        flows.put("tid", rows, ids(events, "tid"))
        flows.put("ts_us", rows, values(events, "ts", np.float64))
        flows.commit(rows)


def build_all(stream: EventStream) -> TableBuilder:
    """A builder that took every piece of ``stream`` (each piece's structs freed as it goes).

    Raises:
        TraceFormatError: what the stream raises; EventError: what :meth:`TableBuilder.add` does.
    """
    builder = TableBuilder()
    for events in stream:
        builder.add(events, stream.fraction_read())
        events.clear()  # the piece's structs go now, not when the next piece replaces them
    return builder

"""The building blocks of a trace's tables: column schemas, vocabularies and growable columns.

Each piece's events become numpy columns at once, written into arrays sized for the whole file
(:class:`Columns`), and the event structs are dropped, so a load never holds more than one
piece's Python objects; strings become integer codes into one vocabulary per column (a
categorical in the end, its categories in order of first appearance in the file).
"""

from __future__ import annotations

import re
import typing
from collections.abc import Callable, Iterable, Iterator
from itertools import compress, islice
from operator import attrgetter
from typing import Any, NamedTuple

import msgspec
import numpy as np
import pandas as pd

from profiler.analysis.decode import TypedEvent
from profiler.analysis.devices import DEVICE_KINDS
from profiler.analysis.event_args import MISSING_INT, CompleteArgs
from profiler.analysis.guards import validation_problem
from profiler.analysis.scanned import ScannedPiece, scanner_c
from profiler.events import PHASE_FLOW_END, PHASE_FLOW_START

try:  # the C field reader (_fields.c); where it was not built, the Python way does all
    from profiler.analysis import _fields as fields_c
except ImportError:  # pragma: no cover - a build without a C compiler
    fields_c = None  # type: ignore[assignment]

# Kinds: one vocabulary over both schema generations and every device (profiler.analysis.devices).
GPU_KINDS = DEVICE_KINDS
FLOW_PHASES = (PHASE_FLOW_START, PHASE_FLOW_END, "t")


ARGS_LIST_DECODER = msgspec.json.Decoder(list[CompleteArgs])
CATEGORY = "category"
GPU, HOST, RARE = "gpu", "host", "rare"
# (column, CompleteArgs field, dtype, where it is read) for args copied as they are. Where:
# GPU: on GPU work only (launch and copy details); HOST: on every host op (sequence numbers),
# and on any other event that has a RARE arg; RARE: on the events that have any (most have none).
ARG_COLUMNS: list[tuple[str, str, Any, str]] = [
    ("device", "device", np.int64, GPU),
    ("seq", "seq", np.int64, HOST),
    ("fwd_tid", "fwd_tid", np.int64, HOST),
    ("occupancy_pct", "occupancy", np.float64, GPU),
    ("blocks_per_sm", "blocks_per_sm", np.float64, GPU),
    ("warps_per_sm", "warps_per_sm", np.float64, GPU),
    ("registers", "registers", np.int64, GPU),
    ("shared_memory_bytes", "shared_memory", np.int64, GPU),
    ("bytes", "bytes", np.int64, GPU),
    ("bandwidth_gbps", "bandwidth", np.float64, GPU),
    ("collective", "collective", CATEGORY, RARE),
    ("in_nelems", "in_nelems", np.int64, RARE),
    ("out_nelems", "out_nelems", np.int64, RARE),
    ("group_size", "group_size", np.int64, RARE),
    ("dtype", "dtype", CATEGORY, RARE),
    ("pg_name", "pg_name", CATEGORY, RARE),
    ("sync_kind", "sync_kind", CATEGORY, RARE),
]
GPU_ARG_COLUMNS = [c for c in ARG_COLUMNS if c[3] == GPU]
HOST_ARG_COLUMNS = [c for c in ARG_COLUMNS if c[3] == HOST]
RARE_ARG_COLUMNS = [c for c in ARG_COLUMNS if c[3] == RARE]
_RARE = ("external_id_2021", *(field for _, field, _, _ in RARE_ARG_COLUMNS))
# The args a host op or GPU work rarely has (a stream or 2021's shapes on a host op, a sequence
# number on GPU work, and the RARE ones): one getter call per event tells which events have any
# (defaults are shared objects, so the comparison is by identity, mostly).
HOST_RARE_FIELDS = ("stream", "input_dims_2021", *_RARE)
GPU_RARE_FIELDS = (*(field for _, field, _, _ in HOST_ARG_COLUMNS), *_RARE)
HOST_RARE_DEFAULTS = attrgetter(*HOST_RARE_FIELDS)(CompleteArgs())
GPU_RARE_DEFAULTS = attrgetter(*GPU_RARE_FIELDS)(CompleteArgs())
# The events table's columns in order, and their types.
EVENT_COLUMNS: dict[str, Any] = {
    "name": CATEGORY, "cat": CATEGORY, "kind": CATEGORY, "pid": np.int64, "tid": np.int64,
    "ts_us": np.float64, "dur_us": np.float64, "end_us": np.float64, "external_id": np.int64,
    "correlation": np.int64, "stream": np.int64, "input_dims": CATEGORY, "grid": CATEGORY,
    "block": CATEGORY, **{column: dtype for column, _, dtype, _ in ARG_COLUMNS},
}  # fmt: skip
FLOW_COLUMNS: dict[str, Any] = {
    "id": np.int64, "ph": CATEGORY, "cat": CATEGORY, "pid": np.int64, "tid": np.int64,
    "ts_us": np.float64,
}  # fmt: skip
_WHITESPACE = b" \n\r\t"
# What the builder reads fields of: a piece's event structs (or their args), or the scanner's
# columns of the same fields.
Items = list[Any] | ScannedPiece
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_ID_LABEL = re.compile(r"-?[0-9]{1,19}")


class EventError(ValueError):
    """An event the tables cannot hold; the message names it (``traceEvents[N]: ...``)."""


class ArgsError(Exception):
    """The args of one of ``items`` are not what the tables read (wrong type, not JSON).

    Attributes:
        error: msgspec's error.
        items: the events whose args were decoded, as a list in that order.
    """

    def __init__(self, error: msgspec.DecodeError, items: list[Any]) -> None:
        super().__init__(str(error))
        self.error = error
        self.items = items

    def event_error(self, events: list[Any], first: int) -> EventError:
        """The error in the file's words, ``events`` being the piece (the first is ``first``)."""
        if not isinstance(self.error, msgspec.ValidationError):
            return EventError(f"the args of an event are not JSON: {self.error}")

        def number(index: int) -> int:
            item = self.items[index] if index < len(self.items) else None
            return first + next((n for n, e in enumerate(events) if e is item), index)

        return EventError(validation_problem(self.error, number, in_args=True))


def decode_args(decoder: msgspec.json.Decoder, items: Items) -> Items:
    """The args of ``items`` by ``decoder`` (of a list): one call over the piece, as an array.
    Args decoded already (a piece of the typed pass, :class:`TypedEvent`) are handed back.

    Raises:
        ArgsError: they do not decode.
    """
    if isinstance(items, ScannedPiece):  # its args are columns of its own
        return items
    if items and type(items[0]) is TypedEvent:  # a piece is all typed or all raw
        return list(map(attrgetter("args"), items))
    raws = b",".join(map(attrgetter("args"), items))
    try:
        return decoder.decode(b"[" + raws + b"]")
    except msgspec.DecodeError as exc:
        raise ArgsError(exc, items) from exc


def int_id(value: int | str | None) -> int:
    """pid/tid as ints: Kineto's GPU lanes in 2021 traces are "stream 7"; other labels, and
    numbers beyond 64 bits, -> -1."""
    if isinstance(value, str):
        tail = value.rsplit(" ", 1)[-1]
        if _ID_LABEL.fullmatch(tail):  # ASCII digits, few enough for int() and for int64
            value = int(tail)
    if isinstance(value, int) and _INT64_MIN <= value <= _INT64_MAX:
        return value
    return MISSING_INT


def ids(items: Items, name: str) -> np.ndarray:
    """An id field (pid, tid, stream) of ``items`` as int64; labels through :func:`int_id`."""
    if isinstance(items, ScannedPiece):  # (the scanner reads labels as int_id does)
        return items.column(name)
    fast = _read_fast(items, name, np.int64)
    if fast is not None:
        return fast
    try:
        return np.fromiter(map(attrgetter(name), items), dtype=np.int64, count=len(items))
    except (TypeError, ValueError, OverflowError):
        labels = map(attrgetter(name), items)
        return np.array([int_id(v) for v in labels], dtype=np.int64)


def values(items: Items, name: str, dtype: Any) -> np.ndarray:
    """A field of ``items`` as an array (fromiter: no list in between, 40% faster).

    msgspec decodes integers of any size; one beyond 64 bits is no count, id or size a trace
    can mean, and is read as missing (-1, or NaN in a float column).
    """
    if isinstance(items, ScannedPiece):
        return items.column(name).astype(dtype, copy=False)
    fast = _read_fast(items, name, dtype)
    if fast is not None:
        return fast
    try:
        return np.fromiter(map(attrgetter(name), items), dtype=dtype, count=len(items))
    except OverflowError:
        missing = np.nan if np.dtype(dtype).kind == "f" else MISSING_INT
        fitting = [_fits(v, missing) for v in map(attrgetter(name), items)]
        return np.array(fitting, dtype=dtype)


def _read_fast(items: list[Any], name: str, dtype: Any) -> np.ndarray | None:
    """A float64 or int64 field of ``items`` by the C reader; None where it was not built, for
    another dtype, or where it met a value the Python way must decide."""
    if fields_c is None or dtype not in (np.float64, np.int64):
        return None
    out = np.empty(len(items), dtype)
    read = fields_c.floats if dtype is np.float64 else fields_c.ints
    return out if read(items, name, out) else None


def differs(items: Items, fields: tuple[str, ...], defaults: tuple[Any, ...]) -> np.ndarray:
    """Which of ``items`` have any of ``fields`` other than its default."""
    if isinstance(items, ScannedPiece):
        return items.differs_any(fields, defaults)
    if fields_c is not None:
        out = np.empty(len(items), bool)
        fields_c.differs(items, fields, defaults, out)
        return out
    getter = attrgetter(*fields)
    return np.fromiter(map(defaults.__ne__, map(getter, items)), bool, len(items))


def _fits(value: Any, missing: float) -> Any:
    return value if not isinstance(value, int) or _INT64_MIN <= value <= _INT64_MAX else missing


@typing.overload
def select(items: list[Any], mask: np.ndarray) -> list[Any]: ...
@typing.overload
def select(items: ScannedPiece, mask: np.ndarray) -> ScannedPiece: ...
@typing.overload
def select(items: Items, mask: np.ndarray) -> Items: ...
def select(items: Items, mask: np.ndarray) -> Items:
    """The items where ``mask`` is true."""
    if isinstance(items, ScannedPiece):
        return items.select(mask)
    return list(compress(items, mask.tolist()))


def strings(items: Items, field: str) -> np.ndarray:
    """A string field of ``items`` as an array of objects."""
    if isinstance(items, ScannedPiece):
        return np.array(items.strings, dtype=object)[items.column(field)]
    return np.fromiter(map(attrgetter(field), items), dtype=object, count=len(items))


def raw_texts(items: Items, field: str) -> list[bytes]:
    """A raw JSON field (shapes, grid, block) of ``items``, as bytes."""
    if isinstance(items, ScannedPiece):
        return items.texts(field)
    return list(map(bytes, map(attrgetter(field), items)))


def compact_text(raw: bytes) -> str:
    """Compact JSON text of a list-valued arg (shapes, grid, block), whatever the writer's
    spacing: these hold only numbers, so dropping whitespace is safe and makes equal shapes
    equal text."""
    # msgspec checks the UTF-8 of the strings it decodes, not of the raw text it skips.
    return raw.translate(None, _WHITESPACE).decode(errors="replace")


class _Codes(dict[Any, int]):
    """Codes by value: a value not seen yet gets the next code as it is looked up."""

    def __missing__(self, value: Any) -> int:
        code = self[value] = len(self)
        return code


class _RawCodes(dict[Any, int]):
    """Codes by raw text: a text not seen yet is normalised and numbered as it is looked up."""

    def __init__(self, index: _Codes, normalise: Callable[[Any], str]) -> None:
        super().__init__()
        self._index = index
        self._normalise = normalise

    def __missing__(self, raw: Any) -> int:
        code = self[raw] = self._index[self._normalise(raw)]
        return code


class Vocabulary:
    """One string column's distinct values, numbered in order of first appearance.

    A value's code is one dict lookup in C (no list, array or factorisation in between): the
    values are read straight off the events as they are numbered.
    """

    def __init__(self) -> None:
        self.index: dict[str, int] = _Codes()
        self._raw: _RawCodes | None = None  # raw text -> its code, across pieces

    def codes(
        self,
        values: Iterable[Any] | ScannedPiece,
        count: int,
        normalise: Callable[[Any], str] | None = None,
        blank_after: int | None = None,
        field: str | None = None,
    ) -> np.ndarray:
        """The codes of ``values`` (strings, or raw texts that ``normalise`` turns into them).

        Args:
            values: the strings, ``count`` of them; with ``field``, a list of items whose
                field ``field`` holds each.
            count: how many.
            normalise: turns each distinct value into its string (one function per column);
                the values are then raw texts, looked up as bytes.
            blank_after: number "" right after the values of the first ``blank_after`` rows.
            field: see ``values``.
        """
        index: dict[Any, int] = self.index
        if normalise is not None:
            if self._raw is None:
                self._raw = _RawCodes(self.index, normalise)  # type: ignore[arg-type]
            index = self._raw
        if isinstance(values, ScannedPiece):
            assert field is not None  # a piece's values are read by field
            codes, distinct = values.column(field), values.values_of(field)
            return _first_seen(codes, distinct, index, self.index, blank_after)
        if field is not None:
            items = typing.cast(list[Any], values)
            if fields_c is not None:
                return self._read_codes(items, field, index, normalise is not None, blank_after)
            values = map(attrgetter(field), items)
            if normalise is not None:
                values = map(bytes, values)
        lookup = index.__getitem__
        if blank_after is None:
            return np.fromiter(map(lookup, values), np.int32, count)
        values = iter(values)
        head = np.fromiter(map(lookup, islice(values, blank_after)), np.int32, blank_after)
        self.code("")
        rest = np.fromiter(map(lookup, values), np.int32, count - blank_after)
        return np.concatenate((head, rest))

    def _read_codes(
        self,
        items: list[Any],
        field: str,
        index: dict[Any, int],
        raw: bool,
        blank_after: int | None,
    ) -> np.ndarray:
        """:meth:`codes` of a field, read by the C reader."""
        out = np.empty(len(items), np.int32)
        if blank_after is None:
            fields_c.codes(items, field, index, out, raw)
            return out
        fields_c.codes(items[:blank_after], field, index, out[:blank_after], raw)
        self.code("")
        fields_c.codes(items[blank_after:], field, index, out[blank_after:], raw)
        return out

    def code(self, value: str) -> int:
        return self.index[value]

    def categorical(self, codes: np.ndarray) -> pd.Categorical:
        categories = pd.Index(list(self.index), dtype=object)
        return pd.Categorical.from_codes(codes, categories=categories)


class ColumnsPart(NamedTuple):
    """A table's rows (:meth:`Columns.part`): how many, each string column's values by code,
    and each column's values (codes for strings; empty where they travel on their own)."""

    size: int
    values: dict[str, list[str]]
    buffers: dict[str, np.ndarray]


class Columns:
    """A table built a piece at a time into one preallocated array per column.

    Room is reserved for what the whole file will hold, guessed from the first piece and how
    much of the text it was (and grown by half when the guess falls short): one allocation per
    column, where an array per piece joined at the end would need the table twice over, and
    leaves the heap too fragmented to give the pieces' memory back.
    """

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self.size = 0
        self.buffers: dict[str, np.ndarray] = {column: self._empty(column, 0) for column in schema}
        self.vocabularies = {c: Vocabulary() for c, t in schema.items() if t == CATEGORY}

    def reserve(self, rows: int, fraction_read: float) -> slice:
        """Room for ``rows`` more rows, ``fraction_read`` of the way through the file."""
        need = self.size + rows
        capacity = len(next(iter(self.buffers.values())))
        if need > capacity:
            guess = int(need / max(fraction_read, 0.01) * 1.05) + 1024
            self._grow(max(need, guess, capacity + capacity // 2))
        return slice(self.size, need)

    def put(self, column: str, rows: slice, values: Any) -> None:
        self.buffers[column][rows] = values

    def put_strings(self, column: str, rows: slice, items: Items, field: str) -> np.ndarray:
        """A string column's values at ``rows``, the field ``field`` of ``items``; returns
        their codes."""
        codes = self.vocabularies[column].codes(items, len(items), field=field)
        self.buffers[column][rows] = codes
        return codes

    def put_at(
        self, column: str, rows: slice, at: np.ndarray, values: np.ndarray, missing: Any
    ) -> None:
        """A column's ``values`` at rows ``at`` of ``rows``; ``missing`` elsewhere."""
        target = self.buffers[column][rows]
        target[:] = missing
        target[at] = values

    def put_scattered(
        self,
        column: str,
        rows: slice,
        at: np.ndarray,
        values: Any,
        normalise: Any = None,
        field: str | None = None,
    ) -> None:
        """A string column's ``values`` at rows ``at`` (sorted) of ``rows``; "" elsewhere
        (``values``, ``normalise`` and ``field`` as :meth:`Vocabulary.codes` takes them)."""
        vocabulary = self.vocabularies[column]
        if not len(at):
            self.buffers[column][rows] = vocabulary.code("")
            return
        size = rows.stop - rows.start
        blank = _first_gap(at, size)
        blank_after = None
        if blank is not None and "" not in vocabulary.index:
            # number "" where it first appears, as a factorisation of the whole column would
            blank_after = int(np.searchsorted(at, blank))
        codes = vocabulary.codes(values, len(at), normalise, blank_after, field)
        target = self.buffers[column][rows]
        target[:] = vocabulary.code("")
        target[at] = codes

    def commit(self, rows: slice) -> None:
        """The rows reserved are filled."""
        self.size = rows.stop

    def part(self) -> ColumnsPart:
        """The rows so far, and each string column's values, to be added to another table."""
        return ColumnsPart(
            self.size,
            {column: list(vocabulary.index) for column, vocabulary in self.vocabularies.items()},
            {column: buffer[: self.size] for column, buffer in self.buffers.items()},
        )

    def extend(self, part: ColumnsPart, arrays: Iterator[np.ndarray] | None = None) -> None:
        """Add the rows of ``part`` (another table of this schema) after these; its strings
        not seen here are numbered after these, in its order (their order of first appearance,
        when its rows followed these in the file).

        Args:
            part: the rows.
            arrays: where its columns come from, one by one in the schema's order, when not
                in ``part.buffers`` (from another process: a column at a time in memory).
        """
        rows = self.reserve(part.size, 1.0)
        for column in self.schema:
            values = part.buffers[column] if arrays is None else next(arrays)
            if column in self.vocabularies:
                strings = part.values[column]
                values = self.vocabularies[column].codes(strings, len(strings))[values]
            self.buffers[column][rows] = values
        self.commit(rows)

    def column(self, column: str, order: np.ndarray | None) -> Any:
        """One finished column, put in ``order``; its buffer goes."""
        buffer = self.buffers.pop(column)
        data = buffer[: self.size]
        if order is not None:
            data = data[order]
        elif len(buffer) > self.size * 1.1:  # don't keep a much larger buffer alive
            data = data.copy()
        del buffer
        if self.schema[column] == CATEGORY:
            return self.vocabularies[column].categorical(data)
        return data

    def frame(self, order: np.ndarray | None) -> pd.DataFrame:
        """All columns as a DataFrame, without copying them again."""
        columns = {column: self.column(column, order) for column in self.schema}
        return pd.DataFrame(columns, copy=False)

    def _grow(self, capacity: int) -> None:
        for column, old in self.buffers.items():
            new = self._empty(column, capacity)
            new[: self.size] = old[: self.size]
            self.buffers[column] = new
            del old

    def _empty(self, column: str, size: int) -> np.ndarray:
        dtype = self.schema[column]
        return np.empty(size, np.int32 if dtype == CATEGORY else dtype)


def _first_seen(
    codes: np.ndarray,
    values: list[Any],
    index: dict[Any, int],
    strings: dict[str, int],
    blank_after: int | None,
) -> np.ndarray:
    """A vocabulary's codes for a piece's codes into its distinct ``values`` (the scanner's),
    numbering the values new to ``index`` in the order they first appear in ``codes`` (and ""
    in ``strings``, the vocabulary's own index, right after the first ``blank_after`` rows), as
    looking each row up in turn would."""
    codes = np.ascontiguousarray(codes, np.int32)
    out = np.empty(len(codes), np.int32)
    mapping = np.full(len(values), -1, np.int32)
    if blank_after is None:
        scanner_c.number(codes, values, index, mapping, out)
        return out
    scanner_c.number(codes[:blank_after], values, index, mapping, out[:blank_after])
    strings[""]  # noqa: B018 - numbers "" here, if new
    scanner_c.number(codes[blank_after:], values, index, mapping, out[blank_after:])
    return out


def _first_gap(at: np.ndarray, size: int) -> int | None:
    """The first row of ``range(size)`` not in ``at`` (sorted, unique), if any."""
    if len(at) == size:
        return None
    gaps = np.flatnonzero(at != np.arange(len(at)))
    return int(gaps[0]) if len(gaps) else len(at)

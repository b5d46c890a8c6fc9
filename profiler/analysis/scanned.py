"""A piece of a trace's events as columns, read by the C scanner (``_scanner.c``).

msgspec's typed pass makes a struct per event and per args object, which the column builder
reads and drops; the scanner writes the same fields straight into columns, one per field of
:class:`~profiler.analysis.decode.TypedEvent` and of its args, with strings and raw JSON values
as codes into the piece's distinct ones. It takes only the plain case and answers None at
anything else, leaving the piece to msgspec, which stays the reference: the tables are the same
either way (tests load every reference trace both ways).

A :class:`ScannedPiece` stands where a list of event structs would in the builder: the helpers
of :mod:`profiler.analysis.columns` (``values``, ``ids``, ``select``, ``differs``,
``Vocabulary.codes``, ...) take either.
"""

from __future__ import annotations

import typing
from typing import Any

import msgspec
import numpy as np

from profiler.analysis.event_args import MISSING_INT

try:  # the C scanner; where it was not built, msgspec decodes every piece
    from profiler.analysis import _scanner as scanner_c
except ImportError:  # pragma: no cover - a build without a C compiler
    scanner_c = None  # type: ignore[assignment]

# The scanner's kinds of field (its enum).
F64, I64, ID, ID_NULL, STR, RAW, ARGS = range(7)
_DTYPES = {F64: np.float64, I64: np.int64, ID: np.int64, ID_NULL: np.int64, STR: np.int32,
           RAW: np.int32}  # fmt: skip


def _kind(annotation: Any) -> int:
    """The scanner's kind for a struct field's type."""
    if annotation is float:
        return F64
    if annotation is int:
        return I64
    if annotation == int | str:
        return ID
    if annotation == int | str | None:
        return ID_NULL
    if annotation is str or typing.get_origin(annotation) is typing.Literal:
        return STR
    if annotation is msgspec.Raw:
        return RAW
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return ARGS
    raise TypeError(f"the scanner cannot read a field of type {annotation!r}")


def _default(kind: int, default: Any) -> Any:
    """A field's default as the scanner writes it (strings and raw values: code 0)."""
    if kind in (STR, RAW):
        if (bytes(default) if kind == RAW else default) not in ("", b""):
            raise TypeError(f"a string field's default must be empty, not {default!r}")
        return 0
    if kind in (ID, ID_NULL):
        return MISSING_INT if default is None else int(default)
    return default


class Layout:
    """What the scanner reads of an event struct type: its spec, and each field's column.

    Attributes:
        spec: the fields as ``_scanner.scan`` takes them.
        kinds: each field's kind, by attribute name (an args field by its own name: the args'
            and the envelope's names do not clash).
        names: the columns' attribute names, in the scanner's order.
    """

    def __init__(self, event_type: type[msgspec.Struct]) -> None:
        self.kinds: dict[str, int] = {}
        self.names: list[str] = []
        self.bits: dict[str, int] = {}  # an args field's bit in the scanner's args_seen
        spec: list[tuple[bytes, int, Any, Any]] = []
        nested: list[str] = []
        for field in msgspec.structs.fields(event_type):
            if _kind(field.type) == ARGS:
                before = len(self.names)
                subfields = tuple(self._add(sub) for sub in msgspec.structs.fields(field.type))
                spec.append((field.encode_name.encode(), ARGS, 0, subfields))
                nested = self.names[before:]
                del self.names[before:]
                self.bits = {name: 1 << n for n, name in enumerate(nested)}
            else:
                spec.append(self._add(field))
        self.names += nested  # the columns: the envelope's, then the args'
        self.spec = tuple(spec)

    def _add(self, field: msgspec.structs.FieldInfo) -> tuple[bytes, int, Any, None]:
        kind = _kind(field.type)
        if kind == ARGS:
            raise TypeError("args nested in args: the scanner reads one level")
        if field.name in self.kinds:
            raise TypeError(f"two fields named {field.name}")
        self.kinds[field.name] = kind
        self.names.append(field.name)
        return (field.encode_name.encode(), kind, _default(kind, field.default), None)


class ScannedPiece:
    """A piece's events as columns (or some of them: :meth:`select`).

    Attributes:
        layout: which fields there are, and their kinds.
        strings: the piece's distinct strings (STR columns' codes index it; 0 is "").
        raws: its distinct raw JSON values (RAW columns'; 0 is b"", no value).
    """

    __slots__ = (
        "layout",
        "strings",
        "raws",
        "_text",
        "_columns",
        "_spans",
        "_seen",
        "_index",
        "_size",
    )

    def __init__(
        self,
        layout: Layout,
        text: Any,
        columns: dict[str, np.ndarray],
        strings: list[str],
        raws: list[bytes],
        spans: np.ndarray,
        seen: np.ndarray,
        index: np.ndarray | None = None,
    ) -> None:
        self.layout = layout
        self.strings, self.raws = strings, raws
        self._text, self._columns, self._spans, self._index = text, columns, spans, index
        self._seen = seen  # per event, a bit per args field it has (Layout.bits)
        self._size = len(spans) if index is None else len(index)

    def __len__(self) -> int:
        return self._size

    def column(self, name: str) -> np.ndarray:
        """A field's values (codes for strings and raw values), one per event."""
        return self._mine(self._columns[name])

    def _mine(self, values: np.ndarray) -> np.ndarray:
        """The rows of a per-event array of the piece that are these events'."""
        return values if self._index is None else values[self._index]

    def select(self, mask: np.ndarray) -> ScannedPiece:
        """The events where ``mask`` is true (their columns are taken as they are read)."""
        return self.take(np.flatnonzero(mask))

    def take(self, rows: np.ndarray) -> ScannedPiece:
        """The events at ``rows`` (sorted positions among these)."""
        index = rows if self._index is None else self._index[rows]
        return ScannedPiece(
            self.layout,
            self._text,
            self._columns,
            self.strings,
            self.raws,
            self._spans,
            self._seen,
            index,
        )

    def values_of(self, name: str) -> list[Any]:
        """The distinct values a string or raw field's codes index (``strings`` or ``raws``)."""
        return self.raws if self.layout.kinds[name] == RAW else self.strings

    def texts(self, name: str) -> list[Any]:
        """A string or raw field's values, one per event."""
        values = self.values_of(name)
        return [values[code] for code in self.column(name).tolist()]

    def differs_any(self, names: tuple[str, ...], defaults: tuple[Any, ...]) -> np.ndarray:
        """Which events have any of the args fields ``names`` other than its default: looked
        at only on the events that have one of them at all (most have none)."""
        out = np.zeros(self._size, bool)
        seen = self._mine(self._seen)
        bits = sum(self.layout.bits[name] for name in names)
        some = np.flatnonzero(seen & np.uint64(bits))
        if not len(some):
            return out
        having = self.take(some)
        found = np.zeros(len(some), bool)
        for name, default in zip(names, defaults, strict=True):
            found |= having.differs(name, default)
        out[some] = found
        return out

    def differs(self, name: str, default: Any) -> np.ndarray:
        """Which events have field ``name`` other than its default ``default``."""
        values = self.column(name)
        kind = self.layout.kinds[name]
        if kind in (STR, RAW):
            return values != 0  # code 0 is the default: "" or b""
        if isinstance(default, float) and np.isnan(default):
            return ~np.isnan(values)
        return values != _default(kind, default)

    def text_of_events(self) -> bytes:
        """These events' JSON text, as an array (to be decoded the reference way)."""
        spans, text = self._mine(self._spans), self._text
        return b"[" + b",".join(bytes(text[start:stop]) for start, stop in spans.tolist()) + b"]"

    def clear(self) -> None:
        """Let the columns and the piece's text go."""
        self._columns = {}
        self._text = b""
        self._spans = np.empty((0, 2), np.int64)
        self._seen = np.empty(0, np.uint64)
        self._index = None
        self._size = 0


def scan(layout: Layout, text: Any) -> ScannedPiece | None:
    """A piece's events (``[`` events ``]``) as columns; None where msgspec must decode it."""
    if scanner_c is None:
        return None
    found = scanner_c.scan(text, layout.spec)
    if found is None:
        return None
    _, buffers, strings, raws, spans, seen = found
    columns = {
        name: np.frombuffer(buffer, _DTYPES[layout.kinds[name]])
        for name, buffer in zip(layout.names, buffers, strict=True)
    }
    pairs = np.frombuffer(spans, np.int64).reshape(-1, 2)
    return ScannedPiece(layout, text, columns, strings, raws, pairs, np.frombuffer(seen, np.uint64))

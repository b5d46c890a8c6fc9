"""Decode a trace file's events a few MB at a time, never holding its whole JSON text.

The file is gunzipped in blocks; the ``traceEvents`` array is cut between two events (a ``}``,
a comma and a ``{``) every :data:`CHUNK_BYTES` of text and each piece is decoded on its own, so
a load's memory follows the tables it builds, not the size of the text (~320 bytes per event).
A cut in the wrong place (inside a string that happens to hold ``},{``) leaves an unbalanced
piece that no JSON parser accepts: the decoder says so and the piece grows to the next cut.

Decoding is typed (msgspec), in one pass per piece: each event into a struct, its ``args`` into a
struct that names just the keys analyses use (:mod:`profiler.analysis.event_args`); everything
else is skipped without building objects. A piece that holds counters or metadata (whose args
are read whole), or args of other types than those, is decoded again with each event's ``args``
kept as raw JSON, for the column builder to decode as it needs: the reference way, whose
errors name the event.

What a file may hold is bounded (:mod:`profiler.analysis.guards`): its text, one event, the
head before the events, and how deep JSON nests; past a bound the file is refused with a
:class:`TraceFormatError`, as soon as the bound is passed.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Iterator
from itertools import chain
from operator import attrgetter
from pathlib import Path
from typing import Any, Literal

import msgspec

from profiler.analysis import scanned
from profiler.analysis.event_args import MISSING_INT, EventArgs
from profiler.analysis.guards import (
    MAX_DEPTH,
    MAX_EVENT_BYTES,
    MAX_EVENT_DEPTH,
    MAX_HEAD_BYTES,
    SAFE_RECURSION_LIMIT,
    depth_problem,
    nesting_depth,
    rebase_bytes,
    size_text,
    validation_problem,
)
from profiler.analysis.text import READ_BYTES, TextReader
from profiler.events import PHASE_COUNTER, PHASE_METADATA, TRAINPROF_KEY
from profiler.store.chrome_trace import TraceFormatError

# Text decoded per msgspec call: big enough that per-piece costs vanish, small enough that a
# piece's text and its event structs stay small. Measured on a 109k-event trace: 2 MiB pieces
# peaked at 300 bytes per event, 512 KiB ones at 210, at the same speed.
CHUNK_BYTES = 512 * 1024
_READ_BYTES = READ_BYTES  # the blocks the file is read in (tests make them tiny)
_EVENTS_KEY = re.compile(rb'"traceEvents"\s*:\s*')
_KEY = b'"traceEvents"'
_BOUNDARY = re.compile(rb"\}\s*,\s*\{")  # between two events of the array
_WHITESPACE = b" \t\r\n"
_SEARCH_WINDOW = 64 * 1024  # where the last cut is looked for: events are rarely longer
_DOCUMENT_OPENING = b'{"traceEvents":'  # put before the text after the last cut


class Event(msgspec.Struct, gc=False):
    """One trace event's envelope; ``args`` stays raw JSON (``{}`` when absent)."""

    ph: str = ""
    cat: str = ""
    name: str = ""
    pid: int | str = MISSING_INT
    tid: int | str | None = MISSING_INT
    ts: float = math.nan
    dur: float = 0.0
    id: int | str | None = None
    args: msgspec.Raw = msgspec.Raw(b"{}")


# Phases whose args are read whole (counters' series, metadata's names): a piece holding one is
# decoded with raw args.
_RAW_ARGS_PHASES = frozenset((PHASE_COUNTER, PHASE_METADATA))
# The Chrome format's phases but those: the typed pass takes only these, so a piece holding a
# counter or metadata (or a phase no writer uses) fails it at that event, not after a scan of
# all; and each event's phase is one shared string, not one decoded per event.
_TypedPhase = Literal[
    "B", "E", "X", "i", "I", "b", "n", "e", "s", "t", "f", "P", "O", "N", "D", "V", "v", "R",
    "c", "(", ")",
]  # fmt: skip


class TypedEvent(Event, gc=False):
    """One trace event with its ``args`` decoded (the typed pass)."""

    ph: _TypedPhase = ""  # type: ignore[assignment]
    args: EventArgs = EventArgs()  # type: ignore[valid-type]


# Top-level keys kept in TraceTable.meta; any other is skipped while decoding.
META_KEYS = (
    "schemaVersion", "deviceProperties", "distributedInfo", "displayTimeUnit",
    "baseTimeNanoseconds", "traceName", TRAINPROF_KEY, "record_shapes", "cupti_version",
    "cuda_runtime_version", "cuda_driver_version", "roctracer_version", "hip_runtime_version",
    "trace_id", "host_name",
)  # fmt: skip
_Document = msgspec.defstruct(
    "_Document",
    [("traceEvents", list[Event] | None, None)]
    + [(key, msgspec.Raw, msgspec.Raw(b"")) for key in META_KEYS],
    gc=False,
)
_DOCUMENT_DECODER = msgspec.json.Decoder(_Document)
EVENTS_DECODER = msgspec.json.Decoder(list[Event])  # the reference: raw args
_TYPED_DECODER = msgspec.json.Decoder(list[TypedEvent])
ANY_DECODER = msgspec.json.Decoder()
# What the C scanner reads of an event: the typed pass's fields (profiler.analysis.scanned).
LAYOUT = scanned.Layout(TypedEvent)
# A piece is a list of event structs (msgspec's) or the C scanner's columns of the same fields.
Piece = list[Event] | scanned.ScannedPiece


class EventStream:
    """The events of one trace file, a list per piece of text; :attr:`meta` once consumed.

    Attributes:
        path: the file.
        meta: its top-level keys of :data:`META_KEYS`, decoded; filled by the end of iteration.
    """

    def __init__(
        self,
        path: Path,
        chunk_bytes: int | None = None,
        *,
        max_text_bytes: int | None = None,
        start: int = 0,
        stop: int | None = None,
    ) -> None:
        self.path = path
        self.meta: dict[str, Any] = {}
        # A part of the events (:mod:`profiler.analysis.halves`): from the first cut at or
        # after text offset ``start`` (0: the array's start) to the first at or after ``stop``
        # (None: its end). Where each part began and ended is kept (None: the array's ends).
        self._start, self._stop = start, stop
        self.started_at: int | None = None
        self.stopped_at: int | None = None
        self._chunk_bytes = chunk_bytes or CHUNK_BYTES
        self._bare = False
        self._raw_meta: dict[str, bytes] = {}
        self._reader = TextReader(path, max_text_bytes, read_bytes=_READ_BYTES)
        self._first_event = 0  # the number in traceEvents of the next piece's first event
        self._offset = 0  # where the text being decoded starts in the file's text
        self._prefix = 0  # bytes put before that text to decode it
        # msgspec recurses per level of nesting and stops at the interpreter's recursion
        # limit; where an application raised it, the C stack may not hold that many levels.
        self._scan_all = sys.getrecursionlimit() > SAFE_RECURSION_LIMIT
        self._typed = True  # try the typed pass first (off after a piece that needed raw args)
        self._scans = [0, 0]  # pieces the C scanner took, and ones it left to msgspec

    def __iter__(self) -> Iterator[Piece]:
        """Yields each piece's events in file order.

        Raises:
            TraceFormatError: the file is unreadable, not JSON, not a Chrome/Kineto trace, or
                past a limit of :mod:`profiler.analysis.guards`.
        """
        try:
            yield from self._pieces()
            self.meta = {key: self._meta_value(key, raw) for key, raw in self._raw_meta.items()}
        except msgspec.ValidationError as exc:
            problem = validation_problem(exc, lambda index: self._first_event + index)
            raise TraceFormatError(self.path, problem) from exc
        except msgspec.DecodeError as exc:
            message = rebase_bytes(str(exc), self._offset - self._prefix)
            raise TraceFormatError(self.path, f"invalid or truncated JSON: {message}") from exc

    def fraction_read(self) -> float:
        """The share of the file's text read so far: how far the load has come. A part from
        a ``start`` on counts what it decoded from there (its tables are sized for what
        follows; a first part sizes them for the whole file, which the next part's rows then
        join; the text read ahead while skipping to the start would make it guess short)."""
        size = self._reader.text_size
        if not self._start or size <= self._start:
            return self._reader.fraction_read()
        return min(max(self._offset - self._start, 0) / (size - self._start), 1.0)

    def _pieces(self) -> Iterator[Piece]:
        blocks = iter(self._reader)
        try:
            head, start = self._find_array(blocks)
            if start is None:  # not the usual layout: decode the document whole
                yield self._whole(head, blocks)
                return
            self._offset += start
            yield from self._stream(head[start:], blocks)
        finally:  # however the decoding ends: the reader's thread stops with it
            close = getattr(blocks, "close", None)
            if close is not None:
                close()

    def _find_array(self, blocks: Iterator[bytes]) -> tuple[bytearray, int | None]:
        """The text up to where the events array starts, and the array's offset in it.

        Whitespace before the document is dropped as it comes; the head grows in place and
        each new block is searched once, so a head of many blocks costs what its text does.
        """
        head = bytearray()
        searched = 0
        for block in blocks:
            if not head:  # (lstrip's own whitespace: 5x faster than naming JSON's four)
                text = block.lstrip()
                self._offset += len(block) - len(text)
                block = text
            head += block
            start, searched = self._array_start(head, searched)
            if start != _NEED_MORE:
                return head, start
        return head, None

    def _array_start(self, head: bytearray, searched: int) -> tuple[int | None, int]:
        """Where the events array starts in ``head`` (None: decode whole; or _NEED_MORE), and
        where to search from once more text came."""
        first = head[:1]
        if not first:
            return _NEED_MORE, 0
        if first == b"[":  # the Chrome format's bare-array form
            self._bare = True
            return 0, 0
        if first != b"{":  # not an object or an array: say what msgspec says of it
            return None, 0
        match = _EVENTS_KEY.search(head, searched)
        if match is None or match.end() == len(head):
            if len(head) >= MAX_HEAD_BYTES:
                return None, 0
            # A key whose colon (or array) has not come yet is searched again, from its start.
            key_at = head.rfind(_KEY, searched) if match is None else match.start()
            return _NEED_MORE, key_at if key_at >= 0 else max(len(head) - len(_KEY), 0)
        if head[match.end() : match.end() + 1] != b"[":
            return None, 0
        # The keys before it, closed into an object: it decodes only if the match is top-level.
        before = head[: match.start()].rstrip(_WHITESPACE).rstrip(b",")
        try:
            document = self._decode(_DOCUMENT_DECODER, before + b"}")
        except msgspec.DecodeError:
            return None, 0
        self._keep_meta(document)
        return match.end(), 0

    def _stream(self, text: bytearray, blocks: Iterator[bytes]) -> Iterator[Piece]:
        """The events of the array that starts ``text``, a piece per :data:`CHUNK_BYTES`.

        The piece grows in place; where no cut is found, it is tried again at twice the size
        (each try costs its size, so all of them cost about twice the piece), up to
        :data:`MAX_EVENT_BYTES`.
        """
        pending, limit = text, self._chunk_bytes
        if self._start:
            skipped = self._skip(text, blocks)
            if skipped is None:  # no cut after the start: the part holds no events
                return
            pending = skipped
        for block in blocks:
            pending += block
            if self._stop is not None and self._offset + len(pending) > self._stop:
                last = self._stop_piece(pending)
                if last is not None:
                    yield last
                    return
            if len(pending) < limit:
                continue
            events, rest = self._cut(pending)
            if events is None:  # no clean cut: try again with more text
                if len(pending) > MAX_EVENT_BYTES:
                    raise TraceFormatError(self.path, self._no_cut(pending))
                limit = min(2 * len(pending), MAX_EVENT_BYTES + 1)
                continue
            self._offset += len(pending) - len(rest)  # rest starts with a '[' put there
            pending, limit = rest, self._chunk_bytes
            self._first_event += len(events)
            self._reader.ahead = True  # a trace: read the rest a block ahead, in a thread
            yield events  # the events' raw args hold the piece's text, until they go
        yield self._last(pending)

    def _cut(self, text: bytearray) -> tuple[Piece | None, bytearray]:
        """Decode ``text`` (``[`` and events) up to its last cut between two events.

        The byte after the cut's ``}`` becomes the array's ``]`` in place, so the piece is
        decoded without a copy; on failure it is put back.

        Returns:
            The events before the cut and ``[`` + the text after it; or None and ``text``
            when no cut is found or the piece does not parse (a cut inside a string).
        """
        last = last_event_boundary(text, 1)
        if last is None:
            return None, text
        end = last.start() + 1
        replaced, text[end] = text[end], ord("]")
        view = memoryview(text)[: end + 1]
        try:
            events = self._decode_events(view)
        except msgspec.ValidationError:
            raise
        except msgspec.DecodeError:
            view.release()  # now, not with the traceback: the piece grows in place next
            text[end] = replaced
            return None, text
        return events, bytearray(b"[") + text[last.end() - 1 :]

    def _skip(self, text: bytearray, blocks: Iterator[bytes]) -> bytearray | None:
        """The text from the first cut at or after :attr:`_start` on, as an array's start
        (``[`` and the next event); None where the array ends before one."""
        pending = text
        for block in chain((b"",), blocks):  # the text there already, then more
            pending += block
            at = self._start - self._offset
            if at < 1:  # the array starts after the part's start: not a part of it
                raise TraceFormatError(self.path, "the events array starts past the part")
            match = _BOUNDARY.search(pending, at) if len(pending) > at else None
            if match is not None:
                self.started_at = self._offset + match.start()
                brace = match.end() - 1
                self._offset += brace - 1
                self._reader.ahead = True
                return bytearray(b"[") + pending[brace:]
            keep = min(at, len(pending)) - 1  # only the text after the start can hold it
            del pending[1 : keep + 1]
            self._offset += keep
            if len(pending) > MAX_EVENT_BYTES:
                raise TraceFormatError(self.path, self._no_cut(pending))
        return None

    def _stop_piece(self, text: bytearray) -> Piece | None:
        """The events of ``text`` up to the first cut at or after :attr:`_stop`, if it holds
        one (the part's last piece).

        Raises:
            msgspec.DecodeError: the cut lies inside a string (the part is not whole).
        """
        match = _BOUNDARY.search(text, max(self._stop - self._offset, 1))  # type: ignore[operator]
        if match is None:
            return None
        self.stopped_at = self._offset + match.start()
        return self._decode_events(memoryview(bytes(text[: match.start() + 1]) + b"]"))

    def _decode_events(self, text: memoryview) -> Piece:
        """A piece's events: as columns by the C scanner where it takes them, else typed where
        they all fit, else with raw args.

        The typed pass is tried again after a piece that needed raw args once the raw pass
        finds a piece that would not have (counters come in runs: a run costs one pass more).
        The scanner is tried while it takes most pieces (a file whose names hold escapes would
        pay for a scan and a decode of each).
        """
        taken, left = self._scans
        if left < 4 or left * 8 < taken:
            # (No depth guard first: the scanner refuses JSON nested past 64 levels, far
            # inside MAX_EVENT_DEPTH; what it refuses, _decode guards.)
            piece = scanned.scan(LAYOUT, text)
            if piece is not None:
                self._scans[0] += 1
                return piece
            self._scans[1] += 1
        if self._typed:
            try:
                return self._decode(_TYPED_DECODER, text)
            except msgspec.ValidationError:
                self._typed = False
        events = self._decode(EVENTS_DECODER, text)
        self._typed = _RAW_ARGS_PHASES.isdisjoint(map(attrgetter("ph"), events))
        return events

    def _last(self, text: bytearray) -> list[Event]:
        if self._bare:
            return self._decode(EVENTS_DECODER, text)
        # The array's end and the keys after it (Kineto writes traceName and others there).
        self._prefix = len(_DOCUMENT_OPENING)
        document: Any = self._decode(_DOCUMENT_DECODER, _DOCUMENT_OPENING + text)
        self._keep_meta(document)
        return document.traceEvents or []

    def _whole(self, head: bytearray, blocks: Iterator[bytes]) -> list[Event]:
        """The events of a document that cannot be streamed, decoded at once (it is small).

        A document that is not an object is decoded as far as its first block, which is
        enough for msgspec to say what it is instead.
        """
        if not head:
            raise TraceFormatError(self.path, "no JSON: the text is only whitespace")
        for block in blocks if head[:1] == b"{" else ():
            head += block
            if len(head) > MAX_HEAD_BYTES:
                raise TraceFormatError(self.path, _unstreamable())
        if head[:1] == b"[":
            return self._decode(EVENTS_DECODER, head)
        document: Any = self._decode(_DOCUMENT_DECODER, head)
        if document.traceEvents is None:
            raise TraceFormatError(self.path, "no traceEvents array: not a Chrome/Kineto trace")
        self._keep_meta(document)
        return document.traceEvents

    def _decode(self, decoder: Any, text: Any) -> Any:
        """``decoder.decode(text)``, refusing JSON nested deeper than msgspec can follow."""
        if self._scan_all:
            self._check_depth(text)
        try:
            return decoder.decode(text)
        except RecursionError:
            where = f"the text from byte {self._offset}"
            problem = (
                f"JSON nested {nesting_depth(text)} levels deep in {where}: too deep to decode"
            )
            raise TraceFormatError(self.path, problem) from None

    def _check_depth(self, text: Any) -> None:
        problem = depth_problem(text, MAX_EVENT_DEPTH, f"the text from byte {self._offset}")
        if problem is not None:
            raise TraceFormatError(self.path, problem)

    def _no_cut(self, text: bytearray) -> str:
        self._check_depth(text)
        return (
            f"{size_text(len(text))} of text from byte {self._offset} with no break between "
            f"two events: an event over {size_text(MAX_EVENT_BYTES)} is not a trace's"
        )

    def _meta_value(self, key: str, raw: bytes) -> Any:
        problem = depth_problem(raw, MAX_DEPTH, f"the {key} key")
        if problem is not None:
            raise TraceFormatError(self.path, problem)
        return ANY_DECODER.decode(raw)

    def _keep_meta(self, document: Any) -> None:
        for key in META_KEYS:
            raw = getattr(document, key)
            if raw:  # a copy: the raw view would keep the whole piece of text alive
                self._raw_meta[key] = bytes(raw)


def last_event_boundary(text: bytes | bytearray, start: int = 0) -> re.Match[bytes] | None:
    """The last ``}``, comma, ``{`` between two events in ``text[start:]``, or None.

    Looked for in the last :data:`_SEARCH_WINDOW` bytes first (events are rarely longer), then
    in the whole text. It may lie inside a string: the caller finds out when the piece before it
    does not decode.
    """
    last = None
    for last in _BOUNDARY.finditer(text, max(start, len(text) - _SEARCH_WINDOW)):  # noqa: B007
        pass
    if last is None:
        for last in _BOUNDARY.finditer(text, start):  # noqa: B007
            pass
    return last


def _unstreamable() -> str:
    return (
        f"no traceEvents array in its first {size_text(MAX_HEAD_BYTES)}, and too large to "
        "decode whole: not a Chrome/Kineto trace"
    )


_NEED_MORE = -2

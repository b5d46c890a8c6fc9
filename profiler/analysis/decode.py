"""Decode a trace file's events a few MB at a time, never holding its whole JSON text.

The file is gunzipped in blocks; the ``traceEvents`` array is cut between two events (a ``}``,
a comma and a ``{``) every :data:`CHUNK_BYTES` of text and each piece is decoded on its own, so
a load's memory follows the tables it builds, not the size of the text (~320 bytes per event).
A cut in the wrong place (inside a string that happens to hold ``},{``) leaves an unbalanced
piece that no JSON parser accepts: the decoder says so and the piece grows to the next cut.

Decoding is typed (msgspec): each event's envelope is decoded into a struct and its ``args`` kept
as raw JSON; only complete events have their args decoded, by the column builder, into a struct
that names just the keys analyses use; everything else is skipped without building objects.
"""

from __future__ import annotations

import math
import os
import re
import zlib
from collections.abc import Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

from profiler.events import TRAINPROF_KEY
from profiler.store.chrome_trace import TraceFormatError

MISSING_INT = -1
# Files beyond this are refused rather than risking the machine's memory: ~50M events.
MAX_TRACE_BYTES = 8 * 1024**3
# Text decoded per msgspec call: big enough that per-piece costs vanish, small enough that a
# piece's text and its event structs stay small. Measured on a 109k-event trace: 2 MiB pieces
# peaked at 300 bytes per event, 512 KiB ones at 210, at the same speed.
CHUNK_BYTES = 512 * 1024
_READ_BYTES = 256 * 1024  # of the file, and of text per block once gunzipped
_GZIP_MAGIC = b"\x1f\x8b"
_EVENTS_KEY = re.compile(rb'"traceEvents"\s*:\s*')
_BOUNDARY = re.compile(rb"\}\s*,\s*\{")  # between two events of the array
_WHITESPACE = b" \t\r\n"
_SEARCH_WINDOW = 64 * 1024  # where the last cut is looked for: events are rarely longer


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
    bp: str = ""
    args: msgspec.Raw = msgspec.Raw(b"{}")


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
_EVENTS_DECODER = msgspec.json.Decoder(list[Event])
ANY_DECODER = msgspec.json.Decoder()


class TextReader:
    """The JSON text of a trace file in blocks, gunzipped when it is gzip.

    Attributes:
        path: the file.
        text_size: how much text the file holds (from the gzip trailer: an estimate, exact
            below 4 GiB of text and for single-member gzip), known once iteration began.
        text_read: how much text the blocks handed out so far hold.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.text_size = 0
        self.text_read = 0

    def __iter__(self) -> Iterator[bytes]:
        """Yields blocks of text.

        Raises:
            TraceFormatError: unreadable, empty, truncated or corrupt gzip, or too large.
        """
        path = self.path
        try:
            size = path.stat().st_size
            if size > MAX_TRACE_BYTES:
                raise TraceFormatError(path, f"{size / 1024**3:.1f} GiB is over the 8 GiB limit")
            with path.open("rb") as file:
                for block in self._blocks(file, size):
                    self.text_read += len(block)
                    yield block
        except OSError as exc:
            raise TraceFormatError(path, f"cannot read: {exc.strerror or exc}") from exc

    def fraction_read(self) -> float:
        """The share of the text handed out so far (1.0 where the size is not known)."""
        return min(self.text_read / self.text_size, 1.0) if self.text_size else 1.0

    def _blocks(self, file: BinaryIO, size: int) -> Iterator[bytes]:
        first = file.read(_READ_BYTES)
        if not first:
            raise TraceFormatError(self.path, "empty file")
        rest = iter(partial(file.read, _READ_BYTES), b"")
        if first[:2] != _GZIP_MAGIC:
            self.text_size = size
            yield first
            yield from rest
            return
        if size > len(first):  # ISIZE, the text's size mod 2**32, ends the last member
            file.seek(-4, os.SEEK_END)
            self.text_size = int.from_bytes(file.read(4), "little")
            file.seek(len(first))
        produced = False
        for text in _gunzip(self.path, _chain(first, rest)):
            produced = True
            yield text
        if not produced:
            raise TraceFormatError(self.path, "empty after gunzip")


def _gunzip(path: Path, raws: Iterable[bytes]) -> Iterator[bytes]:
    """Inflate gzip members one after another, a bounded block of text at a time."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        for raw in raws:
            while raw:
                text = inflater.decompress(raw, _READ_BYTES)
                raw = inflater.unconsumed_tail
                if inflater.eof and inflater.unused_data:  # a next member follows
                    # (at the end of a member, the tail is also all in unused_data)
                    raw, inflater = inflater.unused_data, zlib.decompressobj(wbits=31)
                if text:
                    yield text
    except zlib.error as exc:
        raise TraceFormatError(path, f"corrupt or truncated gzip: {exc}") from exc
    if not inflater.eof:
        raise TraceFormatError(path, "corrupt or truncated gzip: the stream ends early")


def _chain(first: bytes, rest: Iterable[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


class EventStream:
    """The events of one trace file, a list per piece of text; :attr:`meta` once consumed.

    Attributes:
        path: the file.
        meta: its top-level keys of :data:`META_KEYS`, decoded; filled by the end of iteration.
    """

    def __init__(self, path: Path, chunk_bytes: int | None = None) -> None:
        self.path = path
        self.meta: dict[str, Any] = {}
        self._chunk_bytes = chunk_bytes or CHUNK_BYTES
        self._bare = False
        self._raw_meta: dict[str, bytes] = {}
        self._reader = TextReader(path)

    def __iter__(self) -> Iterator[list[Event]]:
        """Yields each piece's events in file order.

        Raises:
            TraceFormatError: the file is unreadable, not JSON, or not a Chrome/Kineto trace.
        """
        try:
            yield from self._pieces()
        except msgspec.ValidationError as exc:
            raise TraceFormatError(self.path, f"not a Kineto trace: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise TraceFormatError(self.path, f"invalid or truncated JSON: {exc}") from exc
        raw = self._raw_meta
        self.meta = {key: ANY_DECODER.decode(raw[key]) for key in META_KEYS if key in raw}

    def fraction_read(self) -> float:
        """The share of the file's text read so far: how far the load has come."""
        return self._reader.fraction_read()

    def _pieces(self) -> Iterator[list[Event]]:
        blocks = iter(self._reader)
        head, start = self._find_array(blocks)
        if start is None:  # not the usual layout: decode the document whole
            yield self._whole(b"".join([head, *blocks]))
            return
        yield from self._stream(head[start:], blocks)

    def _find_array(self, blocks: Iterator[bytes]) -> tuple[bytes, int | None]:
        """The text up to where the events array starts, and the array's offset in it."""
        head = b""
        for block in blocks:
            head += block  # only the document's head: a block or two
            start = self._array_start(head)
            if start != _NEED_MORE:
                return head, start
        return head, None

    def _array_start(self, head: bytes) -> int | None:
        text = head.lstrip(_WHITESPACE)
        if not text:
            return _NEED_MORE
        if text[:1] == b"[":  # the Chrome format's bare-array form
            self._bare = True
            return len(head) - len(text)
        match = _EVENTS_KEY.search(head) if text[:1] == b"{" else None
        if match is None:
            return _NEED_MORE if text[:1] == b"{" and len(head) < _MAX_HEAD_BYTES else None
        if match.end() == len(head):
            return _NEED_MORE
        if head[match.end() : match.end() + 1] != b"[":
            return None
        # The keys before it, closed into an object: it decodes only if the match is top-level.
        before = head[: match.start()].rstrip(_WHITESPACE).rstrip(b",")
        try:
            self._keep_meta(_DOCUMENT_DECODER.decode(before + b"}"))
        except msgspec.DecodeError:
            return None
        return match.end()

    def _stream(self, text: bytes, blocks: Iterator[bytes]) -> Iterator[list[Event]]:
        pending: list[bytes | bytearray] = [text]
        size, limit = len(text), self._chunk_bytes
        for block in blocks:
            pending.append(block)
            size += len(block)
            if size < limit:
                continue
            piece = bytearray().join(pending)
            events, rest = _cut(piece)
            if events is None:  # no clean cut: try again with more text
                pending, limit = [piece], 2 * size
                continue
            pending, size, limit = [rest], len(rest), self._chunk_bytes
            del piece  # the events' raw args still hold it, until they go
            yield events
        yield self._last(b"".join(pending))

    def _last(self, text: bytes) -> list[Event]:
        if self._bare:
            return _EVENTS_DECODER.decode(text)
        # The array's end and the keys after it (Kineto writes traceName and others there).
        document: Any = _DOCUMENT_DECODER.decode(b'{"traceEvents":' + text)
        self._keep_meta(document)
        return document.traceEvents or []

    def _whole(self, data: bytes) -> list[Event]:
        if data.lstrip(_WHITESPACE)[:1] == b"[":
            return _EVENTS_DECODER.decode(data)
        document: Any = _DOCUMENT_DECODER.decode(data)
        if document.traceEvents is None:
            raise TraceFormatError(self.path, "no traceEvents array: not a Chrome/Kineto trace")
        self._keep_meta(document)
        return document.traceEvents

    def _keep_meta(self, document: Any) -> None:
        for key in META_KEYS:
            raw = getattr(document, key)
            if raw:  # a copy: the raw view would keep the whole piece of text alive
                self._raw_meta[key] = bytes(raw)


_NEED_MORE = -2
_MAX_HEAD_BYTES = 64 * 1024**2  # no events array by then: decode the document whole


def _cut(text: bytearray) -> tuple[list[Event] | None, bytes | bytearray]:
    """Decode ``text`` (``[`` and events) up to its last cut between two events.

    The byte after the cut's ``}`` becomes the array's ``]`` in place, so the piece is decoded
    without a copy; on failure it is put back.

    Returns:
        The events before the cut and ``[`` + the text after it; or None and ``text`` when no
        cut is found or the piece does not parse (a cut inside a string).
    """
    last = None
    for last in _BOUNDARY.finditer(text, max(1, len(text) - _SEARCH_WINDOW)):  # noqa: B007
        pass
    if last is None:
        for last in _BOUNDARY.finditer(text, 1):  # noqa: B007
            pass
    if last is None:
        return None, text
    end = last.start() + 1
    rest = b"[" + text[last.end() - 1 :]
    replaced, text[end] = text[end], ord("]")
    try:
        events = _EVENTS_DECODER.decode(memoryview(text)[: end + 1])
    except msgspec.ValidationError:
        raise
    except msgspec.DecodeError:
        text[end] = replaced
        return None, text
    return events, rest

"""A trace file's text as parts, each a run of whole events or the text between: for rewriting a
few events of a trace and copying the rest as it was, a piece at a time.

The file is gunzipped in blocks (:class:`profiler.analysis.text.TextReader`, with its limit on
the text); the ``traceEvents`` array is cut between two events (a ``}``, a comma and a ``{``)
every :data:`CHUNK_BYTES` of text, as :mod:`profiler.analysis.decode` does, and each piece is
decoded into its events' raw text (``msgspec.Raw``): a cut inside a string leaves a piece that
does not decode, and the piece grows to the next cut. So memory follows the piece, not the file,
and concatenating the parts' text gives back the file's text byte for byte.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import msgspec

from profiler.analysis.decode import CHUNK_BYTES, last_event_boundary
from profiler.analysis.guards import MAX_EVENT_BYTES, MAX_HEAD_BYTES, size_text
from profiler.analysis.text import READ_BYTES, TextReader
from profiler.store.chrome_trace import TraceFormatError

_EVENTS_KEY = re.compile(rb'"traceEvents"\s*:\s*\[')
_OPENING = b'{"traceEvents":['  # put before the text after the last cut
_RAW_EVENTS = msgspec.json.Decoder(list[msgspec.Raw])
_RAW_MEMBERS = msgspec.json.Decoder(dict[str, msgspec.Raw])


class Unstreamable(ValueError):
    """The text is not laid out as Chrome/Kineto traces are: an object whose ``traceEvents``
    array starts within :data:`MAX_HEAD_BYTES`. Such a file is copied as it is."""


class TracePart(NamedTuple):
    """A run of the file's text.

    Attributes:
        text: the text, as it is in the file.
        events: the events it holds, each one's text (None: the text between events, the head
            up to the array's ``[``, or the tail from its ``]``).
        first: the number in ``traceEvents`` of its first event (of the next one, if none).
    """

    text: bytes
    events: list[msgspec.Raw] | None
    first: int


def trace_parts(
    path: Path, *, chunk_bytes: int = CHUNK_BYTES, read_bytes: int = READ_BYTES
) -> Iterator[TracePart]:
    """The text of a trace file as parts, in file order.

    Args:
        path: a (gzip) JSON trace file.
        chunk_bytes: the text decoded at once.
        read_bytes: the blocks the file is read in (tests make both tiny).

    Raises:
        Unstreamable: the text has no ``traceEvents`` array where Kineto writes it.
        TraceFormatError: the file is unreadable, past the text limit, or not JSON.
    """
    blocks = iter(TextReader(path, read_bytes=read_bytes))
    head, start = _head(path, blocks)
    yield TracePart(bytes(head[:start]), None, 0)
    pending, limit, first = bytearray(head[start:]), chunk_bytes, 0
    for block in blocks:
        pending += block
        if len(pending) < limit:
            continue
        cut = _cut(pending)
        if cut is None:  # no clean cut yet: try again with more text
            if len(pending) > MAX_EVENT_BYTES:
                problem = f"{size_text(len(pending))} of events with no break between two"
                raise TraceFormatError(path, problem)
            limit = min(2 * len(pending), MAX_EVENT_BYTES + 1)
            continue
        events, end, after = cut
        yield TracePart(bytes(pending[:end]), events, first)
        first += len(events)
        yield TracePart(bytes(pending[end:after]), None, first)
        del pending[:after]
        limit = chunk_bytes
    yield from _last(path, pending, first)


def event_starts(part: TracePart) -> list[int]:
    """Where each of a part's events starts in its text (only whitespace and commas lie
    between them)."""
    starts: list[int] = []
    find, at = part.text.find, 0
    for raw in part.events or ():
        at = find(b"{", at)
        starts.append(at)
        at += len(raw)
    return starts


def _head(path: Path, blocks: Iterator[bytes]) -> tuple[bytearray, int]:
    """The text read so far and where the events array's first event may start in it."""
    head = bytearray()
    for block in blocks:
        head += block
        match = _EVENTS_KEY.search(head)
        if match is not None:
            if not _top_level(head[: match.start()]):
                break
            return head, match.end()
        if len(head) > MAX_HEAD_BYTES or head.lstrip()[:1] not in (b"", b"{"):
            break
    raise Unstreamable(f"{path}: no traceEvents array where Chrome/Kineto traces have it")


def _top_level(before: bytearray) -> bool:
    """Whether the keys before ``"traceEvents"`` close into an object: the key is top-level."""
    try:
        msgspec.json.decode(bytes(before).rstrip().rstrip(b",") + b"}")
    except msgspec.DecodeError:
        return False
    return True


def _cut(text: bytearray) -> tuple[list[msgspec.Raw], int, int] | None:
    """The events before the last cut in ``text``, where they end and where the next begins;
    None when there is no cut, or it is inside a string (the piece does not decode)."""
    last = last_event_boundary(text)
    if last is None:
        return None
    end = last.start() + 1
    try:
        events = _RAW_EVENTS.decode(b"[" + text[:end] + b"]")
    except msgspec.DecodeError:
        return None
    return events, end, last.end() - 1


def _last(path: Path, text: bytearray, first: int) -> Iterator[TracePart]:
    """The events after the last cut, then the array's ``]`` and the keys after it."""
    try:
        members = _RAW_MEMBERS.decode(_OPENING + text)
        array = members["traceEvents"]
        events = _RAW_EVENTS.decode(array)
    except (msgspec.DecodeError, KeyError) as exc:
        problem = f"invalid or truncated JSON in the last {size_text(len(text))} of text"
        raise TraceFormatError(path, problem) from exc
    end = len(array) - 2  # the array's text is "[" + text[:end] + "]"
    yield TracePart(bytes(text[:end]), events, first)
    yield TracePart(bytes(text[end:]), None, first + len(events))

"""Encode trainprof's additions into a trace that Kineto has already written.

Kineto's own writer (``export_chrome_trace``) is fast; parsing its output back into Python objects
is not (about 4 s for 140k events here, against 0.45 s for the export). So our events and top-level
keys are spliced into Kineto's text at two known points instead of re-parsing it: after the opening
brace and after ``"traceEvents": [``. Everything Kineto wrote stays as it was, except the category
of data-wait ranges and of ranges recorded as ops (rewritten in place, with the whitespace around
it), ``traceName`` (see :func:`splice_kineto_trace`), and with Python stacks the times of our
ranges (:func:`nest_ranges`). The writer takes the result as pieces (:class:`Splice`), mostly views
into Kineto's text: each regex pass or fresh copy of a 2 MB window costs ~0.3-1.5 ms, against a
stop-to-disk budget of a few milliseconds.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from profiler.events import BASE_TIME_KEY, CLOCK_SYNC_NAME, Category

try:  # the C scans of Kineto's text (_scan.c); where it was not built, the Python way does all
    from profiler.store import _scan as scan_c
except ImportError:  # pragma: no cover - a build without a C compiler
    scan_c = None  # type: ignore[assignment]

_CPU_OP = Category.CPU_OP.value.encode()
_USER_ANNOTATION = Category.USER_ANNOTATION.value.encode()

_TRACE_EVENTS = re.compile(rb'"traceEvents"\s*:\s*\[')
_BASE_TIME = re.compile(rb'"' + BASE_TIME_KEY.encode() + rb'"\s*:\s*(\d+)')
_MARKER_TS = rb'",\s*"pid"\s*:\s*[^,]+,\s*"tid"\s*:\s*[^,]+,\s*"ts"\s*:\s*([0-9.]+)'
# torch 2.x records DataLoader waits as user_annotation, which TensorBoard's plugin (0.4.3) never
# counts as DataLoader time; cpu_op is what it reads (docs/architecture.md, "Peers").
# A DataLoader wait's head, up to its name; the name ends in __next__.
_DATALOADER_ANNOTATION = re.compile(
    rb'("cat"\s*:\s*"' + _USER_ANNOTATION + rb'",)\s*"name"\s*:\s*"(enumerate\(DataLoader\)#)'
)
_DATALOADER_NEXT = b'.__next__"'
_HEAD_BYTES = 128  # how far before a name its event's "cat" may be
_WHITESPACE = b" \t\r\n"
_FIRST_TOKEN = re.compile(rb"\s*(.?)", re.DOTALL)
_DATALOADER_NAME = b"enumerate(DataLoader)#"
_TAIL_BYTES = 64 * 1024
# bytes.find crawls through Kineto's JSON (~0.3 ms a pass over a 2 MB window) when the needle
# ends in a byte the text is full of (a space, a quote), while one byte is found by memchr ~10x
# faster. Kineto's keys and aten op names are lower case and '#' only ends step and optimizer
# range names, so a needle holding one of these is found by hopping between its copies of that
# byte; past _ANCHOR_MISSES false hits the byte is not rare in this trace and plain finds go on.
_ANCHORS = b"#M"
_ANCHOR_MISSES = 256
_TRACE_NAME = re.compile(rb'"traceName"\s*:\s*"(?:[^"\\]|\\.)*"')
_EVALUATE_FUNCTION = b'"autograd::engine::evaluate_function: '
_SEQUENCE_NUMBER = re.compile(rb'"Sequence number"\s*:\s*(\d+)')
_TS = re.compile(rb'"ts"\s*:\s*([0-9.]+)')
# Kineto's pid, tid, ts and dur of a complete event, as they follow its name.
_THREAD_TIMES = (
    rb'"pid"\s*:\s*([^,]+),\s*"tid"\s*:\s*([^,]+),\s*"ts"\s*:\s*([0-9.]+),\s*"dur"\s*:\s*([0-9.]+)'
)
# A complete event's name (from its opening quote), then its thread and times.
_RANGE_TIMES = re.compile(rb'"[^"]*",\s*' + _THREAD_TIMES)
_PYTHON_FUNCTION = b'python_function"'


# Kineto's text: the writer reads it into a bytearray, which the splice rewrites in place.
Text = bytes | bytearray


class TraceFormatError(ValueError):
    """A trace file that is not what it claims to be. The message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


def read_text(path: Path) -> bytearray:
    """A file's bytes in a bytearray of its own, read once: the splice rewrites it in place."""
    with path.open("rb", buffering=0) as file:
        text = bytearray(os.fstat(file.fileno()).st_size)
        view = memoryview(text)
        done = 0
        while done < len(text) and (count := file.readinto(view[done:])):
            done += count
        del view
    if done < len(text):  # shrank while read: keep what is there
        del text[done:]
    return text


def base_time_ns(raw: Text) -> int:
    """Kineto's ``baseTimeNanoseconds`` (0 when absent: older traces use absolute timestamps)."""
    header_end = _events_array(raw, "<kineto output>").start()
    match = _BASE_TIME.search(raw, 0, header_end) or _BASE_TIME.search(raw)
    return int(match.group(1)) if match else 0


def clock_sync_ts_us(raw: Text, name: str = CLOCK_SYNC_NAME) -> float | None:
    """The trace timestamp of the clock-sync marker called ``name``, if the window recorded it."""
    match = re.search(rb'"name"\s*:\s*"' + re.escape(name.encode()) + _MARKER_TS, raw)
    return float(match.group(1)) if match else None


def splice_kineto_trace(
    raw: bytes,
    *,
    top_level: Mapping[str, Any],
    events: Iterable[Mapping[str, Any]],
    distributed_info: Mapping[str, Any] | None = None,
    trace_name: str | None = None,
    source: str | Path = "<kineto output>",
    annotations: Sequence[str] = (),
    nest: Sequence[str] = (),
) -> bytes:
    """Return Kineto's JSON with our top-level keys and events added.

    Args:
        raw: the bytes ``export_chrome_trace`` wrote.
        top_level: keys to add at the top level (e.g. ``trainprof``); existing keys are kept.
        events: trace events to add to ``traceEvents``.
        distributed_info: written as ``distributedInfo`` unless Kineto already wrote one.
        trace_name: replaces Kineto's ``traceName`` (the temporary path it exported to).
        source: the file the bytes came from, for error messages.
        annotations: name prefixes of ranges recorded as ``cpu_op`` (the cheap way to record
            them) that are ``user_annotation``; they are written as such.
        nest: name prefixes of ranges to widen until they nest with the other complete events
            on their thread (see :func:`nest_ranges`); for traces with Python stacks.

    Returns:
        The new JSON document as bytes.

    Raises:
        TraceFormatError: ``raw`` has no ``traceEvents`` array.
    """
    return b"".join(
        splice_parts(
            raw,
            top_level=top_level,
            events=events,
            distributed_info=distributed_info,
            trace_name=trace_name,
            source=source,
            annotations=annotations,
            nest=nest,
        )
    )


def splice_parts(
    raw: Text,
    *,
    top_level: Mapping[str, Any],
    events: Iterable[Mapping[str, Any]],
    distributed_info: Mapping[str, Any] | None = None,
    trace_name: str | None = None,
    source: str | Path = "<kineto output>",
    annotations: Sequence[str] = (),
    nest: Sequence[str] = (),
) -> list[bytes | memoryview]:
    """:func:`splice_kineto_trace`'s document as pieces that concatenate to it (see
    :class:`Splice`)."""
    cut = Splice(
        raw,
        top_level=top_level,
        distributed_info=distributed_info,
        trace_name=trace_name,
        source=source,
        annotations=annotations,
        nest=nest,
    )
    return [*cut.before, cut.encode(events), *cut.after]


class Splice:
    """Kineto's text ready for our events: the pieces before them and the pieces after.

    The pieces are views into Kineto's text and our few additions: a handful of large pieces,
    which a compressor takes one by one at no more cost than one document. ``after`` (Kineto's
    events, most of the document) is known before our events are: the writer deflates it
    meanwhile. A ``raw`` bytearray (the writer's own buffer) is relabelled in place
    (:func:`_relabelled`); bytes are copied first. With ``nest``, the views are into
    :func:`nest_ranges`' copy. Arguments as :func:`splice_kineto_trace`'s.
    """

    def __init__(
        self,
        raw: Text,
        *,
        top_level: Mapping[str, Any],
        distributed_info: Mapping[str, Any] | None = None,
        trace_name: str | None = None,
        source: str | Path = "<kineto output>",
        annotations: Sequence[str] = (),
        nest: Sequence[str] = (),
    ) -> None:
        header = raw[: _events_array(raw, source).start()]
        additions = [
            _member(key, value)
            for key, value in top_level.items()
            if f'"{key}"'.encode() not in header
        ]
        if distributed_info is not None and b'"distributedInfo"' not in header:
            # json, not orjson: HTA finds the rank with the pattern "rank":\s+(\d+), which needs
            # the space after the colon that only json.dumps writes.
            additions.append(b'"distributedInfo": ' + json.dumps(dict(distributed_info)).encode())
        if annotations or next(find_all(raw, _DATALOADER_NAME), -1) != -1:
            raw = raw if isinstance(raw, bytearray) else bytearray(raw)
            _dataloader_as_ops(raw)
            raw = _relabelled(raw, annotations)
        if nest:
            raw = nest_ranges(raw, nest)
        events_end = _events_array(raw, source).end()
        opening = raw.index(b"{") + 1
        #: Whether Kineto's array holds events: ours then need a comma after them.
        self.comma = _FIRST_TOKEN.match(raw, events_end)[1] != b"]"  # type: ignore[index]
        span = _trace_name_span(raw) if trace_name is not None else None
        name_start, name_end = span or (len(raw), len(raw))
        view = memoryview(raw)
        self.before: list[bytes | memoryview] = [view[:opening], b"\n"]
        self.before += [member + b",\n" for member in additions]
        self.before += [view[opening:events_end], b"\n"]
        self.after: list[bytes | memoryview] = [view[events_end:name_start]]
        if span:
            self.after.append(b'"traceName": ' + orjson.dumps(trace_name))
        self.after.append(view[name_end:])

    def encode(self, events: Iterable[Mapping[str, Any]]) -> bytes:
        """Our events, as they go between ``before`` and ``after``."""
        encoded = orjson.dumps(list(events))[1:-1]  # one call, not one per event
        return encoded + b"," if encoded and self.comma else encoded


def backward_starts(raw: Text, wanted: Collection[int]) -> dict[int, float]:
    """When the autograd engine started on each node in ``wanted``, by sequence number.

    Read off Kineto's ``autograd::engine::evaluate_function: <node>`` events where they sit in the
    text (their ``"Sequence number"`` and ``"ts"``), not by parsing the trace: by the C scan
    where it was built at install (a few hundred ns an event), else here (~1.3 us an event).
    Sequence numbers count per forward thread; with one thread running forward they are unique.

    Returns:
        The ``ts`` (trace microseconds) of the first such event for each wanted number found.
    """
    if wanted and scan_c is not None:  # the same reading, in C (_scan.c)
        numbers = wanted if isinstance(wanted, set | frozenset) else set(wanted)
        return scan_c.engine_starts(raw, _EVALUATE_FUNCTION, numbers)
    starts: dict[int, float] = {}
    for at in find_all(raw, _EVALUATE_FUNCTION) if wanted else ():
        end = raw.find(b"}", at)  # the end of the event's args: they hold no object
        if end == -1:
            break
        number = _SEQUENCE_NUMBER.search(raw, at, end)
        if number is not None and (sequence := int(number[1])) in wanted:
            ts = _TS.search(raw, at, end)
            if ts is not None:
                starts.setdefault(sequence, float(ts[1]))
    return starts


def nest_ranges(raw: Text, prefixes: Sequence[str]) -> Text:
    """``raw`` with the complete events named ``prefixes`` widened to nest on their thread.

    A range opened from Python starts inside the frames of the call that opens it and ends inside
    those of the call that closes it (``record_function.__enter__``, ``RecordFunctionFast``'s
    ``__exit__``...), and with ``with_stack=True`` Kineto records those frames as
    ``python_function`` events that cross the range. Perfetto drops one of two complete events
    that overlap on a thread without nesting (docs/architecture.md, "Peers"), so each such range
    is widened to the bounds of every frame that crosses it: it then contains the calls that
    opened and closed it, and nests in the frame that made them. Only those ranges' ``ts`` and
    ``dur`` change. Other events cannot cross them: torch's ops and ranges open and close on the
    same stack of record functions as ours.

    Nothing is parsed whole (a full parse of a window with stacks costs several times Kineto's
    export of it): our ranges are found by byte hops, and one regex pass reads each frame's
    thread and times (:func:`_frames_around`).
    """
    heads = sorted(at for p in prefixes for at in find_all(raw, b'"' + p.encode()))
    # A match per range: the prefix inside some other string does not match.
    ranges = [match for at in heads if (match := _RANGE_TIMES.match(raw, at)) is not None]
    if not ranges:
        return raw
    spans = [_span_ns(match[3], match[4]) for match in ranges]
    points: dict[_Thread, set[int]] = {}
    for match, span in zip(ranges, spans, strict=True):
        points.setdefault((match[1], match[2]), set()).update(span)
    around = {
        thread: _containing(frames, sorted(points[thread]))
        for thread, frames in _frames_around(raw, prefixes, points).items()
    }
    view = memoryview(raw)
    parts: list[bytes | memoryview] = []
    done = 0
    for match, span in zip(ranges, spans, strict=True):
        crossing = around.get((match[1], match[2]))
        new = _widen(span, crossing[span[0]] + crossing[span[1]]) if crossing else span
        if new != span:
            parts += [view[done : match.start(3)], _us(new[0]), view[match.end(3) : match.start(4)]]
            parts.append(_us(new[1] - new[0]))
            done = match.end(4)
    if not parts:
        return raw
    parts.append(view[done:])
    return b"".join(parts)


_Span = tuple[int, int]
_Thread = tuple[bytes, bytes]  # Kineto's pid and tid, as written


def _span_ns(ts: bytes, dur: bytes) -> _Span:
    """(start, end) in integer nanoseconds, as the nesting rules compare them."""
    start = round(float(ts) * 1000)
    return start, start + round(float(dur) * 1000)


def _frames_around(
    raw: Text, prefixes: Sequence[str], points: Mapping[_Thread, Collection[int]]
) -> dict[_Thread, list[_Span]]:
    """The ``python_function`` events on each thread of ``points`` that contain one of its
    points strictly, as (start, end) in nanoseconds; frames named ``prefixes`` are left out
    (they are ranges to widen themselves).

    One regex pass reads every frame's pid, tid, ts and dur as text (~7k frames in a 10-step
    window of a small MLP; :func:`_python_frames`); numpy turns them into nanoseconds and keeps
    the few hundred that contain a point, so Python touches only those.
    """
    found = _python_frames(raw, prefixes)
    if not found:
        return {}
    columns = list(zip(*found, strict=True))
    ours, pids, tids = (np.array(column) for column in columns[:3])
    starts = np.rint(_numbers(columns[3]) * 1000).astype(np.int64)
    ends = starts + np.rint(_numbers(columns[4]) * 1000).astype(np.int64)
    result = {}
    for (pid, tid), marks in points.items():
        rows = (ours == b"") & (pids == pid) & (tids == tid)
        start, end = starts[rows], ends[rows]
        sorted_marks = np.array(sorted(marks), dtype=np.int64)
        after = np.searchsorted(sorted_marks, start, side="right")  # the first point past start
        keep = after < len(sorted_marks)
        keep[keep] = sorted_marks[after[keep]] < end[keep]
        result[(pid, tid)] = list(zip(start[keep].tolist(), end[keep].tolist(), strict=True))
    return result


def _numbers(texts: Sequence[bytes]) -> np.ndarray:
    """JSON numbers' text as floats: orjson reads 7k of them ~8x faster than numpy's conversion
    of text, and rounds correctly, as ``float()`` does for our ranges."""
    return np.array(orjson.loads(b"[" + b",".join(texts) + b"]"), dtype=np.float64)


def _python_frames(raw: Text, prefixes: Sequence[str]) -> list[tuple[bytes, ...]]:
    """(our prefix or b"", pid, tid, ts, dur) of every ``python_function`` event, as text.

    The regex with ``\\s*`` between tokens costs twice one with the whitespace spelled out (sre
    tries each ``\\s*``), so the first frame's own spelling is taken as the pattern for all:
    Kineto writes every event from one template. If that pattern misses any frame (the count of
    ``python_function`` categories says so), the general one reads them all.
    """
    ours = b"(" + b"|".join(re.escape(prefix.encode()) for prefix in prefixes) + b"|)"
    name = ours + rb'[^"\\]*(?:\\.[^"\\]*)*'
    general = re.compile(
        rb'python_function",\s*"name"\s*:\s*"(' + name + rb')",\s*' + _THREAD_TIMES
    )
    at = raw.find(_PYTHON_FUNCTION)  # a regex search would crawl there (~2 ms)
    if at == -1:
        return []
    first = general.match(raw, at)
    if first is None:
        return [match[1:] for match in general.findall(raw)]
    values = (name, rb"[^,]+", rb"[^,]+", rb"[0-9.]+", rb"[0-9.]+")
    pattern, done = b"", first.start()
    for group, value in zip((1, 3, 4, 5, 6), values, strict=True):  # 2: inside the name
        pattern += re.escape(bytes(raw[done : first.start(group)])) + b"(" + value + b")"
        done = first.end(group)
    spelled = re.compile(pattern.replace(b"(" + name + b")", name, 1))
    found = spelled.findall(raw)
    if len(found) != raw.count(_PYTHON_FUNCTION):
        found = [match[1:] for match in general.findall(raw)]
    return found


def _containing(spans: list[_Span], points: list[int]) -> dict[int, list[_Span]]:
    """For each of the sorted ``points``, the spans that contain it strictly (a sweep: the open
    spans at a point are as many as the stack is deep)."""
    spans.sort()
    result: dict[int, list[_Span]] = {}
    active: list[_Span] = []
    at = 0
    for point in points:
        while at < len(spans) and spans[at][0] < point:
            active.append(spans[at])
            at += 1
        active = [span for span in active if span[1] > point]
        result[point] = list(active)  # active grows on: keep this point's own copy
    return result


def _widen(span: _Span, candidates: list[_Span]) -> _Span:
    """``span`` widened to the bounds of each candidate that crosses it, until none does (a
    crossing frame's callers cross the widened span in turn)."""
    start, end = span
    changed = True
    while changed:
        changed = False
        for first, last in candidates:
            if first < start < last < end:
                start, changed = first, True
            elif start < first < end < last:
                end, changed = last, True
    return start, end


def _us(ns: int) -> bytes:
    """Integer nanoseconds as microseconds with three decimals, exactly (no float rounding)."""
    return b"%d.%03d" % divmod(ns, 1000)


def _relabelled(raw: bytearray, annotations: Sequence[str]) -> bytearray:
    """``raw`` with the ``cpu_op`` ranges named ``annotations`` made ``user_annotation``.

    One regex search finds how Kineto spells such an event's head, from the whitespace before
    ``"cat"``; each copy of that spelling, found by :func:`find_all`'s byte hops, is overwritten
    in place with the new category and as much less whitespace: Kineto's indentation leaves room
    for the longer name. A new copy of the text (``bytes.replace``: ~0.5 ms a 1.2 MB window, most
    of it the search) is made only for a spelling without that room.
    """
    for prefix in annotations:
        op = re.compile(
            rb'"cat"\s*:\s*"' + _CPU_OP + rb'",\s*"name"\s*:\s*"' + re.escape(prefix.encode())
        )
        match = op.search(raw, _events_array(raw, "<kineto output>").end())
        if match is None:
            continue
        first = match.start()
        while first > 0 and raw[first - 1] in _WHITESPACE:
            first -= 1
        spelling = bytes(raw[first : match.end()])
        head = b'"cat": "' + _USER_ANNOTATION + b'", "name": "' + prefix.encode()
        if len(head) > len(spelling):
            raw = raw.replace(spelling, spelling.replace(_CPU_OP, _USER_ANNOTATION, 1))
            continue
        head = head.rjust(len(spelling))
        for at in list(find_all(raw, spelling)):
            raw[at : at + len(head)] = head
    return raw


def _dataloader_as_ops(raw: bytearray) -> None:
    """Rewrite, in place, the category of DataLoader waits from ``user_annotation`` to
    ``cpu_op`` (the shorter name, padded with spaces)."""
    for at in list(find_all(raw, _DATALOADER_NAME)):
        match = _DATALOADER_ANNOTATION.search(
            raw, max(at - _HEAD_BYTES, 0), at + len(_DATALOADER_NAME)
        )
        close = raw.find(b'"', at) + 1
        if match is None or match.start(2) != at or not raw.endswith(_DATALOADER_NEXT, 0, close):
            continue
        category = b'"cat": "' + _CPU_OP + b'",'
        raw[match.start(1) : match.end(1)] = category.ljust(match.end(1) - match.start(1))


def find_all(raw: Text, needle: bytes, start: int = 0, end: int | None = None) -> Iterator[int]:
    """Where ``needle`` starts in ``raw[start:end]``, left to right, copies not overlapping."""
    end = len(raw) if end is None else end
    offset = next((i for i, byte in enumerate(needle) if byte in _ANCHORS), -1)
    at = start
    if offset >= 0:
        anchor, misses = needle[offset : offset + 1], 0
        hit = raw.find(anchor, start + offset, end)
        while hit != -1:
            first = hit - offset
            if raw.startswith(needle, first, end):
                yield first
                at = first + len(needle)
                hit = raw.find(anchor, at + offset, end)
            elif (misses := misses + 1) > _ANCHOR_MISSES:
                at = first + 1
                break
            else:
                hit = raw.find(anchor, hit + 1, end)
        else:
            return
    found = raw.find(needle, at, end)
    while found != -1:
        yield found
        found = raw.find(needle, found + len(needle), end)


def _trace_name_span(body: Text) -> tuple[int, int] | None:
    """Where Kineto's traceName member sits; it writes it after the events: look in the tail."""
    tail = max(len(body) - _TAIL_BYTES, 0)
    match = _TRACE_NAME.search(body, tail) or _TRACE_NAME.search(body)
    return None if match is None else match.span()


def _member(key: str, value: Any) -> bytes:
    return orjson.dumps(key) + b": " + orjson.dumps(value)


def _events_array(raw: Text, source: str | Path) -> re.Match[bytes]:
    match = _TRACE_EVENTS.search(raw)
    if match is None:
        raise TraceFormatError(source, "no traceEvents array: not a Chrome/Kineto trace")
    return match

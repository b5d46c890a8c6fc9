"""Encode trainprof's additions into a trace that Kineto has already written.

Kineto's own writer (``export_chrome_trace``) is fast; parsing its output back into Python objects
is not (about 4 s for 140k events here, against 0.45 s for the export). So our events and top-level
keys are spliced into Kineto's text at two known points instead of re-parsing it: after the opening
brace and after ``"traceEvents": [``. Everything Kineto wrote stays byte-for-byte as it was, except
the category of data-wait ranges and of ranges recorded as ops, and ``traceName`` (see
:func:`splice_kineto_trace`). The writer takes the result as pieces (:func:`splice_parts`), mostly
views into Kineto's text: each regex pass or fresh copy of a 2 MB window costs ~0.3-1.5 ms, against
a stop-to-disk budget of a few milliseconds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from profiler.events import BASE_TIME_KEY, CLOCK_SYNC_NAME, Category

_CPU_OP = Category.CPU_OP.value.encode()
_USER_ANNOTATION = Category.USER_ANNOTATION.value.encode()

_TRACE_EVENTS = re.compile(rb'"traceEvents"\s*:\s*\[')
_BASE_TIME = re.compile(rb'"' + BASE_TIME_KEY.encode() + rb'"\s*:\s*(\d+)')
_MARKER_TS = rb'",\s*"pid"\s*:\s*[^,]+,\s*"tid"\s*:\s*[^,]+,\s*"ts"\s*:\s*([0-9.]+)'
# torch 2.x records DataLoader waits as user_annotation, which TensorBoard's plugin (0.4.3) never
# counts as DataLoader time; cpu_op is what it reads (docs/architecture.md, "Peers").
_DATALOADER_ANNOTATION = re.compile(
    rb'"cat"\s*:\s*"' + _USER_ANNOTATION + rb'",(\s*)"name"\s*:\s*'
    rb'"(enumerate\(DataLoader\)#[^"]*\.__next__)"'
)
_DATALOADER_AS_OP = b'"cat": "' + _CPU_OP + rb'",\1"name": "\2"'
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
# A complete event's name (from its opening quote), then Kineto's pid, tid, ts and dur.
_RANGE_TIMES = re.compile(
    rb'"([^"]*)",\s*"pid"\s*:\s*[^,]+,\s*"tid"\s*:\s*[^,]+,'
    rb'\s*"ts"\s*:\s*([0-9.]+),\s*"dur"\s*:\s*([0-9.]+)'
)


class TraceFormatError(ValueError):
    """A trace file that is not what it claims to be. The message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


def base_time_ns(raw: bytes) -> int:
    """Kineto's ``baseTimeNanoseconds`` (0 when absent: older traces use absolute timestamps)."""
    header_end = _events_array(raw, "<kineto output>").start()
    match = _BASE_TIME.search(raw, 0, header_end) or _BASE_TIME.search(raw)
    return int(match.group(1)) if match else 0


def clock_sync_ts_us(raw: bytes, name: str = CLOCK_SYNC_NAME) -> float | None:
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
    raw: bytes,
    *,
    top_level: Mapping[str, Any],
    events: Iterable[Mapping[str, Any]],
    distributed_info: Mapping[str, Any] | None = None,
    trace_name: str | None = None,
    source: str | Path = "<kineto output>",
    annotations: Sequence[str] = (),
    nest: Sequence[str] = (),
) -> list[bytes | memoryview]:
    """:func:`splice_kineto_trace`'s document as pieces that concatenate to it.

    The pieces are views into Kineto's text (or into its one relabelled copy, see
    :func:`_relabelled`) and our few additions: a handful of large pieces, which a compressor takes
    one by one at no more cost than one document.
    """
    header = raw[: _events_array(raw, source).start()]
    additions = [
        _member(key, value) for key, value in top_level.items() if f'"{key}"'.encode() not in header
    ]
    if distributed_info is not None and b'"distributedInfo"' not in header:
        # json, not orjson: HTA finds the rank with the pattern "rank":\s+(\d+), which needs the
        # space after the colon that only json.dumps writes.
        additions.append(b'"distributedInfo": ' + json.dumps(dict(distributed_info)).encode())
    if next(find_all(raw, _DATALOADER_NAME), -1) != -1:  # the regex pass costs ms: only if needed
        raw = _DATALOADER_ANNOTATION.sub(_DATALOADER_AS_OP, raw)
    raw = _relabelled(raw, annotations)
    if nest:
        raw = nest_ranges(raw, nest)
    events_end = _events_array(raw, source).end()
    opening = raw.index(b"{") + 1
    encoded = orjson.dumps(list(events))[1:-1]  # one call, not one per event
    if encoded and _FIRST_TOKEN.match(raw, events_end)[1] != b"]":  # type: ignore[index]
        encoded += b","
    span = _trace_name_span(raw) if trace_name is not None else None
    name_start, name_end = span or (len(raw), len(raw))
    view = memoryview(raw)
    parts: list[bytes | memoryview] = [view[:opening], b"\n"]
    parts += [member + b",\n" for member in additions]
    parts += [view[opening:events_end], b"\n", encoded, view[events_end:name_start]]
    if span:
        parts.append(b'"traceName": ' + orjson.dumps(trace_name))
    parts.append(view[name_end:])
    return parts


def backward_starts(raw: bytes, wanted: Collection[int]) -> dict[int, float]:
    """When the autograd engine started on each node in ``wanted``, by sequence number.

    Read off Kineto's ``autograd::engine::evaluate_function: <node>`` events where they sit in the
    text (their ``"Sequence number"`` and ``"ts"``, ~1 us an event), not by parsing the trace.
    Sequence numbers count per forward thread; with one thread running forward they are unique.

    Returns:
        The ``ts`` (trace microseconds) of the first such event for each wanted number found.
    """
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


def nest_ranges(raw: bytes, prefixes: Sequence[str]) -> bytes:
    """``raw`` with the complete events named ``prefixes`` widened to nest on their thread.

    A range opened from Python starts inside the frames of the call that opens it and ends inside
    those of the call that closes it (``record_function.__enter__``, ``RecordFunctionFast``'s
    ``__exit__``...), and with ``with_stack=True`` Kineto records those frames as
    ``python_function`` events that cross the range. Perfetto drops one of two complete events
    that overlap on a thread without nesting (docs/architecture.md, "Peers"), so each such range
    is widened to the bounds of every event that crosses it: it then contains the calls that
    opened and closed it, and nests in the frame that made them. Only those ranges' ``ts`` and
    ``dur`` change; the text is parsed once (traces with stacks only: the caller decides).
    """
    # Where each range's name starts: found by find_all's byte hops, not a regex scan of the text.
    heads = sorted(at for p in prefixes for at in find_all(raw, b'"' + p.encode()))
    if not heads:
        return raw
    moved = _widened(orjson.loads(raw).get("traceEvents", ()), tuple(prefixes))
    if not moved:
        return raw
    parts: list[bytes] = []
    done = 0
    for at in heads:
        match = _RANGE_TIMES.match(raw, at)
        if match is None:
            continue  # the prefix inside some other string
        start = round(float(match[2]) * 1000)
        key = (match[1].decode(), start, start + round(float(match[3]) * 1000))
        if key in moved:
            new_start, new_end = moved[key]
            parts += [
                raw[done : match.start(2)],
                _us(new_start),
                raw[match.end(2) : match.start(3)],
            ]
            parts.append(_us(new_end - new_start))
            done = match.end(3)
    parts.append(raw[done:])
    return b"".join(parts)


_Span = tuple[int, int]


def _widened(events: Iterable[Any], prefixes: tuple[str, ...]) -> dict[tuple[str, int, int], _Span]:
    """The new (start, end) in ns of each range named ``prefixes`` that another complete event
    on its thread crosses, keyed by (name, start, end)."""
    threads: dict[tuple[Any, Any], tuple[list[_Span], list[tuple[str, int, int]]]] = {}
    for event in events:
        if not isinstance(event, dict) or event.get("ph") != "X":
            continue
        ts, dur, name = event.get("ts"), event.get("dur"), event.get("name")
        if not isinstance(ts, (int, float)) or not isinstance(dur, (int, float)) or dur < 0:
            continue
        start = round(ts * 1000)
        end = start + round(dur * 1000)
        others, ours = threads.setdefault((event.get("pid"), event.get("tid")), ([], []))
        if isinstance(name, str) and name.startswith(prefixes):
            ours.append((name, start, end))
        else:
            others.append((start, end))
    moved: dict[tuple[str, int, int], _Span] = {}
    for others, ours in threads.values():
        if not ours or not others:
            continue
        around = _containing(others, sorted({t for _, s, e in ours for t in (s, e)}))
        for name, start, end in ours:
            span = _widen((start, end), around[start] + around[end])
            if span != (start, end):
                moved[(name, start, end)] = span
    return moved


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


def _relabelled(raw: bytes, annotations: Sequence[str]) -> bytes:
    """``raw`` with the ``cpu_op`` ranges named ``annotations`` made ``user_annotation``.

    One regex search finds how Kineto spells such an event's head; one ``bytes.replace`` then
    rewrites every copy in a single pass. (Cutting the text around each copy instead saves that
    copy of the document but hands the compressor two pieces per range: ~6k instructions of
    its overhead a call, more than the copy.)
    """
    for prefix in annotations:
        op = re.compile(
            rb'"cat"\s*:\s*"' + _CPU_OP + rb'",\s*"name"\s*:\s*"' + re.escape(prefix.encode())
        )
        match = op.search(raw, _events_array(raw, "<kineto output>").end())
        if match is not None:
            spelling = match.group(0)
            raw = raw.replace(spelling, spelling.replace(_CPU_OP, _USER_ANNOTATION, 1))
    return raw


def find_all(raw: bytes, needle: bytes, start: int = 0, end: int | None = None) -> Iterator[int]:
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


def _trace_name_span(body: bytes) -> tuple[int, int] | None:
    """Where Kineto's traceName member sits; it writes it after the events: look in the tail."""
    tail = max(len(body) - _TAIL_BYTES, 0)
    match = _TRACE_NAME.search(body, tail) or _TRACE_NAME.search(body)
    return None if match is None else match.span()


def _member(key: str, value: Any) -> bytes:
    return orjson.dumps(key) + b": " + orjson.dumps(value)


def _events_array(raw: bytes, source: str | Path) -> re.Match[bytes]:
    match = _TRACE_EVENTS.search(raw)
    if match is None:
        raise TraceFormatError(source, "no traceEvents array: not a Chrome/Kineto trace")
    return match

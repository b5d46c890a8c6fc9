"""Encode trainprof's additions into a trace that Kineto has already written.

Kineto's own writer (``export_chrome_trace``) is fast; parsing its output back into Python objects
is not (about 4 s for 140k events here, against 0.45 s for the export). So our events and top-level
keys are spliced into Kineto's text at two known points instead of re-parsing it: after the opening
brace and after ``"traceEvents": [``. Everything Kineto wrote stays byte-for-byte as it was, except
the category of data-wait ranges and ``traceName`` (see :func:`splice_kineto_trace`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson

from profiler.events import BASE_TIME_KEY, CLOCK_SYNC_NAME, Category

_TRACE_EVENTS = re.compile(rb'"traceEvents"\s*:\s*\[')
_BASE_TIME = re.compile(rb'"' + BASE_TIME_KEY.encode() + rb'"\s*:\s*(\d+)')
_MARKER_TS = rb'",\s*"pid"\s*:\s*[^,]+,\s*"tid"\s*:\s*[^,]+,\s*"ts"\s*:\s*([0-9.]+)'
# torch 2.x records DataLoader waits as user_annotation, which TensorBoard's plugin (0.4.3) never
# counts as DataLoader time; cpu_op is what it reads (DESIGN.md, "Peers' quirks").
_DATALOADER_ANNOTATION = re.compile(
    rb'"cat"\s*:\s*"' + Category.USER_ANNOTATION.value.encode() + rb'",(\s*)"name"\s*:\s*'
    rb'"(enumerate\(DataLoader\)#[^"]*\.__next__)"'
)
_DATALOADER_AS_OP = b'"cat": "' + Category.CPU_OP.value.encode() + rb'",\1"name": "\2"'
_FIRST_TOKEN = re.compile(rb"\s*(.?)", re.DOTALL)
_DATALOADER_NAME = b"enumerate(DataLoader)#"
_TAIL_BYTES = 64 * 1024
_TRACE_NAME = re.compile(rb'"traceName"\s*:\s*"(?:[^"\\]|\\.)*"')


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
) -> bytes:
    """Return Kineto's JSON with our top-level keys and events added.

    Args:
        raw: the bytes ``export_chrome_trace`` wrote.
        top_level: keys to add at the top level (e.g. ``trainprof``); existing keys are kept.
        events: trace events to add to ``traceEvents``.
        distributed_info: written as ``distributedInfo`` unless Kineto already wrote one.
        trace_name: replaces Kineto's ``traceName`` (the temporary path it exported to).
        source: the file the bytes came from, for error messages.

    Returns:
        The new JSON document as bytes.

    Raises:
        TraceFormatError: ``raw`` has no ``traceEvents`` array.
    """
    events_open = _events_array(raw, source)
    header = raw[: events_open.start()]
    additions = [
        _member(key, value) for key, value in top_level.items() if f'"{key}"'.encode() not in header
    ]
    if distributed_info is not None and b'"distributedInfo"' not in header:
        # json, not orjson: HTA finds the rank with the pattern "rank":\s+(\d+), which needs the
        # space after the colon that only json.dumps writes.
        additions.append(b'"distributedInfo": ' + json.dumps(dict(distributed_info)).encode())
    opening = raw.index(b"{") + 1
    encoded = b",\n".join(orjson.dumps(event) for event in events)
    if encoded and _FIRST_TOKEN.match(raw, events_open.end())[1] != b"]":  # type: ignore[index]
        encoded += b","
    body = raw[opening : events_open.end()] + b"\n" + encoded + raw[events_open.end() :]
    # Each regex pass over a large trace costs milliseconds: skip the ones with nothing to do.
    if _DATALOADER_NAME in body:
        body = _DATALOADER_ANNOTATION.sub(_DATALOADER_AS_OP, body)
    if trace_name is not None:
        body = _replace_trace_name(body, b'"traceName": ' + orjson.dumps(trace_name))
    prefix = b"".join(member + b",\n" for member in additions)
    return raw[:opening] + b"\n" + prefix + body


def _replace_trace_name(body: bytes, replacement: bytes) -> bytes:
    """Kineto writes traceName after the events array: look in the tail first."""
    tail = max(len(body) - _TAIL_BYTES, 0)
    match = _TRACE_NAME.search(body, tail) or _TRACE_NAME.search(body)
    if match is None:
        return body
    return body[: match.start()] + replacement + body[match.end() :]


def _member(key: str, value: Any) -> bytes:
    return orjson.dumps(key) + b": " + orjson.dumps(value)


def _events_array(raw: bytes, source: str | Path) -> re.Match[bytes]:
    match = _TRACE_EVENTS.search(raw)
    if match is None:
        raise TraceFormatError(source, "no traceEvents array: not a Chrome/Kineto trace")
    return match

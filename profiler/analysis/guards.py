"""What a trace file may hold before the reader refuses it, and words for what is wrong with one.

The reader streams a file a block at a time, so its memory follows the tables it builds; these
limits keep it so on files that are not what they claim to be: a gzip that inflates without
end, one "event" of gigabytes, JSON nested thousands deep (msgspec, like any recursive decoder,
uses a C stack frame per level: past the interpreter's recursion limit it raises
``RecursionError``, and where that limit was raised, it overflows the stack).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

import msgspec
import numpy as np

from profiler.store.chrome_trace import TraceFormatError

# The JSON text one file may hold once gunzipped: a real trace of several GB passes.
MAX_TEXT_BYTES = 16 * 1024**3
TEXT_LIMIT_ENV = "TRAINPROF_MAX_TRACE_BYTES"
# The text one event may take (Kineto's are under a few KB; the cut between two is looked for
# in the last 64 KiB of a piece). A longer "event" is refused before it is held whole.
MAX_EVENT_BYTES = 16 * 1024**2
# The text read looking for the events array, and the most a document may hold when it cannot
# be streamed (no ``traceEvents`` array where Chrome traces have it) and is decoded whole.
MAX_HEAD_BYTES = 64 * 1024**2
# JSON nesting accepted in the top-level keys the reader keeps as Python objects (TraceTable.
# meta, which the cache and JSON output encode again). Kineto's documents nest about 4 deep.
MAX_DEPTH = 64
# Events are decoded by msgspec, which recurses a C frame per level and stops at the
# interpreter's recursion limit (RecursionError): at CPython's default, SAFE_RECURSION_LIMIT,
# that is well within a thread's stack, and such a file is refused. Where an application raised
# the limit, each piece is scanned before it is decoded and refused past MAX_EVENT_DEPTH.
SAFE_RECURSION_LIMIT = 1000
MAX_EVENT_DEPTH = 512

_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
# Structure only: strings, arrays and objects. Escapes are dropped first, so every quote left
# opens or closes a string.
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'"[]{}')
_STRING = re.compile(rb'"[^"]*"')
_SCAN_BYTES = 1024**2  # brackets put through numpy at once
_OPENING_BIT = 2  # set in '[' (0x5B) and '{' (0x7B), clear in ']' (0x5D) and '}' (0x7D)
_VALIDATION = re.compile(
    r"^Expected `(?P<expected>[^`]+)`, got `(?P<got>[^`]+)`(?: - at `\$(?P<at>.*)`)?$"
)
_OUT_OF_RANGE = re.compile(r"^Number out of range(?: - at `\$(?P<at>.*)`)?$")
_AT_EVENT = re.compile(r"^(?:\.traceEvents)?\[(?P<index>\d+)\]\.?(?P<field>.*)$")
_BYTE = re.compile(r"\(byte (\d+)\)")
_KINDS = {
    "int": "an integer", "float": "a number", "str": "a string", "array": "an array",
    "object": "an object", "null": "null", "bool": "true or false",
}  # fmt: skip


def text_limit(requested: int | None = None) -> int:
    """The most JSON text a file may hold: ``requested``, else ``$TRAINPROF_MAX_TRACE_BYTES``
    (bytes, or with a K/M/G/T suffix: ``512M``, ``16GiB``), else :data:`MAX_TEXT_BYTES`.

    Raises:
        ValueError: the value is not a positive size.
    """
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested <= 0:
            raise ValueError(f"max_text_bytes must be a positive int, got {requested!r}")
        return requested
    setting = os.environ.get(TEXT_LIMIT_ENV, "").strip()
    if not setting:
        return MAX_TEXT_BYTES
    match = _SIZE.match(setting)
    if match is None or int(match[1]) <= 0:
        raise ValueError(f"{TEXT_LIMIT_ENV}={setting!r} is not a size (say 16G or 500000000)")
    return int(match[1]) * _UNITS[match[2].upper()]


def size_text(size: int) -> str:
    """``size`` bytes in words: ``16 GiB``, ``512 MiB``, ``1000 bytes``."""
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size} bytes"


def duration_text(us: float) -> str:
    """``us`` microseconds in words: ``12.34 ms`` from a millisecond up, else ``850.0 us``."""
    return f"{us / 1000:,.2f} ms" if us >= 1000 else f"{us:,.1f} us"


def nesting_depth(text: bytes | bytearray | memoryview) -> int:
    """How deep arrays and objects nest in ``text`` (JSON that starts outside any string).

    A few passes in C over the text (~1 ms a MiB), then numpy over its brackets a slice at a
    time (so a text of brackets only costs a few MiB more): called on what is small or has
    already failed, not on every piece of a trace.
    """
    data = text.tobytes() if isinstance(text, memoryview) else text
    if b"\\" in data:  # a pair of backslashes is one character; a quote after one is text
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    structure = data.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
    del data
    if b'"' in structure:  # strings that hold brackets
        structure = _STRING.sub(b"", structure)
    depth = deepest = 0
    for start in range(0, len(structure), _SCAN_BYTES):
        brackets = np.frombuffer(
            structure, np.uint8, min(_SCAN_BYTES, len(structure) - start), start
        )
        running = np.cumsum((brackets & _OPENING_BIT).astype(np.int32) - 1) + depth
        deepest, depth = max(deepest, int(running.max())), int(running[-1])
    return deepest


def depth_problem(text: bytes | bytearray | memoryview, limit: int, where: str) -> str | None:
    """The problem to report when ``text`` nests deeper than ``limit``, else None."""
    depth = nesting_depth(text)
    if depth <= limit:
        return None
    return f"JSON nested {depth} levels deep in {where}; the limit is {limit}"


def validation_problem(
    exc: msgspec.ValidationError,
    number: Callable[[int], int] | None = None,
    *,
    in_args: bool = False,
) -> str:
    """msgspec's complaint about a value in the trace's own words.

    ``Expected `int`, got `str` - at `$[3].Bytes``` becomes ``not a Kineto trace:
    traceEvents[1203].args.Bytes is a string, expected an integer`` where ``number(3)`` is 1203.

    Args:
        exc: the error, from decoding a list of events or of their args, or a whole document.
        number: the number in the file's ``traceEvents`` of the list's ``index``-th event.
        in_args: the list decoded was the events' ``args``.
    """
    message = str(exc)
    found = _VALIDATION.match(message) or _OUT_OF_RANGE.match(message)
    if found is None:
        return f"not a Kineto trace: {message}"
    path = found["at"] or ""
    at = _AT_EVENT.match(path)
    field = path.lstrip(".") if at is None else at["field"]
    if in_args:
        field = f"args.{field}" if field else "args"
    if at is not None:
        index = int(at["index"])
        event = f"traceEvents[{number(index) if number else index}]"
        field = f"{event}.{field}" if field else event
    subject = field or "the document"
    if "expected" in found.groupdict():
        return (
            f"not a Kineto trace: {subject} is {_kind(found['got'])}, "
            f"expected {_kind(found['expected'])}"
        )
    return f"not a Kineto trace: {subject} is out of range"


def rebase_bytes(message: str, offset: int) -> str:
    """msgspec's ``(byte N)`` of a piece as the position in the file's text."""
    return _BYTE.sub(lambda m: f"(byte {int(m[1]) + offset} of the text)", message)


def analysis_error(path: object, exc: BaseException) -> TraceFormatError:
    """A trace that loaded but whose content an analysis could not take, as one file's error
    (the analysis is pure: a crash on odd content is a bug, said without a traceback)."""
    problem = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
    return TraceFormatError(str(path), f"cannot be analysed ({type(exc).__name__}: {problem})")


def _kind(names: str) -> str:
    words = [_KINDS.get(name.strip(), name.strip()) for name in names.split("|")]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]

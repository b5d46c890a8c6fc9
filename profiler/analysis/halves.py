"""Load a large trace in two processes: its first half of events here, the rest in a forked child.

Decoding and building the tables is Python work per event, under one interpreter lock: one
process runs it on one core. A trace with much text (:data:`MIN_TEXT_BYTES`) is cut in two at
the first cut between two events after the middle of its text (:class:`EventStream`'s
``start``/``stop``). A child process forked for the load decodes the second half into its own
tables while this one decodes the first, then hands them back through a pipe; they are joined
(:meth:`TableBuilder.absorb`) into the tables one process would have built, the same rows,
order and string codes.

Anything out of the ordinary falls back on the load in one process, which says what is wrong
the usual way: a half that fails (a corrupt file, a cut inside a string, an event the tables
cannot hold), two halves that disagree on where they meet, a child that dies or does not answer
in time. The split is tried only when asked for (``TRAINPROF_LOAD_SPLIT=1``: it costs memory,
the child's half of the columns beside this process's, ~340-370 bytes per event at the peak
against ~270 in one process on diff_control, past the 300 the loader is held to), and where a
fork is safe and pays: on Linux, in a process running no other thread, with two cores or more.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import select
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from profiler.analysis.build import BuilderPart, Tables, build_all
from profiler.analysis.decode import EventStream

# Below this much JSON text (~50k events) a fork and the hand-over cost more than they save.
MIN_TEXT_BYTES = 16 * 1024**2
SPLIT_ENV = "TRAINPROF_LOAD_SPLIT"
_ON = ("1", "true", "yes", "on")
_GZIP_MAGIC = b"\x1f\x8b"
# The child's pieces: smaller than one process's, as its memory adds to this one's.
_CHILD_CHUNK_BYTES = 128 * 1024
# How long the child may take past this process's own half, at least: it does the same work.
_MIN_WAIT_S = 60.0

log = logging.getLogger(__name__)


class _SecondHalf(NamedTuple):
    """What the child hands back: where its half began, its tables, the file's keys."""

    started_at: int | None
    part: BuilderPart
    meta: dict[str, Any]


def split_worthwhile(path: Path) -> bool:
    """Whether to load ``path`` in two processes (see the module's docstring)."""
    if os.environ.get(SPLIT_ENV, "0").strip().lower() not in _ON:
        return False
    if sys.platform != "linux" or threading.active_count() > 1:
        return False
    if len(os.sched_getaffinity(0)) < 2:
        return False
    try:
        return text_size(path) >= MIN_TEXT_BYTES
    except OSError:
        return False  # the load says what is wrong with the file


def text_size(path: Path) -> int:
    """The JSON text a file holds: its size, or a gzip's own count of its text (mod 2**32).

    Raises:
        OSError: the file cannot be read.
    """
    with path.open("rb") as file:
        if file.read(2) != _GZIP_MAGIC:
            return path.stat().st_size
        file.seek(-4, os.SEEK_END)
        return int.from_bytes(file.read(4), "little")


def load_in_halves(
    path: Path, max_text_bytes: int, split: int | None = None
) -> tuple[Tables, dict[str, Any]] | None:
    """The file's tables and top-level keys, its halves built in two processes.

    Args:
        path: the trace file.
        max_text_bytes: the most JSON text it may hold.
        split: the text offset the halves meet after (default: the middle of its text).

    Returns:
        The tables and keys, or None: the file is to be loaded in one process instead.
    """
    split = text_size(path) // 2 if split is None else split
    reader, writer = os.pipe()
    try:
        child = os.fork()
    except OSError as exc:  # no room for another process now: this one loads it all
        log.debug("loading %s in one process: %s", path, exc)
        os.close(reader)
        os.close(writer)
        return None
    if child == 0:  # pragma: no cover - the child; its result is checked by the parent
        os.close(reader)
        _child(path, max_text_bytes, split, writer)
    os.close(writer)
    try:
        return _first_half_joined(path, max_text_bytes, split, reader)
    except Exception as exc:  # noqa: BLE001 - the load in one process says what is wrong
        log.debug("loading %s in one process: %s", path, exc)
        return None
    finally:
        os.close(reader)
        _reap(child)


def _first_half_joined(
    path: Path, max_text_bytes: int, split: int, reader: int
) -> tuple[Tables, dict[str, Any]] | None:
    started = time.monotonic()
    stream = EventStream(path, max_text_bytes=max_text_bytes, stop=split)
    builder = build_all(stream)
    if stream.stopped_at is None:  # the events ended before the split: all are here
        return builder.finish(), stream.meta
    wait_s = max(_MIN_WAIT_S, 10 * (time.monotonic() - started))
    ready, _, _ = select.select([reader], [], [], wait_s)
    if not ready:
        return None
    with os.fdopen(os.dup(reader), "rb") as pipe:
        second = pickle.load(pipe)
        if not isinstance(second, _SecondHalf) or second.started_at != stream.stopped_at:
            return None
        # Its columns follow, read one at a time into these tables (no second copy of half
        # the tables here).
        builder.absorb(second.part, _arrays(pipe))
    # The keys after the events are the second half's to see.
    return builder.finish(), second.meta


def _child(path: Path, max_text_bytes: int, split: int, writer: int) -> None:  # pragma: no cover
    """Build the second half's tables and hand them over; never returns (runs in the child)."""
    status = 1
    try:
        result: _SecondHalf | None = None
        with contextlib.suppress(Exception):  # any failure: the parent loads the file itself
            stream = EventStream(
                path, _CHILD_CHUNK_BYTES, max_text_bytes=max_text_bytes, start=split
            )
            part = build_all(stream).part()  # (where it started is known once it ran)
            result = _SecondHalf(stream.started_at, part, stream.meta)
        with os.fdopen(writer, "wb") as pipe:
            _send(pipe, result)
        status = 0
    finally:
        os._exit(status)  # no atexit handlers, no flushing of the parent's buffers


def _arrays(pipe: BinaryIO) -> Iterator[Any]:
    """What :func:`_send` sent after the result, one by one."""
    while True:
        yield pickle.load(pipe)


def _send(pipe: BinaryIO, result: _SecondHalf | None) -> None:  # pragma: no cover
    """The child's result without its columns, then each column on its own, in the order
    :meth:`TableBuilder.absorb` takes them."""
    if result is None:
        pickle.dump(None, pipe)
        return
    part = result.part
    tables = (part.events, part.flows, part.rows.memory)
    bare = part._replace(
        events=part.events._replace(buffers={}),
        flows=part.flows._replace(buffers={}),
        rows=part.rows._replace(memory=part.rows.memory._replace(buffers={})),
    )
    pickle.dump(result._replace(part=bare), pipe, protocol=pickle.HIGHEST_PROTOCOL)
    for table in tables:
        for values in table.buffers.values():
            pickle.dump(values, pipe, protocol=pickle.HIGHEST_PROTOCOL)


def _reap(child: int) -> None:
    """The child is done, or is stopped now; either way it is waited for."""
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(child, os.WNOHANG)
        if done == 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)

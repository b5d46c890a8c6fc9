"""Per-file caching of analysis results, keyed by the file's path, size and mtime.

A page's data is computed per trace file by a function decorated with :func:`per_trace`, then
pooled over the run's files. A rewritten or new file changes the run's fingerprints, so it is
read afresh while the other files' results come from the cache; a file that cannot be read
gives a one-line message naming it instead of a result, so the other files still show.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar, overload

import pandas as pd

from dashboard.data.fetch import failure_message
from dashboard.data.runs import Fingerprint, inside
from profiler.analysis.cache import CACHE_DIR
from profiler.analysis.table import TraceTable, load_trace

T = TypeVar("T")

TRACE_CACHE_SIZE = 128
RUN_CACHE_SIZE = 32
# Loaded tables are large (a 1M-event trace takes hundreds of MB): keep only the latest few,
# enough for every page's analyses of the run being looked at to share one load.
_LOADED_CACHE_SIZE = 2


@dataclass(frozen=True)
class Work:
    """A trace file being read or analysed right now, for the page's progress line.

    Attributes:
        file: the file's name.
        size_bytes: its size on disk.
        stage: ``loading`` (reading and decoding) or ``analysing``.
        elapsed_s: seconds since the stage began.
    """

    file: str
    size_bytes: int
    stage: str
    elapsed_s: float


_work_lock = threading.Lock()
_work: dict[int, tuple[str, int, str, float]] = {}  # thread id -> file, size, stage, start
_load_locks: dict[Fingerprint, threading.Lock] = {}


def work_in_progress() -> list[Work]:
    """What every server thread is reading or analysing now, longest first."""
    now = time.monotonic()
    with _work_lock:
        items = list(_work.values())
    work = [Work(file, size, stage, now - start) for file, size, stage, start in items]
    return sorted(work, key=lambda w: -w.elapsed_s)


@contextmanager
def _working(fingerprint: Fingerprint, stage: str) -> Iterator[None]:
    key = threading.get_ident()
    entry = (Path(fingerprint[0]).name, fingerprint[1], stage, time.monotonic())
    with _work_lock:
        previous = _work.get(key)
        _work[key] = entry
    try:
        yield
    finally:
        with _work_lock:
            if previous is None:
                _work.pop(key, None)
            else:
                _work[key] = previous


@overload
def per_trace(analyse: Callable[[TraceTable, Path], T]) -> Callable[[Fingerprint], T | str]: ...


@overload
def per_trace(
    *, maxsize: int
) -> Callable[[Callable[[TraceTable, Path], T]], Callable[[Fingerprint], T | str]]: ...


def per_trace(analyse: Any = None, *, maxsize: int = TRACE_CACHE_SIZE) -> Any:
    """Cache ``analyse(trace, path)`` per trace file, or the message why the file failed.

    Use as ``@per_trace``, or ``@per_trace(maxsize=N)`` for results as large as the trace
    itself (a timeline index), of which only the latest few should stay in memory. The
    returned function takes a file's fingerprint. Results are shared by the cache: treat them
    as read-only.
    """

    def wrap(analyse: Callable[[TraceTable, Path], T]) -> Callable[[Fingerprint], T | str]:
        @lru_cache(maxsize=maxsize)
        def cached(fingerprint: Fingerprint) -> T | str:
            file = Path(fingerprint[0])
            try:
                trace = loaded_trace(fingerprint)
                with _working(fingerprint, "analysing"):
                    return analyse(trace, file)
            except Exception as exc:  # one bad file must not take the page down
                return failure_message(exc, file.name)

        cached.__doc__ = analyse.__doc__
        return cached

    return wrap if analyse is None else wrap(analyse)


def loaded_trace(fingerprint: Fingerprint) -> TraceTable:
    """The trace file of ``fingerprint``, loaded (cached for the latest few files).

    Pages asking for one file at once wait for a single load rather than each loading it.

    Raises:
        Exception: whatever the analysis raises for the file (``TraceFormatError`` for a file
            that is not a trace); :func:`trace_or_message` turns it into a line.
    """
    with _work_lock:
        lock = _load_locks.setdefault(fingerprint, threading.Lock())
    with lock:
        return _loaded_trace(fingerprint)


def trace_or_message(fingerprint: Fingerprint) -> TraceTable | str:
    """The loaded trace of ``fingerprint``, or one line naming the file and why it failed."""
    try:
        return loaded_trace(fingerprint)
    except Exception as exc:  # one bad file must not take the page down
        return failure_message(exc, Path(fingerprint[0]).name)


@lru_cache(maxsize=_LOADED_CACHE_SIZE)
def _loaded_trace(fingerprint: Fingerprint) -> TraceTable:
    path = Path(fingerprint[0])
    with _working(fingerprint, "loading"):
        if not inside(path.parent.joinpath(*CACHE_DIR), path.parent):
            # The columnar cache is read and written beside the trace (meta/cache/): where a
            # symlink takes that folder out of the run, neither may happen.
            return load_trace(path, cache=False)
        return load_trace(path)


def gather(
    files: Iterable[Fingerprint], analysed: Callable[[Fingerprint], T | str]
) -> tuple[list[T], list[str]]:
    """``analysed`` of every file: the results of those that loaded, and the others' messages."""
    results: list[T] = []
    errors: list[str] = []
    for fingerprint in files:
        result = analysed(fingerprint)
        if isinstance(result, str):
            errors.append(result)
        else:
            results.append(result)
    return results, errors


def records(frame: pd.DataFrame) -> tuple[dict[str, Any], ...]:
    """Plain Python rows for a page, NaN as None (JSON has no NaN)."""
    frame = frame.astype(object).where(frame.notna(), None)
    return tuple(frame.to_dict("records"))

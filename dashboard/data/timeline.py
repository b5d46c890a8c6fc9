"""The Timeline page's data: one trace file of a run as lanes, at the level of detail asked for.

Each file is indexed once (``profiler.analysis.timeline.prepare_timeline``, cached per file
fingerprint), so a zoom costs binary searches plus the shapes it returns. A file is named by its
base name and must be one of the run's own trace files: nothing else is opened.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path, PurePosixPath, PureWindowsPath

from dashboard.data.cache import per_trace, trace_or_message
from dashboard.data.runs import Fingerprint, RunNotFound, RunRefused, trace_fingerprints
from profiler.analysis.table import TraceTable
from profiler.analysis.timeline import (
    DEFAULT_MAX_SHAPES,
    TimelineIndex,
    TimelineView,
    prepare_timeline,
    timeline_view,
)
from profiler.analysis.timeline_details import EventDetails, EventRef, event_details

__all__ = [
    "DEFAULT_MAX_SHAPES",
    "EventDetails",
    "EventRef",
    "TimelineView",
    "run_event",
    "run_timeline",
    "run_trace_files",
    "trace_file",
]

# Full-range views are what every page load and every zoom reset asks for: keep a few.
# An index takes ~110 MB per 1M events: keep the latest few files' only.
_INDEX_CACHE_SIZE = 4
_FULL_VIEW_CACHE_SIZE = 4


def run_trace_files(root: str | Path, name: str) -> tuple[str, ...]:
    """The names of run ``name``'s trace files (capture windows, ranks), in name order.

    Raises:
        RunRefused: the run name leads outside the root.
        RunNotFound: there is no run of that name.
    """
    return tuple(Path(fp[0]).name for fp in trace_fingerprints(root, name))


def trace_file(root: str | Path, name: str, file: str | None) -> Fingerprint:
    """The fingerprint of run ``name``'s trace file called ``file`` (None: its first file).

    Raises:
        RunRefused: the run name leads outside the root, or ``file`` is not a plain file name
            (a path, ``..``, empty, not a string).
        RunNotFound: there is no such run, the run has no trace files, or none called ``file``.
    """
    files = trace_fingerprints(root, name)
    if file is None:
        if not files:
            raise RunNotFound(f"run {name!r} has no trace files")
        return files[0]
    if not _plain_name(file):
        raise RunRefused(f"trace file {file!r} is not a file name of the run")
    for fingerprint in files:
        if Path(fingerprint[0]).name == file:
            return fingerprint
    raise RunNotFound(f"run {name!r} has no trace file {file!r}")


def run_timeline(
    root: str | Path,
    name: str,
    file: str | None = None,
    start_us: float | None = None,
    end_us: float | None = None,
    *,
    max_shapes: int = DEFAULT_MAX_SHAPES,
) -> TimelineView | str:
    """``timeline_view`` of one trace file of run ``name`` over ``[start_us, end_us]``.

    Args:
        root: the trace store root.
        name: the run's name.
        file: the trace file's name (:func:`run_trace_files`); None: the first.
        start_us, end_us: the window, in the trace's microseconds (None: the trace's edges).
        max_shapes: the most shapes the view may hold.

    Returns:
        The view, or the one-line message why the file cannot be read.

    Raises:
        RunRefused, RunNotFound: as :func:`trace_file`.
    """
    fingerprint = trace_file(root, name, file)
    if start_us is None and end_us is None:
        return _full_view(fingerprint, max_shapes)
    index = _prepared(fingerprint)
    if isinstance(index, str):
        return index
    return timeline_view(index, start_us, end_us, max_shapes=max_shapes)


def run_event(root: str | Path, name: str, file: str | None, row: int) -> EventDetails | str:
    """``event_details`` of event ``row`` of one trace file of run ``name``.

    Returns:
        The details, or the one-line message why the file cannot be read.

    Raises:
        RunRefused, RunNotFound: as :func:`trace_file`.
        LookupError: the file has no event ``row``.
    """
    fingerprint = trace_file(root, name, file)
    index = _prepared(fingerprint)
    if isinstance(index, str):
        return index
    trace = trace_or_message(fingerprint)
    if isinstance(trace, str):
        return trace
    return event_details(trace, int(row), index=index)


@lru_cache(maxsize=_FULL_VIEW_CACHE_SIZE)
def _full_view(fingerprint: Fingerprint, max_shapes: int) -> TimelineView | str:
    index = _prepared(fingerprint)
    return index if isinstance(index, str) else timeline_view(index, max_shapes=max_shapes)


@per_trace(maxsize=_INDEX_CACHE_SIZE)
def _prepared(trace: TraceTable, file: Path) -> TimelineIndex:
    """One trace file indexed for timeline views."""
    return prepare_timeline(trace)


def _plain_name(file: str) -> bool:
    """Whether ``file`` is a bare file name: no directory part, no ``..``, no NUL."""
    if not isinstance(file, str) or not file or "\x00" in file or file in (".", ".."):
        return False
    return PurePosixPath(file).name == file and PureWindowsPath(file).name == file

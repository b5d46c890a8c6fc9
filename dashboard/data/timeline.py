"""The Timeline page's data: one trace file of a run as lanes, or a group of its ranks on their
common clock, at the level of detail asked for.

A rank group is at most :data:`RANKS_PER_VIEW` ranks' files of one capture window (a rank's
files in name order: its first, second... window), each rank's lanes a group, each rank shifted
by its clock offset (:func:`dashboard.data.distributed.run_alignment`). A run of 64 ranks has 8
groups to pick from: the lanes drawn, the files indexed and the shapes sent stay bounded however
many ranks the run has.

Each file is indexed once (``profiler.analysis.timeline.prepare_timeline``, cached per file
fingerprint), so a zoom costs binary searches plus the shapes it returns. A file is named by its
base name and must be one of the run's own trace files: nothing else is opened.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import pandas as pd

from dashboard.data.cache import per_trace, trace_or_message
from dashboard.data.distributed import RunAlignment, run_alignment
from dashboard.data.runs import (
    META_DIR,
    Fingerprint,
    RunNotFound,
    RunRefused,
    inside,
    trace_fingerprints,
)
from profiler.analysis.table import TraceTable
from profiler.analysis.timeline import (
    DEFAULT_MAX_SHAPES,
    TimelineIndex,
    TimelineView,
    prepare_timeline,
    timeline_view,
)
from profiler.analysis.timeline_details import EventDetails, EventRef, event_details
from profiler.analysis.timeline_ranks import LaneGroup, RanksView, RankTrace, ranks_view
from profiler.events import PROFILER_STEP_PREFIX

__all__ = [
    "DEFAULT_MAX_SHAPES",
    "EventDetails",
    "EventRef",
    "LaneGroup",
    "RANKS_PER_VIEW",
    "RankGroup",
    "RanksView",
    "TimelineView",
    "is_rank_group",
    "run_rank_groups",
    "run_ranks_timeline",
    "run_event",
    "run_steps",
    "run_timeline",
    "run_trace_files",
    "trace_download",
    "trace_file",
]

#: The most ranks the all-ranks view draws at once: 8 ranks of a GPU job are ~50 lanes, as many as
#: a screen shows legibly, and 8 indexes fit in memory for traces of up to ~1M events each.
RANKS_PER_VIEW = 8
# Full-range views are what every page load and every zoom reset asks for: keep a few.
# An index takes ~110 MB per 1M events: keep the latest few files' only, but a rank group's
# all (a zoom of the group asks each of them).
_INDEX_CACHE_SIZE = RANKS_PER_VIEW
_FULL_VIEW_CACHE_SIZE = 4


RANK_GROUP_PREFIX = "ranks "  # Kineto's trace file names hold no space: no file is named so


def is_rank_group(choice: str | None) -> bool:
    """Whether the Timeline's ``choice`` (a file name or a group key) names a rank group."""
    return isinstance(choice, str) and choice.startswith(RANK_GROUP_PREFIX)


@dataclass(frozen=True)
class RankGroup:
    """A group of ranks drawn together: one capture window of up to :data:`RANKS_PER_VIEW`.

    Attributes:
        key: what names it in the page's picker and URL (``ranks 0-7``, ``ranks 0-7 window 2``).
        window: which of each rank's files (0: its first, in name order).
        files: ``(rank, file name)`` of each rank in it, ranks ascending.
        shifts_us: what to add to each of those files' times for the common clock, in the same
            order (its time base and its rank's clock offset).
        clock_offsets_us: each of those ranks' clock offset, in the same order.
    """

    key: str
    window: int
    files: tuple[tuple[int, str], ...]
    shifts_us: tuple[float, ...]
    clock_offsets_us: tuple[float, ...]

    @property
    def label(self) -> str:
        """The picker's words for it."""
        return f"{self.key} on one clock"


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


def trace_download(root: str | Path, name: str, file: str) -> Path:
    """The path of run ``name``'s trace file ``file``, to be served as it lies on disk.

    Only one of the run's own trace files (those :func:`run_trace_files` lists: symlinks
    resolving outside the root are not among them) is ever named, checked again as it is served;
    a ``meta/`` or hidden directory is no run (its JSON files are no traces).

    Raises:
        RunRefused: as :func:`trace_file`, or the file resolves outside the root by now.
        RunNotFound: as :func:`trace_file`, or ``name`` is a ``meta/`` or hidden directory.
    """
    parts = PurePosixPath(name).parts if isinstance(name, str) else ()
    if any(part == META_DIR or part.startswith(".") for part in parts):
        raise RunNotFound(f"no run named {name!r} under the trace root")
    path = Path(trace_file(root, name, file)[0])
    if not inside(path, root):
        raise RunRefused(f"trace file {file!r} lies outside the root")
    return path


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


def run_steps(root: str | Path, name: str, file: str | None) -> pd.DataFrame | str:
    """The ``ProfilerStep#N`` ranges of one trace file of run ``name``, on the host lanes.

    Returns:
        Columns ``step`` (N), ``start_us``, ``end_us`` (a step annotated on several threads
        spans all of them), in time order; empty when the trace has none. Or the one-line
        message why the file cannot be read.

    Raises:
        RunRefused, RunNotFound: as :func:`trace_file`.
    """
    index = _prepared(trace_file(root, name, file))
    return index if isinstance(index, str) else _step_ranges(index)


def _step_ranges(index: TimelineIndex) -> pd.DataFrame:
    names = pd.Series(index.names, dtype=object).astype(str)
    numbers = names.str.removeprefix(PROFILER_STEP_PREFIX)
    is_step = (names.str.startswith(PROFILER_STEP_PREFIX) & numbers.str.isdigit()).to_numpy()
    on_host = ~np.array([lane.gpu for lane in index.lanes], dtype=bool)
    hits = is_step[index.name_code] & on_host[index.lane] if len(index) else np.zeros(0, bool)
    steps = pd.DataFrame(
        {
            "step": numbers.to_numpy()[index.name_code[hits]].astype(np.int64),
            "start_us": index.start_us[hits],
            "end_us": index.end_us[hits],
        }
    )
    spans = steps.groupby("step", as_index=False).agg(
        start_us=("start_us", "min"), end_us=("end_us", "max")
    )
    return spans.sort_values("start_us", ignore_index=True)


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


def run_rank_groups(root: str | Path, name: str) -> tuple[RankGroup, ...]:
    """The rank groups of run ``name``: none for a run of one rank.

    Raises:
        RunRefused: the run name leads outside the root.
        RunNotFound: there is no run of that name.
    """
    alignment = run_alignment(root, name)
    by_rank: dict[int, list[str]] = {}
    for rank, file in alignment.files:
        by_rank.setdefault(rank, []).append(file)
    if len(by_rank) < 2:
        return ()
    windows = max(len(files) for files in by_rank.values())
    groups = []
    for window in range(windows):
        ranks = [rank for rank in sorted(by_rank) if len(by_rank[rank]) > window]
        for first in range(0, len(ranks), RANKS_PER_VIEW):
            files = [
                (rank, by_rank[rank][window]) for rank in ranks[first : first + RANKS_PER_VIEW]
            ]
            groups.append(_rank_group(files, window, windows, alignment))
    return tuple(groups)


def _rank_group(
    files: list[tuple[int, str]], window: int, windows: int, alignment: RunAlignment
) -> RankGroup:
    """The group of ``files`` (``(rank, file name)``, ranks ascending) of capture ``window``."""
    first, last = files[0][0], files[-1][0]
    key = f"{RANK_GROUP_PREFIX}{first}" + (f"-{last}" if last != first else "")
    return RankGroup(
        key=key + (f" window {window + 1}" if windows > 1 else ""),
        window=window,
        files=tuple(files),
        shifts_us=tuple(alignment.file_offsets_us[file] for _, file in files),
        clock_offsets_us=tuple(alignment.clock_offset_us[rank] for rank, _ in files),
    )


def run_ranks_timeline(
    root: str | Path,
    name: str,
    group: str,
    start_us: float | None = None,
    end_us: float | None = None,
    *,
    max_shapes: int = DEFAULT_MAX_SHAPES,
) -> RanksView | str:
    """``ranks_view`` of rank group ``group`` of run ``name`` over ``[start_us, end_us]`` on
    the ranks' common clock.

    Returns:
        The view, or the one-line message why one of the group's files cannot be read.

    Raises:
        RunRefused: the run name leads outside the root.
        RunNotFound: there is no such run, or it has no rank group called ``group``.
    """
    found = next((g for g in run_rank_groups(root, name) if g.key == group), None)
    if found is None:
        raise RunNotFound(f"run {name!r} has no rank group {group!r}")
    fingerprints = tuple(trace_file(root, name, file) for _, file in found.files)
    if start_us is None and end_us is None:
        return _full_ranks_view(found, fingerprints, max_shapes)
    return _ranks_view(found, fingerprints, start_us, end_us, max_shapes)


@lru_cache(maxsize=_FULL_VIEW_CACHE_SIZE)
def _full_ranks_view(
    group: RankGroup, fingerprints: tuple[Fingerprint, ...], max_shapes: int
) -> RanksView | str:
    return _ranks_view(group, fingerprints, None, None, max_shapes)


def _ranks_view(
    group: RankGroup,
    fingerprints: tuple[Fingerprint, ...],
    start_us: float | None,
    end_us: float | None,
    max_shapes: int,
) -> RanksView | str:
    traces = []
    for (rank, file), shift, offset, fingerprint in zip(
        group.files, group.shifts_us, group.clock_offsets_us, fingerprints, strict=True
    ):
        index = _prepared(fingerprint)
        if isinstance(index, str):
            return index
        traces.append(RankTrace(rank, f"rank {rank}", index, shift, file, offset))
    return ranks_view(traces, start_us, end_us, max_shapes=max_shapes)


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

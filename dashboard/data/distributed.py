"""The Distributed page's data: per-rank step time, breakdown and overlap (:func:`run_distributed`);
and the ranks on one clock (:func:`run_alignment`, which the Timeline's all-ranks view reads too):
which rank each file is, the clock offsets, each rank's wait and work per step, the stragglers.

:func:`run_alignment` is the one place the dashboard takes the cross-rank analysis
(``profiler.analysis.distributed.analyze_ranks``) from: from two small frames per file, cached
per file, so a new window of one rank re-reads only that file."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

import pandas as pd

from dashboard.data.cache import RUN_CACHE_SIZE, gather, per_trace, records
from dashboard.data.fetch import failure_message
from dashboard.data.runs import Fingerprint, trace_fingerprints
from profiler.analysis.distributed import (
    STRAGGLER_PCT,
    RankPart,
    Straggler,
    analyze_ranks,
    collective_ends,
    rank_part,
    rank_steps,
    rank_table,
)
from profiler.analysis.rank_frames import wall_offset_us
from profiler.analysis.rank_summary import RankSummary
from profiler.analysis.table import TraceTable
from profiler.store.chrome_trace import TraceFormatError

# Where the ranks' frames are made: None, here (each file loaded and cached per file); else a
# Dask scheduler address (``trainprof dashboard --dask``), whose workers make each file's
# per-rank summary, so a run of many ranks is read in parallel and this process holds
# kilobytes per rank, never a trace.
_dask: dict[str, str | None] = {"address": None}

# A run of more files than one Timeline group of ranks reads each file's stored per-rank
# summary (kilobytes on disk beside the run, shared with ``trainprof summary``; made once where
# missing, one trace at a time) instead of holding every trace in this process; a run of a few
# files reuses the traces its other pages load anyway.
SUMMARIES_FROM_FILES: Final = 9


def use_dask(address: str | None) -> None:
    """Make the ranks' frames on the Dask cluster at ``address`` (None: in this process)."""
    _dask["address"] = address


@dataclass(frozen=True)
class RunDistributed:
    """Run ``name``'s ranks side by side. Shared by the cache: treat as read-only.

    Attributes:
        ranks: one row per rank, ranks ascending
            (``profiler.analysis.distributed.RANK_COLUMNS``; NaN as None).
        errors: one message per file that could not be read, naming the file.

    The stragglers are :func:`run_alignment`'s: a rank's mean step time cannot tell them apart
    under synchronous collectives (every rank's step is as long as the slowest one's).
    """

    ranks: tuple[dict[str, Any], ...]
    errors: tuple[str, ...]


def run_distributed(root: str | Path, name: str) -> RunDistributed:
    """Run ``name``'s files pooled by rank, cached per file and per run.

    Raises:
        RunRefused: the name leads outside the root (see :func:`resolve_run`).
        RunNotFound: there is no run of that name.
    """
    return _cached_run_distributed(trace_fingerprints(root, name))


@lru_cache(maxsize=RUN_CACHE_SIZE)
def _cached_run_distributed(files: tuple[Fingerprint, ...]) -> RunDistributed:
    frames, errors = _gather_frames(files)
    parts = [frame.part for frame in frames]
    return RunDistributed(ranks=records(rank_table(parts)), errors=tuple(errors))


@dataclass(frozen=True, eq=False)
class RunAlignment:
    """Run ``name``'s ranks on one clock: which rank each file is, the offsets that align them,
    each rank's wait and work per step, and the stragglers
    (:func:`profiler.analysis.distributed.analyze_ranks`). Treat as read-only.

    Attributes:
        files: ``(rank, file name)`` of every readable trace file, by rank, then by name.
        clock_offset_us: per rank, what the analysis added to its wall clock to align it.
        file_offsets_us: per file name, what to add to its trace times (``ts``) to put them on
            the common clock: its wall-clock base and its rank's clock offset.
        method: ``collectives`` (aligned on collective ends) or ``wall_clock`` (some ranks
            could not be aligned: ``warnings`` says which).
        steps: per rank and step: ``rank``, ``step``, ``dur_us``, ``comm_wait_us`` (inside
            collectives), ``work_us`` (the rest of the step), ``late_us`` (how long the others
            waited for the rank) and ``excess_pct`` (that over its step).
        stragglers: the ranks the others waited for, the largest share first.
        threshold_pct: how much of its step the others must wait for a rank to name it.
        warnings: what the alignment could not do.
        errors: one message per file that could not be read, naming the file.
    """

    files: tuple[tuple[int, str], ...]
    clock_offset_us: dict[int, float]
    file_offsets_us: dict[str, float]
    method: str
    steps: pd.DataFrame
    stragglers: tuple[Straggler, ...]
    threshold_pct: float
    warnings: tuple[str, ...]
    errors: tuple[str, ...]

    @property
    def ranks(self) -> tuple[int, ...]:
        """The ranks, ascending."""
        return tuple(sorted({rank for rank, _ in self.files}))


def run_alignment(root: str | Path, name: str) -> RunAlignment:
    """Run ``name``'s ranks on one clock, from per-file frames cached per file and per run.

    Raises:
        RunRefused: the name leads outside the root (see :func:`resolve_run`).
        RunNotFound: there is no run of that name.
    """
    return _cached_alignment(trace_fingerprints(root, name))


@lru_cache(maxsize=RUN_CACHE_SIZE)
def _cached_alignment(files: tuple[Fingerprint, ...]) -> RunAlignment:
    parts, errors = _gather_frames(files)
    parts.sort(key=lambda part: (part.rank, part.file))
    if parts:
        report = analyze_ranks(
            pd.concat([p.steps for p in parts], ignore_index=True),
            pd.concat([p.collectives for p in parts], ignore_index=True),
        )
        offsets, method = dict(report.clock_offset_us), report.method
        steps, stragglers, warnings = report.steps, report.stragglers, report.warnings
    else:
        offsets, method, steps, stragglers, warnings = {}, "wall_clock", _NO_STEPS, (), ()
    return RunAlignment(
        files=tuple((p.rank, p.file) for p in parts),
        clock_offset_us=offsets,
        file_offsets_us={p.file: p.wall_us + offsets.get(p.rank, 0.0) for p in parts},
        method=method,
        steps=steps.assign(work_us=steps["dur_us"] - steps["comm_wait_us"]),
        stragglers=tuple(stragglers),
        threshold_pct=STRAGGLER_PCT,
        warnings=tuple(warnings),
        errors=tuple(errors),
    )


_NO_STEPS = pd.DataFrame(
    columns=["rank", "step", "dur_us", "comm_wait_us", "late_us", "excess_pct"]
)


@dataclass(frozen=True, eq=False)
class _Frames:
    """One trace file's part of the per-rank table and of the cross-rank analysis."""

    rank: int
    file: str
    wall_us: float  # what to add to its ts for its rank's wall clock
    steps: pd.DataFrame
    collectives: pd.DataFrame
    part: RankPart


# One function for both pages' per-file results: the Distributed page asks for both, and a file
# analysed for one while another file's load has pushed it out of the loaded-trace cache would
# otherwise be loaded again for the other.
@per_trace
def _trace_frames(trace: TraceTable, file: Path) -> _Frames:
    """One trace file's rank, wall-clock base, steps, collectives and per-rank table part."""
    return _Frames(
        rank=trace.rank,
        file=file.name,
        wall_us=wall_offset_us(trace),
        steps=rank_steps(trace),
        collectives=collective_ends(trace),
        part=rank_part(trace),
    )


def _gather_frames(files: tuple[Fingerprint, ...]) -> tuple[list[_Frames], list[str]]:
    """Every file's frames, and a message per file that could not be read."""
    address = _dask["address"]
    if address is None and len(files) < SUMMARIES_FROM_FILES:
        return gather(files, _trace_frames)
    from profiler.analysis.fanout import summarize_files

    frames: list[_Frames] = []
    errors: list[str] = []
    paths = [Path(f[0]) for f in files]
    for result in summarize_files(paths, dask=address, in_process=address is None):
        if isinstance(result, TraceFormatError):
            errors.append(failure_message(result, Path(result.path).name))
        else:
            frames.append(_summary_frames(result))
    return frames, errors


def _summary_frames(summary: RankSummary) -> _Frames:
    """:func:`_trace_frames` from a file's per-rank summary."""
    return _Frames(
        rank=summary.rank,
        file=summary.path.name,
        wall_us=summary.wall_us,
        steps=summary.rank_steps,
        collectives=summary.collectives,
        part=summary.rank_part(),
    )

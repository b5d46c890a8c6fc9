"""Distributed runs: per-rank step time and breakdown, stragglers, communication/compute overlap.

A run's trace files are pooled by rank (``distributedInfo.rank``): a rank captured in several
windows is one row. The step time and its breakdown are :func:`profiler.analysis.steps.
step_breakdown`'s (the TensorBoard plugin's definitions). The overlap follows Holistic Trace
Analysis (HTA) 0.5.0, ``hta/analyzers/communication_analysis.py``
(``get_comm_comp_overlap``): the share of a rank's communication-kernel time during which a
computation kernel runs too, over the window HTA analyses
(:func:`profiler.analysis.kernels.analysis_window`). Where ours differs from HTA:

* Times keep the trace's precision; HTA rounds nanosecond-precision traces to whole
  microseconds, each event's start up and its end down (hta/common/trace_parser.py,
  ``round_down_time_stamps``). On hta/nccl.json.gz that moves the figure from 14.76% (ours)
  to 14.31% (HTA's); on microsecond traces the two agree.
* HTA keeps one file per rank; we pool every file (window) of a rank: overlap and
  communication time are summed over them before dividing.

Stragglers: :func:`find_stragglers` compares mean step times, which only tells ranks apart
when they do not wait for each other. Under synchronous collectives every rank's step is as
long as the slowest one's; :func:`analyze_ranks` (:mod:`profiler.analysis.stragglers`) aligns
the ranks' clocks on collective ends and names the rank the others wait for, from the per-rank
frames :func:`rank_steps` and :func:`collective_ends` (:mod:`profiler.analysis.rank_frames`).
HTA's nearest figure is ``get_potential_stragglers``: the ranks whose dominant communication
kernel starts latest.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from profiler.analysis.devices import DEVICE_KINDS
from profiler.analysis.kernels import (
    COMMUNICATION,
    COMPUTATION,
    analysis_window,
    merge_intervals,
    work_types,
)
from profiler.analysis.rank_frames import (
    COLLECTIVE_COLUMNS,
    STEP_COLUMNS,
    collective_ends,
    rank_steps,
)
from profiler.analysis.steps import CATEGORIES, step_breakdown
from profiler.analysis.stragglers import (
    STRAGGLER_PCT,
    DistributedReport,
    Straggler,
    analyze_ranks,
)
from profiler.analysis.table import TraceTable

__all__ = [
    "COLLECTIVE_COLUMNS",
    "RANK_COLUMNS",
    "STEP_COLUMNS",
    "STRAGGLER_COLUMNS",
    "STRAGGLER_PCT",
    "CommOverlap",
    "DistributedReport",
    "RankPart",
    "Straggler",
    "analyze_ranks",
    "analyze_traces",
    "distributed_entry",
    "collective_ends",
    "comm_comp_overlap",
    "find_stragglers",
    "per_rank",
    "rank_part",
    "rank_steps",
    "rank_table",
]

RANK_COLUMNS: Final = (
    "rank",
    "files",
    "steps",
    "step_mean_us",
    "step_median_us",
    "step_max_us",
    *(f"{category}_us" for category in CATEGORIES),
    *(f"{category}_pct" for category in CATEGORIES),
    "comm_kernel_us",
    "comm_overlap_us",
    "comm_overlap_pct",
)
STRAGGLER_COLUMNS: Final = ("rank", "step_mean_us", "others_median_us", "excess_pct")


@dataclass(frozen=True)
class CommOverlap:
    """How much of one trace's communication-kernel time computation kernels overlap.

    Attributes:
        comm_kernel_us: the union of the communication kernels' intervals.
        overlap_us: the part of that union during which a computation kernel runs.
    """

    comm_kernel_us: float
    overlap_us: float

    @property
    def overlap_pct(self) -> float | None:
        """``overlap_us`` as a percentage of ``comm_kernel_us``; None without communication."""
        return 100.0 * self.overlap_us / self.comm_kernel_us if self.comm_kernel_us > 0 else None


@dataclass(frozen=True)
class RankPart:
    """One trace file's contribution to its rank's row of :func:`rank_table`.

    Attributes:
        rank: the file's rank.
        step_us: each step's duration (``step_breakdown``'s ``dur_us``).
        categories_us: each breakdown category's time, summed over the file's steps.
        overlap: the file's :class:`CommOverlap`.
    """

    rank: int
    step_us: tuple[float, ...]
    categories_us: dict[str, float]
    overlap: CommOverlap


def comm_comp_overlap(trace: TraceTable, *, include_last_step: bool = False) -> CommOverlap:
    """HTA's communication/computation overlap of one trace (one rank, one window).

    The COMMUNICATION kernels' intervals are merged, and so are the COMPUTATION kernels' (HTA's
    kernel types, :func:`profiler.analysis.kernels.work_types`); the overlap is the time
    in both unions (hta/analyzers/communication_analysis.py, ``get_comm_comp_overlap``).

    Args:
        trace: one rank's trace.
        include_last_step: analyse the last profiler step too (HTA leaves it out by default).

    Returns:
        The communication time and the part of it overlapped; both 0 without communication.
    """
    events = analysis_window(trace, include_last_step=include_last_step)
    gpu = events.loc[events["kind"].isin(DEVICE_KINDS), ["name", "kind", "ts_us", "end_us"]]
    types = work_types(gpu)
    start, end = gpu["ts_us"].to_numpy(), gpu["end_us"].to_numpy()
    comm = merge_intervals(start[types == COMMUNICATION], end[types == COMMUNICATION])
    comp = merge_intervals(start[types == COMPUTATION], end[types == COMPUTATION])
    return CommOverlap(
        comm_kernel_us=float((comm[1] - comm[0]).sum()),
        overlap_us=_intersection_us(comm, comp),
    )


def _intersection_us(
    first: tuple[np.ndarray, np.ndarray], second: tuple[np.ndarray, np.ndarray]
) -> float:
    """Time inside both of two sets of disjoint intervals: HTA's sweep, where the first set's
    edges count 1 and the second's 2, so a running sum of 3 means both are open. Edges at the
    same instant bound only zero-length pieces, so their order does not matter."""
    times = np.concatenate([first[0], first[1], second[0], second[1]])
    steps = np.concatenate(
        [np.full(len(first[0]), 1), np.full(len(first[1]), -1)]
        + [np.full(len(second[0]), 2), np.full(len(second[1]), -2)]
    )
    order = np.argsort(times, kind="stable")
    running = np.cumsum(steps[order])
    lengths = np.diff(times[order])
    return float(lengths[running[:-1] == 3].sum())


def rank_part(trace: TraceTable) -> RankPart:
    """One trace file's step times, category times and overlap, for :func:`rank_table`."""
    breakdown = step_breakdown(trace)
    return RankPart(
        rank=trace.rank,
        step_us=tuple(float(d) for d in breakdown["dur_us"]),
        categories_us={c: float(breakdown[f"{c}_us"].sum()) for c in CATEGORIES},
        overlap=comm_comp_overlap(trace),
    )


def rank_table(parts: Iterable[RankPart]) -> pd.DataFrame:
    """One row per rank, the files of each rank pooled.

    Args:
        parts: :func:`rank_part` of every trace file of a run.

    Returns:
        Ranks ascending, columns :data:`RANK_COLUMNS`: ``files``; ``steps`` and the mean, median
        and max step time over every step of the rank's files (NaN without steps);
        ``<category>_us``, each category's time per step (they add up to ``step_mean_us``);
        ``<category>_pct``, its share of the rank's step time (HTA's and the plugin's pooling:
        sums divided by sums); ``comm_kernel_us`` and ``comm_overlap_us`` summed over files and
        ``comm_overlap_pct`` (NaN without communication kernels).
    """
    by_rank: dict[int, list[RankPart]] = {}
    for part in parts:
        by_rank.setdefault(part.rank, []).append(part)
    rows = [_rank_row(rank, by_rank[rank]) for rank in sorted(by_rank)]
    return pd.DataFrame(rows, columns=list(RANK_COLUMNS))


def per_rank(traces: Iterable[TraceTable]) -> pd.DataFrame:
    """:func:`rank_table` of loaded traces (e.g. ``load(run_dir).traces``)."""
    return rank_table(rank_part(trace) for trace in traces)


def _rank_row(rank: int, parts: list[RankPart]) -> dict[str, float | int]:
    steps = np.array([d for part in parts for d in part.step_us], dtype=np.float64)
    total_us = float(steps.sum())
    comm_us = sum(part.overlap.comm_kernel_us for part in parts)
    overlap_us = sum(part.overlap.overlap_us for part in parts)
    row: dict[str, float | int] = {
        "rank": rank,
        "files": len(parts),
        "steps": len(steps),
        "step_mean_us": float(steps.mean()) if len(steps) else np.nan,
        "step_median_us": float(np.median(steps)) if len(steps) else np.nan,
        "step_max_us": float(steps.max()) if len(steps) else np.nan,
    }
    for category in CATEGORIES:
        category_us = sum(part.categories_us[category] for part in parts)
        row[f"{category}_us"] = category_us / len(steps) if len(steps) else 0.0
        row[f"{category}_pct"] = 100.0 * category_us / total_us if total_us > 0 else 0.0
    row["comm_kernel_us"] = comm_us
    row["comm_overlap_us"] = overlap_us
    row["comm_overlap_pct"] = 100.0 * overlap_us / comm_us if comm_us > 0 else np.nan
    return row


def find_stragglers(table: pd.DataFrame, *, threshold_pct: float = STRAGGLER_PCT) -> pd.DataFrame:
    """The ranks whose mean step time is more than ``threshold_pct`` above the others'.

    Each rank is compared with the median of the *other* ranks' mean step times, so with two
    ranks the slow one is measured against the fast one (a median over all ranks would include
    the straggler itself and halve its lead). A run of one rank has no stragglers.

    Args:
        table: :func:`rank_table`'s rows (``rank`` and ``step_mean_us`` are read).
        threshold_pct: how far above the others a rank must be.

    Returns:
        Columns :data:`STRAGGLER_COLUMNS`, the slowest first: ``others_median_us`` is what the
        rank is compared with, ``excess_pct`` how far above it the rank is.
    """
    timed = table.loc[table["step_mean_us"].notna(), ["rank", "step_mean_us"]]
    means = timed["step_mean_us"].to_numpy(dtype=np.float64)
    if len(means) < 2:
        return pd.DataFrame(columns=list(STRAGGLER_COLUMNS))
    others = np.array([np.median(np.delete(means, i)) for i in range(len(means))])
    with np.errstate(divide="ignore", invalid="ignore"):
        excess = np.where(others > 0, 100.0 * (means / others - 1.0), np.nan)
    found = timed.assign(others_median_us=others, excess_pct=excess)
    found = found[found["excess_pct"] > threshold_pct]
    found = found.sort_values("excess_pct", ascending=False, kind="stable")
    return found.reset_index(drop=True)[list(STRAGGLER_COLUMNS)]


def analyze_traces(
    traces: Iterable[TraceTable], *, threshold_pct: float = STRAGGLER_PCT
) -> DistributedReport:
    """:func:`analyze_ranks` of loaded traces (every rank and window of one run)."""
    loaded = list(traces)
    steps = pd.concat([rank_steps(t) for t in loaded], ignore_index=True)
    ends = pd.concat([collective_ends(t) for t in loaded], ignore_index=True)
    return analyze_ranks(steps, ends, threshold_pct=threshold_pct)


def distributed_entry(
    parts: Iterable[tuple[str | Path, pd.DataFrame, pd.DataFrame]],
) -> dict[str, Any] | None:
    """The summary's ``distributed`` object: :func:`analyze_ranks` of the run whose traces span
    more than one rank, from each trace's frames.

    Traces are pooled per run directory (the file's folder). A summary of several multi-rank
    runs reports the first (by path) and says so in ``warnings``.

    Args:
        parts: per trace file, its path, :func:`rank_steps` and :func:`collective_ends`.

    Returns:
        :meth:`DistributedReport.to_dict` plus ``run`` (the run directory); None when no run
        has more than one rank.
    """
    runs: dict[Path, list[tuple[pd.DataFrame, pd.DataFrame]]] = {}
    for path, steps, ends in parts:
        runs.setdefault(Path(path).parent, []).append((steps, ends))
    multi = {
        run: frames
        for run, frames in sorted(runs.items())
        if len({int(r) for pair in frames for frame in pair for r in frame["rank"]}) > 1
    }
    if not multi:
        return None
    run, frames = next(iter(multi.items()))
    report = analyze_ranks(
        pd.concat([steps for steps, _ in frames], ignore_index=True),
        pd.concat([ends for _, ends in frames], ignore_index=True),
    )
    entry = {"run": str(run), **report.to_dict()}
    if len(multi) > 1:
        entry["warnings"].append(
            f"{len(multi)} runs have several ranks; this describes {run} only: "
            "summarise each run on its own"
        )
    return entry

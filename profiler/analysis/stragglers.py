"""Every rank on one clock, and the rank the others wait for.

:func:`analyze_ranks` reads only the two small per-rank frames of
:mod:`profiler.analysis.rank_frames` (concatenated over ranks and windows), so it runs the
same on frames computed in this process, read back from Parquet, or gathered from workers.

Clock alignment: a collective completes at the same moment on every rank, so the difference
between two ranks' recorded ends of the same collective is the difference between their clocks.
Each rank's offset is the median of those differences to the reference rank (the lowest),
over every collective key both recorded; a rank that shares no key with the reference keeps
its wall clock (offset 0), with a warning. Keys are a guess where a trace does not record
process groups (a rank's n-th all_to_all of a step may be in another group than the
reference's n-th), so the median is taken over the *shortest half* of the sorted differences
(the densest cluster, a robust estimator that ignores up to half of the keys being
mismatched), and only collectives whose aligned ends agree within
:data:`MATCH_TOLERANCE_US` are used for lateness.

Stragglers under synchronous collectives: every rank's step is as long as the slowest rank's
(the fast ranks wait inside the collectives), so step times cannot tell them apart. What
differs is *when* each rank enters a collective: on the aligned clock, a rank's lateness at a
collective is how long after the median of the other ranks it arrived (0 if earlier). Summed
over a step's collectives, that is the time the others spent waiting for it in that step. A
rank late by more than ``threshold_pct`` of its step is straggling in that step. Where no
collective matches across ranks, lateness falls back to the difference in waiting: the others'
median ``comm_wait_us`` minus the rank's own (what a late arrival shows as, clock-free).
Which category its extra time went to is the breakdown category (other than communication)
where the rank spent most above the others' median in those steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np
import pandas as pd

from profiler.analysis.steps import CATEGORIES

#: A rank is straggling in a step when the others wait for it more than this share of its step
#: time. Healthy data-parallel ranks arrive within a few percent of each other; a tenth of the
#: step is well beyond that jitter (the bar of rules.COMM_PCT and MEMCPY_PCT too).
STRAGGLER_PCT: Final = 10.0
#: Aligned ends of one collective further apart than this are two different collectives that
#: share a key. The same collective's kernels end within a few hundred microseconds on every
#: rank (hta/two_ranks: at most 0.33 ms apart once aligned); host-side ends (gloo) carry the
#: scheduler's delays too (a 2-rank gloo job on a loaded 2-core machine: up to 1.1 ms). Keys
#: mismatched in hta/two_ranks (groups unrecorded) end 62 ms or more apart.
MATCH_TOLERANCE_US: Final = 5000.0
#: The breakdown category that is waiting, not work: never where the straggler's time went.
WAIT_CATEGORY: Final = "communication"

ClockMethod = Literal["collectives", "wall_clock"]
STEP_REPORT_COLUMNS: Final = (
    "rank",
    "step",
    "dur_us",
    "comm_wait_us",
    "pre_comm_us",
    "late_us",
    "excess_pct",
)


@dataclass(frozen=True)
class Straggler:
    """A rank the others waited for.

    Attributes:
        rank: the rank.
        steps: the steps in which it straggled (step numbers, ascending).
        excess_us: how long the others waited for it, per straggling step on average.
        excess_pct: ``excess_us`` as a share of its step time (mean over those steps).
        category: the breakdown category where it spent most above the others in those steps
            (None when it spent nothing more anywhere, e.g. its time is outside the trace).
        category_us: how much more, per step.
        steps_compared: in how many steps it could be compared with another rank (so one
            straggling step of many, say a moment the rank was descheduled, reads as such).
    """

    rank: int
    steps: tuple[int, ...]
    excess_us: float
    excess_pct: float
    category: str | None
    category_us: float
    steps_compared: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "steps": list(self.steps),
            "excess_pct": round(self.excess_pct, 2),
            "excess_us": round(self.excess_us, 3),
            "category": self.category,
            "category_us": round(self.category_us, 3),
            "steps_compared": self.steps_compared,
        }


@dataclass(frozen=True)
class DistributedReport:
    """The cross-rank analysis of one run.

    Attributes:
        ranks: every rank seen, ascending.
        method: ``collectives`` when every rank was aligned on collective ends, else
            ``wall_clock`` (some or all ranks kept their own clocks).
        clock_offset_us: per rank, what was added to its times to put it on the reference
            rank's clock (the reference's is 0).
        matched_collectives: per rank, how many of its collectives it shares with the reference
            (same key, ends within :data:`MATCH_TOLERANCE_US` once aligned).
        stragglers: the straggling ranks, the largest ``excess_pct`` first (empty when none).
        steps: per rank and step (:data:`STEP_REPORT_COLUMNS`): ``late_us``, how long the
            others waited for this rank in the step, and ``excess_pct``, that over its step time.
        warnings: what the reader should know (ranks left on the wall clock).
    """

    ranks: tuple[int, ...]
    method: ClockMethod
    clock_offset_us: dict[int, float]
    matched_collectives: dict[int, int]
    stragglers: tuple[Straggler, ...]
    steps: pd.DataFrame = field(repr=False, compare=False)
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The summary's ``distributed`` object (JSON types; rank keys as strings)."""
        return {
            "ranks": list(self.ranks),
            "method": self.method,
            "clock_offset_us": {str(r): round(v, 3) for r, v in self.clock_offset_us.items()},
            "matched_collectives": {str(r): n for r, n in self.matched_collectives.items()},
            "stragglers": [s.to_dict() for s in self.stragglers],
            "warnings": list(self.warnings),
        }


def analyze_ranks(
    steps: pd.DataFrame, collectives: pd.DataFrame, *, threshold_pct: float = STRAGGLER_PCT
) -> DistributedReport:
    """Clock offsets and stragglers from every rank's frames.

    Args:
        steps: :func:`profiler.analysis.rank_frames.rank_steps` of every trace, concatenated.
        collectives: :func:`profiler.analysis.rank_frames.collective_ends` of every trace,
            concatenated.
        threshold_pct: how much of its step the others must wait for a rank (module doc).

    Returns:
        The :class:`DistributedReport`.
    """
    ranks = tuple(sorted({int(r) for r in pd.concat([steps["rank"], collectives["rank"]])}))
    offsets, matched = clock_offsets(collectives, ranks)
    unaligned = [rank for rank in ranks[1:] if matched[rank] == 0]
    warnings = []
    if unaligned:
        warnings.append(
            f"no collective of rank(s) {', '.join(map(str, unaligned))} matches rank "
            f"{ranks[0]}'s: their times are on their own wall clocks, not aligned"
        )
    method: ClockMethod = "wall_clock" if unaligned or len(ranks) < 2 else "collectives"
    per_step = _step_lateness(steps, collectives, offsets)
    per_step = per_step.assign(
        excess_pct=np.where(
            per_step["dur_us"] > 0, 100.0 * per_step["late_us"] / per_step["dur_us"], 0.0
        )
    )
    flagged = per_step[per_step["excess_pct"] > threshold_pct]
    compared = _steps_compared(per_step)
    found = [
        _straggler(int(rank), mine, steps, compared.get(int(rank), 0))
        for rank, mine in flagged.groupby("rank")
    ]
    stragglers = sorted(found, key=lambda s: -s.excess_pct)
    return DistributedReport(
        ranks=ranks,
        method=method,
        clock_offset_us=offsets,
        matched_collectives=matched,
        stragglers=tuple(stragglers),
        steps=per_step[list(STEP_REPORT_COLUMNS)],
        warnings=tuple(warnings),
    )


def clock_offsets(
    collectives: pd.DataFrame, ranks: tuple[int, ...]
) -> tuple[dict[int, float], dict[int, int]]:
    """Each rank's offset to the reference rank (``ranks[0]``) and how many collectives it
    was measured over (module doc); 0.0 and 0 for a rank that shares none."""
    if not ranks:
        return {}, {}
    ends = collectives.drop_duplicates(["rank", "key"]).pivot(
        index="key", columns="rank", values="end_us"
    )
    reference = ranks[0]
    offsets, matched = dict.fromkeys(ranks, 0.0), dict.fromkeys(ranks, 0)
    if reference not in ends:
        return offsets, matched
    matched[reference] = int(ends[reference].notna().sum())
    diffs = ends.rsub(ends[reference], axis=0)  # reference end minus each rank's, per key
    for rank in ranks[1:]:
        if rank not in diffs:
            continue
        column = diffs[rank].to_numpy(dtype=np.float64)
        column = column[~np.isnan(column)]
        if len(column):
            offsets[rank] = shortest_half_median(column)
            matched[rank] = int((np.abs(column - offsets[rank]) <= MATCH_TOLERANCE_US).sum())
    return offsets, matched


def shortest_half_median(values: np.ndarray) -> float:
    """The median of the tightest ``len // 2 + 1`` of ``values``: where most of them agree,
    whatever the rest say (a least-median-of-squares location estimate)."""
    ordered = np.sort(values)
    size = len(ordered) // 2 + 1
    spans = ordered[size - 1 :] - ordered[: len(ordered) - size + 1]
    start = int(np.argmin(spans))
    return float(np.median(ordered[start : start + size]))


def _step_lateness(
    steps: pd.DataFrame, collectives: pd.DataFrame, offsets: dict[int, float]
) -> pd.DataFrame:
    """Per rank and step, ``late_us``: how long the others waited for the rank (module doc)."""
    frame = steps[["rank", "step", "dur_us", "comm_wait_us", "pre_comm_us"]].copy()
    frame["step"] = frame["step"].astype(np.int64)
    shift = collectives["rank"].map(offsets).fillna(0.0)
    arrivals = collectives.assign(
        arrival_us=collectives["start_us"] + shift, aligned_end_us=collectives["end_us"] + shift
    )
    # The same collective on every rank: ends agreeing within the tolerance, on two ranks or more.
    agreed = arrivals.groupby("key")["aligned_end_us"].transform("median")
    arrivals = arrivals[(arrivals["aligned_end_us"] - agreed).abs() <= MATCH_TOLERANCE_US]
    shared = arrivals.groupby("key")["rank"].transform("nunique") > 1
    late = _late_by_arrival(arrivals[shared]) if shared.any() else _late_by_wait(frame)
    frame = frame.merge(late, on=["rank", "step"], how="left")
    frame["late_us"] = frame["late_us"].fillna(0.0)
    return frame


def _late_by_arrival(arrivals: pd.DataFrame) -> pd.DataFrame:
    """Per rank and step, the sum over its collectives of how long after the median of the
    other ranks it arrived (0 where it was not later)."""
    late = arrivals["arrival_us"] - others_median(arrivals, "key", "arrival_us")
    summed = arrivals.assign(late_us=np.maximum(late, 0.0)).groupby(["rank", "step"])["late_us"]
    return summed.sum().reset_index()


def _late_by_wait(frame: pd.DataFrame) -> pd.DataFrame:
    """Per rank and step, how much less the rank waited in collectives than the others'
    median: the clock-free reading of a late arrival."""
    late = others_median(frame, "step", "comm_wait_us") - frame["comm_wait_us"]
    return frame[["rank", "step"]].assign(late_us=np.maximum(late.fillna(0.0), 0.0))


def others_median(frame: pd.DataFrame, by: str, column: str) -> pd.Series:
    """Per row, the median of ``column`` over the *other* rows with the same ``by`` (NaN where
    there is no other): against a median over all ranks, a straggler among two would be
    measured against itself. Vectorised: a row's group without it, sorted, is the sorted group
    with one position skipped, so its median is read from the sorted group directly."""
    order = np.lexsort((frame[column].to_numpy(dtype=np.float64), frame[by].to_numpy()))
    values = frame[column].to_numpy(dtype=np.float64)[order]
    groups = frame[by].to_numpy()[order]
    first = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    sizes = np.diff(np.r_[first, len(groups)])
    start = np.repeat(first, sizes)
    size = np.repeat(sizes, sizes)
    position = np.arange(len(groups)) - start  # the row's place in its sorted group
    others = size - 1
    low, high = (others - 1) // 2, others // 2  # the middle one or two of the others

    def at(k: np.ndarray) -> np.ndarray:
        """The k-th smallest of the others: skip the row's own place."""
        index = start + k + (k >= position)
        return values[np.minimum(index, len(values) - 1)]

    median = np.where(others > 0, (at(low) + at(high)) / 2, np.nan)
    result = np.empty(len(frame))
    result[order] = median
    return pd.Series(result, index=frame.index)


def _steps_compared(per_step: pd.DataFrame) -> dict[int, int]:
    """Per rank, how many of its steps some other rank also recorded."""
    shared = per_step.groupby("step")["rank"].transform("nunique") > 1
    return {int(r): int(n) for r, n in per_step[shared].groupby("rank")["step"].nunique().items()}


def _straggler(rank: int, mine: pd.DataFrame, steps: pd.DataFrame, compared: int) -> Straggler:
    """The straggler ``rank``, from its steps past the threshold (``mine``)."""
    numbers = tuple(sorted(int(s) for s in mine["step"].unique()))
    category, category_us = _extra_category(rank, numbers, steps)
    return Straggler(
        rank=rank,
        steps=numbers,
        excess_us=float(mine["late_us"].mean()),
        excess_pct=float(mine["excess_pct"].mean()),
        category=category,
        category_us=category_us,
        steps_compared=compared,
    )


def _extra_category(
    rank: int, numbers: tuple[int, ...], steps: pd.DataFrame
) -> tuple[str | None, float]:
    """The category (not communication) where ``rank`` spent most above the other ranks'
    median in steps ``numbers``, per step, and how much more."""
    chosen = steps[steps["step"].isin(numbers)]
    columns = [f"{c}_us" for c in CATEGORIES if c != WAIT_CATEGORY]
    per_rank = chosen.groupby(["step", "rank"])[columns].sum()
    extra: list[pd.Series] = []
    for _, group in per_rank.groupby(level="step"):
        ranks = group.index.get_level_values("rank")
        if rank not in ranks or len(ranks) < 2:
            continue
        others = group[ranks != rank].median()
        extra.append(group[ranks == rank].iloc[0] - others)
    if not extra:
        return None, 0.0
    mean = pd.DataFrame(extra).mean()
    best = str(mean.idxmax())
    if mean[best] <= 0:
        return None, 0.0
    return best.removesuffix("_us"), float(mean[best])

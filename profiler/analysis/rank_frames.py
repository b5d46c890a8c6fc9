"""Each rank's steps and collectives as two small frames: what the cross-rank analysis reads.

:func:`rank_steps` and :func:`collective_ends` turn one trace (one rank, one window) into a
few rows per step and per collective, so a run of many ranks can be analysed from kilobytes
per rank (:func:`profiler.analysis.stragglers.analyze_ranks`), wherever the traces were read.

Times are on the rank's own wall clock: the trace's ``ts`` plus its ``baseTimeNanoseconds``
(Kineto writes times relative to that base, and two processes may have different bases).

A *collective* is one host range named ``nccl:<op>`` or ``gloo:<op>`` (what torch's
ProcessGroups record: NCCL on the launching thread, gloo on its worker thread). Its span is
where the rank waits for it:

* device side, where the range launched kernels (NCCL): from the first of those kernels'
  start to the last one's end. The kernel ends when every rank's kernel has exchanged its
  data, so the end is the same moment on every rank, and the start is when this rank's
  stream got to it (its arrival).
* host side otherwise (gloo, or a collective without device work): the range itself, which
  runs from the moment this rank entered the collective until it completed everywhere.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import pandas as pd

from profiler.analysis.devices import COMMUNICATION, KERNEL, LAUNCH_KINDS
from profiler.analysis.kernels import merge_intervals
from profiler.analysis.memo import per_trace
from profiler.analysis.steps import CATEGORIES, HOST_RANGE_KINDS, step_breakdown, step_table
from profiler.analysis.table import MISSING_INT, TraceTable

#: Host ranges that are collectives: torch's ProcessGroupNCCL and ProcessGroupGloo name them so.
COLLECTIVE_PREFIXES: Final = ("nccl:", "gloo:")
#: The op that carries a collective's process group (``Process Group Name``) in newer traces.
RECORD_PARAM_COMMS: Final = "record_param_comms"
#: Steps outside every ``ProfilerStep`` range (a collective before the first step).
NO_STEP: Final = -1

STEP_COLUMNS: Final = (
    "rank",
    "step",
    "start_us",
    "end_us",
    "dur_us",
    "comm_wait_us",
    "pre_comm_us",
    *(f"{category}_us" for category in CATEGORIES),
)
COLLECTIVE_COLUMNS: Final = ("rank", "key", "step", "start_us", "end_us")


def wall_offset_us(trace: TraceTable) -> float:
    """What to add to the trace's ``ts_us`` for the rank's wall clock (0 without a base)."""
    base = trace.meta.get("baseTimeNanoseconds")
    return float(base) / 1000.0 if isinstance(base, int | float) else 0.0


@per_trace
def collective_spans(trace: TraceTable) -> pd.DataFrame:
    """One row per collective of the trace, in the order the rank entered them.

    Returns:
        ``name`` (the op, e.g. ``all_reduce``), ``group`` (the process group's name, "" where
        the trace does not record it), ``step`` (the ``ProfilerStep`` number whose host range
        holds the collective's start, :data:`NO_STEP` if none), ``ordinal`` (its place among
        the step's collectives of that name and group) and ``start_us``, ``end_us`` (its span,
        module doc, on the trace's own clock, not the wall clock).
    """
    events = trace.events
    names = events["name"].astype(str)
    host = events[events["kind"].isin(HOST_RANGE_KINDS) & names.str.startswith(COLLECTIVE_PREFIXES)]
    ranges = pd.DataFrame(
        {
            "name": names[host.index].str.split(":", n=1).str[1].to_numpy(),
            "group": _groups(events, host),
            "tid": host["tid"].to_numpy(),
            "start_us": host["ts_us"].to_numpy(),
            "end_us": host["end_us"].to_numpy(),
        }
    )
    device = _device_spans(events, host)
    on_device = ~np.isnan(device[0])
    ranges["start_us"] = np.where(on_device, device[0], ranges["start_us"])
    ranges["end_us"] = np.where(on_device, device[1], ranges["end_us"])
    ranges["step"] = _steps_of(trace, host["ts_us"].to_numpy())
    ranges = ranges.sort_values("start_us", kind="stable").reset_index(drop=True)
    ranges["ordinal"] = ranges.groupby(["step", "group", "name"]).cumcount()
    return ranges[["name", "group", "step", "ordinal", "start_us", "end_us"]]


def _groups(events: pd.DataFrame, host: pd.DataFrame) -> np.ndarray:
    """Each collective range's process group: the ``pg_name`` of the ``record_param_comms``
    op around it on the same thread ("" where there is none)."""
    params = events[(events["name"] == RECORD_PARAM_COMMS) & (events["pg_name"] != "")]
    groups = np.full(len(host), "", dtype=object)
    if params.empty or host.empty:
        return groups
    for tid, rows in params.groupby("tid", observed=True):
        mine = np.flatnonzero(host["tid"].to_numpy() == tid)
        starts = rows["ts_us"].to_numpy()
        index = np.searchsorted(starts, host["ts_us"].to_numpy()[mine], side="right") - 1
        inside = (index >= 0) & (
            rows["end_us"].to_numpy()[np.maximum(index, 0)] >= host["end_us"].to_numpy()[mine]
        )
        names = rows["pg_name"].astype(str).to_numpy()[np.maximum(index, 0)]
        groups[mine[inside]] = names[inside]
    return groups


def _device_spans(events: pd.DataFrame, host: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Each collective range's kernels' first start and last end (NaN without kernels): the
    kernels whose launch call lies inside the range, on its thread."""
    first = np.full(len(host), np.nan)
    last = np.full(len(host), np.nan)
    launches = events[events["kind"].isin(LAUNCH_KINDS) & (events["correlation"] != MISSING_INT)]
    kernels = events[events["kind"].isin((KERNEL, COMMUNICATION))]
    if host.empty or launches.empty or kernels.empty:
        return first, last
    owner = pd.Series(_owning_range(host, launches), index=launches["correlation"].to_numpy())
    owner = owner[(owner >= 0) & ~owner.index.duplicated(keep="last")]
    which = kernels["correlation"].map(owner).dropna().astype(np.int64)
    spans = pd.DataFrame(
        {
            "range": which.to_numpy(),
            "ts": kernels.loc[which.index, "ts_us"].to_numpy(),
            "end": kernels.loc[which.index, "end_us"].to_numpy(),
        }
    ).groupby("range")
    starts, ends = spans["ts"].min(), spans["end"].max()
    first[starts.index.to_numpy()] = starts.to_numpy()
    last[ends.index.to_numpy()] = ends.to_numpy()
    return first, last


def _owning_range(host: pd.DataFrame, calls: pd.DataFrame) -> np.ndarray:
    """For each call, the position in ``host`` of the range on its thread that holds it, or -1.
    Collective ranges of one thread do not nest, so the last one starting before the call is
    the only candidate."""
    owner = np.full(len(calls), -1, dtype=np.int64)
    host_tid = host["tid"].to_numpy()
    call_tid = calls["tid"].to_numpy()
    for tid in np.unique(host_tid):
        mine = np.flatnonzero(host_tid == tid)
        order = mine[np.argsort(host["ts_us"].to_numpy()[mine], kind="stable")]
        starts = host["ts_us"].to_numpy()[order]
        ends = host["end_us"].to_numpy()[order]
        picked = np.flatnonzero(call_tid == tid)
        index = np.searchsorted(starts, calls["ts_us"].to_numpy()[picked], side="right") - 1
        inside = (index >= 0) & (calls["end_us"].to_numpy()[picked] <= ends[np.maximum(index, 0)])
        owner[picked[inside]] = order[index[inside]]
    return owner


def _steps_of(trace: TraceTable, times: np.ndarray) -> np.ndarray:
    """The step number whose host range holds each time (:data:`NO_STEP` if none)."""
    steps = step_table(trace)
    starts = steps["host_ts_us"].to_numpy()
    index = np.searchsorted(starts, times, side="right") - 1
    safe = np.maximum(index, 0)
    if not len(starts):
        return np.full(len(times), NO_STEP, dtype=np.int64)
    inside = (index >= 0) & (times < steps["host_end_us"].to_numpy()[safe])
    return np.where(inside, steps["step"].to_numpy()[safe], NO_STEP).astype(np.int64)


@per_trace
def rank_steps(trace: TraceTable) -> pd.DataFrame:
    """One row per step of the trace's rank: its span, its wait in collectives, its work before
    them and its breakdown.

    Returns:
        Columns :data:`STEP_COLUMNS`: ``rank``; ``step`` (N of ``ProfilerStep#N``);
        ``start_us``, ``end_us``, ``dur_us``, the step's span
        (:func:`profiler.analysis.steps.step_table`) on the rank's wall clock;
        ``comm_wait_us``, the time inside the step during which a collective span is open
        (module doc: device side for NCCL kernels, host side for gloo), overlaps counted once;
        ``pre_comm_us``, from the step's start until it entered its first collective (the
        whole step without one); ``<category>_us``, the step's breakdown
        (:func:`profiler.analysis.steps.step_breakdown`).
    """
    table = step_table(trace)
    breakdown = step_breakdown(trace)
    shift = wall_offset_us(trace)
    spans = collective_spans(trace)
    starts, ends = table["ts_us"].to_numpy(), table["end_us"].to_numpy()
    merged = merge_intervals(spans["start_us"].to_numpy(), spans["end_us"].to_numpy())
    wait = np.array([_covered_us(merged, s, e) for s, e in zip(starts, ends, strict=True)])
    first = np.array([_first_entry(merged[0], s, e) for s, e in zip(starts, ends, strict=True)])
    frame = pd.DataFrame(
        {
            "rank": np.full(len(table), trace.rank, dtype=np.int64),
            "step": table["step"].to_numpy(dtype=np.int64),
            "start_us": starts + shift,
            "end_us": ends + shift,
            "dur_us": table["dur_us"].to_numpy(),
            "comm_wait_us": wait.astype(np.float64),
            "pre_comm_us": (first - starts).astype(np.float64),
        }
    )
    for category in CATEGORIES:
        frame[f"{category}_us"] = breakdown[f"{category}_us"].to_numpy()
    return frame[list(STEP_COLUMNS)]


def _covered_us(merged: tuple[np.ndarray, np.ndarray], start: float, end: float) -> float:
    """How much of ``[start, end]`` the disjoint intervals cover."""
    lengths = np.minimum(merged[1], end) - np.maximum(merged[0], start)
    return float(lengths[lengths > 0].sum())


def _first_entry(merged_starts: np.ndarray, start: float, end: float) -> float:
    """When the first collective opened inside ``[start, end)``; ``end`` if none did (one
    already open at ``start`` counts as entered at ``start``)."""
    index = np.searchsorted(merged_starts, start, side="left")
    if index < len(merged_starts) and merged_starts[index] < end:
        return float(merged_starts[index])
    return end


@per_trace
def collective_ends(trace: TraceTable) -> pd.DataFrame:
    """One row per collective of the trace's rank, keyed so the same collective has the same
    key on every rank.

    Returns:
        Columns :data:`COLLECTIVE_COLUMNS`: ``rank``; ``key``,
        ``"<group>/<op>/<step>/<ordinal>"`` (the process group, "" where the trace does not
        say; the op, e.g. ``all_reduce``; the ``ProfilerStep`` number, -1 outside steps; the
        collective's place among that step's collectives of that op and group); ``step``;
        ``start_us``, when this rank entered it (arrived), and ``end_us``, when it completed,
        on the rank's wall clock (module doc).
    """
    spans = collective_spans(trace)
    shift = wall_offset_us(trace)
    keys = (
        spans["group"]
        + "/"
        + spans["name"]
        + "/"
        + spans["step"].astype(str)
        + "/"
        + spans["ordinal"].astype(str)
    )
    return pd.DataFrame(
        {
            "rank": np.full(len(spans), trace.rank, dtype=np.int64),
            "key": keys.astype(str).to_numpy(),
            "step": spans["step"].to_numpy(dtype=np.int64),
            "start_us": spans["start_us"].to_numpy() + shift,
            "end_us": spans["end_us"].to_numpy() + shift,
        }
    )

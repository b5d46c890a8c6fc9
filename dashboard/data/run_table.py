"""One row per run under the root, for the Runs page: read from each run's ``meta/`` alone.

The list is cheap by design: ``run.json`` (with every rank's record merged) and the step logs
are read, never a trace file, so a root of hundreds of runs lists in the time of their step
logs. The figures are ``profiler.analysis.diff.step_log_stats``'s, as ``trainprof diff``
compares them; the status is :meth:`Run.status`'s (every rank's merged), taken afresh at
each call (a heartbeat stops without any file changing).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from profiler.analysis.diff import finished_steps, has_figure, step_log_stats
from profiler.analysis.run import Run, RunSet
from profiler.store.liveness import run_state

__all__ = ["RunRow", "run_rows", "step_durations"]

_GPU_UTIL_SUFFIX = "util_pct"  # the sampler's gpu<N>_util_pct (NVML), per step where sampled


@dataclass(frozen=True)
class RunRow:
    """What the Runs page shows of one run.

    Attributes:
        name: the run's name (its path under the root, ``/`` separated).
        status: the status word (``running``, ``complete``, ``failed``, ``interrupted``,
            ``degraded``, ``unknown``; ``None`` for traces without metadata).
        reason: why, in words, when the status carries one (``no heartbeat since ...``, the
            error of a failed run, the reason a run degraded); None otherwise.
        started: when it started, ``YYYY-MM-DD HH:MM:SS`` UTC (from ``run.json``, else its first
            logged step); None when neither says.
        started_unix_s: the same as a unix time, for sorting.
        steps: finished steps in its step logs (every rank).
        mean_step_us: their mean duration.
        data_wait_pct: the wait for data as a share of the step time.
        gpu_util_pct: the mean GPU utilisation the sampler recorded (every GPU); None without one.
        peak_memory_bytes: the highest peak the step logs record.
        trace_files: how many trace files the run holds.
    """

    name: str
    status: str | None
    reason: str | None
    started: str | None
    started_unix_s: float | None
    steps: int
    mean_step_us: float | None
    data_wait_pct: float | None
    gpu_util_pct: float | None
    peak_memory_bytes: int | None
    trace_files: int

    def to_dict(self) -> dict[str, Any]:
        """The row as the grid takes it."""
        return asdict(self)


def run_rows(root: str | Path, *, now: float | None = None) -> list[RunRow]:
    """One :class:`RunRow` per run under ``root``, by name (empty when the root does not exist).

    Args:
        root: the trace root.
        now: the current unix time for the status (tests pass a fixed one).
    """
    return [_row(run, now) for run in RunSet(root)]


def step_durations(root: str | Path, names: Iterable[str]) -> dict[str, list[float]]:
    """Each named run's finished step durations (µs) from its step logs, every rank pooled;
    names that are not runs under ``root`` (or lead outside it) are left out."""
    runs = {run.name: run for run in RunSet(root)}
    return {
        name: [float(r["dur_us"]) for r in finished_steps(runs[name].steps())]
        for name in names
        if name in runs
    }


def _row(run: Run, now: float | None) -> RunRow:
    meta = run.meta.meta or {}
    records = run.steps()
    stats = step_log_stats(records)
    state = run_state(meta, now=now) if run.meta.meta is not None else None
    started_s = _started_unix_s(meta, records)
    return RunRow(
        name=run.name,
        status=None if state is None else state.status,
        reason=None if state is None else state.reason,
        started=None if started_s is None else _utc(started_s),
        started_unix_s=started_s,
        steps=0 if stats is None else stats.steps,
        mean_step_us=None if stats is None else stats.mean_us,
        data_wait_pct=None if stats is None else stats.data_wait_pct,
        gpu_util_pct=_gpu_util_pct(finished_steps(records)),
        peak_memory_bytes=None if stats is None else stats.peak_memory_bytes,
        trace_files=len(run.trace_paths),
    )


def _started_unix_s(meta: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> float | None:
    if has_figure(meta, "started_unix_s"):
        return float(meta["started_unix_s"])
    starts = [float(r["start_unix_us"]) / 1e6 for r in records if has_figure(r, "start_unix_us")]
    return min(starts) if starts else None


def _gpu_util_pct(records: Sequence[Mapping[str, Any]]) -> float | None:
    values = [
        float(value)
        for record in records
        for key, value in record.items()
        if key.startswith("gpu") and key.endswith(_GPU_UTIL_SUFFIX) and has_figure(record, key)
    ]
    return sum(values) / len(values) if values else None


def _utc(unix_s: float) -> str | None:
    if not math.isfinite(unix_s) or not 0 <= unix_s < 1e11:
        return None
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(unix_s))

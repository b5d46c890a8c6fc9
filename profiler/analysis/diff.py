"""Run-to-run comparison: per-category, per-op and per-kernel time per step, base vs new.

Runs with several trace files (windows, ranks) are pooled: totals over every file divided by the
total number of steps, so a run captured with more windows does not look slower.

When both runs have always-on step logs (``meta/steps.<rank>.jsonl``: every step, not only the
deep windows), they are compared too: step time, data wait, the forward/backward/optimizer split
and peak memory over all their steps (:class:`StepLogStats`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from profiler.analysis.guards import analysis_error
from profiler.analysis.kernels import top_kernels
from profiler.analysis.memory import MemoryPeak, memory_peak
from profiler.analysis.ops import top_ops
from profiler.analysis.report import rounded
from profiler.analysis.run import Run
from profiler.analysis.steps import CATEGORIES, step_breakdown
from profiler.analysis.table import TraceSet, TraceTable

SCHEMA = "trainprof.diff/1"
TOP_N = 20
#: The step phases the always-on path times on a sample of the steps.
PHASES = ("forward", "backward", "optimizer")
#: The step-log figures compared in percent (``step_logs.change_pct``): not the counts.
STEP_LOG_CHANGED = (
    "mean_us", "p50_us", "p90_us", "max_us", "data_wait_us", "data_wait_pct",
    "forward_us", "backward_us", "optimizer_us", "peak_memory_bytes",
)  # fmt: skip


@dataclass(frozen=True)
class DurationStats:
    """Count, mean and percentiles of step durations, in us (0.0 each when there are none).

    Percentiles interpolate linearly between the two nearest steps (numpy's default).
    """

    count: int
    mean_us: float
    p50_us: float
    p90_us: float
    max_us: float


def duration_stats(durations_us: Iterable[float]) -> DurationStats:
    """:class:`DurationStats` of ``durations_us``."""
    values = np.fromiter(durations_us, dtype=float)
    if not len(values):
        return DurationStats(0, 0.0, 0.0, 0.0, 0.0)
    p50, p90 = np.percentile(values, [50, 90])
    return DurationStats(len(values), float(values.mean()), float(p50), float(p90),
                         float(values.max()))  # fmt: skip


@dataclass(frozen=True)
class RunTotals:
    """One side of a diff: time per step by category, op and kernel, from its trace files."""

    steps: int
    step_us: float
    categories_us: dict[str, float]
    ops: pd.DataFrame  # name, calls, self_us, total_us: per step
    kernels: pd.DataFrame  # name, calls, total_us: per step
    step_stats: DurationStats
    memory_peak: MemoryPeak | None  # the highest over the files (None: no memory samples)


@dataclass(frozen=True)
class StepLogStats:
    """A run's always-on step logs, every rank pooled.

    Steps an exception cut short (``completed: false``) and lines without a ``dur_us`` are left
    out; every other step counts, those inside deep windows included.

    Attributes:
        steps: how many steps were counted.
        ranks: how many ranks' logs they came from.
        mean_us, p50_us, p90_us, max_us: step time (``dur_us``).
        data_wait_us: the mean wait for a batch per step (None: no step records one).
        data_wait_pct: the waits' share of the step time of the steps that record one.
        forward_us, backward_us, optimizer_us: each phase's mean over the steps where it was
            timed (a sample of the steps, see README); None where none was.
        timed_steps: how many steps have any of the three phases timed.
        peak_memory_bytes: the highest ``peak_memory_bytes`` (CUDA: the allocator's peak
            allocated bytes; CPU: the process's peak RSS); None where no step records one.
    """

    steps: int
    ranks: int
    mean_us: float
    p50_us: float
    p90_us: float
    max_us: float
    data_wait_us: float | None
    data_wait_pct: float | None
    forward_us: float | None
    backward_us: float | None
    optimizer_us: float | None
    timed_steps: int
    peak_memory_bytes: int | None

    def to_dict(self) -> dict[str, Any]:
        """The figures rounded to two decimals, as ``trainprof.diff/1`` holds them."""
        return {key: _round(value) for key, value in asdict(self).items()}


@dataclass(frozen=True)
class RunFigures:
    """Everything a diff or a gate compares of one run.

    Attributes:
        totals: the pooled trace figures.
        step_log: the step logs' figures; None when the run has none.
        device: ``cuda`` or ``cpu`` as ``meta/run.json`` records it, else the first trace's;
            None when neither says.
    """

    totals: RunTotals
    step_log: StepLogStats | None
    device: str | None


@dataclass(frozen=True)
class TraceTotals:
    """One trace file's share of :class:`RunTotals`; what a per-rank summary keeps of it.

    Attributes:
        steps: :func:`profiler.analysis.steps.step_breakdown` of the file.
        ops: every CPU op: ``name``, ``calls``, ``self_us``, ``total_us`` (whole file).
        kernels: every kernel: ``name``, ``calls``, ``total_us`` (whole file).
        memory_peak: the file's memory peak (None: no memory samples).
    """

    steps: pd.DataFrame
    ops: pd.DataFrame
    kernels: pd.DataFrame
    memory_peak: MemoryPeak | None


def trace_totals(trace: TraceTable) -> TraceTotals:
    """:class:`TraceTotals` of one loaded trace.

    Raises:
        TraceFormatError: the trace's content is beyond what the analyses take; names the file.
    """
    try:
        return TraceTotals(
            steps=step_breakdown(trace),
            ops=top_ops(trace, n=None)[["name", "calls", "self_us", "total_us"]],
            kernels=top_kernels(trace, n=1_000_000)[["name", "calls", "total_us"]],
            memory_peak=memory_peak(trace),
        )
    except Exception as exc:  # noqa: BLE001 - said as the file's error, never a crash
        raise analysis_error(trace.path, exc) from exc


def run_totals(traces: TraceSet) -> RunTotals:
    """Pool every trace of a run into per-step figures.

    Raises:
        TraceFormatError: a trace's content is beyond what the analyses take; names the file.
    """
    return pool_totals(trace_totals(trace) for trace in traces.traces)


def pool_totals(parts: Iterable[TraceTotals]) -> RunTotals:
    """Pool the files of a run (:func:`trace_totals`, or per-rank summaries') per step."""
    steps, step_us = 0, 0.0
    categories = dict.fromkeys(CATEGORIES, 0.0)
    ops, kernels, durations, peaks = [], [], [], []
    for part in parts:
        breakdown = part.steps
        ops.append(part.ops)
        kernels.append(part.kernels)
        peaks.append(part.memory_peak)
        steps += len(breakdown)
        step_us += float(breakdown["dur_us"].sum())
        durations.append(breakdown["dur_us"].to_numpy(dtype=float))
        for category in CATEGORIES:
            categories[category] += float(breakdown[f"{category}_us"].sum())
    per = max(steps, 1)
    found = [peak for peak in peaks if peak is not None]
    return RunTotals(
        steps=steps,
        step_us=step_us / per,
        categories_us={key: value / per for key, value in categories.items()},
        ops=_pooled(ops, ["calls", "self_us", "total_us"], per),
        kernels=_pooled(kernels, ["calls", "total_us"], per),
        step_stats=duration_stats(np.concatenate(durations) if durations else ()),
        memory_peak=max(found, key=lambda peak: peak.allocated_bytes) if found else None,
    )


def step_log_stats(records: Iterable[Mapping[str, Any]]) -> StepLogStats | None:
    """The figures of a run's step records (:meth:`Run.steps`: each with its ``rank``).

    Returns:
        None when no record is a finished step with a ``dur_us``.
    """
    done = finished_steps(records)
    if not done:
        return None
    stats = duration_stats(float(r["dur_us"]) for r in done)
    waited = [r for r in done if has_figure(r, "data_wait_us")]
    wait_us = sum(float(r["data_wait_us"]) for r in waited)
    waited_step_us = sum(float(r["dur_us"]) for r in waited)
    timed = {phase: [r for r in done if has_figure(r, f"{phase}_us")] for phase in PHASES}
    peaks = [int(r["peak_memory_bytes"]) for r in done if has_figure(r, "peak_memory_bytes")]
    return StepLogStats(
        steps=stats.count,
        ranks=len({r.get("rank", 0) for r in done}),
        mean_us=stats.mean_us,
        p50_us=stats.p50_us,
        p90_us=stats.p90_us,
        max_us=stats.max_us,
        data_wait_us=wait_us / len(waited) if waited else None,
        data_wait_pct=100.0 * wait_us / waited_step_us if waited_step_us > 0 else None,
        forward_us=_mean(timed["forward"], "forward_us"),
        backward_us=_mean(timed["backward"], "backward_us"),
        optimizer_us=_mean(timed["optimizer"], "optimizer_us"),
        timed_steps=sum(any(has_figure(r, f"{phase}_us") for phase in PHASES) for r in done),
        peak_memory_bytes=max(peaks) if peaks else None,
    )


def run_figures(traces: TraceSet, runs: Sequence[Run] = ()) -> RunFigures:
    """One side of a diff or a gate: ``traces`` pooled, and the step logs of ``runs``.

    Args:
        traces: the run's loaded trace files.
        runs: where its step logs are (a :class:`Run` of a trace file or a root has none of
            its own); every record of every one is pooled.

    Raises:
        TraceFormatError: a trace's content is beyond what the analyses take; names the file.
    """
    totals = [trace_totals(trace) for trace in traces.traces]
    return pooled_figures(totals, [t.device for t in traces.traces], runs)


def pooled_figures(
    totals: Sequence[TraceTotals], devices: Sequence[str], runs: Sequence[Run] = ()
) -> RunFigures:
    """:func:`run_figures` of files already reduced to their totals (per-rank summaries).

    Args:
        totals: each file's :class:`TraceTotals`.
        devices: each file's device (``TraceTable.device``).
        runs: where the step logs are (see :func:`run_figures`).
    """
    recorded = [_recorded_device(run) for run in runs] + list(devices)
    return RunFigures(
        totals=pool_totals(totals),
        step_log=step_log_stats(record for run in runs for record in run.steps()),
        device=next((device for device in recorded if device), None),
    )


def _recorded_device(run: Run) -> str | None:
    environment = (run.meta.meta or {}).get("environment")
    device = environment.get("device") if isinstance(environment, dict) else None
    return device if isinstance(device, str) and device else None


def finished_steps(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The step records :class:`StepLogStats` counts: finished (not ``completed: false``), with
    a ``dur_us``."""
    return [r for r in records if r.get("completed", True) is not False
            and has_figure(r, "dur_us")]  # fmt: skip


def has_figure(record: Mapping[str, Any], key: str) -> bool:
    """Whether a step record holds a finite number (not a bool) at ``key``."""
    value = record.get(key)
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _mean(records: list[Mapping[str, Any]], key: str) -> float | None:
    return sum(float(r[key]) for r in records) / len(records) if records else None


def _round(value: Any) -> Any:
    return rounded(value) if isinstance(value, float) else value


def _pooled(frames: list[pd.DataFrame], columns: list[str], steps: int) -> pd.DataFrame:
    if not frames:
        return pd.DataFrame(columns=["name", *columns])
    pooled = pd.concat(frames).astype({"name": str}).groupby("name", as_index=False)[columns].sum()
    pooled[columns] = pooled[columns] / steps
    return pooled


def diff_runs(
    base: TraceSet, new: TraceSet, *, top: int = TOP_N, base_runs: Sequence[Run] = (),
    new_runs: Sequence[Run] = (),
) -> dict[str, Any]:  # fmt: skip
    """The ``trainprof.diff/1`` dict: what changed per step from ``base`` to ``new``.

    ``base_runs`` and ``new_runs`` say where each side's step logs are (see
    :func:`run_figures`); :func:`diff_figures` takes the figures already computed.

    Raises:
        TraceFormatError: a trace's content is beyond what the analyses take; names the file.
    """
    return diff_figures(run_figures(base, base_runs), run_figures(new, new_runs), top=top)


def diff_figures(base: RunFigures, new: RunFigures, *, top: int = TOP_N) -> dict[str, Any]:
    """The ``trainprof.diff/1`` dict of two runs' figures.

    Returns:
        ``step_us`` (base, new, delta, delta_pct), ``categories`` (one row per step-breakdown
        category), ``ops`` and ``kernels`` (the ``top`` names with the largest absolute change
        in self/total time per step; an op absent on one side counts 0 there), and
        ``step_logs``: ``{"base": {...}, "new": {...}, "change_pct": {...}}`` with the
        :class:`StepLogStats` of each side and the percent change of each figure (None where
        the base is 0 or a side lacks it), or None unless both runs have step logs.
    """
    a, b = base.totals, new.totals
    return {
        "schema": SCHEMA,
        "steps": {"base": a.steps, "new": b.steps},
        "step_us": _change(a.step_us, b.step_us),
        "categories": [
            {"category": key, **_change(a.categories_us[key], b.categories_us[key])}
            for key in CATEGORIES
        ],
        "ops": _changes(a.ops, b.ops, "self_us", top),
        "kernels": _changes(a.kernels, b.kernels, "total_us", top),
        "step_logs": _step_logs(base.step_log, new.step_log),
    }


def _step_logs(base: StepLogStats | None, new: StepLogStats | None) -> dict[str, Any] | None:
    if base is None or new is None:
        return None
    changed = {key: _pct(getattr(base, key), getattr(new, key)) for key in STEP_LOG_CHANGED}
    return {"base": base.to_dict(), "new": new.to_dict(), "change_pct": changed}


def change_pct(base: float, new: float) -> float | None:
    """``new`` against ``base`` in percent; None when ``base`` is 0 (no percentage says it)."""
    return 100.0 * (new - base) / base if base else None


def _pct(base: float | None, new: float | None) -> float | None:
    if base is None or new is None:
        return None
    return rounded(change_pct(base, new))


def _change(base: float, new: float) -> dict[str, float | None]:
    delta = new - base
    return {
        "base": round(base, 2),
        "new": round(new, 2),
        "delta": round(delta, 2),
        "delta_pct": rounded(change_pct(base, new)),
    }


def _changes(base: pd.DataFrame, new: pd.DataFrame, value: str, top: int) -> list[dict[str, Any]]:
    joined = base.merge(new, on="name", how="outer", suffixes=("_base", "_new")).fillna(0.0)
    joined["delta"] = joined[f"{value}_new"] - joined[f"{value}_base"]
    joined = joined.reindex(joined["delta"].abs().sort_values(ascending=False).index).head(top)
    return [
        {
            "name": row.name,
            "calls_base": round(float(row.calls_base), 2),
            "calls_new": round(float(row.calls_new), 2),
            **_change(float(getattr(row, f"{value}_base")), float(getattr(row, f"{value}_new"))),
        }
        for row in joined.itertuples(index=False)
    ]

"""The ``trainprof.summary/1`` dict: what ``trainprof summary --json`` prints for each trace."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pandas as pd

from profiler.analysis.diff import (
    PHASES,
    StepLogStats,
    finished_steps,
    has_figure,
    step_log_stats,
)
from profiler.analysis.distributed import collective_ends, distributed_entry, rank_steps
from profiler.analysis.facts import trace_facts
from profiler.analysis.gpu import gpu_metrics
from profiler.analysis.guards import analysis_error
from profiler.analysis.kernels import top_kernels
from profiler.analysis.memo import per_trace
from profiler.analysis.memory import memory_peak
from profiler.analysis.ops import top_ops
from profiler.analysis.report import (
    GpuSummary,
    MemorySummary,
    SlowStep,
    StepLogReport,
    StepStats,
    TemporalSummary,
    TopKernel,
    TopOp,
    TopOpByShape,
    TraceSummary,
    rounded,
)
from profiler.analysis.rules import (
    DATALOADER_PCT,
    HIGH_SEVERITY_PCT,
    Recommendation,
    recommend,
    severity_rank,
)
from profiler.analysis.run import Run, RunSet
from profiler.analysis.steps import CATEGORIES, average_breakdown_pct, step_table
from profiler.analysis.table import TraceSet, TraceTable, find_trace_files
from profiler.analysis.temporal import temporal_breakdown
from profiler.analysis.triggers import window_trigger
from profiler.analysis.verdict import Verdict, leading, verdict
from profiler.store.chrome_trace import TraceFormatError

if TYPE_CHECKING:  # rank_summary.py builds on this module
    from profiler.analysis.rank_summary import RankSummary

SCHEMA = "trainprof.summary/1"
TOP_N = 10
TOP_OP_COLUMNS = ("name", "calls", "self_us", "total_us")
TOP_KERNEL_COLUMNS = ("name", "calls", "total_us", "mean_us")
#: The summary's ``step_breakdown_pct`` keys: the breakdown's categories, in their order.
BREAKDOWN_KEYS = CATEGORIES
#: How the step logs' finding estimates its saving, as the verdict says it.
STEP_LOG_METHOD = "the mean data wait per step over every logged step (data_wait_us)"
#: How many of the longest steps the step-log report lists.
SLOWEST_STEPS = 5


def summarize(
    path: str | Path, *, progress: bool = False, by_shape: bool = False, dask: str | None = None
) -> dict[str, Any]:
    """Summarise every trace at ``path``, with the step logs of the runs there (the
    ``trainprof.summary/1`` dict).

    Each file is summarised on its own (:mod:`profiler.analysis.fanout`: in this process, or on
    Dask workers for many files), and the report is built from those per-rank summaries: no
    two traces are in memory at once. Files that fail to load or to be analysed are left out;
    :func:`profiler.analysis.fanout.summarize_files` gives access to their errors.

    Args:
        path: a trace file, a run directory or a root of runs.
        progress: show a progress bar while summarising.
        by_shape: group the top ops by name and input shapes.
        dask: a Dask scheduler address, or ``"local"`` (see ``summarize_files``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        TraceFormatError: ``path`` is a single file that cannot be loaded.
        DaskUnavailable: ``dask`` was given and cannot be used.
    """
    from profiler.analysis.fanout import summarize_files
    from profiler.analysis.rank_summary import in_run_order

    files = find_trace_files(path)
    results = summarize_files(files, dask=dask, by_shape=by_shape, progress=progress)
    if Path(path).is_file() and isinstance(results[0], TraceFormatError):
        raise results[0]
    summaries = in_run_order(r for r in results if not isinstance(r, TraceFormatError))
    return summarize_ranks(summaries, runs=step_log_runs([path]))


def summarize_ranks(
    summaries: Sequence[RankSummary], *, runs: Sequence[Run] = ()
) -> dict[str, Any]:
    """The summary dict of per-rank summaries (:mod:`profiler.analysis.rank_summary`), in
    their order, and the step logs of ``runs``: what :func:`summarize_traces` gives for the
    traces they summarise, without the traces."""
    logs = step_log_report(runs)
    frames = [(summary.path, summary.rank_steps, summary.collectives) for summary in summaries]
    report = {
        "schema": SCHEMA,
        "traces": [summary.entry for summary in summaries],
        "step_logs": None if logs is None else logs.to_dict(),
        "distributed": distributed_entry(frames),
    }
    return {**report, "verdict": summary_verdict(report).to_dict()}


def summarize_set(traces: TraceSet) -> dict[str, Any]:
    """The summary dict of already loaded traces (those that can be analysed)."""
    return summarize_traces(traces)[0]


def summarize_traces(
    traces: TraceSet, *, runs: Sequence[Run] = (), by_shape: bool = False
) -> tuple[dict[str, Any], tuple[TraceFormatError, ...]]:
    """The summary dict of the traces that can be analysed, and an error per file that cannot
    be loaded (``traces.errors``) or analysed, each naming the file.

    Args:
        traces: the loaded traces.
        runs: the runs whose step logs make the summary's ``step_logs`` (None without any).
        by_shape: group the top ops by name and input shapes.
    """
    entries: list[dict[str, Any]] = []
    errors = list(traces.errors)
    frames: list[tuple[Path, pd.DataFrame, pd.DataFrame]] = []
    for trace in traces.traces:
        try:
            entry = trace_summary(trace, by_shape=by_shape)
            frame = (trace.path, rank_steps(trace), collective_ends(trace))
        except TraceFormatError as exc:
            errors.append(exc)
            continue
        except Exception as exc:  # noqa: BLE001 - one trace's problem, not the whole summary's
            errors.append(analysis_error(trace.path, exc))
            continue
        entries.append(entry)
        frames.append(frame)
    logs = step_log_report(runs)
    step_logs = None if logs is None else logs.to_dict()
    summary = {"schema": SCHEMA, "traces": entries, "step_logs": step_logs}
    summary["verdict"] = summary_verdict(summary).to_dict()
    return {**summary, "distributed": distributed_entry(frames)}, tuple(errors)


def trace_summary(trace: TraceTable, *, by_shape: bool = False) -> dict[str, Any]:
    """One trace's entry in the summary: :func:`trace_report`'s JSON form.

    Raises:
        TraceFormatError: see :func:`trace_report`.
    """
    return trace_report(trace, by_shape=by_shape).to_dict()


@per_trace
def trace_report(trace: TraceTable, by_shape: bool = False) -> TraceSummary:
    """One trace's summary, typed; computed once per loaded trace (and grouping).

    Args:
        trace: a loaded trace.
        by_shape: top ops per name and input shapes (:class:`TopOpByShape`), not per name.

    Raises:
        TraceFormatError: the trace's content is beyond what the analyses take (say, times
            that overflow); names the file, as a load error would.
    """
    try:
        return _trace_report(trace, by_shape)
    except Exception as exc:  # noqa: BLE001 - one trace's problem, not the whole summary's
        raise analysis_error(trace.path, exc) from exc


def _trace_report(trace: TraceTable, by_shape: bool) -> TraceSummary:
    steps = step_table(trace)
    breakdown = average_breakdown_pct(trace)
    gpu = gpu_metrics(trace)
    temporal = temporal_breakdown(trace)
    peak = memory_peak(trace)
    facts = trace_facts(trace, steps=steps, breakdown_pct=breakdown, gpu=gpu, peak=peak)
    return TraceSummary(
        path=str(trace.path),
        rank=trace.rank,
        device=trace.device,
        events=trace.event_count,
        steps=_step_stats(steps["dur_us"]),
        step_breakdown_pct={key: rounded(breakdown.get(key, 0.0)) for key in CATEGORIES},
        gpu=None if gpu is None else GpuSummary(
            rounded(gpu.utilization_pct), rounded(gpu.sm_efficiency_pct),
            rounded(gpu.achieved_occupancy_pct), rounded(gpu.tensor_core_pct),
        ),
        temporal_breakdown_pct=None if temporal is None else TemporalSummary(
            rounded(temporal.idle_pct), rounded(temporal.compute_pct),
            rounded(temporal.non_compute_pct),
        ),
        top_ops=_top_ops(trace, by_shape),
        top_kernels=tuple(
            TopKernel(*row) for row in _rows(top_kernels(trace, n=TOP_N), TOP_KERNEL_COLUMNS)
        ),
        memory=None if peak is None else MemorySummary(
            peak.allocated_bytes, peak.reserved_bytes, peak.device, peak.capacity_bytes,
            rounded(peak.capacity_pct), peak.module, peak.op,
        ),
        recommendations=tuple(recommend(facts)),
        trigger=window_trigger(trace),
    )  # fmt: skip


def _top_ops(trace: TraceTable, by_shape: bool) -> tuple[TopOp, ...]:
    frame = top_ops(trace, n=TOP_N, group_by_shape=by_shape)
    rows = _rows(frame, TOP_OP_COLUMNS)
    if not by_shape:
        return tuple(TopOp(*row) for row in rows)
    dims = frame["input_dims"]
    return tuple(
        TopOpByShape(name, calls, self_us, total_us, _decoded(text))
        for (name, calls, self_us, total_us), text in zip(rows, dims, strict=True)
    )


def _decoded(input_dims: str) -> Any:
    """Kineto's ``Input Dims`` text as JSON values; None where no shapes were recorded (the
    text is kept as it is if it is not JSON)."""
    if not input_dims:
        return None
    try:
        return orjson.loads(input_dims)
    except orjson.JSONDecodeError:
        return input_dims


def _step_stats(durations: pd.Series) -> StepStats:
    if not len(durations):
        return StepStats(0, 0.0, 0.0, 0.0)
    mean, p50, top = (
        rounded(v) or 0.0 for v in (durations.mean(), durations.median(), durations.max())
    )
    return StepStats(len(durations), mean, p50, top)


def merged_recommendations(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """A run's recommendations once per rule, over all its traces (windows, ranks).

    Each rule keeps its worst finding (highest severity, then largest saving per step), with
    where it was seen and the range of each numeric evidence figure over the traces.

    Args:
        summary: a ``trainprof.summary/1`` dict.

    Returns:
        Worst first: the finding's fields plus ``path`` and ``rank`` (where the worst was),
        ``seen_in`` (every trace path showing the rule), ``ranks`` and ``evidence_range``
        (``{key: [low, high]}``).
    """
    found: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    for trace in summary["traces"]:
        for rec in trace["recommendations"]:
            found.setdefault(rec["id"], []).append((rec, trace))
    merged = [_merge(findings) for findings in found.values()]
    return sorted(merged, key=_badness, reverse=True)


def summary_verdict(summary: dict[str, Any]) -> Verdict:
    """The verdict over every trace of ``summary`` (a ``trainprof.summary/1`` dict), pooled as
    :func:`merged_recommendations` pools them: each rule once, at its worst trace, whose mean
    step the saving's share is of. Where no trace has a finding, the step logs' findings
    (``step_logs``, every logged step) give it, of their mean step."""
    merged = merged_recommendations(summary)
    top = leading(merged)
    logs = summary.get("step_logs")
    if top is None and logs and logs["recommendations"]:
        # No deep window shows a bottleneck (or there is none): every step's log may.
        found = [{**rec, "method": STEP_LOG_METHOD} for rec in logs["recommendations"]]
        return verdict(found, logs["mean_us"])
    steps = {trace["path"]: trace["steps"]["mean_us"] for trace in summary["traces"]}
    return verdict(merged, None if top is None else steps.get(top["path"]))


def _merge(findings: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    worst, trace = max(findings, key=lambda pair: _badness(pair[0]))
    numbers: dict[str, list[float]] = {}
    for rec, _ in findings:
        for key, value in (rec.get("evidence") or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                numbers.setdefault(key, []).append(float(value))
    return {
        **worst,
        "path": trace["path"],
        "rank": trace["rank"],
        "seen_in": [t["path"] for _, t in findings],
        "ranks": sorted({t["rank"] for _, t in findings}),
        "evidence_range": {key: [min(v), max(v)] for key, v in numbers.items()},
    }


def _badness(rec: dict[str, Any]) -> tuple[int, float]:
    # Worse sorts higher here (max, reverse=True): the rank negated.
    return -severity_rank(rec.get("severity")), float(rec.get("saving_us_per_step") or 0.0)


def _rows(frame: pd.DataFrame, columns: tuple[str, ...]) -> list[tuple[Any, ...]]:
    """``(name, calls, <figures>...)`` per row: name a str, calls an int, figures rounded."""
    return [
        (str(name), int(calls), *(rounded(v) for v in figures))
        for name, calls, *figures in frame[list(columns)].itertuples(index=False)
    ]


def step_log_runs(paths: Iterable[str | Path]) -> list[Run]:
    """The runs at ``paths`` (run directories, or roots of runs) that have step logs; a trace
    file has none."""
    return [run for path in paths if Path(path).is_dir() for run in RunSet(path) if run.step_files]


def step_log_report(runs: Sequence[Run]) -> StepLogReport | None:
    """The step logs of ``runs``, every rank and run pooled: :class:`StepLogReport`.

    The figures are :func:`profiler.analysis.diff.step_log_stats`'s, the ones ``trainprof
    diff`` and the gate compare. None when no run has a finished step with a ``dur_us``.
    """
    records = [record for run in runs for record in run.steps()]
    stats = step_log_stats(records)
    if stats is None:
        return None
    done = finished_steps(records)
    by_rank: dict[int, list[Mapping[str, Any]]] = {}
    for record in done:
        by_rank.setdefault(int(record.get("rank", 0)), []).append(record)
    per_rank = None
    if len(by_rank) > 1:
        ranked = {rank: step_log_stats(steps) for rank, steps in sorted(by_rank.items())}
        per_rank = tuple((rank, s) for rank, s in ranked.items() if s is not None)
    return StepLogReport(
        stats=stats,
        phase_pct={phase: _phase_pct(done, phase) for phase in PHASES},
        slowest_steps=_slowest(done),
        per_rank=per_rank,
        recommendations=_step_log_advice(stats),
        runs=tuple(str(run.path) for run in runs),
    )


def _phase_pct(done: Sequence[Mapping[str, Any]], phase: str) -> float | None:
    timed = [r for r in done if has_figure(r, f"{phase}_us")]
    step_us = sum(float(r["dur_us"]) for r in timed)
    return 100.0 * sum(float(r[f"{phase}_us"]) for r in timed) / step_us if step_us > 0 else None


def _slowest(done: Sequence[Mapping[str, Any]]) -> tuple[SlowStep, ...]:
    longest = sorted(done, key=lambda r: float(r["dur_us"]), reverse=True)[:SLOWEST_STEPS]
    return tuple(
        SlowStep(
            rank=int(r.get("rank", 0)),
            step=int(r["step"]),
            dur_us=rounded(r["dur_us"]),
            data_wait_us=rounded(r["data_wait_us"]) if has_figure(r, "data_wait_us") else None,
        )
        for r in longest
    )


def _step_log_advice(stats: StepLogStats) -> tuple[Recommendation, ...]:
    """The dataloader-bound finding from the step logs: the rule's own threshold, applied to the
    share of step time spent waiting for a batch over every logged step."""
    pct = stats.data_wait_pct
    if pct is None or pct <= DATALOADER_PCT:
        return ()
    message = (
        f"{pct:.1f}% of step time, over {stats.steps} logged steps, waits for the next batch: "
        "use DataLoader(num_workers=N, pin_memory=True, persistent_workers=True) or move "
        "preprocessing off the loop"
    )
    return (
        Recommendation(
            id="dataloader_bound",
            severity="high" if pct >= HIGH_SEVERITY_PCT else "medium",
            message=message,
            evidence={"data_wait_pct": rounded(pct), "source": "step_logs"},
            saving_us_per_step=rounded(stats.data_wait_us),
        ),
    )

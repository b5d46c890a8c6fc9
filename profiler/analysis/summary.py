"""The ``trainprof.summary/1`` dict: what ``trainprof summary --json`` prints for each trace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from profiler.analysis.facts import trace_facts
from profiler.analysis.gpu import gpu_metrics
from profiler.analysis.guards import analysis_error
from profiler.analysis.kernels import top_kernels
from profiler.analysis.memory import memory_peak
from profiler.analysis.ops import top_ops
from profiler.analysis.rules import recommend
from profiler.analysis.steps import average_breakdown_pct, step_table
from profiler.analysis.table import TraceSet, TraceTable, load
from profiler.analysis.temporal import temporal_breakdown
from profiler.store.chrome_trace import TraceFormatError

SCHEMA = "trainprof.summary/1"
TOP_N = 10
_SEVERITY_ORDER = {"low": 0, "medium": 1, "high": 2}
BREAKDOWN_KEYS = (
    "kernel", "memcpy", "memset", "communication", "runtime", "dataloader", "cpu_exec", "other",
)  # fmt: skip


def summarize(path: str | Path, *, progress: bool = False) -> dict[str, Any]:
    """Load every trace at ``path`` and summarise each (the ``trainprof.summary/1`` dict).

    Files that fail to load or to be analysed are left out; :func:`summarize_traces` with
    :func:`load` gives access to their errors.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        TraceFormatError: ``path`` is a single file that cannot be loaded.
    """
    return summarize_set(load(path, progress=progress))


def summarize_set(traces: TraceSet) -> dict[str, Any]:
    """The summary dict of already loaded traces (those that can be analysed)."""
    return summarize_traces(traces)[0]


def summarize_traces(traces: TraceSet) -> tuple[dict[str, Any], tuple[TraceFormatError, ...]]:
    """The summary dict of the traces that can be analysed, and an error per file that cannot
    be loaded (``traces.errors``) or analysed, each naming the file."""
    entries: list[dict[str, Any]] = []
    errors = list(traces.errors)
    for trace in traces.traces:
        try:
            entries.append(trace_summary(trace))
        except TraceFormatError as exc:
            errors.append(exc)
    return {"schema": SCHEMA, "traces": entries}, tuple(errors)


def trace_summary(trace: TraceTable) -> dict[str, Any]:
    """One trace's entry in the summary.

    Raises:
        TraceFormatError: the trace's content is beyond what the analyses take (say, times
            that overflow); names the file, as a load error would.
    """
    try:
        return _trace_summary(trace)
    except Exception as exc:  # noqa: BLE001 - one trace's problem, not the whole summary's
        raise analysis_error(trace.path, exc) from exc


def _trace_summary(trace: TraceTable) -> dict[str, Any]:
    steps = step_table(trace)
    breakdown = average_breakdown_pct(trace)
    gpu = gpu_metrics(trace)
    temporal = temporal_breakdown(trace)
    peak = memory_peak(trace)
    facts = trace_facts(trace, steps=steps, breakdown_pct=breakdown, gpu=gpu, peak=peak)
    durations = steps["dur_us"]
    return {
        "path": str(trace.path),
        "rank": trace.rank,
        "device": trace.device,
        "events": trace.event_count,
        "steps": {
            "count": len(steps),
            "mean_us": _round(durations.mean()) if len(steps) else 0.0,
            "p50_us": _round(durations.median()) if len(steps) else 0.0,
            "max_us": _round(durations.max()) if len(steps) else 0.0,
        },
        "step_breakdown_pct": {key: _round(breakdown.get(key, 0.0)) for key in BREAKDOWN_KEYS},
        "gpu": None
        if gpu is None
        else {
            "utilization_pct": _round(gpu.utilization_pct),
            "sm_efficiency_pct": _round(gpu.sm_efficiency_pct),
            "achieved_occupancy_pct": _round(gpu.achieved_occupancy_pct),
            "tensor_core_pct": _round(gpu.tensor_core_pct),
        },
        "temporal_breakdown_pct": None
        if temporal is None
        else {
            "idle": _round(temporal.idle_pct),
            "compute": _round(temporal.compute_pct),
            "non_compute": _round(temporal.non_compute_pct),
        },
        "top_ops": _records(top_ops(trace, n=TOP_N), ["name", "calls", "self_us", "total_us"]),
        "top_kernels": _records(
            top_kernels(trace, n=TOP_N), ["name", "calls", "total_us", "mean_us"]
        ),
        "memory": None
        if peak is None
        else {
            "peak_allocated_bytes": peak.allocated_bytes,
            "peak_reserved_bytes": peak.reserved_bytes,
            "device": peak.device,
            "capacity_bytes": peak.capacity_bytes,
            "capacity_pct": _round(peak.capacity_pct),
            "at_module": peak.module,
            "at_op": peak.op,
        },
        "recommendations": [rec.as_dict() for rec in recommend(facts)],
    }


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
    severity = _SEVERITY_ORDER.get(str(rec.get("severity")), 0)
    return severity, float(rec.get("saving_us_per_step") or 0.0)


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(float(value), digits)


def _records(frame: Any, columns: list[str]) -> list[dict[str, Any]]:
    rows = []
    for row in frame[columns].itertuples(index=False):
        item = dict(zip(columns, row, strict=True))
        item["name"] = str(item["name"])
        item["calls"] = int(item["calls"])
        for key in columns[2:]:
            item[key] = _round(item[key])
        rows.append(item)
    return rows

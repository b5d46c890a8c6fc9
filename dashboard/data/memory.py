"""The Memory and Modules pages' data: memory over time, the peak, per-module time and memory."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from dashboard.data.cache import RUN_CACHE_SIZE, gather, per_trace, records
from dashboard.data.runs import Fingerprint, trace_fingerprints
from profiler.analysis.memory import (
    MODULE_MEMORY_COLUMNS,
    device_series,
    memory_peak,
    memory_timeline,
    module_memory,
)
from profiler.analysis.modules import module_table
from profiler.analysis.table import TraceTable

MEMORY_TABLE_COLUMNS = ["trace", *MODULE_MEMORY_COLUMNS]
_MODULE_SUMS = ["calls", "forward_us", "forward_self_us", "backward_us", "backward_self_us"]
RUN_MODULE_COLUMNS = ["path", "class_name", "parent", "depth", *_MODULE_SUMS, "self_us"]


@dataclass(frozen=True)
class MemorySeries:
    """One trace file's allocated (and reserved) bytes on its chosen device over time.

    Attributes:
        trace: the file's name.
        device: ``cpu``, ``cuda:0``...
        source: which samples (``profiler.analysis.memory.SOURCE_PREFERENCE``).
        t_ms: milliseconds from the file's window start (its first event or sample).
        allocated_bytes: allocated bytes at each time.
        reserved_bytes: reserved bytes at each time, or None where the source gives none.
    """

    trace: str
    device: str
    source: str
    t_ms: tuple[float, ...]
    allocated_bytes: tuple[int, ...]
    reserved_bytes: tuple[float | None, ...] | None


@dataclass(frozen=True)
class RunMemory:
    """Run ``name``'s memory: one series per file, the highest peak, memory per module.

    Attributes:
        series: one per trace file with memory samples, in file order.
        peak: the highest of the files' ``memory_peak`` (as a dict of its fields plus
            ``capacity_pct``, ``trace`` and ``t_ms``), or None when no file has samples.
        peaks: every file's peak, the same way, in file order.
        modules: ``module_memory`` of every file, each row with its ``trace``
            (:data:`MEMORY_TABLE_COLUMNS`).
        errors: one message per file that could not be read, naming the file.
    """

    series: tuple[MemorySeries, ...]
    peak: dict[str, Any] | None
    peaks: tuple[dict[str, Any], ...]
    modules: tuple[dict[str, Any], ...]
    errors: tuple[str, ...]


@dataclass(frozen=True)
class RunModules:
    """Run ``name``'s module tree, summed over its trace files.

    Attributes:
        rows: one per module path in first-seen order (:data:`RUN_MODULE_COLUMNS`): ``calls``
            and the ``*_us`` columns summed over files; ``self_us`` is forward plus backward
            self time; ``class_name``, ``parent``, ``depth`` from the first file naming the path.
        errors: one message per file that could not be read, naming the file.
    """

    rows: tuple[dict[str, Any], ...]
    errors: tuple[str, ...]


@dataclass(frozen=True)
class _TraceMemory:
    series: MemorySeries | None
    peak: dict[str, Any] | None
    modules: tuple[dict[str, Any], ...]


def run_memory(root: str | Path, name: str) -> RunMemory:
    """Run ``name``'s memory over time, per trace file, cached per file.

    Each file contributes ``device_series`` of its ``memory_timeline`` on the default device
    (the accelerator with the highest allocation, else the CPU), its ``memory_peak`` on that
    device and its ``module_memory``.

    Raises:
        RunRefused: the name leads outside the root (see :func:`resolve_run`).
        RunNotFound: there is no run of that name.
    """
    return _cached_run_memory(trace_fingerprints(root, name))


def run_modules(root: str | Path, name: str) -> RunModules:
    """Run ``name``'s ``module_table`` summed over its trace files, cached per file.

    Raises:
        RunRefused: the name leads outside the root (see :func:`resolve_run`).
        RunNotFound: there is no run of that name.
    """
    return _cached_run_modules(trace_fingerprints(root, name))


@lru_cache(maxsize=RUN_CACHE_SIZE)
def _cached_run_memory(files: tuple[Fingerprint, ...]) -> RunMemory:
    series: list[MemorySeries] = []
    peaks: list[dict[str, Any]] = []
    modules: list[dict[str, Any]] = []
    loaded, errors = gather(files, _trace_memory)
    for result in loaded:
        if result.series is not None:
            series.append(result.series)
        if result.peak is not None:
            peaks.append(result.peak)
        modules.extend(result.modules)
    peak = max(peaks, key=lambda p: p["allocated_bytes"]) if peaks else None
    return RunMemory(
        series=tuple(series),
        peak=None if peak is None else dict(peak),
        peaks=tuple(peaks),
        modules=tuple(modules),
        errors=tuple(errors),
    )


@per_trace
def _trace_memory(trace: TraceTable, file: Path) -> _TraceMemory:
    """One trace file's memory series, peak and per-module memory."""
    timeline = memory_timeline(trace)
    if timeline.empty:
        return _TraceMemory(series=None, peak=None, modules=())
    chosen = device_series(timeline)
    device = str(chosen["device"].iloc[0])
    peak = memory_peak(trace, device)
    per_module = module_memory(trace, device)
    events = trace.events["ts_us"]
    start = float(chosen["ts_us"].min())
    if not events.empty:
        start = min(start, float(events.min()))
    reserved = chosen["reserved_bytes"]
    series = MemorySeries(
        trace=file.name,
        device=device,
        source=str(chosen["source"].iloc[0]),
        t_ms=tuple(float(t) for t in (chosen["ts_us"] - start) / 1000.0),
        allocated_bytes=tuple(int(b) for b in chosen["allocated_bytes"]),
        reserved_bytes=None
        if reserved.isna().all()
        else tuple(None if pd.isna(r) else float(r) for r in reserved),
    )
    peak_row: dict[str, Any] | None = None
    if peak is not None:
        peak_row = {
            **{field: getattr(peak, field) for field in peak.__dataclass_fields__},
            "capacity_pct": peak.capacity_pct,
            "trace": file.name,
            "t_ms": (peak.ts_us - start) / 1000.0,
        }
    table = per_module.assign(trace=file.name)[MEMORY_TABLE_COLUMNS]
    return _TraceMemory(series=series, peak=peak_row, modules=records(table))


@lru_cache(maxsize=RUN_CACHE_SIZE)
def _cached_run_modules(files: tuple[Fingerprint, ...]) -> RunModules:
    tables, errors = gather(files, _trace_modules)
    frames = [table for table in tables if not table.empty]
    return RunModules(rows=records(_pool_modules(frames)), errors=tuple(errors))


@per_trace
def _trace_modules(trace: TraceTable, file: Path) -> pd.DataFrame:
    """One trace file's ``module_table``."""
    return module_table(trace)


def _pool_modules(frames: list[pd.DataFrame]) -> pd.DataFrame:
    if not frames:
        return pd.DataFrame(columns=RUN_MODULE_COLUMNS)
    every = pd.concat(frames, ignore_index=True)
    pooled = every.groupby("path", sort=False).agg(
        class_name=("class_name", "first"),
        parent=("parent", "first"),
        depth=("depth", "first"),
        **{column: (column, "sum") for column in _MODULE_SUMS},
    )
    pooled["self_us"] = pooled["forward_self_us"] + pooled["backward_self_us"]
    return pooled.reset_index()[RUN_MODULE_COLUMNS]

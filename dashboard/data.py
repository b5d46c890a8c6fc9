"""Cached calls into ``profiler.analysis``: the dashboard's only import of ``profiler``.

Runs are directories under the trace root that hold trace files or ``meta/run.json``; a run's
name is its path relative to the root. Results are cached per trace file, keyed by the file's
path, size and mtime, and per run, keyed by those of every file in the run, so returning to a
run is instant while a new capture window or a rewritten file is read afresh.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import pandas as pd

from profiler.analysis.kernels import kernel_type_breakdown, top_kernels
from profiler.analysis.memory import (
    MODULE_MEMORY_COLUMNS,
    device_series,
    memory_peak,
    memory_timeline,
    module_memory,
)
from profiler.analysis.modules import module_table
from profiler.analysis.ops import top_ops
from profiler.analysis.steps import step_breakdown
from profiler.analysis.summary import SCHEMA, trace_summary
from profiler.analysis.table import is_trace_file, load_trace
from profiler.store.chrome_trace import TraceFormatError

META_DIR = "meta"
RUN_META = "run.json"
ROOT_CONFIG_KEY = "TRAINPROF_ROOT"
_STEPS_FILE = re.compile(r"^steps\.(\d+)\.jsonl$")
_TRACE_CACHE_SIZE = 128
_RUN_CACHE_SIZE = 32
_ALL_ROWS = 1 << 62  # top_kernels' n when every kernel is wanted
_KERNEL_COLUMNS = [
    "name",
    "kernel_type",
    "calls",
    "total_us",
    "mean_us",
    "min_us",
    "max_us",
    "time_pct",
    "grid",
    "block",
    "occupancy_pct",
]

# (path, size, mtime_ns): what a cached result depends on.
Fingerprint = tuple[str, int, int]


@dataclass(frozen=True)
class RunInfo:
    """A run the dashboard can show.

    Attributes:
        name: the run directory relative to the root, with ``/`` separators.
        path: the run directory.
        trace_files: how many trace files lie directly in it.
        has_meta: whether it has ``meta/run.json``.
    """

    name: str
    path: Path
    trace_files: int
    has_meta: bool


@dataclass(frozen=True)
class RunData:
    """Everything the overview shows of one run. Shared by the cache: treat as read-only.

    Attributes:
        name: the run's name.
        summary: the ``trainprof.summary/1`` dict of the trace files that loaded.
        breakdown: one row per step per trace: ``trace`` (file name), ``rank``, ``step``,
            ``dur_us`` and ``<category>_us`` for each breakdown category.
        steps: the always-on per-step metrics of every ``meta/steps.<rank>.jsonl`` line, each
            with its ``rank``.
        run_meta: ``meta/run.json``, or None when the run has none.
        errors: one message per file that could not be read, naming the file.
    """

    name: str
    summary: dict[str, Any]
    breakdown: tuple[dict[str, Any], ...]
    steps: tuple[dict[str, Any], ...]
    run_meta: dict[str, Any] | None
    errors: tuple[str, ...]


def list_runs(root: str | Path) -> list[RunInfo]:
    """Every run under ``root`` (the root itself too, named ``.``, if it holds traces).

    Symlinked directories are not followed, so nothing outside the root is listed.

    Args:
        root: the trace store root.

    Returns:
        The runs, sorted by name; empty when the root does not exist.
    """
    base = Path(root)
    runs: list[RunInfo] = []
    for dirpath, dirnames, _ in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if d != META_DIR and not d.startswith("."))
        run = _run_info(base, Path(dirpath))
        if run is not None:
            runs.append(run)
    return sorted(runs, key=lambda r: r.name)


def resolve_run(root: str | Path, name: str) -> Path:
    """The directory of run ``name``, refusing any name that leads outside ``root``.

    Args:
        root: the trace store root.
        name: a run name as :func:`list_runs` gives it.

    Returns:
        The run directory (which may not exist).

    Raises:
        ValueError: the name is empty, absolute, has a ``..`` part or a NUL, or resolves
            (through symlinks) outside the root.
    """
    if not name or "\x00" in name:
        raise ValueError("a run name must be a non-empty path under the trace root")
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or windows.is_absolute() or windows.drive:
        raise ValueError(f"run name {name!r} is absolute; names are relative to the trace root")
    if ".." in posix.parts or ".." in windows.parts:
        raise ValueError(f"run name {name!r} leads outside the trace root")
    base = Path(root).resolve()
    candidate = (base / posix).resolve()
    if not candidate.is_relative_to(base):
        raise ValueError(f"run name {name!r} leads outside the trace root")
    return candidate


def run_summary(root: str | Path, name: str) -> RunData:
    """The analysis of run ``name``, cached until any of its files changes.

    Args:
        root: the trace store root.
        name: the run's name.

    Returns:
        The run's summary, breakdown rows, per-step metrics, run.json and load errors.

    Raises:
        ValueError: the name leads outside the root (see :func:`resolve_run`).
        LookupError: there is no run of that name.
    """
    run_dir = resolve_run(root, name)
    if not run_dir.is_dir() or _run_info(Path(root).resolve(), run_dir) is None:
        raise LookupError(f"no run named {name!r} under the trace root")
    return _cached_run(name, str(run_dir), _run_fingerprints(run_dir))


def current_root() -> Path:
    """The trace root of the Dash app serving the current request."""
    import flask

    return Path(flask.current_app.config[ROOT_CONFIG_KEY])


def _run_info(root: Path, directory: Path) -> RunInfo | None:
    traces = _trace_files(directory)
    has_meta = (directory / META_DIR / RUN_META).is_file()
    if not traces and not has_meta:
        return None
    name = directory.relative_to(root).as_posix()
    return RunInfo(name=name, path=directory, trace_files=len(traces), has_meta=has_meta)


def _trace_files(directory: Path) -> list[Path]:
    # Only the run's own files: a nested run's traces belong to that run.
    return sorted(p for p in directory.iterdir() if is_trace_file(p))


def _meta_files(run_dir: Path) -> list[Path]:
    meta = run_dir / META_DIR
    if not meta.is_dir():
        return []
    return sorted(p for p in meta.iterdir() if p.name == RUN_META or _STEPS_FILE.match(p.name))


def _fingerprint(path: Path) -> Fingerprint:
    stat = path.stat()
    return (str(path), stat.st_size, stat.st_mtime_ns)


def _run_fingerprints(run_dir: Path) -> tuple[Fingerprint, ...]:
    return tuple(_fingerprint(p) for p in [*_trace_files(run_dir), *_meta_files(run_dir)])


@lru_cache(maxsize=_RUN_CACHE_SIZE)
def _cached_run(name: str, run_dir: str, files: tuple[Fingerprint, ...]) -> RunData:
    base = Path(run_dir)
    entries, breakdown, errors = [], [], []
    for fingerprint in files:
        path = Path(fingerprint[0])
        if path.parent.name == META_DIR and path.parent.parent == base:
            continue
        result = _cached_trace(*fingerprint)
        if isinstance(result, str):
            errors.append(result)
            continue
        entries.append(result[0])
        breakdown.extend(result[1])
    run_meta, meta_errors = _read_run_meta(base)
    steps, step_errors = _read_steps(base)
    return RunData(
        name=name,
        summary={"schema": SCHEMA, "traces": entries},
        breakdown=tuple(breakdown),
        steps=tuple(steps),
        run_meta=run_meta,
        errors=tuple(errors + meta_errors + step_errors),
    )


@lru_cache(maxsize=_TRACE_CACHE_SIZE)
def _cached_trace(
    path: str, size: int, mtime_ns: int
) -> tuple[dict[str, Any], list[dict[str, Any]]] | str:
    """One trace file's summary entry and breakdown rows, or the message why it failed."""
    file = Path(path)
    try:
        trace = load_trace(file)
        entry = trace_summary(trace)
        frame = step_breakdown(trace)
    except TraceFormatError as exc:
        return f"{file.name}: {exc.problem}"
    except Exception as exc:  # one bad file must not take the page down
        return f"{file.name}: cannot be analysed ({type(exc).__name__}: {exc})"
    columns = ["step", "dur_us", *(c for c in frame.columns if c.endswith("_us"))]
    rows = [
        {"trace": file.name, "rank": entry["rank"], **row}
        for row in frame[list(dict.fromkeys(columns))].to_dict("records")
    ]
    return entry, rows


@dataclass(frozen=True)
class _TraceTables:
    """One trace file's derived tables, whole (no top-n cut) so that runs can pool them."""

    ops: pd.DataFrame
    ops_by_shape: pd.DataFrame
    kernels: pd.DataFrame
    kernel_types: pd.DataFrame


@dataclass(frozen=True)
class _RunTables:
    ops: tuple[dict[str, Any], ...]
    ops_by_shape: tuple[dict[str, Any], ...]
    kernels: tuple[dict[str, Any], ...]
    kernel_types: tuple[dict[str, Any], ...]
    errors: tuple[str, ...]


def run_ops(root: str | Path, name: str, *, by_shape: bool) -> list[dict[str, Any]]:
    """Run ``name``'s CPU ops, pooled over its trace files, most self time first.

    Args:
        root: the trace store root.
        name: the run's name.
        by_shape: one row per ``(name, input_dims)`` rather than per name.

    Returns:
        Rows of ``name``, [``input_dims``,] ``calls``, ``self_us``, ``total_us``, ``mean_us``
        (``total_us / calls``), summed over the files that loaded.

    Raises:
        ValueError: the name leads outside the root (see :func:`resolve_run`).
        LookupError: there is no run of that name.
    """
    tables = _run_tables(root, name)
    return [dict(row) for row in (tables.ops_by_shape if by_shape else tables.ops)]


def run_kernels(root: str | Path, name: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run ``name``'s GPU kernels, pooled over its trace files.

    Args:
        root: the trace store root.
        name: the run's name.

    Returns:
        The kernels, most total time first (``name``, ``kernel_type``, ``calls``, ``total_us``,
        ``mean_us``, ``min_us``, ``max_us``, ``time_pct``, ``grid``, ``block``,
        ``occupancy_pct`` or None), and the kernel-type breakdown (``kernel_type``, ``sum_us``,
        ``percentage``) summed over files. Both empty for a CPU-only run. A kernel's grid and
        block are those of the file where it ran most often; its occupancy is weighted by time.

    Raises:
        ValueError: the name leads outside the root (see :func:`resolve_run`).
        LookupError: there is no run of that name.
    """
    tables = _run_tables(root, name)
    return [dict(r) for r in tables.kernels], [dict(r) for r in tables.kernel_types]


def run_table_errors(root: str | Path, name: str) -> tuple[str, ...]:
    """One message per trace file of run ``name`` whose tables could not be built.

    Raises:
        ValueError: the name leads outside the root (see :func:`resolve_run`).
        LookupError: there is no run of that name.
    """
    return _run_tables(root, name).errors


def _run_tables(root: str | Path, name: str) -> _RunTables:
    run_dir = resolve_run(root, name)
    if not run_dir.is_dir() or _run_info(Path(root).resolve(), run_dir) is None:
        raise LookupError(f"no run named {name!r} under the trace root")
    return _cached_run_tables(tuple(_fingerprint(p) for p in _trace_files(run_dir)))


@lru_cache(maxsize=_RUN_CACHE_SIZE)
def _cached_run_tables(files: tuple[Fingerprint, ...]) -> _RunTables:
    loaded: list[_TraceTables] = []
    errors: list[str] = []
    for fingerprint in files:
        result = _cached_tables(*fingerprint)
        if isinstance(result, str):
            errors.append(result)
        else:
            loaded.append(result)
    return _RunTables(
        ops=_records(_pool_ops([t.ops for t in loaded], ["name"])),
        ops_by_shape=_records(_pool_ops([t.ops_by_shape for t in loaded], ["name", "input_dims"])),
        kernels=_records(_pool_kernels([t.kernels for t in loaded])),
        kernel_types=_records(_pool_kernel_types([t.kernel_types for t in loaded])),
        errors=tuple(errors),
    )


@lru_cache(maxsize=_TRACE_CACHE_SIZE)
def _cached_tables(path: str, size: int, mtime_ns: int) -> _TraceTables | str:
    """One trace file's op and kernel tables, or the message why it failed."""
    file = Path(path)
    try:
        trace = load_trace(file)
        return _TraceTables(
            ops=top_ops(trace, n=None, group_by_shape=False),
            ops_by_shape=top_ops(trace, n=None, group_by_shape=True),
            kernels=top_kernels(trace, n=_ALL_ROWS),
            kernel_types=kernel_type_breakdown(trace),
        )
    except TraceFormatError as exc:
        return f"{file.name}: {exc.problem}"
    except Exception as exc:  # one bad file must not take the page down
        return f"{file.name}: cannot be analysed ({type(exc).__name__}: {exc})"


def _pool_ops(frames: list[pd.DataFrame], keys: list[str]) -> pd.DataFrame:
    columns = [*keys, "calls", "self_us", "total_us", "mean_us"]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=columns)
    pooled = (
        pd.concat(frames)
        .groupby(keys, sort=False)[["calls", "self_us", "total_us"]]
        .sum()
        .reset_index()
    )
    pooled["mean_us"] = pooled["total_us"] / pooled["calls"]
    order = ["self_us", *keys]
    pooled = pooled.sort_values(order, ascending=[False] + [True] * len(keys), ignore_index=True)
    return pooled[columns]


def _pool_kernels(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=_KERNEL_COLUMNS)
    every = pd.concat(frames, ignore_index=True)
    every["weighted"] = every["occupancy_pct"] * every["total_us"]
    every["weight"] = every["total_us"].where(every["occupancy_pct"].notna())
    pooled = every.groupby("name").agg(
        kernel_type=("kernel_type", "first"),
        calls=("calls", "sum"),
        total_us=("total_us", "sum"),
        min_us=("min_us", "min"),
        max_us=("max_us", "max"),
        weighted=("weighted", "sum"),
        weight=("weight", "sum"),
    )
    pooled["mean_us"] = pooled["total_us"] / pooled["calls"]
    total = pooled["total_us"].sum()
    pooled["time_pct"] = 100.0 * pooled["total_us"] / total if total > 0 else 0.0
    pooled["occupancy_pct"] = pooled["weighted"] / pooled["weight"].where(pooled["weight"] > 0)
    busiest = every.sort_values("calls", ascending=False, kind="stable").drop_duplicates("name")
    pooled = pooled.join(busiest.set_index("name")[["grid", "block"]]).reset_index()
    pooled = pooled.sort_values(["total_us", "name"], ascending=[False, True], ignore_index=True)
    return pooled[_KERNEL_COLUMNS]


def _pool_kernel_types(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=["kernel_type", "sum_us", "percentage"])
    pooled = pd.concat(frames).groupby("kernel_type", sort=False)["sum_us"].sum().reset_index()
    pooled["percentage"] = 100.0 * pooled["sum_us"] / pooled["sum_us"].sum()
    return pooled.sort_values("sum_us", ascending=False, kind="stable", ignore_index=True)


def _records(frame: pd.DataFrame) -> tuple[dict[str, Any], ...]:
    """Plain Python rows for the page, NaN as None (JSON has no NaN)."""
    frame = frame.astype(object).where(frame.notna(), None)
    return tuple(frame.to_dict("records"))


def _read_run_meta(run_dir: Path) -> tuple[dict[str, Any] | None, list[str]]:
    path = run_dir / META_DIR / RUN_META
    if not path.is_file():
        return None, []
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, [f"{META_DIR}/{RUN_META}: not readable JSON ({exc})"]
    if not isinstance(meta, dict):
        return None, [f"{META_DIR}/{RUN_META}: expected a JSON object"]
    return meta, []


def _read_steps(run_dir: Path) -> tuple[list[dict[str, Any]], list[str]]:
    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    for path in _meta_files(run_dir):
        match = _STEPS_FILE.match(path.name)
        if match is None:
            continue
        rank = int(match.group(1))
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(f"{META_DIR}/{path.name}: not readable ({exc})")
            continue
        for number, line in enumerate(lines, start=1):
            row = _parse_step_line(line)
            if row is None:
                # The last line may be half-written while the run is still going.
                if line.strip() and number < len(lines):
                    errors.append(f"{META_DIR}/{path.name}: line {number} is not a JSON object")
                continue
            rows.append({**row, "rank": rank})
    return rows, errors


def _parse_step_line(line: str) -> dict[str, Any] | None:
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return None
    return row if isinstance(row, dict) else None


# Memory and module pages ------------------------------------------------------------------------

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
        ValueError: the name leads outside the root (see :func:`resolve_run`).
        LookupError: there is no run of that name.
    """
    return _cached_run_memory(_run_trace_fingerprints(root, name))


def run_modules(root: str | Path, name: str) -> RunModules:
    """Run ``name``'s ``module_table`` summed over its trace files, cached per file.

    Raises:
        ValueError: the name leads outside the root (see :func:`resolve_run`).
        LookupError: there is no run of that name.
    """
    return _cached_run_modules(_run_trace_fingerprints(root, name))


def _run_trace_fingerprints(root: str | Path, name: str) -> tuple[Fingerprint, ...]:
    run_dir = resolve_run(root, name)
    if not run_dir.is_dir() or _run_info(Path(root).resolve(), run_dir) is None:
        raise LookupError(f"no run named {name!r} under the trace root")
    return tuple(_fingerprint(p) for p in _trace_files(run_dir))


@lru_cache(maxsize=_RUN_CACHE_SIZE)
def _cached_run_memory(files: tuple[Fingerprint, ...]) -> RunMemory:
    series: list[MemorySeries] = []
    peaks: list[dict[str, Any]] = []
    modules: list[dict[str, Any]] = []
    errors: list[str] = []
    for fingerprint in files:
        result = _cached_memory(*fingerprint)
        if isinstance(result, str):
            errors.append(result)
            continue
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


@lru_cache(maxsize=_TRACE_CACHE_SIZE)
def _cached_memory(path: str, size: int, mtime_ns: int) -> _TraceMemory | str:
    """One trace file's memory series, peak and per-module memory, or why it failed."""
    file = Path(path)
    try:
        trace = load_trace(file)
        timeline = memory_timeline(trace)
        if timeline.empty:
            return _TraceMemory(series=None, peak=None, modules=())
        chosen = device_series(timeline)
        device = str(chosen["device"].iloc[0])
        peak = memory_peak(trace, device)
        per_module = module_memory(trace, device)
    except TraceFormatError as exc:
        return f"{file.name}: {exc.problem}"
    except Exception as exc:  # one bad file must not take the page down
        return f"{file.name}: cannot be analysed ({type(exc).__name__}: {exc})"
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
    return _TraceMemory(series=series, peak=peak_row, modules=_records(table))


@lru_cache(maxsize=_RUN_CACHE_SIZE)
def _cached_run_modules(files: tuple[Fingerprint, ...]) -> RunModules:
    frames: list[pd.DataFrame] = []
    errors: list[str] = []
    for fingerprint in files:
        result = _cached_modules(*fingerprint)
        if isinstance(result, str):
            errors.append(result)
        elif not result.empty:
            frames.append(result)
    return RunModules(rows=_records(_pool_modules(frames)), errors=tuple(errors))


@lru_cache(maxsize=_TRACE_CACHE_SIZE)
def _cached_modules(path: str, size: int, mtime_ns: int) -> pd.DataFrame | str:
    """One trace file's ``module_table``, or the message why it failed."""
    file = Path(path)
    try:
        return module_table(load_trace(file))
    except TraceFormatError as exc:
        return f"{file.name}: {exc.problem}"
    except Exception as exc:  # one bad file must not take the page down
        return f"{file.name}: cannot be analysed ({type(exc).__name__}: {exc})"


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

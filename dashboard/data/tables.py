"""The Operators and Kernels pages' data: op and kernel tables pooled over a run's files."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from dashboard.data.cache import RUN_CACHE_SIZE, gather, per_trace, records
from dashboard.data.runs import Fingerprint, trace_fingerprints
from profiler.analysis.kernels import kernel_type_breakdown, top_kernels
from profiler.analysis.ops import top_ops
from profiler.analysis.table import TraceTable

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
        RunRefused: the name leads outside the root (see :func:`resolve_run`).
        RunNotFound: there is no run of that name.
    """
    tables = _cached_run_tables(trace_fingerprints(root, name))
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
        RunRefused: the name leads outside the root (see :func:`resolve_run`).
        RunNotFound: there is no run of that name.
    """
    tables = _cached_run_tables(trace_fingerprints(root, name))
    return [dict(r) for r in tables.kernels], [dict(r) for r in tables.kernel_types]


def run_table_errors(root: str | Path, name: str) -> tuple[str, ...]:
    """One message per trace file of run ``name`` whose tables could not be built.

    Raises:
        RunRefused: the name leads outside the root (see :func:`resolve_run`).
        RunNotFound: there is no run of that name.
    """
    return _cached_run_tables(trace_fingerprints(root, name)).errors


@lru_cache(maxsize=RUN_CACHE_SIZE)
def _cached_run_tables(files: tuple[Fingerprint, ...]) -> _RunTables:
    loaded, errors = gather(files, _trace_tables)
    return _RunTables(
        ops=records(_pool_ops([t.ops for t in loaded], ["name"])),
        ops_by_shape=records(_pool_ops([t.ops_by_shape for t in loaded], ["name", "input_dims"])),
        kernels=records(_pool_kernels([t.kernels for t in loaded])),
        kernel_types=records(_pool_kernel_types([t.kernel_types for t in loaded])),
        errors=tuple(errors),
    )


@per_trace
def _trace_tables(trace: TraceTable, file: Path) -> _TraceTables:
    """One trace file's op and kernel tables."""
    return _TraceTables(
        ops=top_ops(trace, n=None, group_by_shape=False),
        ops_by_shape=top_ops(trace, n=None, group_by_shape=True),
        kernels=top_kernels(trace, n=_ALL_ROWS),
        kernel_types=kernel_type_breakdown(trace),
    )


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

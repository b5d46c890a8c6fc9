"""The Kernels page's idle-time attribution: each GPU stream's idle time split into host wait,
kernel wait and other, as HTA splits it (:func:`profiler.analysis.temporal.idle_time_breakdown`),
summed over a run's trace files per rank and stream.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Final

import pandas as pd

from dashboard.data.cache import RUN_CACHE_SIZE, gather, per_trace, records
from dashboard.data.runs import Fingerprint, trace_fingerprints
from profiler.analysis.table import TraceTable
from profiler.analysis.temporal import (
    IDLE_CATEGORIES,
    KERNEL_WAIT_THRESHOLD_US,
    idle_time_breakdown,
)

#: Each category's label, as HTA names it.
IDLE_LABELS: Final = {"host_wait": "host wait", "kernel_wait": "kernel wait", "other": "other"}
IDLE_COLUMNS: Final = (
    "rank",
    "stream",
    *(f"{c}_us" for c in IDLE_CATEGORIES),
    "idle_us",
    *(f"{c}_pct" for c in IDLE_CATEGORIES),
)
KERNEL_WAIT_US: Final = KERNEL_WAIT_THRESHOLD_US


def run_idle_time(root: str | Path, name: str) -> tuple[dict[str, Any], ...]:
    """Each GPU stream's idle time in run ``name``, per rank, summed over its trace files.

    Each file's last profiler step is left out, as HTA leaves it out by default.

    Returns:
        One row per ``(rank, stream)``, ranks then streams ascending, columns
        :data:`IDLE_COLUMNS`: ``<category>_us`` for host wait, kernel wait and other, their
        sum ``idle_us``, and each category's share of it (0 when the stream never idles).
        Empty for a run without GPU work. Files that cannot be read are left out (the
        Kernels page's banner names them).

    Raises:
        RunRefused: the name leads outside the root.
        RunNotFound: there is no run of that name.
    """
    return _cached_idle(trace_fingerprints(root, name))


@lru_cache(maxsize=RUN_CACHE_SIZE)
def _cached_idle(files: tuple[Fingerprint, ...]) -> tuple[dict[str, Any], ...]:
    frames, _ = gather(files, _trace_idle)
    frames = [frame for frame in frames if not frame.empty]
    if not frames:
        return ()
    every = pd.concat(frames, ignore_index=True)
    table = every.pivot_table(
        index=["rank", "stream"], columns="idle_category", values="idle_us", aggfunc="sum"
    )
    table = table.reindex(columns=list(IDLE_CATEGORIES), fill_value=0.0).fillna(0.0)
    table.columns = [f"{c}_us" for c in IDLE_CATEGORIES]
    table["idle_us"] = table.sum(axis=1)
    for category in IDLE_CATEGORIES:
        share = 100.0 * table[f"{category}_us"] / table["idle_us"].where(table["idle_us"] > 0)
        table[f"{category}_pct"] = share.fillna(0.0)
    return records(table.reset_index().sort_values(["rank", "stream"])[list(IDLE_COLUMNS)])


@per_trace
def _trace_idle(trace: TraceTable, file: Path) -> pd.DataFrame:
    """One file's idle breakdown, with its rank."""
    return idle_time_breakdown(trace).assign(rank=trace.rank)

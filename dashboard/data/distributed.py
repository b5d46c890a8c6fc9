"""The Distributed page's data: per-rank step time, breakdown and overlap, and the stragglers."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from dashboard.data.cache import RUN_CACHE_SIZE, gather, per_trace, records
from dashboard.data.runs import Fingerprint, trace_fingerprints
from profiler.analysis.distributed import (
    STRAGGLER_PCT,
    RankPart,
    find_stragglers,
    rank_part,
    rank_table,
)
from profiler.analysis.table import TraceTable


@dataclass(frozen=True)
class RunDistributed:
    """Run ``name``'s ranks side by side. Shared by the cache: treat as read-only.

    Attributes:
        ranks: one row per rank, ranks ascending
            (``profiler.analysis.distributed.RANK_COLUMNS``; NaN as None).
        stragglers: the straggling ranks, slowest first (``rank``, ``step_mean_us``,
            ``others_median_us``, ``excess_pct``).
        threshold_pct: how far above the other ranks' median a straggler's mean step time is.
        errors: one message per file that could not be read, naming the file.
    """

    ranks: tuple[dict[str, Any], ...]
    stragglers: tuple[dict[str, Any], ...]
    threshold_pct: float
    errors: tuple[str, ...]


def run_distributed(root: str | Path, name: str) -> RunDistributed:
    """Run ``name``'s files pooled by rank, cached per file and per run.

    Raises:
        RunRefused: the name leads outside the root (see :func:`resolve_run`).
        RunNotFound: there is no run of that name.
    """
    return _cached_run_distributed(trace_fingerprints(root, name))


@lru_cache(maxsize=RUN_CACHE_SIZE)
def _cached_run_distributed(files: tuple[Fingerprint, ...]) -> RunDistributed:
    parts, errors = gather(files, _trace_rank_part)
    table = rank_table(parts)
    return RunDistributed(
        ranks=records(table),
        stragglers=records(find_stragglers(table)),
        threshold_pct=STRAGGLER_PCT,
        errors=tuple(errors),
    )


@per_trace
def _trace_rank_part(trace: TraceTable, file: Path) -> RankPart:
    """One trace file's step times, category times and communication overlap."""
    return rank_part(trace)

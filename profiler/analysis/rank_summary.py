"""Each trace file's small columnar summary, kept beside the run: what cross-rank views read.

A per-rank summary holds everything the run-wide views need of one trace file: its
``trainprof.summary/1`` entry, every op's and kernel's totals and each step's breakdown
(:class:`profiler.analysis.diff.TraceTotals`: what ``diff`` and the gate pool), and the per-step
and per-collective frames of the cross-rank analysis (:func:`profiler.analysis.distributed.
rank_steps` and :func:`~profiler.analysis.distributed.collective_ends`). It is kilobytes where
the trace is up to hundreds of megabytes: a summary of 1,024 ranks reads 1,024 small summaries,
and a trace is loaded only where its summary is missing or stale, one file at a time, and
dropped once summarised.

Files: ``<dir>/meta/cache/<file>.rank.v<SUMMARY_VERSION>.<table>.parquet``, one per table in
:data:`TABLES`, beside the trace cache (:mod:`profiler.analysis.cache`, whose rules they
follow: atomic, a speed-up only, ``TRAINPROF_CACHE=0`` turns them off). Each carries its key:
the trace's size and mtime_ns, :data:`SUMMARY_VERSION`, a fingerprint of the analysis code (a
summary is derived, so a changed rule must not be served from an old file) and the op grouping.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pandas as pd

from profiler.analysis.cache import (
    CACHE_DIR,
    cache_enabled,
    read_frame,
    source_key,
    write_frame,
)
from profiler.analysis.diff import TraceTotals, trace_totals
from profiler.analysis.distributed import (
    CommOverlap,
    RankPart,
    collective_ends,
    comm_comp_overlap,
    rank_steps,
)
from profiler.analysis.guards import analysis_error
from profiler.analysis.memory import MemoryPeak
from profiler.analysis.rank_frames import wall_offset_us
from profiler.analysis.steps import CATEGORIES
from profiler.analysis.summary import trace_summary
from profiler.analysis.table import TraceTable, load_trace

# Bump when what a summary holds changes shape; a change to the analysis code is caught by
# the code fingerprint in the key.
SUMMARY_VERSION = 2
TABLES = ("steps", "ops", "kernels", "rank_steps", "collectives")
_KEY = b"trainprof.rank_summary.key"
_FACTS = b"trainprof.rank_summary.facts"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RankSummary:
    """One trace file summarised: what the cross-rank views read instead of the trace.

    Attributes:
        path: the trace file.
        rank: its rank (``distributedInfo``).
        device: its device (``TraceTable.device``).
        events: how many events it holds.
        entry: its ``trainprof.summary/1`` entry (plain JSON values).
        totals: every op's and kernel's totals, each step's breakdown and the memory peak.
        rank_steps: :func:`profiler.analysis.distributed.rank_steps` of the file.
        collectives: :func:`profiler.analysis.distributed.collective_ends` of the file.
        overlap: its communication/computation overlap (HTA's).
        wall_us: what to add to its ``ts_us`` for its rank's wall clock.
    """

    path: Path
    rank: int
    device: str
    events: int
    entry: dict[str, Any]
    totals: TraceTotals
    rank_steps: pd.DataFrame
    collectives: pd.DataFrame
    overlap: CommOverlap
    wall_us: float

    def rank_part(self) -> RankPart:
        """The file's part of :func:`profiler.analysis.distributed.rank_table` (what
        ``rank_part`` gives of the trace)."""
        steps = self.totals.steps
        return RankPart(
            rank=self.rank,
            step_us=tuple(float(d) for d in steps["dur_us"]),
            categories_us={c: float(steps[f"{c}_us"].sum()) for c in CATEGORIES},
            overlap=self.overlap,
        )


def in_run_order(summaries: Iterable[RankSummary]) -> list[RankSummary]:
    """``summaries`` ordered as :func:`profiler.analysis.table.load` orders traces: by run
    (folder), then rank, then file name."""
    return sorted(summaries, key=lambda s: (str(s.path.parent), s.rank, s.path.name))


def summarize_rank(trace: TraceTable, *, by_shape: bool = False) -> RankSummary:
    """The summary of a loaded trace.

    Args:
        trace: the trace.
        by_shape: the entry's top ops per name and input shapes.

    Raises:
        TraceFormatError: the trace's content is beyond what the analyses take; names the file.
    """
    entry = _as_json(trace_summary(trace, by_shape=by_shape))
    totals = trace_totals(trace)
    try:
        steps, ends, overlap = rank_steps(trace), collective_ends(trace), comm_comp_overlap(trace)
    except Exception as exc:  # noqa: BLE001 - one file's problem, said as its error
        raise analysis_error(trace.path, exc) from exc
    return RankSummary(
        path=trace.path,
        rank=trace.rank,
        device=trace.device,
        events=trace.event_count,
        entry=entry,
        totals=totals,
        rank_steps=steps,
        collectives=ends,
        overlap=overlap,
        wall_us=wall_offset_us(trace),
    )


def rank_summary(
    path: str | Path, *, by_shape: bool = False, cache: bool = True,
    max_text_bytes: int | None = None,
) -> RankSummary:  # fmt: skip
    """The summary of trace ``path``: from its files beside the run when they match the trace
    as it is now, else from the trace (loaded, summarised, dropped) and then stored.

    Args:
        path: a trace file.
        by_shape: the entry's top ops per name and input shapes.
        cache: read and write the summary files, and the trace's own cache.
        max_text_bytes: the most JSON text the trace may hold (see ``load_trace``).

    Raises:
        TraceFormatError: the file cannot be loaded or analysed; names it and says why.
        ValueError: ``max_text_bytes`` or ``$TRAINPROF_MAX_TRACE_BYTES`` is not a size.
    """
    path = Path(path)
    key = summary_key(path, by_shape) if cache_enabled(cache) else None
    found = read_rank_summary(path, key) if key is not None else None
    if found is not None:
        return found
    summary = summarize_rank(
        load_trace(path, cache=cache, max_text_bytes=max_text_bytes), by_shape=by_shape
    )
    if key is not None:
        write_rank_summary(summary, key)
    return summary


def summary_files(path: Path) -> dict[str, Path]:
    """Where the summary of trace ``path`` lives, per table."""
    folder = path.parent.joinpath(*CACHE_DIR)
    name = f"{path.name}.rank.v{SUMMARY_VERSION}"
    return {table: folder / f"{name}.{table}.parquet" for table in TABLES}


def summary_key(path: Path, by_shape: bool) -> bytes | None:
    """The key the summary of ``path`` must carry now; None where the file cannot be stat'ed
    (its load then says what is wrong)."""
    try:
        source = msgspec.json.decode(source_key(path))
    except OSError:
        return None
    key = {"source": source, "version": SUMMARY_VERSION, "code": analysis_fingerprint(),
           "by_shape": by_shape}  # fmt: skip
    return msgspec.json.encode(key)


def has_rank_summary(path: Path, key: bytes | None) -> bool:
    """Whether the stored summary of ``path`` carries ``key`` (its first table's metadata only:
    cheap enough to ask of a thousand files before deciding where to summarise them)."""
    if key is None:
        return False
    try:
        import pyarrow.parquet as pq

        metadata = pq.read_schema(summary_files(path)[TABLES[0]]).metadata or {}
    except Exception:  # noqa: BLE001 - missing or unreadable: not there
        return False
    return metadata.get(_KEY) == key


def read_rank_summary(path: Path, key: bytes) -> RankSummary | None:
    """The stored summary of ``path`` if every table is there and carries ``key``; None
    otherwise (missing, stale or unreadable: the caller summarises the trace)."""
    try:
        frames: dict[str, pd.DataFrame] = {}
        facts: dict[str, Any] = {}
        for table, file in summary_files(path).items():
            frame, metadata = read_frame(file)
            if metadata.get(_KEY) != key:
                return None
            facts = orjson.loads(metadata[_FACTS]) if _FACTS in metadata else facts
            frames[table] = frame
        return _from_tables(path, frames, facts)
    except Exception as exc:  # noqa: BLE001 - a cache must never fail a summary
        log.debug("ignoring the stored summary of %s: %s", path, exc)
        return None


def write_rank_summary(summary: RankSummary, key: bytes) -> None:
    """Store ``summary`` beside its trace under ``key``; quietly nothing where it cannot."""
    files = summary_files(summary.path)
    peak = summary.totals.memory_peak
    facts = {
        "rank": summary.rank,
        "device": summary.device,
        "events": summary.events,
        "entry": summary.entry,
        "memory_peak": None if peak is None else dataclasses.asdict(peak),
        "overlap": dataclasses.asdict(summary.overlap),
        "wall_us": summary.wall_us,
    }
    frames = _tables(summary)
    try:
        files[TABLES[0]].parent.mkdir(parents=True, exist_ok=True)
        # The first table last: has_rank_summary reads its key alone, so it must be the
        # sign that every other table is there.
        for table in (*TABLES[1:], TABLES[0]):
            extra = {_FACTS: orjson.dumps(facts)} if table == TABLES[0] else {}
            write_frame(files[table], frames[table], {_KEY: key, **extra})
    except Exception as exc:  # noqa: BLE001 - a cache must never fail a summary
        log.debug("not storing the summary of %s: %s", summary.path, exc)
        with contextlib.suppress(OSError):
            files[TABLES[0]].unlink()


def _tables(summary: RankSummary) -> dict[str, pd.DataFrame]:
    totals = summary.totals
    return {"steps": totals.steps, "ops": totals.ops, "kernels": totals.kernels,
            "rank_steps": summary.rank_steps, "collectives": summary.collectives}  # fmt: skip


def _from_tables(path: Path, frames: dict[str, pd.DataFrame], facts: dict[str, Any]) -> RankSummary:
    peak = facts["memory_peak"]
    totals = TraceTotals(
        steps=frames["steps"],
        ops=frames["ops"],
        kernels=frames["kernels"],
        memory_peak=None if peak is None else MemoryPeak(**peak),
    )
    return RankSummary(
        path=path,
        rank=int(facts["rank"]),
        device=str(facts["device"]),
        events=int(facts["events"]),
        entry=facts["entry"],
        totals=totals,
        rank_steps=frames["rank_steps"],
        collectives=frames["collectives"],
        overlap=CommOverlap(**facts["overlap"]),
        wall_us=float(facts["wall_us"]),
    )


def _as_json(entry: dict[str, Any]) -> dict[str, Any]:
    """The entry as its JSON reads back, so a stored summary and a fresh one are equal."""
    decoded: dict[str, Any] = orjson.loads(orjson.dumps(entry))
    return decoded


@functools.cache
def analysis_fingerprint() -> str:
    """A digest of the analysis code's sources: stored summaries of another version of it are
    stale."""
    digest = hashlib.sha1(usedforsecurity=False)
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.name.encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]

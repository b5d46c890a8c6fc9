"""The Overview's data: a run's summary, per-step breakdown, always-on metrics and metadata.

The run's status is not cached with the rest: the page asks ``dashboard.data.runs.run_status``
each time it is drawn, since a run whose heartbeat stopped changes status with no file changing.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from dashboard.data.cache import RUN_CACHE_SIZE, gather, per_trace
from dashboard.data.runs import (
    META_DIR,
    RUN_META,
    Fingerprint,
    existing_run,
    fingerprint,
    meta_files,
    read_run_meta,
    read_steps,
    trace_files,
)
from profiler.analysis.steps import step_breakdown
from profiler.analysis.summary import SCHEMA, merged_recommendations, trace_summary
from profiler.analysis.table import TraceTable


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
        run_meta: ``meta/run.json``, or None when the run has none (or it cannot be read).
        environment: ``run_meta``'s ``environment`` object; empty when it has none or it is
            not an object.
        recommendations: the summary's findings once per rule over all files
            (``profiler.analysis.summary.merged_recommendations``).
        errors: one message per file that could not be read, naming the file.
    """

    name: str
    summary: dict[str, Any]
    breakdown: tuple[dict[str, Any], ...]
    steps: tuple[dict[str, Any], ...]
    run_meta: dict[str, Any] | None
    environment: dict[str, Any]
    recommendations: tuple[dict[str, Any], ...]
    errors: tuple[str, ...]


def run_summary(root: str | Path, name: str) -> RunData:
    """The analysis of run ``name``, cached until any of its files changes.

    Args:
        root: the trace store root.
        name: the run's name.

    Returns:
        The run's summary, breakdown rows, per-step metrics, run.json and load errors.

    Raises:
        RunRefused: the name leads outside the root (see :func:`resolve_run`).
        RunNotFound: there is no run of that name.
    """
    run_dir = existing_run(root, name)
    traces = tuple(fingerprint(p) for p in trace_files(run_dir, root))
    metas = tuple(fingerprint(p) for p in meta_files(run_dir, root))
    return _cached_run(name, str(Path(root).resolve()), str(run_dir), traces, metas)


@lru_cache(maxsize=RUN_CACHE_SIZE)
def _cached_run(
    name: str,
    root: str,
    run_dir: str,
    traces: tuple[Fingerprint, ...],
    metas: tuple[Fingerprint, ...],
) -> RunData:
    del metas  # part of the key only: a new steps line must refresh the run
    results, errors = gather(traces, _trace_overview)
    run_meta, meta_errors = read_run_meta(Path(run_dir), root)
    steps, step_errors = read_steps(Path(run_dir), root)
    environment = (run_meta or {}).get("environment") or {}
    if not isinstance(environment, dict):
        meta_errors.append(f"{META_DIR}/{RUN_META}: 'environment' is not an object")
        environment = {}
    summary = {"schema": SCHEMA, "traces": [entry for entry, _ in results]}
    return RunData(
        name=name,
        summary=summary,
        breakdown=tuple(row for _, rows in results for row in rows),
        steps=tuple(steps),
        run_meta=run_meta,
        environment=environment,
        recommendations=tuple(merged_recommendations(summary)),
        errors=tuple(errors + meta_errors + step_errors),
    )


@per_trace
def _trace_overview(trace: TraceTable, file: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One trace file's summary entry and breakdown rows."""
    entry = trace_summary(trace)
    frame = step_breakdown(trace)
    columns = ["step", "dur_us", *(c for c in frame.columns if c.endswith("_us"))]
    rows = [
        {"trace": file.name, "rank": entry["rank"], **row}
        for row in frame[list(dict.fromkeys(columns))].to_dict("records")
    ]
    return entry, rows

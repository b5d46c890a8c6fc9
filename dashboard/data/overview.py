"""The Overview's data: a run's summary, per-step breakdown, always-on metrics and metadata.

The run's status is not cached with the rest: the page asks ``dashboard.data.runs.run_status``
each time it is drawn, since a run whose heartbeat stopped changes status with no file changing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from dashboard.data.cache import RUN_CACHE_SIZE, gather, per_trace
from dashboard.data.runs import META_DIR, RUN_META, Fingerprint, open_run
from profiler.analysis.report import TraceSummary
from profiler.analysis.run import Run
from profiler.analysis.steps import step_breakdown
from profiler.analysis.summary import (
    SCHEMA,
    merged_recommendations,
    step_log_report,
    summary_verdict,
    trace_report,
)
from profiler.analysis.table import TraceTable
from profiler.analysis.triggers import trigger_text
from profiler.analysis.verdict import Verdict, verdict


@dataclass(frozen=True)
class RunData:
    """Everything the overview shows of one run. Shared by the cache: treat as read-only.

    Attributes:
        name: the run's name.
        summary: the ``trainprof.summary/1`` dict of the trace files that loaded, with the
            run's ``step_logs``.
        reports: the same, typed: one :class:`TraceSummary` per trace file that loaded.
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
        triggers: one line per trace file whose window a trigger opened (``on_anomaly``, a
            capture request), naming the file.
        verdict: the bottleneck to fix first over all files, as ``trainprof summary`` says it
            (``profiler.analysis.summary.summary_verdict``).
    """

    name: str
    summary: dict[str, Any]
    reports: tuple[TraceSummary, ...]
    breakdown: tuple[dict[str, Any], ...]
    steps: tuple[dict[str, Any], ...]
    run_meta: dict[str, Any] | None
    environment: dict[str, Any]
    recommendations: tuple[dict[str, Any], ...]
    errors: tuple[str, ...]
    triggers: tuple[str, ...] = ()
    verdict: Verdict = verdict((), None)


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
    run = open_run(root, name)
    return _cached_run(name, str(run.root), str(run.path), run.fingerprints(),
                       run.meta_fingerprints())  # fmt: skip


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
    run = Run(run_dir, root=root, name=name)
    run_meta, meta_errors = run.meta.meta, run.problems()
    environment = (run_meta or {}).get("environment") or {}
    if not isinstance(environment, dict):
        meta_errors.append(f"{META_DIR}/{RUN_META}: 'environment' is not an object")
        environment = {}
    reports = tuple(report for report, _ in results)
    logs = step_log_report([run])
    summary = {
        "schema": SCHEMA,
        "traces": [report.to_dict() for report in reports],
        "step_logs": None if logs is None else logs.to_dict(),
    }
    return RunData(
        name=name,
        summary=summary,
        reports=reports,
        breakdown=tuple(row for _, rows in results for row in rows),
        steps=tuple(run.steps()),
        run_meta=run_meta,
        environment=environment,
        recommendations=tuple(merged_recommendations(summary)),
        verdict=summary_verdict(summary),
        errors=tuple(errors + meta_errors),
        triggers=tuple(
            f"{Path(report.path).name}: {trigger_text(asdict(report.trigger))}"
            for report in reports
            if report.trigger is not None
        ),
    )


@per_trace
def _trace_overview(trace: TraceTable, file: Path) -> tuple[TraceSummary, list[dict[str, Any]]]:
    """One trace file's summary and breakdown rows."""
    report = trace_report(trace)
    frame = step_breakdown(trace)
    columns = ["step", "dur_us", *(c for c in frame.columns if c.endswith("_us"))]
    rows = [
        {"trace": file.name, "rank": report.rank, **row}
        for row in frame[list(dict.fromkeys(columns))].to_dict("records")
    ]
    return report, rows

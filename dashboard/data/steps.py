"""The Steps page's data: every step of the run from the always-on step logs, its slow steps,
and the deep windows (trace files) that cover them.

The step logs (``meta/steps.<rank>.jsonl``) hold every step; the trace files hold only the
windows. A slow step (:func:`profiler.analysis.slow_steps.slow_steps`) is linked to the trace
file of its rank whose window holds it, else to the one it opened (``on_anomaly`` opens a window
on the steps after a slow one; the file names its trigger's step), where one does. A window's
span is the one trainprof wrote into the file (``trainprof.window``), else its
``ProfilerStep#N`` ranges, whose numbers are the step logs' (trainprof numbers both from the
same counter); a foreign trace with no step ranges covers no step.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dashboard.data.cache import gather, per_trace, records
from dashboard.data.live import new_steps
from dashboard.data.runs import META_DIR, RUN_META, open_run
from profiler.analysis.slow_steps import slow_steps
from profiler.analysis.steps import WHOLE_TRACE_NAME, step_table
from profiler.analysis.table import TraceTable
from profiler.analysis.triggers import window_trigger

#: How many runs' step records stay in memory (a record is ~1 KB: 100 MB per 100k steps).
_LOG_RUNS = 4
_logs_lock = threading.Lock()
_logs: OrderedDict[str, _Logs] = OrderedDict()  # by run directory, the latest used last


@dataclass(frozen=True)
class DeepWindow:
    """One trace file's capture window: the steps it recorded.

    Attributes:
        file: the trace file's name.
        rank: the rank that wrote it.
        first_step: its first ``ProfilerStep#N``.
        last_step: its last.
        opened_by: the step after which a trigger opened it (the slow step, for
            ``on_anomaly``); None for a scheduled window.
    """

    file: str
    rank: int
    first_step: int
    last_step: int
    opened_by: int | None = None

    def covers(self, rank: int, step: int) -> bool:
        """Whether this window recorded step ``step`` of rank ``rank``."""
        return self.rank == rank and self.first_step <= step <= self.last_step

    def opened_after(self, rank: int, step: int) -> bool:
        """Whether step ``step`` of rank ``rank`` opened this window (``on_anomaly``, a capture
        request): the window records the steps after it."""
        return self.rank == rank and self.opened_by == step


@dataclass(frozen=True)
class StepsData:
    """What the Steps page shows of one run. Shared by the cache: treat as read-only.

    Attributes:
        name: the run's name.
        device: the training device as ``run.json`` records it (``cpu``, ``cuda``), or None.
        steps: every step-log record, each with its ``rank``, rank by rank in file order.
        slow: the slow steps (``rank``, ``step``, ``dur_us``, ``median_us``, ``ratio``) with
            ``file``: the trace file whose window recorded the step, else the one whose window
            the step opened (``on_anomaly`` records the steps after a slow one), else None;
            ``first_step`` and ``last_step``: that window's span; ``opened``: whether the step
            opened it rather than being recorded in it.
        windows: every trace file's window that has steps, in file order.
        errors: one line per file that could not be read, naming it.
    """

    name: str
    device: str | None
    steps: tuple[dict[str, Any], ...]
    slow: tuple[dict[str, Any], ...]
    windows: tuple[DeepWindow, ...]
    errors: tuple[str, ...]


def run_steps(root: str | Path, name: str) -> StepsData:
    """The steps of run ``name`` as its files are now.

    The step logs are read from where the last call stopped (:func:`dashboard.data.live.new_steps`),
    so a page drawn again as a live run appends steps costs the new lines, not the whole logs;
    the trace files' windows are cached per file.

    Raises:
        RunRefused: the name leads outside the root.
        RunNotFound: there is no run of that name.
    """
    run = open_run(root, name)
    found, errors = gather(run.fingerprints(), _trace_window)
    windows = tuple(window for window in found if window is not None)
    logs = _read_logs(root, name, str(run.path))
    slow = [{**row, **_window_of(windows, row["rank"], row["step"])} for row in logs.slow]
    meta = run.meta
    problems = [f"{META_DIR}/{RUN_META}: {meta.problem}"] if meta.problem else []
    problems += meta.rank_problems
    if logs.skipped:
        problems.append(
            f"{META_DIR}/steps.<rank>.jsonl: {logs.skipped} line(s) are no step records"
        )
    environment = (meta.meta or {}).get("environment")
    device = environment.get("device") if isinstance(environment, dict) else None
    return StepsData(
        name=name,
        device=device if isinstance(device, str) else None,
        steps=logs.rows,
        slow=tuple(slow),
        windows=windows,
        errors=tuple(errors + problems),
    )


@dataclass(frozen=True)
class _Logs:
    """A run's step logs as read so far: the records, where each file was read to, how many
    lines were no records, and the slow steps among the records."""

    offsets: dict[str, int]
    rows: tuple[dict[str, Any], ...]
    skipped: int
    slow: tuple[dict[str, Any], ...]


def _read_logs(root: str | Path, name: str, run_dir: str) -> _Logs:
    """The run's step logs: what was read before, and the lines appended since."""
    with _logs_lock:  # one reader per run at a time: two would both append the same lines
        seen = _logs.pop(run_dir, None)
        chunk = new_steps(root, name, None if seen is None else seen.offsets)
        if seen is not None and not chunk.restarted and not chunk.rows:
            logs = replace(seen, offsets=chunk.offsets)
        else:
            before = () if seen is None or chunk.restarted else seen.rows
            skipped = chunk.skipped + (0 if seen is None or chunk.restarted else seen.skipped)
            rows = before + chunk.rows
            logs = _Logs(chunk.offsets, rows, skipped, records(slow_steps(rows)))
        _logs[run_dir] = logs
        while len(_logs) > _LOG_RUNS:
            _logs.popitem(last=False)
        return logs


def _window_of(windows: tuple[DeepWindow, ...], rank: int, step: int) -> dict[str, Any]:
    """The window that recorded step ``step`` of ``rank``, else the one it opened."""
    window = next((w for w in windows if w.covers(rank, step)), None)
    opened = window is None
    if opened:
        window = next((w for w in windows if w.opened_after(rank, step)), None)
    if window is None:
        return {"file": None, "first_step": None, "last_step": None, "opened": False}
    return {
        "file": window.file,
        "first_step": window.first_step,
        "last_step": window.last_step,
        "opened": opened,
    }


@per_trace
def _trace_window(trace: TraceTable, file: Path) -> DeepWindow | None:
    """The steps one trace file recorded: its window's span as trainprof wrote it, else its
    ``ProfilerStep#N`` ranges (the analysis may drop a last step cut off before its GPU work);
    None when it has neither."""
    span = (trace.trainprof or {}).get("window")
    first, last = (
        (span.get("first_step"), span.get("last_step")) if isinstance(span, dict) else (None, None)
    )
    trigger = window_trigger(trace)
    if type(first) is int and type(last) is int:
        opened_by = None if trigger is None else trigger.step
        return DeepWindow(file.name, trace.rank, first, last, opened_by)
    steps = step_table(trace)
    numbers = steps["step"][steps["name"] != WHOLE_TRACE_NAME]
    if numbers.empty:
        return None
    return DeepWindow(file.name, trace.rank, int(numbers.min()), int(numbers.max()))

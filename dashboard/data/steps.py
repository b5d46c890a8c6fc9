"""The Steps page's data: every step of the run from the always-on step logs, its slow steps,
and the deep windows (trace files) that cover them.

The step logs (``meta/steps.<rank>.jsonl``) hold every step; the trace files hold only the
schedule's windows. A slow step (:func:`profiler.analysis.slow_steps.slow_steps`) is linked to
the trace file of its rank whose window holds it, where one does: the window's span is the one
trainprof wrote into the file (``trainprof.window``), else its ``ProfilerStep#N`` ranges, whose
numbers are the step logs' (trainprof numbers both from the same counter); a foreign trace with
no step ranges covers no step.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from dashboard.data.cache import RUN_CACHE_SIZE, gather, per_trace, records
from dashboard.data.runs import Fingerprint, open_run
from profiler.analysis.run import Run
from profiler.analysis.slow_steps import slow_steps
from profiler.analysis.steps import WHOLE_TRACE_NAME, step_table
from profiler.analysis.table import TraceTable


@dataclass(frozen=True)
class DeepWindow:
    """One trace file's capture window: the steps it recorded.

    Attributes:
        file: the trace file's name.
        rank: the rank that wrote it.
        first_step: its first ``ProfilerStep#N``.
        last_step: its last.
    """

    file: str
    rank: int
    first_step: int
    last_step: int

    def covers(self, rank: int, step: int) -> bool:
        """Whether this window recorded step ``step`` of rank ``rank``."""
        return self.rank == rank and self.first_step <= step <= self.last_step


@dataclass(frozen=True)
class StepsData:
    """What the Steps page shows of one run. Shared by the cache: treat as read-only.

    Attributes:
        name: the run's name.
        device: the training device as ``run.json`` records it (``cpu``, ``cuda``), or None.
        steps: every step-log record, each with its ``rank``, rank by rank in file order.
        slow: the slow steps (``rank``, ``step``, ``dur_us``, ``median_us``, ``ratio``) with
            ``file``: the trace file whose window covers the step, or None.
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
    """The steps of run ``name``, cached until any of its files changes.

    Raises:
        RunRefused: the name leads outside the root.
        RunNotFound: there is no run of that name.
    """
    run = open_run(root, name)
    # The step logs' fingerprints are part of the key only: a new steps line refreshes the page.
    return _cached_steps((name, str(run.root), str(run.path)), run.fingerprints(),
                         run.meta_fingerprints())  # fmt: skip


@lru_cache(maxsize=RUN_CACHE_SIZE)
def _cached_steps(
    where: tuple[str, str, str], traces: tuple[Fingerprint, ...], _logs: tuple[Fingerprint, ...]
) -> StepsData:
    name, root, run_dir = where
    found, errors = gather(traces, _trace_window)
    windows = tuple(window for window in found if window is not None)
    run = Run(run_dir, root=root, name=name)
    steps = tuple(run.steps())
    slow = [
        {**row, "file": next((w.file for w in windows if w.covers(row["rank"], row["step"])), None)}
        for row in records(slow_steps(steps))
    ]
    environment = (run.meta.meta or {}).get("environment")
    device = environment.get("device") if isinstance(environment, dict) else None
    return StepsData(
        name=name,
        device=device if isinstance(device, str) else None,
        steps=steps,
        slow=tuple(slow),
        windows=windows,
        errors=tuple(errors + run.problems()),
    )


@per_trace
def _trace_window(trace: TraceTable, file: Path) -> DeepWindow | None:
    """The steps one trace file recorded: its window's span as trainprof wrote it, else its
    ``ProfilerStep#N`` ranges (the analysis may drop a last step cut off before its GPU work);
    None when it has neither."""
    span = (trace.trainprof or {}).get("window")
    first, last = (
        (span.get("first_step"), span.get("last_step")) if isinstance(span, dict) else (None, None)
    )
    if type(first) is int and type(last) is int:
        return DeepWindow(file.name, trace.rank, first, last)
    steps = step_table(trace)
    numbers = steps["step"][steps["name"] != WHOLE_TRACE_NAME]
    if numbers.empty:
        return None
    return DeepWindow(file.name, trace.rank, int(numbers.min()), int(numbers.max()))

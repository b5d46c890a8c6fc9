"""What opened a deep-capture window outside the schedule, as the trace file records it.

A window that ``profiler.on_anomaly``, ``trainprof capture`` or SIGUSR2 opened carries its
trigger in the file's ``trainprof.window`` (the same object ``RunStore.record_trigger`` lists
under ``triggers`` in ``run.json``), beside the window's first and last step. The trace file is
read rather than ``run.json``: it says which window each trigger opened, and a file copied away
from its run still says it. Files that do not say (a scheduled window, another tool's trace)
have none.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from profiler.analysis.guards import duration_text
from profiler.analysis.table import TraceTable

KIND_ANOMALY = "anomaly"  # profiler.on_anomaly: a slow step
KIND_REQUEST = "request"  # trainprof capture (a trigger file) or SIGUSR2


@dataclass(frozen=True)
class WindowTrigger:
    """Why one trace file's window opened.

    Attributes:
        kind: :data:`KIND_ANOMALY`, :data:`KIND_REQUEST` or what a newer writer calls it.
        step: the step after which the window opened (the slow step, for an anomaly).
        first_step: the window's first recorded step.
        last_step: its last.
        step_us: the slow step's time (anomaly).
        median_us: the running median it was compared with (anomaly).
        factor: the factor it had to exceed (anomaly).
        source: the trigger file's name or ``SIGUSR2`` (request).
    """

    kind: str
    step: int | None
    first_step: int | None
    last_step: int | None
    step_us: float | None = None
    median_us: float | None = None
    factor: float | None = None
    source: str | None = None


def window_trigger(trace: TraceTable) -> WindowTrigger | None:
    """The trigger recorded in ``trace``'s ``trainprof.window``; None where there is none.

    Read tolerantly: a value of the wrong type is left out (None), never an error.
    """
    window = (trace.trainprof or {}).get("window")
    if not isinstance(window, dict):
        return None
    trigger = window.get("trigger")
    if not isinstance(trigger, dict) or not isinstance(trigger.get("kind"), str):
        return None
    return WindowTrigger(
        kind=trigger["kind"],
        step=_int(trigger.get("step")),
        first_step=_int(window.get("first_step")),
        last_step=_int(window.get("last_step")),
        step_us=_number(trigger.get("step_us")),
        median_us=_number(trigger.get("median_us")),
        factor=_number(trigger.get("factor")),
        source=trigger["source"] if isinstance(trigger.get("source"), str) else None,
    )


def trigger_text(trigger: Mapping[str, Any]) -> str:
    """A trigger (:class:`WindowTrigger`'s JSON form) in words, e.g. ``window at steps 57-59
    opened by anomaly: step 56 took 41.00 ms, 3.4x the median 12.00 ms``."""
    first, last = trigger.get("first_step"), trigger.get("last_step")
    window = "window"
    if first is not None and last is not None:
        window += f" at step {first}" if first == last else f" at steps {first}-{last}"
    kind, step = trigger.get("kind"), trigger.get("step")
    took, median = trigger.get("step_us"), trigger.get("median_us")
    if kind == KIND_ANOMALY and step is not None and took is not None and median:
        return (
            f"{window} opened by anomaly: step {step} took {duration_text(took)}, "
            f"{took / median:.1f}x the median {duration_text(median)}"
        )
    after = "" if step is None else f" after step {step}"
    if kind == KIND_REQUEST:
        source = trigger.get("source") or "unnamed"
        return f"{window} opened by a capture request ({source}){after}"
    return f"{window} opened by {kind}{after}"


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None

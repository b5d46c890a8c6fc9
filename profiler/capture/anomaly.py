"""``profiler.on_anomaly``: deep capture that opens a window by itself after a slow step.

No peer does this: torch.profiler and Kineto record the steps a schedule names in advance. Here
the always-on step times are watched instead; a step that takes more than ``factor`` times the
running median of the recent ones opens a window. The slow step has ended by the time it is
measured, so the window records the steps after it, on the bet that a slow patch lasts (a
stall in the input pipeline, a straggler, memory pressure, a recompile); a lone slow step is
described by its line in the step log, which every step has.

Between windows no Kineto session exists at all: an idle ``torch.profiler.profile`` costs ~30 us
a step in its ``step()`` (measured on CPU), three times the whole always-on path. A window
starts Kineto at the step after the slow one, as a one-window schedule: ``warmup`` steps first
(Kineto's first step after it is enabled carries its start-up cost, and torch warns without
one), then ``active`` recorded steps, then Kineto stops.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from profiler.events import (
    SLOW_STEP_FACTOR,
    SLOW_STEP_HISTORY,
    SLOW_STEP_MIN_EXCESS_MS,
    SLOW_STEP_MIN_STEPS,
)

# The threshold is recomputed from the recent step times every this many steps (a sort of
# `history` numbers, ~1-2 us, shared by the steps between).
REFRESH_EVERY = 10


@dataclass(frozen=True, kw_only=True)
class AnomalySchedule:
    """When a slow step opens a deep window; build it with :func:`on_anomaly`.

    A step slower than ``factor`` x the median of the last ``history`` step times (steps
    outside windows only: a profiled step is slower by the profiler's own cost) opens a window:
    ``warmup`` steps, then ``active`` recorded steps, starting at the next step. At most
    ``max_windows`` windows open, none before ``min_steps`` steps have been timed, and none in
    the ``cooldown`` steps after a window, so one slow patch gives one window. A step must also
    exceed the median by ``min_excess_ms``, so jitter on tiny steps opens nothing.
    """

    factor: float = 2.0
    active: int = 3
    max_windows: int = 3
    warmup: int = 1
    cooldown: int = 20
    min_steps: int = SLOW_STEP_MIN_STEPS
    history: int = SLOW_STEP_HISTORY
    min_excess_ms: float = SLOW_STEP_MIN_EXCESS_MS

    def __post_init__(self) -> None:
        factor = self.factor
        if isinstance(factor, bool) or not isinstance(factor, (int, float)):
            raise ValueError(f"on_anomaly factor must be a number > 1, got {factor!r}")
        if not math.isfinite(factor) or factor <= 1:
            raise ValueError(
                f"on_anomaly factor must be a finite number > 1 (a step slower than factor x "
                f"the median opens a window), got {factor!r}"
            )
        excess = self.min_excess_ms
        if (
            isinstance(excess, bool)
            or not isinstance(excess, (int, float))
            or not math.isfinite(excess)
            or excess < 0
        ):
            raise ValueError(
                f"on_anomaly min_excess_ms must be a finite number >= 0 (milliseconds a step "
                f"must take beyond the median), got {excess!r}"
            )
        for field, least in (
            ("active", 1),
            ("max_windows", 1),
            ("warmup", 0),
            ("cooldown", 0),
            ("min_steps", 1),
            ("history", 1),
        ):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"on_anomaly {field} must be an int >= {least}, got {value!r}")
        if self.min_steps > self.history:
            raise ValueError(
                f"on_anomaly min_steps ({self.min_steps}) cannot exceed history "
                f"({self.history}): the median would never hold that many steps"
            )

    def detector(self) -> AnomalyDetector:
        """A fresh detector for one session (this object stays reusable)."""
        return AnomalyDetector(self)

    def as_dict(self) -> dict[str, Any]:
        """The schedule's fields, for run metadata."""
        return {"kind": "on_anomaly", **asdict(self)}


def on_anomaly(
    *,
    factor: float = SLOW_STEP_FACTOR,
    active: int = 3,
    max_windows: int = 3,
    warmup: int = 1,
    cooldown: int = 20,
    min_steps: int = SLOW_STEP_MIN_STEPS,
    history: int = SLOW_STEP_HISTORY,
    min_excess_ms: float = SLOW_STEP_MIN_EXCESS_MS,
) -> AnomalySchedule:
    """A schedule that opens a deep window after a step slower than ``factor`` x the median.

    Pass it as ``profiler.profile(model, schedule=profiler.on_anomaly(...))``. The slow step
    itself is over when it is detected: the window records the ``active`` steps after
    ``warmup`` steps that follow it (step ``s`` slow: warmup ``s+1``, recorded ``s+2`` to
    ``s+1+active`` with the defaults). Each window's trace says why it opened, in
    ``trainprof.window.trigger``: ``{"kind": "anomaly", "step": s, "step_us": ...,
    "median_us": ..., "factor": ...}``; ``run.json`` lists the triggers under ``triggers``.

    Args:
        factor: how many times the running median a step must take to open a window (> 1).
        active: steps recorded per window (>= 1).
        max_windows: windows opened at most in the run (>= 1).
        warmup: Kineto steps before the recorded ones, discarded (>= 0; 1 keeps Kineto's
            start-up cost out of the window).
        cooldown: steps after a window during which no window opens (>= 0).
        min_steps: steps timed before a window may open (1 to ``history``).
        history: the median is that of the last ``history`` step times outside windows.
        min_excess_ms: how many milliseconds beyond the median a step must also take (>= 0;
            default 1 ms), so that on tiny steps a few microseconds of jitter, though
            ``factor`` times the median, open nothing.

    Raises:
        ValueError: a value out of range (all are checked here, not at the first step).
    """
    return AnomalySchedule(
        factor=factor,
        active=active,
        max_windows=max_windows,
        warmup=warmup,
        cooldown=cooldown,
        min_steps=min_steps,
        history=history,
        min_excess_ms=min_excess_ms,
    )


class AnomalyDetector:
    """The running median of recent step times, and the decision to open a window.

    :meth:`observe` runs on every step outside a window, so it costs a comparison and a list
    write: the recent times sit in a ring, and the threshold (``factor`` x their median, and at
    least the median plus ``min_excess_ms``) is recomputed every :data:`REFRESH_EVERY` steps. A
    step above that is checked against the median of the ring as it is then, so a window opens
    on the exact rule; a slow step can go unseen only while the steps have just become much
    faster (for at most ``REFRESH_EVERY`` steps).
    """

    def __init__(self, config: AnomalySchedule) -> None:
        self.config = config
        self.windows = 0
        self._factor = float(config.factor)  # inf once max_windows have opened
        self._excess_ns = config.min_excess_ms * 1e6
        self._threshold = math.inf  # _limit of the median, as of the last refresh
        self._times: list[int] = []  # the last `history` step times, a ring
        self._next = 0  # where the next time goes, once the ring is full
        self._due = 1  # observations to the next refresh of the threshold
        self._quiet = config.min_steps  # observations to skip before one may trigger

    def observe(self, step: int, step_ns: int) -> dict[str, Any] | None:
        """Take the time of a finished step outside any window.

        Returns:
            The trigger (``kind``, ``step``, ``step_us``, ``median_us``, ``factor``) when this
            step opens a window, else None.
        """
        trigger = None
        if self._quiet:
            self._quiet -= 1
        elif step_ns > self._threshold:  # rare: confirm on the median as it is now
            trigger = self._confirm(step, step_ns)
        times = self._times
        if len(times) < self.config.history:
            times.append(step_ns)
        else:
            times[self._next] = step_ns
            self._next = (self._next + 1) % len(times)
        self._due -= 1
        if not self._due:
            self._due = REFRESH_EVERY
            self._threshold = self._limit(sorted(times)[len(times) // 2])
        return trigger

    def _limit(self, median_ns: int) -> float:
        """The step time past which a step opens a window (inf once none may open)."""
        return max(self._factor * median_ns, median_ns + self._excess_ns)

    def _confirm(self, step: int, step_ns: int) -> dict[str, Any] | None:
        median = sorted(self._times)[len(self._times) // 2]
        if step_ns <= self._limit(median):
            return None
        self.windows += 1
        self._quiet = self.config.cooldown
        if self.windows >= self.config.max_windows:
            self._factor = self._threshold = math.inf
        return {
            "kind": "anomaly",
            "step": step,
            "step_us": step_ns / 1000,
            "median_us": median / 1000,
            "factor": self.config.factor,
        }

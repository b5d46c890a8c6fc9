"""Windows outside the schedule: after a slow step (:mod:`anomaly`), or asked for from outside.

From outside the process, like Kineto's on-demand tracing, two ways:

- **a trigger file**, ``<run>/meta/capture`` (every rank) or ``meta/capture.<rank>``, holding
  the number of steps or nothing (:mod:`profiler.store.capture_request`; ``trainprof capture
  RUN_DIR --steps N`` writes it). The session's ticker thread (the heartbeat's, see
  :class:`~profiler.capture.guard.Ticker`) looks for it once every :data:`REQUEST_POLL_S`, so
  the training thread never waits on the file system (a stat on a stalled network mount can
  block for seconds); the step path reads one attribute.
- **SIGUSR2**, for :data:`DEFAULT_REQUEST_STEPS` steps: SIGTERM and SIGINT are the guard's,
  SIGUSR1 is taken by schedulers and Lightning (SLURM's requeue). The handler is installed
  from the main thread, where SIGUSR2 has its default disposition only (a handler of the
  program's own is left alone: then use the file), and removed at stop. There is no SIGUSR2
  on Windows: use the file. Before the session starts and after it stops SIGUSR2 ends the
  process, as it does by default.

A window asked for starts at the next step outside a window, with the schedule's warmup step
(one for a plain schedule) and then the steps asked for. Requests made during a window are
served after it; two made before the next step are one. A run with ``schedule=None`` refuses
them with a warning: it promised not to start Kineto, and may run under a
``torch.profiler`` of the program's own, which a second Kineto session would crash.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from profiler.capture.anomaly import AnomalyDetector, AnomalySchedule
from profiler.capture.guard import Ticker
from profiler.capture.schedule import Schedule
from profiler.store.capture_request import (
    DEFAULT_REQUEST_STEPS,
    FileVersion,
    read_request,
    request_paths,
)
from profiler.store.trace_store import RunStore

REQUEST_POLL_S = 1.0
REQUEST_SIGNAL: signal.Signals | None = getattr(signal, "SIGUSR2", None)
REFUSED_LIGHT_ONLY = (
    "this run has schedule=None (light metrics only), which never starts Kineto; pass "
    "profiler.schedule(...) or profiler.on_anomaly(...) to capture on request"
)


class Triggers:
    """What opens windows outside the schedule, for one session.

    Args:
        store: the run (its trigger files, and ``run.json`` for the triggers' record).
        detector: watches step times (``on_anomaly``), or None.
        warmup: Kineto steps before a window's recorded ones.
        refuse: why requests are refused (``schedule=None``), or None to accept them.
        warn: tells the user something, once per call.
    """

    def __init__(
        self,
        store: RunStore,
        *,
        detector: AnomalyDetector | None,
        warmup: int,
        refuse: str | None,
        warn: Callable[[str], None],
    ) -> None:
        self.detector = detector
        self.warmup = warmup
        self.pending: dict[str, Any] | None = None  # a request, set by the thread or a signal
        self._store = store
        self._refuse = refuse
        self._warn = warn
        self._paths = request_paths(store.run_dir, store.rank)
        self._seen: list[FileVersion | None] = [None] * len(self._paths)
        self._handler_installed = False

    def start(self, ticker: Ticker) -> None:
        """Look for trigger files on ``ticker`` once it starts, and take SIGUSR2 where it is
        free."""
        ticker.every(REQUEST_POLL_S, self.poll)
        signum = REQUEST_SIGNAL
        if signum is None or threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signum) == signal.SIG_DFL:
            signal.signal(signum, self._on_signal)
            self._handler_installed = True

    def close(self) -> None:
        """Give SIGUSR2 back its default disposition (the session stops the ticker)."""
        signum = REQUEST_SIGNAL
        if self._handler_installed and signum is not None:
            try:
                if signal.getsignal(signum) == self._on_signal:
                    signal.signal(signum, signal.SIG_DFL)
                self._handler_installed = False
            except ValueError:  # not the main thread: ours stays, and only sets a flag
                pass

    def after_step(self, step: int, step_ns: int) -> dict[str, Any] | None:
        """A finished step outside any window: the trigger of a window to open now, or None.

        On the always-on path: an attribute read, and the detector where there is one.
        """
        request = self.pending
        if request is not None:
            self.pending = None
            return self._accept(request, step)
        detector = self.detector
        if detector is not None:
            return detector.observe(step, step_ns)
        return None

    def window(self, trigger: dict[str, Any], next_step: int) -> Schedule:
        """The one-window schedule for ``trigger``, in the run's step numbers (warmup from
        ``next_step``, then the trigger's steps); ``trigger`` is listed in ``run.json``.

        Raises:
            OSError: ``run.json`` could not be written.
        """
        active = trigger.get("steps") or (
            self.detector.config.active if self.detector is not None else DEFAULT_REQUEST_STEPS
        )
        self._store.record_trigger(trigger)
        return Schedule(wait=0, warmup=self.warmup, active=active, skip_first=next_step)

    def poll(self) -> None:
        """Read the trigger files (the ticker's chore; a test may call it directly)."""
        for index, path in enumerate(self._paths):
            self._seen[index], steps = read_request(path, self._seen[index])
            if steps is not None and self.pending is None:
                self.pending = {"kind": "request", "source": path.name, "steps": steps}

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.pending is None:
            self.pending = {"kind": "request", "source": "SIGUSR2", "steps": DEFAULT_REQUEST_STEPS}

    def _accept(self, request: dict[str, Any], step: int) -> dict[str, Any] | None:
        if self._refuse is not None:
            self._warn(f"a capture request ({request['source']}) was refused: {self._refuse}")
            return None
        return {**request, "step": step}


def triggers_for(
    schedule: Schedule | AnomalySchedule | None, store: RunStore, warn: Callable[[str], None]
) -> Triggers:
    """The triggers of a session run under ``schedule``."""
    anomaly = schedule if isinstance(schedule, AnomalySchedule) else None
    return Triggers(
        store,
        detector=anomaly.detector() if anomaly is not None else None,
        warmup=1 if schedule is None else schedule.warmup,
        refuse=None if schedule is not None else REFUSED_LIGHT_ONLY,
        warn=warn,
    )

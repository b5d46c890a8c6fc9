"""How a session's run went wrong, told once and recorded in ``run.json``.

A session never raises into the training loop for its own sake once started. What fails
instead goes here: the first store failure (a full disk, a lost permission, an error in Kineto's
export or in our writer) is warned about once, as a :class:`TrainprofWarning` naming the run
directory and the error, and recorded as ``"degraded": {"reason", "at_step"}``; a signal is
recorded as ``"interrupted": {"signal", "at_step"}``. :meth:`Faults.status` then says how the
run ended.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from typing import Any

from profiler.events import RunStatus, TrainprofWarning
from profiler.store import RunStore


def describe(exc: BaseException) -> str:
    """``Type: message`` of an exception, for one line of a warning or of ``run.json``."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class Faults:
    """The faults of one run: degraded (first reason kept), interrupted (by which signal).

    The heartbeat thread and signal handlers report here too, hence a lock, and a re-entrant
    one: a handler may interrupt the main thread inside :meth:`degrade`.
    """

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.degraded: dict[str, Any] | None = None  # {"reason", "at_step"} once degraded
        self.interrupted: str | None = None  # the name of the signal that ended the run
        self._lock = threading.RLock()

    def degrade(self, what: str, exc: BaseException, *, at_step: int) -> None:
        """Record the first failure in ``run.json`` and warn about it (later ones are quiet)."""
        with self._lock:
            if self.degraded is not None:
                return
            reason = f"{what}: {describe(exc)}"
            self.degraded = {"reason": reason, "at_step": at_step}
        self.warn(
            f"{reason}; deep capture is off for the rest of the run, per-step metrics go on "
            "while they can be written"
        )
        with contextlib.suppress(Exception):  # the store is what fails: finish() tries again
            self.store.mark_degraded(reason, at_step=at_step)

    def interrupt(self, signal_name: str, *, at_step: int) -> None:
        """Record that ``signal_name`` is ending the run.

        Raises:
            OSError: ``run.json`` could not be written (the status is still kept for the end).
        """
        self.interrupted = signal_name
        self.store.mark_interrupted(signal_name, at_step=at_step)

    def warn(self, message: str) -> None:
        """Issue a :class:`TrainprofWarning` about this run."""
        text = f"trainprof: {message} (run {self.store.run_dir})"
        warnings.warn(text, TrainprofWarning, stacklevel=5)

    def status(self, error: BaseException | None) -> RunStatus:
        """How the run ended, given the training loop's exception (if any)."""
        if self.interrupted is not None or isinstance(error, KeyboardInterrupt):
            return RunStatus.INTERRUPTED
        if error is not None:
            return RunStatus.FAILED
        return RunStatus.COMPLETE if self.degraded is None else RunStatus.DEGRADED

    def finish(self, error: BaseException | None, *, steps: int) -> None:
        """Record how the run ended; a store that cannot is warned about (unless a warning
        about it has been given already), never raised."""
        status = self.status(error)
        try:
            self.store.finish(status, steps=steps, error=error)
        except Exception as exc:
            if self.degraded is None:
                self.warn(f"could not record the run's end ({status.value}): {describe(exc)}")

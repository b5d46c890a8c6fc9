"""What keeps a session from taking down the job it watches, around the session itself.

- **One session at a time.** torch's profiler crashes (a segfault) on a second concurrent
  Kineto session, and nested ``profile()`` sessions crash at exit, so :func:`claim` refuses a
  second trainprof session in the process, and a deep one while any autograd profiler is on.
  A light-only session (``schedule=None``) never touches Kineto: it may run under someone
  else's ``torch.profiler`` session, but not beside another trainprof session, which would
  wrap the same forwards and optimizer hooks.
- **Exit.** A session still live at interpreter exit is stopped by an ``atexit`` hook, before
  torch tears down, marked by how the interpreter is leaving (:func:`_stop_at_exit`).
- **Signals.** :class:`SignalGuard` handles SIGTERM and SIGINT while a session is live, then
  hands the signal to whatever handled it before.
- **Heartbeat.** :class:`Watch` beats every ``HEARTBEAT_INTERVAL_S``, so readers can tell a
  live run from one killed with SIGKILL, on the session's one :class:`Ticker` thread (the
  trigger-file poll of :mod:`on_demand` shares it).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

import torch

from profiler.events import TrainprofWarning
from profiler.store import liveness
from profiler.store.trace_store import META_FLUSH_S

# A signal gives the window in progress this long to be exported and written; past it the
# signal goes on to end the process (a scheduler's SIGKILL follows SIGTERM within ~30 s).
SIGNAL_WRITE_BUDGET_S = 5.0
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Frames of these modules on the interrupted stack mean Kineto is mid-transition: a signal
# handler must not stop it then (torch's own code would resume on a half-changed profiler).
_KINETO_MODULES = (
    "torch.profiler",
    "torch.autograd.profiler",
    "profiler.capture.kineto",
    "profiler.capture.windows",
)


class ProfilerStateError(RuntimeError):
    """A Profile method was called in a state where it cannot work (e.g. step() before start(),
    or start() while another profiler is active)."""


class Session(Protocol):
    """What the guard needs of a session."""

    @property
    def run_dir(self) -> Any: ...

    def stop(self, error: BaseException | None = None) -> None: ...


_live: list[Session] = []
_lock = threading.Lock()
_exit_hook: list[bool] = []  # the atexit hook is registered once, at the first claim
# A forked child (a DataLoader worker) inherits the list but not the session's threads or its
# Kineto session: it may start one of its own.
os.register_at_fork(after_in_child=_live.clear)


def claim(session: Session, *, deep: bool) -> None:
    """Register ``session`` as this process's live session, or refuse it.

    Args:
        session: the session about to start.
        deep: it will run Kineto.

    Raises:
        ProfilerStateError: another trainprof session is live, or ``deep`` and an autograd
            profiler (``torch.profiler.profile``, ``torch.autograd.profiler.profile``) is
            recording. A torch.profiler session between its windows records nothing and
            cannot be seen.
    """
    with _lock:
        if _live:
            raise ProfilerStateError(
                f"another trainprof session is running (run {_live[0].run_dir}); "
                "stop it before starting a new one: torch's profiler cannot run two at once"
            )
        if deep and torch.autograd._profiler_enabled():
            raise ProfilerStateError(
                "a torch profiler is already active in this process: a second Kineto session "
                "crashes torch; stop it first, or pass schedule=None for light metrics only"
            )
        _live.append(session)
        if not _exit_hook:
            atexit.register(_stop_at_exit)
            _exit_hook.append(True)


def release(session: Session) -> None:
    """Forget ``session`` (it has stopped)."""
    with _lock:
        if session in _live:
            _live.remove(session)


def live_sessions() -> list[Session]:
    """The sessions started and not yet stopped."""
    with _lock:
        return list(_live)


def _stop_at_exit() -> None:
    """Stop sessions the program left running, before torch's own teardown.

    An uncaught exception in the main script has been printed by then and left in
    ``sys.last_value``: the run is marked as it would have been inside ``with``, failed (or
    interrupted for KeyboardInterrupt); a plain exit marks it complete.
    """
    error = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)
    for session in live_sessions():
        try:
            warnings.warn(
                f"trainprof: run {session.run_dir} was not stopped; stopping it at exit",
                TrainprofWarning,
                stacklevel=1,
            )
            session.stop(error=error if isinstance(error, BaseException) else None)
        except BaseException:  # noqa: B036 - at exit there is no one left to tell
            release(session)


def kineto_busy(frame: FrameType | None) -> bool:
    """Whether the interrupted stack ``frame`` is inside torch's profiler or our window writer."""
    while frame is not None:
        if str(frame.f_globals.get("__name__", "")).startswith(_KINETO_MODULES):
            return True
        frame = frame.f_back
    return False


class SignalGuard:
    """Call ``on_signal`` at SIGTERM and SIGINT, then do what the previous handler would have.

    Installed only from the main thread (Python delivers signals there only), and not over a
    disposition of ``SIG_IGN`` (a job started under ``nohup`` keeps ignoring SIGINT) or one set
    outside Python. After ``on_signal``: a previous Python handler is called (for SIGINT by
    default Python's, which raises KeyboardInterrupt); a previous ``SIG_DFL`` is restored and
    the signal raised again, so the process ends as the signal would have ended it (exit
    status -N, 128+N in a shell).

    Args:
        on_signal: called with the signal number and the interrupted frame; its errors are
            swallowed so that the signal still goes on.
    """

    def __init__(self, on_signal: Callable[[int, FrameType | None], None]) -> None:
        self._on_signal = on_signal
        self._previous: dict[int, Any] = {}
        self._handling = False
        self._pid = os.getpid()

    def install(self) -> None:
        """Put the handlers in place (a no-op outside the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in HANDLED_SIGNALS:
            previous = signal.getsignal(signum)
            if previous is None or previous == signal.SIG_IGN:
                continue
            signal.signal(signum, self._handle)
            self._previous[signum] = previous

    def restore(self) -> None:
        """Put the previous handlers back where ours is still the one installed."""
        for signum, previous in list(self._previous.items()):
            try:
                if signal.getsignal(signum) == self._handle:
                    signal.signal(signum, previous)
            except ValueError:  # not the main thread: ours stays, and only chains from now on
                continue
            del self._previous[signum]

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous.get(signum, signal.SIG_DFL)
        # A second signal during our work goes straight on. A forked child (a DataLoader worker
        # gets the terminal's SIGINT too) inherits this handler but not the session: it must
        # not write the parent's run.
        if not self._handling and os.getpid() == self._pid:
            self._handling = True
            try:
                self._on_signal(signum, frame)
            except Exception:  # noqa: S110 - the signal must go on whatever happened
                pass
            finally:
                self._handling = False
        chain(signum, frame, previous)


def chain(signum: int, frame: FrameType | None, previous: Any) -> None:
    """Do what ``previous`` (a handler as ``signal.getsignal`` returns it) does with ``signum``."""
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_DFL:
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)  # ends the process here unless the signal is blocked


def run_within(budget_s: float, fn: Callable[[], None], *, name: str) -> bool:
    """Run ``fn`` on a daemon thread and wait at most ``budget_s`` for it.

    Its exception, if any, is raised here. Past the budget the thread is left to finish (or
    to die with the process) and False is returned.
    """
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: B036 - handed to the waiting thread
            errors.append(exc)

    thread = threading.Thread(target=run, name=f"trainprof-{name}", daemon=True)
    thread.start()
    thread.join(budget_s)
    if thread.is_alive():
        return False
    if errors:
        raise errors[0]
    return True


class Ticker:
    """Call each of a session's periodic chores at its own interval, from one daemon thread.

    The heartbeat (every 10 s) and the trigger-file poll (every second) share it: one thread
    and one wake-up a second, not two threads. A chore that fails is ignored (each reports its
    own failures); one that takes long delays the others, and its next call counts from its end,
    so a stalled file system is never called in a burst to catch up.

    Args:
        event: what the thread waits on, ``wait(timeout) -> bool`` and ``set()`` like a
            ``threading.Event``. Tests pass one they tick by hand: each tick is the wait running
            out, so the chores next due run (on the ticker's own schedule, not the wall clock's).
        name: the thread's name, after ``trainprof-``.
    """

    def __init__(self, event: Any = None, *, name: str = "ticker") -> None:
        self.name = name
        self._event = threading.Event() if event is None else event
        self._chores: list[list[Any]] = []  # [next due on time.monotonic(), interval_s, chore]
        self._thread: threading.Thread | None = None

    @property
    def intervals(self) -> list[float]:
        """Each chore's interval, in the order they were added."""
        return [interval for _, interval, _ in self._chores]

    def every(self, interval_s: float, chore: Callable[[], None]) -> None:
        """Call ``chore`` every ``interval_s`` seconds once started (add chores before then).

        Raises:
            ProfilerStateError: the thread has started already.
        """
        if self._thread is not None:
            raise ProfilerStateError("add a ticker's chores before it starts")
        self._chores.append([0.0, float(interval_s), chore])

    def start(self) -> None:
        """Start the thread (none for no chores)."""
        if not self._chores or self._thread is not None:
            return
        now = time.monotonic()
        for chore in self._chores:
            chore[0] = now + chore[1]
        self._thread = threading.Thread(
            target=self._run, name=f"trainprof-{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wait for a chore in progress to end."""
        self._event.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        chores = self._chores
        while True:
            due = min(chore[0] for chore in chores)
            if self._event.wait(max(0.0, due - time.monotonic())):
                return
            for chore in chores:
                if chore[0] <= due:
                    with contextlib.suppress(Exception):  # chores report their own failures
                        chore[2]()
                    chore[0] = max(due, time.monotonic()) + chore[1]


class Watch:
    """A live session's signal handlers and heartbeat, put in place together.

    Args:
        on_signal: see :class:`SignalGuard`.
        beat: called every ``liveness.HEARTBEAT_INTERVAL_S`` (read now) on :attr:`ticker`.
        flush: called every ``META_FLUSH_S`` on :attr:`ticker`: lists the trace files written
            since in the run's records (``RunStore.flush_meta``), off the windows' write path.

    The ticker starts at :meth:`start`, once the session has added its other chores to it.
    """

    def __init__(
        self,
        on_signal: Callable[[int, FrameType | None], None],
        beat: Callable[[], None],
        flush: Callable[[], None] | None = None,
    ) -> None:
        self.signals = SignalGuard(on_signal)
        self.signals.install()
        self.ticker = Ticker(name="session")
        self.ticker.every(liveness.HEARTBEAT_INTERVAL_S, beat)
        if flush is not None:
            self.ticker.every(META_FLUSH_S, flush)

    def start(self) -> None:
        """Start the ticker's thread: the heartbeat and the chores added since."""
        self.ticker.start()

    def close(self) -> None:
        """Stop the ticker (a chore in progress ends first) and restore the handlers."""
        self.ticker.stop()
        self.signals.restore()

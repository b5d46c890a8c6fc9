"""The hooks that profile an unmodified script, installed once torch is imported.

- **Optimizer steps end training steps.** Each optimizer class's ``step`` gets an outermost
  wrapper when its first instance is built (through ``Optimizer._patch_step_function``, which
  torch calls from every optimizer's ``__init__``). The step ends once ``step()`` has returned,
  by the rule of :mod:`.cycle` for several optimizers. Not from a global post-hook: those run
  inside torch's ``Optimizer.step#...`` range, so the step's end would cut that range in two in
  the trace, and inside torch's loop over the hooks, which the step metrics' own hooks change
  (``OrderedDict mutated during iteration``).
- **Data waits** are the time of each ``next()`` on a DataLoader iterator (torch's own
  ``_BaseDataLoaderIter.__next__``, which records the DataLoader range in deep windows itself).
- **The session** (:class:`profiler.capture.session.Profile`) starts at the process's first
  DataLoader batch or optimizer step, whichever comes first: a process that does neither
  (torchrun's agent, a DataLoader worker) writes nothing. At the first training step's end the
  models are found from the optimizers' parameters (:mod:`.roots`) and watched. It is stopped
  at exit, before the guard's own exit hook, as failed when the script died of an exception.

Nothing here raises into the script for its own sake: a failure is one ``trainprof:`` line on
stderr, and the process goes on unprofiled.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import sys
import time
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import dataloader

from profiler.autorun.config import DEFAULT, AnomalyWindows, AutorunConfig, schedule_fields
from profiler.autorun.cycle import OptimizerCycle

_MARK = "_trainprof_autorun"
_installed: list[AutoProfiler] = []


def install(config: AutorunConfig) -> AutoProfiler:
    """Put the hooks in place in this process (once; later calls return the first)."""
    if not _installed:
        auto = AutoProfiler(config)
        auto.install()
        _installed.append(auto)
    return _installed[0]


class AutoProfiler:
    """One process's profiling under ``trainprof run``.

    Args:
        config: the run's settings.
    """

    def __init__(self, config: AutorunConfig) -> None:
        self.config = config
        self.session: Any = None  # a started Profile, once the process trains
        self.enabled = True
        self._pid = os.getpid()
        self._cycle = OptimizerCycle()
        self._optimizers: weakref.WeakSet[Any] = weakref.WeakSet()
        self._adopted = self._watched = 0  # optimizers seen; how many of them were watched
        self._depth = 0  # nested optimizer steps (a subclass calling super().step())

    def install(self) -> None:
        """Wrap ``Optimizer._patch_step_function`` and the DataLoader iterators' ``__next__``."""
        optimizer_cls = torch.optim.Optimizer
        patch = optimizer_cls._patch_step_function

        @functools.wraps(patch)
        def patch_step_function(optimizer: Any) -> None:
            patch(optimizer)
            if self.enabled:
                self._guarded(lambda: self._adopt(optimizer))

        optimizer_cls._patch_step_function = patch_step_function  # type: ignore[method-assign,assignment]
        iterator_cls = dataloader._BaseDataLoaderIter
        iterator_cls.__next__ = self._timed_next(iterator_cls.__next__)  # type: ignore[method-assign,assignment]
        os.register_at_fork(after_in_child=self._forked)

    # Hooks --------------------------------------------------------------------------------------

    def _adopt(self, optimizer: Any) -> None:
        if optimizer in self._optimizers:
            return
        self._optimizers.add(optimizer)
        self._adopted += 1
        cls = type(optimizer)
        step = cls.__dict__.get("step")
        if step is not None and not getattr(step, _MARK, False):
            cls.step = self._marking_step(step)

    def _marking_step(self, step: Callable[..., Any]) -> Callable[..., Any]:
        # functools.wraps copies torch's `hooked` flag, so torch does not wrap ours again.
        @functools.wraps(step)
        def step_and_mark(optimizer: Any, *args: Any, **kwargs: Any) -> Any:
            if not self.enabled or self._depth:
                return step(optimizer, *args, **kwargs)
            self._depth += 1
            try:
                self._guarded(lambda: self._entered(optimizer))
                out = step(optimizer, *args, **kwargs)
            finally:
                self._depth -= 1
            self._guarded(lambda: self._exited(optimizer))
            return out

        setattr(step_and_mark, _MARK, True)
        return step_and_mark

    def _timed_next(self, next_: Callable[[Any], Any]) -> Callable[[Any], Any]:
        @functools.wraps(next_)
        def timed_next(iterator: Any) -> Any:
            if not self.enabled or (self.session is None and not self._start()):
                return next_(iterator)
            session = self.session
            start = time.perf_counter_ns()
            try:
                return next_(iterator)
            finally:
                session.add_data_wait(time.perf_counter_ns() - start)

        return timed_next

    def _entered(self, optimizer: Any) -> None:
        if self.session is None and not self._start():
            return
        self._cycle.entered(optimizer)

    def _exited(self, optimizer: Any) -> None:
        session = self.session
        if session is None or not self._cycle.exited(optimizer):
            return
        if self._watched != self._adopted:  # the first step, or a new optimizer since
            from profiler.autorun.roots import training_roots

            self._watched = self._adopted
            session.watch(*training_roots(list(self._optimizers)))
        session.step()

    # Session ------------------------------------------------------------------------------------

    def _start(self) -> bool:
        """Start the session (on the first batch or step); False where this process must not."""
        if not self.enabled or os.getpid() != self._pid:
            return False
        if torch.utils.data.get_worker_info() is not None:  # a DataLoader worker never trains
            self.enabled = False
            return False
        from profiler.capture.session import Profile

        try:
            self.session = Profile(
                run_name=self.config.run_name,
                out_dir=self.config.out_dir,
                schedule=_schedule(self.config),
                metadata={"launched_by": "trainprof run"},
            ).start()
        except Exception as exc:
            self._give_up(exc)
            return False
        # After the session's start: atexit runs hooks last-in first-out, so this one comes
        # before the guard's, which would warn about a session left running.
        atexit.register(self._stop_at_exit)
        return True

    def _stop_at_exit(self) -> None:
        """Stop the session, marked as the interpreter leaves: failed after an uncaught
        exception (Python keeps it in ``sys.last_exc``/``sys.last_value``), else complete."""
        session, self.session = self.session, None
        self.enabled = False
        if session is None or os.getpid() != self._pid:
            return
        error = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)
        with contextlib.suppress(BaseException):  # at exit there is no one left to tell
            session.stop(error=error if isinstance(error, BaseException) else None)

    def _forked(self) -> None:
        """A forked child (a DataLoader worker) inherits the hooks, never the session."""
        self.enabled = False
        self.session = None

    def _guarded(self, action: Callable[[], None]) -> None:
        try:
            action()
        except Exception as exc:
            self._give_up(exc)

    def _give_up(self, exc: Exception) -> None:
        """Tell once, stop profiling this process and let the script go on."""
        self.enabled = False
        sys.stderr.write(
            f"trainprof: stopped profiling this process: {type(exc).__name__}: {exc}\n"
        )
        session, self.session = self.session, None
        if session is not None:
            with contextlib.suppress(Exception):  # told already; the script goes on
                session.stop()


def _schedule(config: AutorunConfig) -> Any:
    """The run's deep-capture schedule: ``profile()``'s default, none, ``on_anomaly`` or the
    windows given."""
    from profiler.capture.anomaly import on_anomaly
    from profiler.capture.schedule import Schedule
    from profiler.capture.session import DEFAULT_SCHEDULE

    if config.schedule == DEFAULT:
        return DEFAULT_SCHEDULE
    if config.schedule is None:
        return None
    if isinstance(config.schedule, AnomalyWindows):
        return on_anomaly(factor=config.schedule.factor)
    return Schedule(**schedule_fields(tuple(config.schedule)))

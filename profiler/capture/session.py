"""``profiler.profile``: the context manager a training loop runs under.

It is a thin try/finally over :meth:`Profile.start` and :meth:`Profile.stop`. Every step gets the
always-on metrics (:mod:`step_metrics`); the schedule's active steps also get a Kineto capture with
per-module ranges and memory counters (:mod:`module_hooks`), written as one trace file per window.

Once started, the session never raises into the training loop for its own sake: what fails is
told once and recorded (:mod:`faults`), and deep capture stops (:mod:`windows`). :mod:`guard`
keeps one session per process, handles SIGTERM and SIGINT, beats the heartbeat, and stops a
session left running at exit.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from torch import nn

from profiler.capture.anomaly import AnomalySchedule
from profiler.capture.captures import Captures
from profiler.capture.clock import Clock
from profiler.capture.environment import device_kind, distributed_info, environment
from profiler.capture.faults import Faults
from profiler.capture.guard import (
    SIGNAL_WRITE_BUDGET_S,
    ProfilerStateError,
    Watch,
    claim,
    kineto_busy,
    release,
)
from profiler.capture.loader import ProfiledLoader
from profiler.capture.memory import MemoryProbe
from profiler.capture.on_demand import triggers_for
from profiler.capture.schedule import Schedule
from profiler.capture.step_metrics import StepMetrics
from profiler.capture.step_sinks import StepSinks
from profiler.capture.system import SystemSampler
from profiler.capture.watching import as_models, rewire
from profiler.capture.windows import DeepCapture
from profiler.events import STEP_FORMAT
from profiler.store import RunStore, drain_side_jobs, remove_stale_scratch

__all__ = ["DEFAULT_SCHEDULE", "Profile", "ProfiledLoader", "ProfilerStateError", "profile"]
T = TypeVar("T")
DEFAULT_SCHEDULE = Schedule(wait=1, warmup=1, active=3, repeat=1)


class Profile:
    """A profiling session over one training run, used as ``with profiler.profile(model) as prof``.

    Args:
        model: module(s) to hook for per-module ranges and the forward/backward split.
        run_name: the run's directory name under ``out_dir`` (default: a timestamp).
        out_dir: the trace store root.
        schedule: which steps get a full Kineto capture, ``profiler.schedule`` or
            ``on_anomaly`` (and those asked for, :mod:`on_demand`); None: light metrics only.
        record_shapes: passed to Kineto (input shapes of ops).
        profile_memory: passed to Kineto (allocator events).
        with_stack: passed to Kineto (Python stacks of ops).
        system_metrics: sample CPU %, RSS and GPU load on a background thread.
        metadata: your own JSON-serialisable facts about the run (hyperparameters, a ticket),
            kept in ``meta/run.json`` under ``config.metadata``.
        tensorboard_logdir: also write the run where TensorBoard reads it, ``<logdir>/<run>/``:
            per-step scalars at each ~1 s flush, then at stop the full export (window scalars,
            recommendations, traces for the profiler plugin) by ``trainprof
            export-tensorboard`` in a child process (its failure is a warning). Rank 0 only;
            export other ranks' runs afterwards.

    The session starts when the ``with`` block is entered (or at :meth:`start`). Inside the
    block use ``prof.loader(iterable)`` to time data waits and call ``prof.step()`` once per
    step; afterwards ``prof.run_dir`` and ``prof.trace_files`` say where everything went.

    Only one session runs in a process at a time (see :mod:`guard`). While it runs, SIGTERM and
    SIGINT first flush the step log, write the window in progress (within
    ``SIGNAL_WRITE_BUDGET_S``) and mark the run ``interrupted``, then do what they did before.

    Raises:
        TypeError: ``model`` or ``schedule`` is of the wrong type.
        ValueError: ``run_name`` is not a plain directory name.
    """

    def __init__(
        self,
        model: nn.Module | Sequence[nn.Module] | None = None,
        *,
        run_name: str | None = None,
        out_dir: str | os.PathLike[str] = "traces",
        schedule: Schedule | AnomalySchedule | None = DEFAULT_SCHEDULE,
        record_shapes: bool = False,
        profile_memory: bool = False,
        with_stack: bool = False,
        system_metrics: bool = True,
        metadata: Mapping[str, Any] | None = None,
        tensorboard_logdir: str | os.PathLike[str] | None = None,
    ) -> None:
        if schedule is not None and not isinstance(schedule, (Schedule, AnomalySchedule)):
            raise TypeError("schedule must come from profiler.schedule or on_anomaly, or be None")
        self.models = as_models(model)
        self.schedule = schedule
        self.kineto_options = {
            "record_shapes": bool(record_shapes),
            "profile_memory": bool(profile_memory),
            "with_stack": bool(with_stack),
        }
        self.system_metrics = system_metrics
        self.metadata = dict(metadata or {})
        self.run_name = run_name or time.strftime("%Y%m%d-%H%M%S")
        self.distributed = distributed_info()
        self.rank = int(self.distributed["rank"])
        self.store = RunStore(out_dir, self.run_name, rank=self.rank)
        self.device = device_kind()
        self.tensorboard_logdir = None if tensorboard_logdir is None else Path(tensorboard_logdir)
        self._started = False
        self._step = 0
        self._clock = Clock()
        self._memory: MemoryProbe | None = None
        self._metrics: StepMetrics | None = None
        self._deep: DeepCapture | None = None  # None: light metrics only (or between windows)
        self._deep_until: int | None = None  # the step at which self._deep has no window left
        self._captures: Captures | None = None  # builds self._deep, writes its windows
        self._sampler: SystemSampler | None = None
        self._sinks: StepSinks | None = None  # the step log, TensorBoard
        self._watch: Watch | None = None  # signal handlers and heartbeat while running
        self._faults = Faults(self.store)
        self._triggers = triggers_for(schedule, self.store, self._faults.warn)  # see on_demand
        self._held: BaseException | None = None  # a KeyboardInterrupt from inside Kineto

    # Public surface ----------------------------------------------------------------------------

    @property
    def run_dir(self) -> Path:
        """The run's directory in the trace store."""
        return self.store.run_dir

    @property
    def trace_files(self) -> list[Path]:
        """Trace files written so far, one per capture window."""
        return list(self.store.trace_files)

    @property
    def step_num(self) -> int:
        """Index of the step in progress (0-based)."""
        return self._step

    def __enter__(self) -> Profile:
        return self.start()

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.stop(error=exc)

    def start(self) -> Profile:
        """Create the run directory, hook the model and start the first step.

        Another active profiler is refused before anything is written.

        Raises:
            ProfilerStateError: already started, or another profiler is active in this
                process (any trainprof session; for a deep one also torch's, see
                :func:`guard.claim`).
            PermissionError: ``out_dir`` cannot be written.
            FileExistsError: a run of this name already exists there, or another process is
                creating it now.
        """
        if self._started:
            raise ProfilerStateError("this profile session has already been started")
        claim(self, deep=self.schedule is not None)
        try:
            remove_stale_scratch()  # what killed runs left in /dev/shm: one listing
            self.store.create(self._config(), environment())
        except BaseException:
            release(self)
            raise
        self._started = True
        try:
            self._memory = MemoryProbe("cuda" if self.device != "cpu" else "cpu")
            self._sinks = StepSinks(
                self.store,
                self._faults,
                self._degrade,
                tensorboard_logdir=self.tensorboard_logdir,
            )
            self._metrics = StepMetrics(
                self.models, self._memory, self._sinks.write, self._clock, cuda=self.device != "cpu"
            )
            watch = self._watch = Watch(self._on_signal, self._beat, self._flush_meta)
            if self.system_metrics:
                self._sampler = SystemSampler(step_peak=self._metrics.step_peak)
                self._sampler.start()
                self._metrics.sampler = self._sampler
            self._metrics.attach()
            self._captures = self._build_captures(self._memory, self._metrics)
            self._triggers.start(watch.ticker)
            watch.start()  # one thread: the heartbeat and the trigger-file poll
            if isinstance(self.schedule, Schedule):
                self._open(self.schedule, self._step, None)
            self._metrics.begin(self._step, deep=self._recording())
        except BaseException as exc:
            self.stop(error=exc)
            raise
        return self

    def step(self) -> None:
        """Mark the end of a training step (call once per iteration).

        Raises:
            ProfilerStateError: called before ``start()``/``with`` or after ``stop()``.
        """
        if not self._started:
            raise ProfilerStateError(
                "prof.step() was called outside the profiled block: call it inside "
                "`with profiler.profile(...) as prof:` (or between prof.start() and prof.stop())"
            )
        metrics = self._metrics
        assert metrics is not None
        self._step = step = self._step + 1
        deep = self._deep
        if deep is None:  # no Kineto: the next step starts where this one ended
            step_ns = metrics.roll(step)
            triggers = self._triggers
            if triggers.pending is None and triggers.detector is None:  # nothing to ask: done
                return
            trigger = triggers.after_step(step - 1, step_ns)
            if trigger is not None and self._open_triggered(trigger):
                metrics.begin(step, deep=self._recording())  # after Kineto's start
            return
        recording = deep.recording
        metrics.end(deep=recording)
        deep.step(self._step, was_recording=recording)
        if deep.failed or self._step == self._deep_until:  # a write failed, or no window left
            self._end_deep(last_step=self._step - 1)
            metrics.begin(self._step, deep=False)
            self._raise_held()
            return
        # The next step starts after Kineto's step(), which may write a window: that time belongs
        # to neither step.
        metrics.begin(self._step, deep=deep.recording)

    def loader(self, iterable: Iterable[T]) -> ProfiledLoader[T]:
        """Wrap a DataLoader (or any iterable) so the wait for each batch is timed.

        The wait counts towards each step's ``data_wait_us``; in deep windows it is also a range
        named ``enumerate(DataLoader)#<iterator>.__next__``, as TensorBoard's plugin expects.
        """
        return ProfiledLoader(iterable, self)

    def add_data_wait(self, ns: int) -> None:
        """Count ``ns`` nanoseconds of the current step as waiting for input data.

        For loops whose iterator cannot be wrapped with :meth:`loader` (a framework's own
        fetch loop): time the wait yourself and hand it here. Ignored outside a session.
        """
        metrics = self._metrics
        if metrics is not None and self._started:
            metrics.data_wait_ns += ns

    def watch(self, *models: nn.Module) -> None:
        """Hook more models: those a script trains, when they are found after :meth:`start`.

        Their forwards count towards each step's forward phase, and they get module ranges,
        from now on (a capture window in progress keeps what it recorded). A model watched
        already is skipped; with two or more models, ranges are named ``model0.``,
        ``model1.``... (see ``module_hooks.root_names``).

        Raises:
            TypeError: an argument is not an ``nn.Module``.
        """
        new = [m for m in as_models(list(models)) if all(m is not w for w in self.models)]
        if not new:
            return
        self.models.extend(new)
        captures = self._captures
        if self._started and captures is not None:
            self._guarded(
                "hook the new models",
                lambda: rewire(self.models, self._metrics, self._deep, captures.module_tracer),
            )

    def stop(self, error: BaseException | None = None) -> None:
        """Write what was captured, remove every hook and record how the run ended.

        It does not raise for the store: what cannot be written is reported once as a
        :class:`~profiler.events.TrainprofWarning` and the run is marked ``degraded`` where
        ``run.json`` can still be written. With ``error`` (an exception from the training
        loop) the run is marked failed (interrupted for KeyboardInterrupt), and the original
        exception is the one the caller sees.
        """
        if not self._started:
            return
        self._started = False
        try:
            self._finish(error)
            if self._sinks is not None:
                self._sinks.export()
        finally:
            release(self)
        if error is None:
            self._raise_held()

    # Internals ----------------------------------------------------------------------------------

    def _recording(self) -> bool:
        return self._deep is not None and self._deep.recording

    def _open(self, schedule: Schedule, step: int, trigger: dict[str, Any] | None) -> None:
        """Start Kineto at ``step`` under ``schedule``, ended when it has no window left."""
        assert self._captures is not None
        self._deep = self._captures.build(schedule, trigger)
        self._deep_until = schedule.end_step
        self._deep.start(step)

    def _open_triggered(self, trigger: dict[str, Any]) -> bool:
        """Open the window ``trigger`` asks for from the step beginning now (:mod:`on_demand`):
        Kineto starts at the step just ended and moves on. Whether Kineto runs."""
        if self._faults.degraded is not None:
            return False
        schedule = self._triggers.window(trigger, self._step)  # and listed in run.json
        self._guarded("open a window", lambda: self._open(schedule, self._step - 1, trigger))
        deep = self._deep
        if deep is not None and not deep.failed:
            deep.step(self._step, was_recording=False)
        return deep is not None

    def _build_captures(self, memory: MemoryProbe, metrics: StepMetrics) -> Captures:
        return Captures(
            self.models,
            memory,
            self._clock,
            self.store,
            self._sampler,
            options=self.kineto_options,
            user_ranges=self.device != "cpu",
            header={"run_name": self.run_name, "rank": self.rank, "device": self.device},
            config=self._config,
            distributed_info=self.distributed,
            on_window_start=metrics.install_now,  # beneath the tracer's wrapper of the roots
            on_error=self._degrade,
        )

    def _end_deep(self, *, last_step: int) -> None:
        """Stop Kineto, writing the window in progress unless capture failed; go on light."""
        deep, self._deep = self._deep, None
        if deep is not None:
            deep.stop(last_step=last_step)
            self._held = self._held or deep.held

    def _raise_held(self) -> None:
        """Raise what interrupted a window's write (KeyboardInterrupt), now Kineto is clear."""
        held, self._held = self._held, None
        if held is not None:
            raise held

    def _finish(self, error: BaseException | None) -> None:
        if self._watch is not None:  # no heartbeat may follow the last write of run.json
            self._watch.close()
        self._guarded("end the capture", lambda: self._end_capture(error))
        for what, action in self._teardown():
            self._guarded(what, action)
        drain_side_jobs()  # the last window's scratch file is gone before the run ends
        self._faults.finish(error, steps=self._step)

    def _end_capture(self, error: BaseException | None) -> None:
        try:
            if self._metrics is not None:
                if error is None:  # steps end at step(); what follows the last one is no step
                    self._metrics.discard()
                else:
                    self._metrics.end(deep=self._recording(), completed=False)
        finally:  # the module tracer comes off whatever happened
            self._end_deep(last_step=self._step if error is not None else self._step - 1)

    def _teardown(self) -> list[tuple[str, Callable[[], None]]]:
        """What stop() undoes, in order, each on its own (one failing skips no other)."""
        steps: list[tuple[str, Callable[[], None]]] = []
        if self._metrics is not None:
            steps += [
                ("remove the step hooks", self._metrics.detach),
                ("flush the step metrics", self._metrics.flush),
            ]
        steps.append(("stop watching for capture requests", self._triggers.close))
        if self._sampler is not None:
            steps.append(("stop the system sampler", self._sampler.stop))
        if self._memory is not None:
            steps.append(("close the memory probe", self._memory.close))
        if self._sinks is not None:
            steps += self._sinks.closers()
        return steps

    def _degrade(self, what: str, exc: BaseException) -> None:
        """Go on without deep capture after a failure (told once, see :class:`Faults`)."""
        deep = self._deep
        if deep is not None:
            deep.failed = True  # the next step() stops it
        self._faults.degrade(what, exc, at_step=self._step)

    def _guarded(self, what: str, action: Callable[[], None]) -> None:
        try:
            action()
        except Exception as exc:
            self._degrade(f"could not {what}", exc)

    def _beat(self) -> None:
        self._guarded("write the heartbeat to run.json", self.store.heartbeat)

    def _flush_meta(self) -> None:
        self._guarded("list the trace files in run.json", self.store.flush_meta)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        """Before SIGTERM/SIGINT goes on: mark the run interrupted, flush the step log and
        write the window in progress within ``SIGNAL_WRITE_BUDGET_S``.

        Kineto is left alone if the signal arrived inside torch's profiler (stopping it there
        could crash torch): that window is lost, the rest is kept.
        """
        if not self._started:  # stopped off the main thread, so the handler stayed
            return
        name = signal.Signals(signum).name
        self._guarded(
            "record the interruption", lambda: self._faults.interrupt(name, at_step=self._step)
        )
        metrics = self._metrics
        if metrics is not None:
            self._guarded("flush the step metrics", lambda: metrics.flush(block=False))
        deep = self._deep
        if deep is not None and not kineto_busy(frame):
            deep.write_budget_s = SIGNAL_WRITE_BUDGET_S
            self._end_deep(last_step=self._step)

    def _config(self) -> dict[str, Any]:
        return {
            "steps_format": STEP_FORMAT,
            "schedule": self.schedule.as_dict() if self.schedule else None,
            **self.kineto_options,
            "system_metrics": self.system_metrics,
            "models": [type(model).__name__ for model in self.models],
            "rank": self.rank,
            "metadata": self.metadata,
        }


# torch.profiler spells its context manager in lower case; so does the public API.
profile = Profile

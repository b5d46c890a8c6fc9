"""``profiler.profile``: the context manager a training loop runs under.

It is a thin try/finally over :meth:`Profile.start` and :meth:`Profile.stop`. Every step gets the
always-on metrics (:mod:`step_metrics`); the schedule's active steps also get a Kineto capture with
per-module ranges and memory counters (:mod:`module_hooks`), written as one trace file per window.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch
from torch import nn

from profiler.capture.clock import Clock, ClockMarker
from profiler.capture.environment import device_kind, distributed_info, environment
from profiler.capture.kineto import KinetoSession, write_window
from profiler.capture.memory import MemoryProbe
from profiler.capture.module_hooks import ModuleTracer, range_enter, range_exit
from profiler.capture.schedule import Schedule
from profiler.capture.step_metrics import StepMetrics
from profiler.capture.system import SystemSampler
from profiler.events import STEP_FORMAT, TRACE_FORMAT, RunStatus, dataloader_range_name
from profiler.store import RunStore, StepLog

T = TypeVar("T")
DEFAULT_SCHEDULE = Schedule(wait=1, warmup=1, active=3, repeat=1)


class ProfilerStateError(RuntimeError):
    """A Profile method was called in a state where it cannot work (e.g. step() before start())."""


def _as_models(model: nn.Module | Sequence[nn.Module] | None) -> list[nn.Module]:
    if model is None:
        return []
    models = [model] if isinstance(model, nn.Module) else list(model)
    for item in models:
        if not isinstance(item, nn.Module):
            raise TypeError(f"model must be an nn.Module or a list of them, got {type(item)!r}")
    return models


class Profile:
    """A profiling session over one training run, used as ``with profiler.profile(model) as prof``.

    Args:
        model: module(s) to hook for per-module ranges and the forward/backward split.
        run_name: the run's directory name under ``out_dir`` (default: a timestamp).
        out_dir: the trace store root.
        schedule: which steps get a full Kineto capture; ``None`` for light metrics only.
        record_shapes: passed to Kineto (input shapes of ops).
        profile_memory: passed to Kineto (allocator events).
        with_stack: passed to Kineto (Python stacks of ops).
        system_metrics: sample CPU %, RSS and GPU load on a background thread.
        metadata: your own JSON-serialisable facts about the run (hyperparameters, a ticket),
            kept in ``meta/run.json`` under ``config.metadata``.
        tensorboard_logdir: also write the run where TensorBoard reads it, ``<logdir>/<run>/``:
            per-step scalars at each ~1 s flush, then at stop the full export (window scalars,
            recommendations, traces for the profiler plugin), as ``trainprof
            export-tensorboard`` writes it. Rank 0 only; export other ranks' runs afterwards.

    The session starts when the ``with`` block is entered (or at :meth:`start`). Inside the
    block use ``prof.loader(iterable)`` to time data waits and call ``prof.step()`` once per
    step; afterwards ``prof.run_dir`` and ``prof.trace_files`` say where everything went.

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
        schedule: Schedule | None = DEFAULT_SCHEDULE,
        record_shapes: bool = False,
        profile_memory: bool = False,
        with_stack: bool = False,
        system_metrics: bool = True,
        metadata: Mapping[str, Any] | None = None,
        tensorboard_logdir: str | os.PathLike[str] | None = None,
    ) -> None:
        if schedule is not None and not isinstance(schedule, Schedule):
            raise TypeError("schedule must come from profiler.schedule(...) or be None")
        self.models = _as_models(model)
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
        self._started = False
        self._step = 0
        self._window_first_step = 0
        self._window_last_step = 0
        self._window_start_ns = 0
        self._marker: ClockMarker | None = None
        self._clock = Clock()
        self._memory: MemoryProbe | None = None
        self._tracer: ModuleTracer | None = None
        self._metrics: StepMetrics | None = None
        self._kineto: KinetoSession | None = None
        self._sampler: SystemSampler | None = None
        self._steps: StepLog | None = None
        self.tensorboard_logdir = None if tensorboard_logdir is None else Path(tensorboard_logdir)
        self._tensorboard: Any = None  # a profiler.export.tensorboard.LiveWriter while running

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

        Raises:
            ProfilerStateError: already started.
            PermissionError: ``out_dir`` cannot be written.
            FileExistsError: a run of this name already exists there.
        """
        if self._started:
            raise ProfilerStateError("this profile session has already been started")
        self.store.create(self._config(), environment())
        self._memory = MemoryProbe("cuda" if self.device != "cpu" else "cpu")
        self._steps = StepLog(self.store.steps_path)
        self._metrics = StepMetrics(
            self.models, self._memory, self._write_steps, self._clock, cuda=self.device != "cpu"
        )
        self._metrics.extra = self._step_extra
        self._started = True
        try:
            if self.tensorboard_logdir is not None and self.rank == 0:
                self._tensorboard = self._open_tensorboard(self.tensorboard_logdir)
            if self.system_metrics:
                self._sampler = SystemSampler()
                self._sampler.start()
            self._metrics.attach()
            if self.schedule is not None:
                self._tracer = ModuleTracer(
                    self.models,
                    self._memory,
                    self._clock.now_ns,
                    memory_per_module=not self.kineto_options["profile_memory"],
                    user_ranges=self.device != "cpu",
                )
                self._kineto = KinetoSession(
                    schedule=self.schedule,
                    on_trace_ready=self._on_trace_ready,
                    **self.kineto_options,
                )
                self._kineto.start()
                self._sync_window_state(was_recording=False)
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
        self._step += 1
        if self._kineto is None:  # light metrics only: the next step starts where this one ended
            metrics.begin(self._step, metrics.end(deep=False))
            return
        recording = self._kineto.recording
        metrics.end(deep=recording)
        if self._tracer is not None:
            self._tracer.end_step()
        self._window_last_step = self._step - 1
        self._kineto.step()
        self._sync_window_state(was_recording=recording)
        # The next step starts after Kineto's step(), which may write a window: that time belongs
        # to neither step.
        metrics.begin(self._step, deep=self._kineto.recording)

    def _recording(self) -> bool:
        return self._kineto is not None and self._kineto.recording

    def loader(self, iterable: Iterable[T]) -> ProfiledLoader[T]:
        """Wrap a DataLoader (or any iterable) so the wait for each batch is timed.

        The wait counts towards each step's ``data_wait_us``; in deep windows it is also a range
        named ``enumerate(DataLoader)#<iterator>.__next__``, as TensorBoard's plugin expects.
        """
        return ProfiledLoader(iterable, self)

    def stop(self, error: BaseException | None = None) -> None:
        """Write what was captured, remove every hook and record how the run ended.

        With ``error`` (an exception from the training loop) the run is marked failed and
        problems while saving are reported as warnings, so the original exception is the one the
        caller sees.
        """
        if not self._started:
            return
        self._started = False
        try:
            self._save(error)
        except Exception as exc:
            if error is None:
                raise
            warnings.warn(f"trainprof: could not save the failed run: {exc}", stacklevel=2)

    # Internals ----------------------------------------------------------------------------------

    def _save(self, error: BaseException | None) -> None:
        try:
            self._finish(error)
        finally:  # after _finish's last flush of step records
            if self._tensorboard is not None:
                self._tensorboard.close()
        self._export_tensorboard()

    def _finish(self, error: BaseException | None) -> None:
        try:
            if self._metrics is not None:
                if error is None:  # steps end at step(); what follows the last one is no step
                    self._metrics.discard()
                else:
                    self._metrics.end(deep=self._recording(), completed=False)
            if self._tracer is not None:
                self._tracer.end_step()
            if self._kineto is not None:
                self._window_last_step = self._step if error is not None else self._step - 1
                self._kineto.stop()
        finally:
            if self._tracer is not None:
                self._tracer.detach()
            if self._metrics is not None:
                self._metrics.detach()
                self._metrics.flush()
            if self._sampler is not None:
                self._sampler.stop()
            if self._steps is not None:
                self._steps.close()
            if self._memory is not None:
                self._memory.close()
            status = RunStatus.COMPLETE if error is None else RunStatus.FAILED
            self.store.finish(status, steps=self._step, error=error)

    def _write_steps(self, records: list[dict[str, Any]]) -> None:
        """The step metrics' sink, about once a second: the step log, then TensorBoard."""
        assert self._steps is not None
        self._steps.write(records)
        if self._tensorboard is not None:
            self._tensorboard.add_steps(records)

    def _open_tensorboard(self, logdir: Path) -> Any:
        # Imported here: only runs that ask for TensorBoard pay for loading it (~0.3 s).
        from profiler.export.tensorboard import LiveWriter

        return LiveWriter(logdir, self.run_name, rank=self.rank)

    def _export_tensorboard(self) -> None:
        """Replace the live scalars with the full export (the same as the CLI's)."""
        if self._tensorboard is None or self.tensorboard_logdir is None:
            return
        from profiler.export.tensorboard import export_tensorboard  # see _open_tensorboard

        export_tensorboard(self.run_dir, self.tensorboard_logdir, run_name=self.run_name)

    def _sync_window_state(self, *, was_recording: bool) -> None:
        assert self._kineto is not None and self._tracer is not None
        recording = self._kineto.recording
        if recording and not was_recording:
            self._window_first_step = self._step
            self._window_start_ns = self._clock.now_ns()
            self._tracer.take()  # drop anything left from outside the window
            assert self._metrics is not None
            self._metrics.install_now()  # beneath the tracer's wrapper of the roots
            self._tracer.attach()
            self._marker = self._clock.mark()
        elif was_recording and not recording:
            self._tracer.detach()

    def _on_trace_ready(self, prof: Any) -> None:
        assert self._tracer is not None
        now = self._clock.now_ns()
        system = self._sampler.between(self._window_start_ns, now) if self._sampler else []
        write_window(
            prof,
            self.store,
            self._clock,
            marker=self._marker,
            record=self._tracer.take(),
            system=system,
            metadata={
                "format": TRACE_FORMAT,
                "run_name": self.run_name,
                "rank": self.rank,
                "device": self.device,
                "window": {
                    "first_step": self._window_first_step,
                    "last_step": self._window_last_step,
                },
                "modules": self._tracer.module_count,
                "config": self._config(),
            },
            distributed_info=self.distributed,
            pid=os.getpid(),
        )
        self._marker = None

    def _step_extra(self) -> dict[str, float] | None:
        # The sampler replaces (never mutates) its latest dict, so keeping a reference is safe.
        return self._sampler.step_view if self._sampler is not None else None

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


class ProfiledLoader(Generic[T]):
    """An iterable that times the wait for each item of the one it wraps."""

    def __init__(self, iterable: Iterable[T], session: Profile) -> None:
        self._iterable = iterable
        self._session = session

    def __len__(self) -> int:
        return len(self._iterable)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[T]:
        iterator = iter(self._iterable)
        # torch's own DataLoader iterators already record this range; don't double it.
        own_range = not isinstance(iterator, torch.utils.data.dataloader._BaseDataLoaderIter)
        name = dataloader_range_name(type(iterator).__name__)
        session = self._session
        while True:
            kineto = session._kineto
            recording = own_range and kineto is not None and kineto.recording
            handle = range_enter(name) if recording else None
            start = time.perf_counter_ns()
            try:
                item = next(iterator)
            except StopIteration:
                return
            finally:
                waited = time.perf_counter_ns() - start
                if handle is not None:
                    range_exit(handle)
                if session._metrics is not None:
                    session._metrics.add_data_wait(waited)
            yield item


# torch.profiler spells its context manager in lower case; so does the public API.
profile = Profile

"""Deep capture: Kineto driven by the schedule, module ranges attached for each window's steps,
and each window handed to a writer when Kineto ends it.

Kineto calls the writer back from inside torch's ``profile.step()`` and ``stop()``. An exception
through there leaves torch's profiler half-changed, which can crash the process, so nothing
leaves :meth:`DeepCapture._on_trace_ready`: an error is reported through ``on_error`` and marks
the capture :attr:`~DeepCapture.failed` (the session then stops it and goes on with light
metrics); a KeyboardInterrupt or SystemExit raised while writing is kept in
:attr:`~DeepCapture.held` for the session to raise once Kineto has returned.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from profiler.capture.clock import Clock, ClockMarker
from profiler.capture.guard import run_within
from profiler.capture.kineto import KinetoSession
from profiler.capture.memory import MemoryProbe
from profiler.capture.module_hooks import ModuleTracer, WindowRecord
from profiler.capture.schedule import Schedule


@dataclass(frozen=True)
class Window:
    """One capture window as the writer gets it, beside Kineto's own profile."""

    first_step: int
    last_step: int
    start_ns: int  # our clock's reading at its first step
    marker: ClockMarker | None
    record: WindowRecord
    module_count: int


class DeepCapture:
    """Kineto windows over the schedule's active steps, with per-module ranges.

    Args:
        models: root modules to trace in windows.
        memory: the probe for memory counters at module boundaries.
        clock: our clock.
        schedule: which steps are recorded.
        options: ``record_shapes``, ``profile_memory``, ``with_stack`` for Kineto.
        user_ranges: record module ranges as ``user_annotation`` (CUDA) rather than cpu ops.
        write: writes one window, ``write(prof, window)``.
        on_window_start: called as a window opens, before the module tracer attaches.
        on_error: told of a failure, ``on_error(what, exc)``; capture goes on without windows.
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        memory: MemoryProbe,
        clock: Clock,
        *,
        schedule: Schedule,
        options: Mapping[str, bool],
        user_ranges: bool,
        write: Callable[[Any, Window], None],
        on_window_start: Callable[[], None],
        on_error: Callable[[str, BaseException], None],
    ) -> None:
        self.tracer = ModuleTracer(
            models,
            memory,
            clock.now_ns,
            memory_per_module=not options["profile_memory"],
            user_ranges=user_ranges,
            with_stack=options["with_stack"],
        )
        self.failed = False  # no window is written once set (by us or by the session)
        self.held: BaseException | None = None
        self.write_budget_s: float | None = None  # a signal's deadline for the window's write
        self._clock = clock
        self._write = write
        self._on_window_start = on_window_start
        self._on_error = on_error
        self._kineto = KinetoSession(
            schedule=schedule, on_trace_ready=self._on_trace_ready, **options
        )
        self._first_step = self._last_step = self._start_ns = 0
        self._marker: ClockMarker | None = None
        self._stopped = False

    @property
    def recording(self) -> bool:
        """Whether the current step is an active (recorded) step of a window."""
        return self._kineto.recording

    def start(self, step: int) -> None:
        """Start Kineto at step ``step`` (its ``ProfilerStep#N`` count starts there too)."""
        self._kineto.start(step)
        self._sync(step, was_recording=False)

    def step(self, step: int, *, was_recording: bool) -> None:
        """End step ``step - 1`` and begin ``step``; a window that ends here is written."""
        self.tracer.end_step()
        self._last_step = step - 1
        try:  # free unless it raises; our callback never does
            self._kineto.step()
        except Exception as exc:
            self._fail("Kineto failed at a step", exc)
        if not self.failed:
            self._sync(step, was_recording=was_recording)

    def stop(self, *, last_step: int) -> None:
        """Stop Kineto (once); the window in progress, up to ``last_step``, is written unless
        capture has failed."""
        if self._stopped:
            return
        self._stopped = True
        self._last_step = last_step
        # Each on its own: whatever fails, Kineto stops and the module wrappers come off.
        for what, action in (
            ("end the module ranges", self.tracer.end_step),
            ("stop Kineto", self._kineto.stop),  # the window in progress is written here
            ("remove the module tracer", self.tracer.detach),
        ):
            try:
                action()
            except Exception as exc:
                self._fail(f"could not {what}", exc)
        self._marker = None

    def _sync(self, step: int, *, was_recording: bool) -> None:
        recording = self._kineto.recording
        if recording and not was_recording:
            self._first_step = step
            self._start_ns = self._clock.now_ns()
            self.tracer.take()  # drop anything left from outside the window
            self._on_window_start()  # the step metrics' wrapper goes beneath the tracer's
            self.tracer.attach()
            self._marker = self._clock.mark()
        elif was_recording and not recording:
            self.tracer.detach()

    def _fail(self, what: str, exc: BaseException) -> None:
        self.failed = True
        self._on_error(what, exc)

    def _on_trace_ready(self, prof: Any) -> None:
        """Kineto's callback at a window's end: nothing leaves it (see the module docstring)."""
        marker, self._marker = self._marker, None
        if self.failed:  # the store is failing: the window is dropped
            return
        try:
            try:
                window = Window(
                    self._first_step,
                    self._last_step,
                    self._start_ns,
                    marker,
                    self.tracer.take(),
                    self.tracer.module_count,
                )
                self._write_in_budget(prof, window)
            except Exception as exc:
                self._fail("could not write a capture window", exc)
        except BaseException as exc:  # noqa: B036 - held for the session, see the docstring
            self.failed = True
            if not isinstance(exc, Exception):
                self.held = exc

    def _write_in_budget(self, prof: Any, window: Window) -> None:
        budget = self.write_budget_s
        if budget is None:
            self._write(prof, window)
        elif not run_within(budget, lambda: self._write(prof, window), name="signal-write"):
            raise TimeoutError(f"the window in progress was not written within {budget:g} s")

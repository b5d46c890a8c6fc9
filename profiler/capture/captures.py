"""How a session builds its Kineto captures and writes their windows.

A session has at most one :class:`DeepCapture` at a time: the schedule's, from the first step
until its last window (then Kineto is stopped: an idle ``torch.profiler.profile`` costs ~30 us
a step), and one per window opened outside the schedule (:mod:`on_demand`), from the step
before the window to its end. Each is built here the same way, and each window is written with
the run's metadata and, for a window outside the schedule, why it opened.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from profiler.capture.clock import Clock
from profiler.capture.kineto import write_window
from profiler.capture.memory import MemoryProbe
from profiler.capture.module_hooks import ModuleTracer
from profiler.capture.schedule import Schedule
from profiler.capture.system import SystemSampler
from profiler.capture.windows import DeepCapture, Window
from profiler.events import TRACE_FORMAT
from profiler.store import RunStore


class Captures:
    """Builds the session's deep captures, and writes their windows.

    Args:
        models: the models traced (the session's own list: :meth:`Profile.watch` extends it).
        memory: the memory probe for counters at module boundaries.
        clock: the session's clock.
        store: where windows are written.
        sampler: the system sampler, whose readings within a window go into it, or None.
        options: Kineto's ``record_shapes``, ``profile_memory``, ``with_stack``.
        user_ranges: record module ranges as ``user_annotation`` (CUDA).
        header: the run's name, rank and device, for the ``trainprof`` key of each trace.
        config: the run's configuration, read at each write (``watch`` adds models).
        distributed_info: the trace's ``distributedInfo``.
        on_window_start: called as a window opens (the step metrics' wrapper goes beneath).
        on_error: told of a failure, ``on_error(what, exc)``.
    """

    def __init__(
        self,
        models: list[nn.Module],
        memory: MemoryProbe,
        clock: Clock,
        store: RunStore,
        sampler: SystemSampler | None,
        *,
        options: Mapping[str, bool],
        user_ranges: bool,
        header: Mapping[str, Any],
        config: Callable[[], dict[str, Any]],
        distributed_info: Mapping[str, Any],
        on_window_start: Callable[[], None],
        on_error: Callable[[str, BaseException], None],
    ) -> None:
        self.models = models
        self.trigger: dict[str, Any] | None = None  # why the window in progress opened
        self._memory = memory
        self._clock = clock
        self._store = store
        self._sampler = sampler
        self._options = dict(options)
        self._user_ranges = user_ranges
        self._header = dict(header)
        self._config = config
        self._distributed_info = distributed_info
        self._on_window_start = on_window_start
        self._on_error = on_error

    def build(self, schedule: Schedule, trigger: dict[str, Any] | None) -> DeepCapture:
        """A deep capture under ``schedule``, its windows opened by ``trigger`` (None: the
        schedule's own)."""
        self.trigger = trigger
        return DeepCapture(
            self.models,
            self._memory,
            self._clock,
            schedule=schedule,
            options=self._options,
            user_ranges=self._user_ranges,
            write=self.write,
            on_window_start=self._on_window_start,
            on_error=self._on_error,
        )

    def module_tracer(self, models: Sequence[nn.Module]) -> ModuleTracer:
        """A module tracer as :class:`DeepCapture` builds its own (for ``Profile.watch``)."""
        return ModuleTracer(
            models,
            self._memory,
            self._clock.now_ns,
            memory_per_module=not self._options["profile_memory"],
            user_ranges=self._user_ranges,
            with_stack=self._options["with_stack"],
        )

    def write(self, prof: Any, window: Window) -> None:
        """Write one window (DeepCapture's writer; ``write_window`` is looked up per call)."""
        now = self._clock.now_ns()
        system = self._sampler.between(window.start_ns, now) if self._sampler else []
        span: dict[str, Any] = {"first_step": window.first_step, "last_step": window.last_step}
        if self.trigger is not None:
            span["trigger"] = self.trigger
        write_window(
            prof,
            self._store,
            self._clock,
            marker=window.marker,
            record=window.record,
            system=system,
            metadata={
                "format": TRACE_FORMAT,
                **self._header,
                "window": span,
                "modules": window.module_count,
                "config": self._config(),
            },
            distributed_info=self._distributed_info,
            pid=os.getpid(),
            with_stack=self._options["with_stack"],
        )

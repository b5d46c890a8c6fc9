"""Always-on, per-step metrics: step time, data wait, forward/backward/optimizer split, memory.

This path runs on every step of the run, so it costs a few attribute writes per step: one tuple of
raw integers per step, turned into records once per flush (about a second). It never
synchronises CUDA: there the phase times come from CUDA events, read once they have completed.
Most steps end on :meth:`StepMetrics.roll`'s short path, a dozen lines that read no memory, write
nothing out and time no phase; a step that does any of those takes the long one.

Step time, data wait and memory are kept for every step. The forward/backward/optimizer split
needs a wrapper around the root module(s)' forward and torch's global optimizer-step hooks, which
with putting them in place and taking them off cost ~40-60 us of cold Python per timed step, more
than everything else here: 2% of a 2.5 ms CPU step. So the split is timed on every step of a deep
window and on a sample of the others, often enough that timing it costs at most ``PHASE_SHARE``
(0.05%) of the step time: every step once steps take 120 ms or more (much GPU training), every
48th step of a 2.5 ms one, at least every ``MAX_PHASE_EVERY``-th.
Each timed step sets the interval from its own duration; the wrapper and hooks are in place only
for timed steps, and the other steps' records carry ``None`` for the three phases.

Backward is the time from the end of the last forward to the start of the first
``optimizer.step`` in the step: the loss and the backward pass. It needs no autograd hook, which
would cost more per step than everything else here (a node hook and an engine callback); with
gradient accumulation it covers the last micro-batch only.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

import torch
from torch import nn
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)
from torch.utils.hooks import RemovableHandle

from profiler.capture.clock import Clock
from profiler.capture.memory import MemoryProbe, StepPeak
from profiler.capture.module_hooks import runs_no_ops

# RSS takes two system calls (~2-40 us right after tensor work); on CPU it is read at a step's end
# at most every 100 ms, and a step's memory is that of the latest reading. Its peak is the highest
# of that reading, the one its start carried, and the sampler thread's readings in the step.
RSS_INTERVAL_NS = 100_000_000
FLUSH_INTERVAL_NS = 1_000_000_000
# Timing the phase split costs about PHASE_COST_NS per timed step: measured in the CPU MLP loop of
# bench/overhead.py (a timed step against an untimed one beside it, both on cold caches), 40-60 us,
# most of it the long path of the two prof.step() calls that put the wrapper and hooks in place and
# take them off. The split is timed often enough to cost at most PHASE_SHARE of the step time: a
# tenth of the always-on budget (0.5%).
PHASE_COST_NS = 60_000
PHASE_SHARE = 0.0005
MAX_PHASE_EVERY = 100
_now = time.perf_counter_ns


class _Phases(NamedTuple):
    """A timed step's split, in ns (-1: not seen); kept as a plain tuple of these fields."""

    forward_ns: int
    backward_ns: int
    optimizer_ns: int
    events: tuple[Any, ...] | None  # CUDA: (fwd start, fwd end, opt start, opt end) or None


class _Row(NamedTuple):
    """One step as raw numbers; turned into a record at flush."""

    step: int
    start_ns: int
    end_ns: int
    data_wait_ns: int
    memory_bytes: int
    peak_bytes: int
    deep: bool
    completed: bool
    extra: dict[str, float] | None
    phases: tuple[Any, ...] | None  # a _Phases' fields; None: a step whose phases were not timed


class _Sampler(Protocol):
    """What the steps read of the system sampler: the figures each record carries."""

    step_view: dict[str, float]


class StepMetrics:
    """Collect one record per training step and hand them to ``sink`` in batches.

    Args:
        models: the root modules whose forward is timed.
        memory: the probe for current and peak memory.
        sink: called with a list of finished steps' records.
        clock: our clock (records carry unix-time starts).
        cuda: time phases with CUDA events instead of the host clock.
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        memory: MemoryProbe,
        sink: Callable[[list[dict[str, Any]]], None],
        clock: Clock,
        *,
        cuda: bool = False,
    ) -> None:
        self._models = list(models)
        self._memory = memory
        self._sink = sink
        self._clock = clock
        self._cuda = cuda
        # What installing puts in place, built once at the first install: (torch's dict of
        # hooks, key, hook) and (a root's __dict__, our forward wrapper, the forward it replaced).
        self._hooks: list[tuple[dict[Any, Any], Any, Any]] = []
        self._forwards: list[tuple[dict[str, Any], Any, Any]] = []
        self._enabled = self._installed = False
        self._next_timed = 0  # the next step whose phases are timed
        self._rows: list[tuple[Any, ...]] = []
        self._last_flush = _now()
        self._memory_at = -RSS_INTERVAL_NS
        self._memory_now = 0
        self.step_peak = StepPeak()  # fed by the system sampler, when there is one
        # The sampler whose ``step_view`` each record carries and which feeds ``step_peak``.
        self.sampler: _Sampler | None = None
        self.data_wait_ns = 0  # the step in progress's; the loader adds to it directly
        self._timed = False
        self._plain_until = 0  # see _arm
        self._index = self._start_ns = 0  # the step in progress: set by _begin_state
        self._active = False
        self._begin_state(0)

    def attach(self) -> None:
        """Time the phases of this and later steps (of those the sampling picks)."""
        self._enabled = True
        if self._timed:
            self._install()

    def detach(self) -> None:
        """Remove every hook and wrapper; no phase is timed until :meth:`attach`."""
        self._enabled = False
        self._uninstall(remove=True)

    def install_now(self) -> None:
        """Put the wrapper and hooks in place ahead of ``begin(deep=True)``.

        A deep window's module tracer wraps the roots' forward too; ours must sit beneath its
        wrapper, so the session installs ours before the tracer attaches (and the tracer detaches
        before ours goes).
        """
        if self._enabled:
            self._install()

    def _install(self) -> None:
        """Time the root modules' forward and every optimizer's step.

        Sampled steps install and remove these every few steps, after milliseconds of tensor
        work that leave every cache cold, so this is two loops of dict writes and nothing else.
        """
        if self._installed:
            return
        self._installed = True
        if not self._hooks:
            self._register()
        for hooks, key, hook in self._hooks:
            hooks[key] = hook
        for namespace, wrapper, _ in self._forwards:
            namespace["forward"] = wrapper

    def _uninstall(self, *, remove: bool = False) -> None:
        self._installed = False
        for hooks, key, _ in self._hooks:
            hooks.pop(key, None)
        for namespace, _, previous in reversed(self._forwards):
            if previous is None:
                namespace.pop("forward", None)
            else:
                namespace["forward"] = previous
        if remove:
            self._hooks.clear()
            self._forwards.clear()

    def _register(self) -> None:
        """Build the hooks and wrappers :meth:`_install` puts in place."""
        handles: list[RemovableHandle] = []
        for model in self._models:
            if _compiled(model):  # dynamo owns its forward; hooks are what it expects
                handles.append(model.register_forward_pre_hook(self._forward_pre))
                handles.append(model.register_forward_hook(self._forward_post))
            else:
                previous = model.__dict__.get("forward")
                self._forwards.append((model.__dict__, self._timed_forward(model), previous))
        handles.append(register_optimizer_step_pre_hook(self._optimizer_pre))
        handles.append(register_optimizer_step_post_hook(self._optimizer_post))
        for handle in handles:  # registering put them in place; _install puts them back
            hooks = handle.hooks_dict_ref()
            assert hooks is not None
            self._hooks.append((hooks, handle.id, hooks[handle.id]))

    def _timed_forward(self, model: nn.Module) -> Callable[..., Any]:
        # Any forward hook sends nn.Module.__call__ down its slow path (~15-20 us a call here);
        # an instance-level forward keeps the fast path and costs two clock reads.
        inner = model.forward

        @functools.wraps(inner)
        def timed_forward(*args: Any, **kwargs: Any) -> Any:
            self._forward_pre(model, args)
            try:
                return inner(*args, **kwargs)
            finally:
                self._forward_post(model, args, None)

        return runs_no_ops(timed_forward)  # clock readings (CUDA: events) and no tensor op

    def begin(self, index: int, start_ns: int | None = None, *, deep: bool = False) -> None:
        """Start timing step ``index`` (at ``start_ns``, default now); ``deep`` times its phases."""
        self._begin_state(index, _now() if start_ns is None else start_ns, deep)
        if self._cuda:
            self._memory.reset_peak()

    def roll(self, index: int) -> int:
        """End the step in progress and begin step ``index`` at the same clock reading: the
        light path's whole work per step (no Kineto window open).

        Most steps take the few lines below: they read no memory, write no rows out and time
        no phases, which :meth:`_arm` checked once for them all. In the training loop, after
        milliseconds of tensor work, every line of Python here runs on cold caches: this path
        took ``prof.step()`` from ~22 to ~13 us in the MLP loop of bench/overhead.py.

        Returns:
            The duration of the step just ended, in ns.
        """
        end = _now()
        start = self._start_ns
        if end < self._plain_until and index < self._next_timed:
            memory = self._memory_now  # no reading in the step: its peak is its start's
            sampler = self.sampler
            if sampler is None:
                self._rows.append((
                    self._index, start, end, self.data_wait_ns, memory, memory, False, True,
                    None, None,
                ))  # fmt: skip
            else:
                sampled = self.step_peak.take()
                self._rows.append((
                    self._index, start, end, self.data_wait_ns, memory,
                    sampled if sampled > memory else memory, False, True, sampler.step_view, None,
                ))  # fmt: skip
            self._index = index
            self._start_ns = end
            self.data_wait_ns = 0
            return end - start
        if self._active:
            self._close(end, False, True)
        self._begin_state(index, end, False)
        if self._cuda:
            self._memory.reset_peak()
        return end - start

    def _begin_state(self, index: int, start_ns: int = 0, deep: bool = False) -> None:
        self._index = index
        self._active = True
        self._start_ns = start_ns
        self.data_wait_ns = 0
        timed = deep or index >= self._next_timed
        if timed or self._timed:  # an untimed step after another writes nothing more
            self._set_timed(timed)
        self._arm()

    def _arm(self) -> None:
        """Until when the steps :meth:`roll` ends may take its short path (0: none may).

        Not for CUDA (its memory is read every step), nor after a timed step (its split is
        written and its hooks come off) or the end of the run; and only until RSS is next due or
        the rows are next handed over.
        """
        if self._cuda or self._timed or not self._active:
            self._plain_until = 0
        else:
            self._plain_until = min(
                self._memory_at + RSS_INTERVAL_NS, self._last_flush + FLUSH_INTERVAL_NS
            )

    def _set_timed(self, timed: bool) -> None:
        """Reset the phase split for a timed step; put the hooks in place or take them off."""
        self._timed = timed
        if timed:
            self._depth = self._forward_ns = self._optimizer_ns = 0
            self._forward_seen = self._optimizer_seen = False
            self._forward_end = self._first_opt = 0
            if self._cuda:
                self._events: list[Any] = [None, None, None, None]
        if self._enabled and timed is not self._installed:
            self._install() if timed else self._uninstall()

    def discard(self) -> None:
        """Drop the step in progress (the run ended between steps)."""
        self._active = False
        self._plain_until = 0  # see _close

    def end(self, *, deep: bool, completed: bool = True) -> int:
        """Close the current step; write the finished ones once a second.

        Returns:
            The clock reading at the step's end (the next step's start).
        """
        end = _now()
        if self._active:
            self._close(end, deep, completed)
        return end

    def _close(self, end: int, deep: bool, completed: bool) -> None:
        """Keep the step ending at ``end`` as one tuple; hand the rows over once a second."""
        self._active = False
        self._plain_until = 0  # no step in progress until the next begins (and _arm says)
        sampler = self.sampler
        if self._cuda:
            self._memory_now, peak = self._memory.cuda_step_bytes()  # reset at begin
        else:
            peak = self._memory_now  # the reading the step's start carried
            if end - self._memory_at >= RSS_INTERVAL_NS:
                self._read_memory(end)
            now = self._memory_now
            peak = now if now > peak else peak  # not max(): its call costs more, every step
            if sampler is not None:  # only the sampler feeds step_peak
                sampled = self.step_peak.take()
                peak = sampled if sampled > peak else peak
        # A plain tuple (a _Row's fields, in order): NamedTuple construction costs more per step.
        # The sampler replaces (never mutates) its step_view, so keeping a reference is safe.
        self._rows.append((
            self._index, self._start_ns, end, self.data_wait_ns, self._memory_now, peak, deep,
            completed, None if sampler is None else sampler.step_view,
            self._phases(end) if self._timed else None,
        ))  # fmt: skip
        if end - self._last_flush >= FLUSH_INTERVAL_NS:
            self._last_flush = end
            self._drain(block=False)

    def _phases(self, end: int) -> tuple[Any, ...]:
        """The timed step's split (a ``_Phases``' fields); sets the next step to time."""
        self._next_timed = self._index + phase_every(end - self._start_ns)
        forward = self._forward_ns if self._forward_seen else -1
        backward = self._first_opt - self._forward_end if self._forward_seen else -1
        return (  # a plain tuple: building the NamedTuple is one Python call more
            forward,
            backward if self._optimizer_seen and backward >= 0 else -1,
            self._optimizer_ns if self._optimizer_seen else -1,
            tuple(self._events) if self._cuda and self._events[0] is not None else None,
        )

    def flush(self, *, block: bool = True) -> None:
        """Hand over every finished step, waiting for CUDA events if ``block`` (else only those
        whose events have completed: a signal handler must not wait on the GPU)."""
        self._drain(block=block)

    def _read_memory(self, now: int) -> None:
        """Read RSS (CPU; at most every ``RSS_INTERVAL_NS``)."""
        self._memory_at = now
        self._memory_now = self._memory.rss_bytes()

    def _drain(self, *, block: bool) -> None:
        ready = len(self._rows)
        if self._cuda and not block:
            ready = next((i for i, row in enumerate(self._rows) if not _done(_Row(*row))), ready)
        if ready:
            rows, self._rows = self._rows[:ready], self._rows[ready:]
            # A few us a step, once a second: no round() (ns / 1000 is already exact to the ns).
            wall_offset = self._clock.wall_minus_perf_ns + 50
            self._sink([_record(row, wall_offset) for row in rows])

    # Hooks: a few attribute writes each ---------------------------------------------------------

    def _forward_pre(self, module: nn.Module, args: Any) -> None:
        self._depth += 1
        if self._depth == 1:  # a hooked root called from another one counts once
            self._forward_start = _now()
            if self._cuda and self._events[0] is None:
                self._events[0] = _cuda_event()

    def _forward_post(self, module: nn.Module, args: Any, output: Any) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._forward_end = end = _now()
            self._forward_ns += end - self._forward_start
            self._forward_seen = True
            if self._cuda:
                self._events[1] = _cuda_event()

    def _optimizer_pre(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._optimizer_start = start = _now()
        if not self._optimizer_seen:
            self._first_opt = start
            if self._cuda:
                self._events[2] = _cuda_event()

    def _optimizer_post(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._optimizer_ns += _now() - self._optimizer_start
        self._optimizer_seen = True
        if self._cuda:
            self._events[3] = _cuda_event()


def phase_every(step_ns: int) -> int:
    """Time the phases of one step in this many, after a step of ``step_ns``."""
    if step_ns <= 0:
        return 1
    return max(1, min(MAX_PHASE_EVERY, math.ceil(PHASE_COST_NS / (PHASE_SHARE * step_ns))))


def _compiled(model: nn.Module) -> bool:
    """A torch.compile'd module (OptimizedModule keeps the original as ``_orig_mod``)."""
    return hasattr(model, "_orig_mod")


def _record(row: tuple[Any, ...], wall_offset: int) -> dict[str, Any]:
    """A step's line of the step log from its raw ``_Row`` tuple.

    ``wall_offset`` turns our clock into unix ns (+ 50: 0.1 us, rounded half up).
    """
    step, start, end, wait, memory, peak, deep, completed, extra, phases = row
    forward = backward = optimizer = None
    if phases is not None:
        events = _Phases(*phases).events
        times = phases[:3] if events is None else _event_phases(events)
        forward, backward, optimizer = (_us(ns) for ns in times)
    record: dict[str, Any] = {
        "step": step,
        "start_unix_us": (start + wall_offset) // 100 / 10,
        "dur_us": (end - start) / 1000,
        "data_wait_us": wait / 1000,
        "forward_us": forward,
        "backward_us": backward,
        "optimizer_us": optimizer,
        "memory_bytes": memory,
        "peak_memory_bytes": peak,
        "deep": deep,
    }
    if extra:
        record.update(extra)
    if not completed:
        record["completed"] = False
    return record


def _us(ns: int | float) -> float | None:
    """Nanoseconds as microseconds (to the ns); None for -1, "not measured"."""
    if ns < 0:
        return None
    return ns / 1000 if type(ns) is int else round(ns / 1000, 3)


def _cuda_event() -> Any:
    event = torch.cuda.Event(enable_timing=True)
    event.record()
    return event


def _done(row: _Row) -> bool:
    events = _Phases(*row.phases).events if row.phases is not None else None
    last = next((e for e in reversed(events or ()) if e is not None), None)
    return last is None or bool(last.query())


def _event_phases(events: tuple[Any, ...]) -> tuple[float, float, float]:
    """Forward, backward and optimizer times from CUDA events, in ns (-1 where unknown)."""
    fwd_start, fwd_end, opt_start, opt_end = events
    if opt_end is not None:
        opt_end.synchronize()
    elif fwd_end is not None:
        fwd_end.synchronize()

    def span(a: Any, b: Any) -> float:
        return a.elapsed_time(b) * 1e6 if a is not None and b is not None else -1.0

    return span(fwd_start, fwd_end), span(fwd_end, opt_start), span(opt_start, opt_end)

"""Always-on, per-step metrics: step time, data wait, forward/backward/optimizer split, memory.

This path runs on every step of the run, so it costs a few attribute writes per step: it times
only the root module(s)' forward (through an instance-level wrapper, removed at the end) and the
optimizers (optimizer.step hooks), keeps one tuple of raw integers per step, and builds records
once per flush (about a second). It never synchronises
CUDA: there the phase times come from CUDA events, read once they have completed.

Backward is the time from the end of the last forward to the start of the first
``optimizer.step`` in the step: the loss and the backward pass. It needs no autograd hook, which
would cost more per step than everything else here (a node hook and an engine callback); with
gradient accumulation it covers the last micro-batch only.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)
from torch.utils.hooks import RemovableHandle

from profiler.capture.clock import Clock
from profiler.capture.memory import MemoryProbe

# RSS is a system call (~2-20 us right after tensor work); on CPU it is read at most this often,
# and a step's figures are those of the latest reading.
RSS_INTERVAL_NS = 20_000_000
FLUSH_INTERVAL_NS = 1_000_000_000
_now = time.perf_counter_ns


class _Row(NamedTuple):
    """One step as raw numbers; turned into a record at flush."""

    step: int
    start_ns: int
    end_ns: int
    data_wait_ns: int
    forward_ns: int  # -1: no forward seen
    backward_ns: int  # -1: unknown
    optimizer_ns: int  # -1: no optimizer.step seen
    memory_bytes: int
    peak_bytes: int
    deep: bool
    completed: bool
    extra: dict[str, float] | None
    events: tuple[Any, ...] | None  # CUDA: (fwd start, fwd end, opt start, opt end) or None


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
        self._handles: list[RemovableHandle] = []
        self._wrapped: list[tuple[nn.Module, Any]] = []
        self._rows: list[tuple[Any, ...]] = []
        self._last_flush = _now()
        self._memory_at = -RSS_INTERVAL_NS
        self._memory_now = self._peak = 0
        self.extra: Callable[[], dict[str, float] | None] = lambda: None
        self._begin_state(0)

    def attach(self) -> None:
        """Time the root modules' forward and every optimizer's step."""
        for model in self._models:
            if _compiled(model):  # dynamo owns its forward; hooks are what it expects
                self._handles.append(model.register_forward_pre_hook(self._forward_pre))
                self._handles.append(model.register_forward_hook(self._forward_post))
            else:
                self._wrap_forward(model)
        self._handles.append(register_optimizer_step_pre_hook(self._optimizer_pre))
        self._handles.append(register_optimizer_step_post_hook(self._optimizer_post))

    def detach(self) -> None:
        """Remove every hook and wrapper."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for model, previous in reversed(self._wrapped):
            if previous is None:
                del model.__dict__["forward"]
            else:
                model.__dict__["forward"] = previous
        self._wrapped.clear()

    def _wrap_forward(self, model: nn.Module) -> None:
        # Any forward hook sends nn.Module.__call__ down its slow path (~15-20 us a call here);
        # an instance-level forward keeps the fast path and costs two clock reads.
        previous = model.__dict__.get("forward")
        inner = model.forward

        @functools.wraps(inner)
        def timed_forward(*args: Any, **kwargs: Any) -> Any:
            self._forward_pre(model, args)
            try:
                return inner(*args, **kwargs)
            finally:
                self._forward_post(model, args, None)

        model.__dict__["forward"] = timed_forward
        self._wrapped.append((model, previous))

    def begin(self, index: int, start_ns: int | None = None) -> None:
        """Start timing step ``index`` (at ``start_ns``, default now)."""
        self._begin_state(index, _now() if start_ns is None else start_ns)
        if self._cuda:
            self._memory.reset_peak()

    def _begin_state(self, index: int, start_ns: int = 0) -> None:
        self._index = index
        self._active = True
        self._start_ns = start_ns
        self._data_wait_ns = self._depth = self._forward_ns = self._optimizer_ns = 0
        self._forward_seen = self._optimizer_seen = False
        self._forward_end = self._first_opt = 0
        if self._cuda:
            self._events = [None, None, None, None]

    def add_data_wait(self, duration_ns: int) -> None:
        """Add time spent waiting for the next batch to the current step."""
        self._data_wait_ns += duration_ns

    def discard(self) -> None:
        """Drop the step in progress (the run ended between steps)."""
        self._active = False

    def end(self, *, deep: bool, completed: bool = True) -> int:
        """Close the current step; write the finished ones once a second.

        Returns:
            The clock reading at the step's end (the next step's start).
        """
        end = _now()
        if not self._active:
            return end
        self._active = False
        if self._cuda or end - self._memory_at >= RSS_INTERVAL_NS:
            self._read_memory(end)
        backward = self._first_opt - self._forward_end if self._forward_seen else -1
        # A plain tuple (a _Row's fields, in order): NamedTuple construction costs more per step.
        self._rows.append((
            self._index, self._start_ns, end, self._data_wait_ns,
            self._forward_ns if self._forward_seen else -1,
            backward if self._optimizer_seen and backward >= 0 else -1,
            self._optimizer_ns if self._optimizer_seen else -1,
            self._memory_now, self._peak, deep, completed, self.extra(),
            tuple(self._events) if self._cuda and self._events[0] is not None else None,
        ))  # fmt: skip
        if end - self._last_flush >= FLUSH_INTERVAL_NS:
            self._last_flush = end
            self._drain(block=False)
        return end

    def flush(self) -> None:
        """Hand over every step, waiting for CUDA events if need be."""
        self._drain(block=True)

    def _read_memory(self, now: int) -> None:
        self._memory_at = now
        if self._cuda:
            self._memory_now, self._peak = self._memory.current_bytes(), self._memory.peak_bytes()
            return
        self._memory_now = self._memory.current_bytes()
        self._peak = max(self._peak, self._memory.peak_bytes(current=self._memory_now))

    def _drain(self, *, block: bool) -> None:
        ready = len(self._rows)
        if self._cuda and not block:
            ready = next((i for i, row in enumerate(self._rows) if not _done(_Row(*row))), ready)
        if ready:
            rows, self._rows = self._rows[:ready], self._rows[ready:]
            self._sink([self._record(_Row(*row)) for row in rows])

    def _record(self, row: _Row) -> dict[str, Any]:
        forward: float = row.forward_ns
        backward: float = row.backward_ns
        optimizer: float = row.optimizer_ns
        if row.events is not None:
            forward, backward, optimizer = _event_phases(row.events)
        record: dict[str, Any] = {
            "step": row.step,
            "start_unix_us": round(self._clock.unix_us(row.start_ns), 1),
            "dur_us": _us(row.end_ns - row.start_ns),
            "data_wait_us": _us(row.data_wait_ns),
            "forward_us": _us(forward),
            "backward_us": _us(backward),
            "optimizer_us": _us(optimizer),
            "memory_bytes": row.memory_bytes,
            "peak_memory_bytes": row.peak_bytes,
            "deep": row.deep,
        }
        if row.extra:
            record.update(row.extra)
        if not row.completed:
            record["completed"] = False
        return record

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


def _compiled(model: nn.Module) -> bool:
    """A torch.compile'd module (OptimizedModule keeps the original as ``_orig_mod``)."""
    return hasattr(model, "_orig_mod")


def _us(ns: int | float | None) -> float | None:
    return None if ns is None or ns < 0 else round(ns / 1000, 3)


def _cuda_event() -> Any:
    event = torch.cuda.Event(enable_timing=True)
    event.record()
    return event


def _done(row: _Row) -> bool:
    last = next((e for e in reversed(row.events or ()) if e is not None), None)
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

"""Always-on, per-step metrics: step time, data wait, forward/backward/optimizer split, memory.

This path runs on every step of the run, so it hooks only the root module(s) and the optimizers
(a handful of calls per step, not per module), and never synchronises CUDA. On CUDA the phase
times come from CUDA events, read once they have completed (usually a step or two later).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)
from torch.utils.hooks import RemovableHandle

from profiler.capture.clock import Clock
from profiler.capture.memory import MemoryProbe
from profiler.capture.module_hooks import first_grad_fn

PHASES = ("forward", "backward", "optimizer")


@dataclass
class _Phase:
    """Time spent in one phase during one step: host nanoseconds, or CUDA event pairs."""

    host_ns: int = 0
    seen: bool = False
    events: list[tuple[Any, Any]] = field(default_factory=list)


@dataclass
class _Step:
    index: int
    start_ns: int
    phases: dict[str, _Phase] = field(default_factory=lambda: {p: _Phase() for p in PHASES})
    data_wait_ns: int = 0
    record: dict[str, Any] = field(default_factory=dict)


class StepMetrics:
    """Collect one record per training step, handed to ``sink`` once its timings are known.

    Args:
        models: the root modules to time (forward: root forward hooks; backward: from the
            root output's first autograd node to the end of the backward pass).
        memory: the probe for current and peak memory.
        sink: called with each finished step's record.
        clock: our clock (records carry unix-time starts).
        cuda: time phases with CUDA events instead of the host clock.
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        memory: MemoryProbe,
        sink: Callable[[dict[str, Any]], None],
        clock: Clock,
        *,
        cuda: bool = False,
    ) -> None:
        self._models = list(models)
        self._memory = memory
        self._sink = sink
        self._clock = clock
        self._now_ns = clock.now_ns
        self._cuda = cuda
        self._handles: list[RemovableHandle] = []
        self._open: dict[str, tuple[int, Any]] = {}
        self._forward_depth = 0
        self._step: _Step | None = None
        self._pending: deque[_Step] = deque()
        self.extra: Callable[[], dict[str, Any]] = dict

    def attach(self) -> None:
        """Hook the root modules and every optimizer's step."""
        for model in self._models:
            self._handles.append(model.register_forward_pre_hook(self._forward_pre))
            self._handles.append(model.register_forward_hook(self._forward_post))
        self._handles.append(register_optimizer_step_pre_hook(self._optimizer_pre))
        self._handles.append(register_optimizer_step_post_hook(self._optimizer_post))

    def detach(self) -> None:
        """Remove every hook."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def begin(self, index: int) -> None:
        """Start timing step ``index``."""
        self._step = _Step(index=index, start_ns=self._now_ns())
        self._open.clear()
        self._forward_depth = 0
        self._memory.reset_peak()

    def add_data_wait(self, duration_ns: int) -> None:
        """Add time spent waiting for the next batch to the current step."""
        if self._step is not None:
            self._step.data_wait_ns += duration_ns

    def discard(self) -> None:
        """Drop the step in progress (the run ended between steps)."""
        self._step = None

    def end(self, *, deep: bool, completed: bool = True) -> None:
        """Close the current step and hand over every step whose timings are now known."""
        step, self._step = self._step, None
        if step is None:
            return
        end_ns = self._now_ns()
        step.record = {
            "step": step.index,
            "start_unix_us": round(self._clock.unix_us(step.start_ns), 1),
            "dur_us": round((end_ns - step.start_ns) / 1000, 3),
            "data_wait_us": round(step.data_wait_ns / 1000, 3),
            "memory_bytes": self._memory.current_bytes(),
            "peak_memory_bytes": self._memory.peak_bytes(),
            "deep": deep,
            **self.extra(),
        }
        if not completed:
            step.record["completed"] = False
        self._pending.append(step)
        self._drain(block=False)

    def flush(self) -> None:
        """Hand over every pending step, waiting for CUDA events if need be."""
        self._drain(block=True)

    def _drain(self, *, block: bool) -> None:
        while self._pending:
            step = self._pending[0]
            if not self._ready(step, block=block):
                return
            self._pending.popleft()
            for name, phase in step.phases.items():
                step.record[f"{name}_us"] = self._phase_us(phase) if phase.seen else None
            self._sink(step.record)

    def _ready(self, step: _Step, *, block: bool) -> bool:
        pairs = [pair for phase in step.phases.values() for pair in phase.events]
        if not pairs:
            return True
        last = pairs[-1][1]
        if block:
            last.synchronize()
            return True
        return bool(last.query())

    @staticmethod
    def _phase_us(phase: _Phase) -> float:
        if phase.events:
            return round(sum(start.elapsed_time(end) for start, end in phase.events) * 1000, 3)
        return round(phase.host_ns / 1000, 3)

    # Phase boundaries -------------------------------------------------------------------------

    def _mark_start(self, phase: str) -> None:
        event = None
        if self._cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
        self._open[phase] = (self._now_ns(), event)

    def _mark_end(self, phase: str) -> None:
        opened = self._open.pop(phase, None)
        if opened is None or self._step is None:
            return
        record = self._step.phases[phase]
        record.seen = True
        start_ns, start_event = opened
        if start_event is not None:
            end_event = torch.cuda.Event(enable_timing=True)
            end_event.record()
            record.events.append((start_event, end_event))
        else:
            record.host_ns += self._now_ns() - start_ns

    def _forward_pre(self, module: nn.Module, args: Any) -> None:
        self._forward_depth += 1
        if self._forward_depth == 1:  # a hooked root called from another one counts once
            self._mark_start("forward")

    def _forward_post(self, module: nn.Module, args: Any, output: Any) -> None:
        self._forward_depth -= 1
        if self._forward_depth != 0:
            return
        self._mark_end("forward")
        if torch.is_grad_enabled():
            node = first_grad_fn(output)
            if node is not None:
                node.register_prehook(self._backward_start)

    def _backward_start(self, grad_outputs: Any) -> None:
        if "backward" not in self._open:
            self._mark_start("backward")
            torch.autograd.Variable._execution_engine.queue_callback(self._backward_end)

    def _backward_end(self) -> None:
        self._mark_end("backward")

    def _optimizer_pre(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._mark_start("optimizer")

    def _optimizer_post(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._mark_end("optimizer")

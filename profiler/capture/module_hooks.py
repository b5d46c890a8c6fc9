"""Per-module ranges and memory counters for deep-capture windows.

Forward: a ``record_function`` range around every submodule's forward, so Kineto records it on the
calling thread (and projects it onto GPU streams as ``gpu_user_annotation``).

Backward: ``register_full_backward_hook`` would be the obvious tool, but it wraps module outputs in
a custom autograd Function and so breaks any in-place op that follows (``nn.ReLU(inplace=True)``
after a BatchNorm: "Output 0 of BackwardHookFunction is a view and is being modified inplace").
Instead a pre-hook on the autograd node that produced the module's output marks when the module's
backward starts, and it ends when the backward of a module outside it starts, or when the backward
pass ends. Those hooks fire inside the engine's own per-node ranges, so a ``record_function`` there
would overlap them without nesting; the backward ranges are written instead as our own complete
events on a lane of their own (one per process), where they nest by construction.

Everything here is attached at the start of a deep window and removed at its end: outside windows
no per-module hook runs at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from profiler.capture.memory import MemoryProbe
from profiler.events import module_range_name

_enter = torch.ops.profiler._record_function_enter_new
_exit = torch.ops.profiler._record_function_exit._RecordFunction


@dataclass(frozen=True)
class _ModuleInfo:
    forward_name: str
    backward_name: str
    ancestors: frozenset[int]


@dataclass(frozen=True)
class BackwardRange:
    """One module's backward, on our clock."""

    name: str
    start_ns: int
    end_ns: int
    depth: int


@dataclass
class WindowRecord:
    """What the tracer saw in one window, handed to the trace writer."""

    memory: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    backward: list[BackwardRange] = field(default_factory=list)


def root_names(models: Sequence[nn.Module]) -> list[str]:
    """Names for the hooked root modules: ``model``, or ``model0``, ``model1``... for a list."""
    return ["model"] if len(models) == 1 else [f"model{i}" for i in range(len(models))]


def qualified_modules(models: Sequence[nn.Module]) -> Iterable[tuple[str, nn.Module]]:
    """Every submodule with its qualified name (roots named by :func:`root_names`)."""
    single = len(models) == 1
    for root_name, model in zip(root_names(models), models, strict=True):
        for name, module in model.named_modules():
            if not name:
                yield root_name, module
            else:
                yield (name if single else f"{root_name}.{name}"), module


def first_grad_fn(output: Any) -> Any:
    """The autograd node behind the first tensor in a module's output that has one."""
    if isinstance(output, torch.Tensor):
        return output.grad_fn
    if isinstance(output, (list, tuple)):
        values: Iterable[Any] = output
    elif isinstance(output, dict):
        values = output.values()
    else:
        return None
    for value in values:
        if isinstance(value, torch.Tensor) and value.grad_fn is not None:
            return value.grad_fn
    return None


class ModuleTracer:
    """Attach forward ranges, backward timing and memory counters to every submodule."""

    def __init__(self, models: Sequence[nn.Module], memory: MemoryProbe, now_ns: Callable[[], int]):
        self._memory = memory
        self._now_ns = now_ns
        self._modules: list[tuple[nn.Module, _ModuleInfo]] = []
        paths: dict[int, str] = {}
        for path, module in qualified_modules(models):
            paths[id(module)] = path
        parent: dict[int, int] = {}
        for model in models:
            for module in model.modules():
                for child in module.children():
                    parent.setdefault(id(child), id(module))
        for path, module in qualified_modules(models):
            ancestors, node = set(), id(module)
            while node in parent:
                node = parent[node]
                ancestors.add(node)
            cls = type(module).__name__
            info = _ModuleInfo(
                forward_name=module_range_name(path, cls),
                backward_name=module_range_name(path, cls, backward=True),
                ancestors=frozenset(ancestors),
            )
            self._modules.append((module, info))
        self._info = {id(module): info for module, info in self._modules}
        self._handles: list[RemovableHandle] = []
        self._forward_stack: list[tuple[int, Any]] = []
        self._backward_stack: list[tuple[int, int]] = []
        self._node_modules: dict[Any, list[int]] = {}
        self._end_queued = False
        self.record = WindowRecord()

    @property
    def module_count(self) -> int:
        """How many modules get ranges."""
        return len(self._modules)

    @property
    def attached(self) -> bool:
        """Whether the hooks are on the modules now."""
        return bool(self._handles)

    def attach(self) -> None:
        """Hook every module (idempotent)."""
        if self._handles:
            return
        for module, _ in self._modules:
            self._handles.append(module.register_forward_pre_hook(self._forward_pre))
            self._handles.append(module.register_forward_hook(self._forward_post))

    def detach(self) -> None:
        """Remove every hook and close whatever range is still open."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.close_open_ranges()

    def close_open_ranges(self) -> None:
        """Close forward ranges left open by an exception, and any backward still open."""
        while self._forward_stack:
            _exit(self._forward_stack.pop()[1])
        self._close_backward(self._now_ns(), keep=frozenset())
        self._node_modules.clear()

    def take(self) -> WindowRecord:
        """Hand over what was recorded so far and start a fresh record."""
        record, self.record = self.record, WindowRecord()
        return record

    def _sample(self, now: int) -> None:
        self.record.memory.append((now, self._memory.sample()))

    def _forward_pre(self, module: nn.Module, args: Any) -> None:
        self._sample(self._now_ns())
        key = id(module)
        self._forward_stack.append((key, _enter(self._info[key].forward_name, None)))

    def _forward_post(self, module: nn.Module, args: Any, output: Any) -> None:
        key = id(module)
        # Pop to this module's own entry: a child whose forward raised and was caught by the
        # parent left its range open, and ranges must close innermost first.
        while self._forward_stack:
            top_key, handle = self._forward_stack.pop()
            _exit(handle)
            if top_key == key:
                break
        self._sample(self._now_ns())
        if torch.is_grad_enabled():
            node = first_grad_fn(output)
            if node is not None:
                self._watch_node(node, key)

    def _watch_node(self, node: Any, key: int) -> None:
        # Several modules can share an output node (a Sequential and its last child): one hook
        # per node opens them outermost first.
        modules = self._node_modules.get(node)
        if modules is None:
            self._node_modules[node] = modules = []
            node.register_prehook(lambda grad_outputs: self._backward_start(modules))
        modules.append(key)

    def _backward_start(self, modules: list[int]) -> None:
        now = self._now_ns()
        if not self._end_queued:
            torch.autograd.Variable._execution_engine.queue_callback(self._backward_end)
            self._end_queued = True
        self._sample(now)
        for key in reversed(modules):  # forward hooks ran innermost first
            self._close_backward(now, keep=self._info[key].ancestors)
            self._backward_stack.append((key, now))

    def _backward_end(self) -> None:
        now = self._now_ns()
        self._sample(now)
        self._close_backward(now, keep=frozenset())
        self._end_queued = False
        self._node_modules.clear()

    def _close_backward(self, now: int, *, keep: frozenset[int]) -> None:
        while self._backward_stack and self._backward_stack[-1][0] not in keep:
            key, start = self._backward_stack.pop()
            depth = len(self._backward_stack)
            name = self._info[key].backward_name
            self.record.backward.append(BackwardRange(name, start, now, depth))

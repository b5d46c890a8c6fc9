"""Per-module ranges and memory counters for deep-capture windows.

Forward: a ``record_function`` range around every submodule's forward (an instance-level wrapper,
see :meth:`ModuleTracer.attach`), so Kineto records it on the calling thread. With CUDA it is a
``user_annotation`` opened through the profiler op, which Kineto also projects onto GPU streams
(``gpu_user_annotation``). Without CUDA, that op costs ~13 us a range under the profiler,
several percent of a small model's step, so the range is recorded with
``torch._C._profiler._RecordFunctionFast`` (~0.6 us, what compiled graphs use), which Kineto
writes as a ``cpu_op``; the trace writer turns those back into ``user_annotation`` (see
``splice_kineto_trace``'s ``annotations``), so readers see the same file either way.

Backward: ``register_full_backward_hook`` would be the obvious tool, but it wraps module outputs in
a custom autograd Function and so breaks any in-place op that follows (``nn.ReLU(inplace=True)``
after a BatchNorm: "Output 0 of BackwardHookFunction is a view and is being modified inplace").
A pre-hook on the autograd node that produced each module's output would do, but registering it
and the engine's call back into Python cost ~9% of a small model's step under the profiler. So
the forward wrapper only notes which autograd sequence numbers its forward took: every autograd
node takes the thread's next number as it is made, so the numbers from the counter's value before
the forward to its value after (``torch._C._autograd._get_sequence_nr``, a read of a thread-local
counter) are the nodes the module made, its output's among them. Looking the output's node up
instead (``grad_fn`` builds a Python object for it, ``_sequence_nr()`` parses arguments) took
twice the instructions (callgrind: ~4,800 a module against ~2,400). The window's writer finds
when the engine started on those nodes in Kineto's own ``autograd::engine::evaluate_function``
events (:func:`profiler.store.chrome_trace.backward_starts`): a module's backward starts when the
engine starts on the first of its nodes (its output's, unless another of its outputs is needed
first) and ends when the backward of a module outside it starts, or when the backward pass ends (one
pre-hook per root output queues an engine callback that notes it), or at the step's end. Those
events overlap the engine's own per-node ranges without nesting in them, so the backward ranges
are written as our own complete events on a lane of their own (one per process), where they nest
by construction.

Memory: a sample at every module's forward boundaries and at each backward pass's start and end
(raw readings, decoded when the window is written), unless Kineto records the allocator itself
(``profile_memory=True``): its samples sit at every allocation and the analysis prefers them, so
then only the root modules' forward boundaries are sampled, which keeps a coarse RSS /
reserved-bytes series beside Kineto's for a fraction of the cost. Memory is read only where it can
have changed since the last reading: a plain ``nn.Sequential`` runs nothing between its children,
so a child called from its loop (with no hook of its own or global one to run first) and the
Sequential's own end take the last reading again instead of a system call (see
:meth:`ModuleTracer._traced`), and on CPU so does a boundary within ``MemoryProbe.reuse_ns``
(50 us) of the last system call: the RSS cannot grow by more than a few dozen KiB in that time
(see :data:`profiler.capture.memory.RSS_FRESH_NS`); every boundary still gets its sample. No
reading is taken at a module's backward boundaries (that needs the hooks ruled out above): memory
per module backward comes from Kineto's allocator samples inside each backward range, when the
trace is read (``profiler.analysis.memory.module_memory``).

Everything here is attached at the start of a deep window and removed at its end: outside windows
no per-module wrapper or hook runs at all.
"""

from __future__ import annotations

import functools
import math
import operator
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn.modules import module as _torch_module

from profiler.capture.memory import MemoryProbe, Reading
from profiler.events import module_range_name

_user_enter = torch.ops.profiler._record_function_enter_new
_user_exit = torch.ops.profiler._record_function_exit._RecordFunction
_Fast = getattr(torch._C._profiler, "_RecordFunctionFast", None)  # torch >= 2.2
_NO_OPS = "_trainprof_runs_no_ops"
# With ``with_stack``, Kineto writes each call of a built-in from Python code as a
# ``python_function`` frame, as CPython reports it to the profiler; a built-in called by another
# built-in goes unreported. With stacks, the forward wrapper opens and closes its range through
# ``methodcaller`` objects (themselves no built-in functions): no frame then starts inside the
# range and ends after it (frames that cross a range make Perfetto drop one of them, and the
# writer would have to find them and widen the range over them). ``with`` calls ``__enter__``
# unreported but ``__exit__`` as a reported call. The bookkeeping's built-ins (clock, grad mode,
# sequence numbers) go through ``partial``/``methodcaller`` too: no frames of ours in the user's
# stacks, nor ~2,000 events more a 10-step window for Kineto to export and us to compress.
# Without stacks nothing is recorded, and the plain calls are cheaper (~0.1 us each).
_enter = operator.methodcaller("__enter__")
_leave = operator.methodcaller("__exit__", None, None, None)
# The autograd sequence number the thread's next node takes (see the module docstring).
_next_sequence_nr = torch._C._autograd._get_sequence_nr


def user_range_enter(name: str) -> Any:
    """Open a ``user_annotation`` range (projected onto GPU streams by Kineto)."""
    return _user_enter(name, None)


def user_range_exit(handle: Any) -> None:
    """Close a range from :func:`user_range_enter`."""
    _user_exit(handle)


def range_enter(name: str) -> Any:
    """Open a range at the least cost: recorded as a ``cpu_op`` where torch can."""
    if _Fast is None:
        return _user_enter(name, None)
    handle = _Fast(name)  # only the name: its other arguments must be lists if given
    handle.__enter__()
    return handle


def range_exit(handle: Any) -> None:
    """Close a range from :func:`range_enter`."""
    if _Fast is None:
        _user_exit(handle)
    else:
        handle.__exit__(None, None, None)


def ranges_are_ops() -> bool:
    """Whether :func:`range_enter` records ``cpu_op`` (not ``user_annotation``) events."""
    return _Fast is not None


class UserRange:
    """``with UserRange(name):`` a ``user_annotation`` range (see :func:`user_range_enter`)."""

    __slots__ = ("_handle", "_name")

    def __init__(self, name: str) -> None:
        self._name = name

    def __enter__(self) -> None:
        self._handle = _user_enter(self._name, None)

    def __exit__(self, *exc: object) -> None:
        _user_exit(self._handle)


def _call_hooks(module: nn.Module) -> tuple[Mapping[int, Any], ...]:
    """The hook dicts ``nn.Module.__call__`` looks at before taking its fast path: the module's
    backward, backward-pre, forward and forward-pre hooks, then the global ones in that order.
    torch adds and removes hooks in these dicts and never replaces them after ``__init__``."""
    return (
        module._backward_hooks,
        module._backward_pre_hooks,
        module._forward_hooks,
        module._forward_pre_hooks,
        _torch_module._global_backward_pre_hooks,
        _torch_module._global_backward_hooks,
        _torch_module._global_forward_hooks,
        _torch_module._global_forward_pre_hooks,
    )


def only_forward_runs(module: nn.Module) -> bool:
    """Whether calling ``module`` runs its ``forward`` and nothing else: no hook of its own or
    global one (``nn.Module._call_impl``'s fast path, the same test)."""
    return not any(_call_hooks(module))


def runs_no_ops(wrapper: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a forward wrapper of ours that runs no tensor op around the forward it wraps (the
    step metrics' clock readings), so a Sequential under it still counts as plain."""
    wrapper.__dict__[_NO_OPS] = True
    return wrapper


def plain_sequential(module: nn.Module) -> bool:
    """Whether ``module`` is an ``nn.Sequential`` whose forward is the stock loop over its
    children (not a subclass's, nor an instance-level one other than ours)."""
    if type(module).forward is not nn.Sequential.forward:
        return False
    instance = module.__dict__.get("forward")
    return instance is None or bool(getattr(instance, "__dict__", {}).get(_NO_OPS))


@dataclass(frozen=True)
class _ModuleInfo:
    forward_name: str
    backward_name: str
    ancestors: frozenset[int]
    sampled: bool  # memory is sampled at this module's boundaries
    # The key of its parent when that is a plain Sequential whose children are all sampled: called
    # from the parent's loop, nothing ran since the last reading (None: no such parent).
    loop_parent: int | None = None
    sequential: bool = False  # a plain Sequential whose children are all sampled


class BackwardRange(NamedTuple):
    """One module's backward, in the trace's microseconds."""

    name: str
    start_us: float
    end_us: float
    depth: int


@dataclass
class WindowRecord:
    """What the tracer saw in one window, handed to the trace writer.

    ``samples`` holds memory samples, flat: our clock, then the raw reading (see
    :meth:`MemoryProbe.reader`), for each; :attr:`memory` pairs them and :meth:`memory_values`
    decodes them. ``forwards`` holds, flat, first, end and the module's key for each forward
    that made autograd nodes, in the order the forwards returned: the nodes' sequence numbers
    run from first to end (excluded); :attr:`outputs` groups them. ``backward_ends`` is our clock
    at the end of each backward pass and of each step. (Flat: dozens of samples a step kept as
    tuples set off a garbage collection every ~10 steps of a small model; ints and readings
    are no objects the collector tracks.)
    """

    modules: Mapping[int, _ModuleInfo] = field(default_factory=dict)
    samples: list[Any] = field(default_factory=list)
    forwards: list[int] = field(default_factory=list)
    backward_ends: list[int] = field(default_factory=list)
    forward_as_ops: bool = False  # forward ranges were recorded as cpu_op (see module docstring)

    @property
    def memory(self) -> list[tuple[int, Reading]]:
        """Each memory sample as (our clock, its raw reading)."""
        samples = self.samples
        return list(zip(samples[0::2], samples[1::2], strict=True))

    @property
    def outputs(self) -> list[tuple[int, int, int]]:
        """(first, end, the module's key) for each forward that made autograd nodes."""
        numbers = self.forwards
        return list(zip(numbers[0::3], numbers[1::3], numbers[2::3], strict=True))

    def memory_values(self) -> list[tuple[int, dict[str, float]]]:
        """Each memory reading as ``(clock ns, counter values)``."""
        return [(ns, MemoryProbe.values(reading)) for ns, reading in self.memory]

    def output_sequences(self) -> set[int]:
        """The sequence numbers of every node the traced forwards made."""
        numbers: set[int] = set()
        done = -1  # forwards nest: a parent's numbers hold its children's, added once
        for first, end, _ in sorted(self.outputs):
            if end > done:
                numbers.update(range(max(first, done), end))
                done = end
        return numbers

    def backward_ranges(
        self, starts: Mapping[int, float], to_ts: Callable[[int], float]
    ) -> list[BackwardRange]:
        """The module-backward lane, from when the engine started on each output node.

        Args:
            starts: trace ``ts`` of the engine's start on a node, by sequence number.
            to_ts: our clock to the trace's ``ts``.
        """
        ends = sorted(to_ts(ns) for ns in self.backward_ends)
        ends.append(math.inf)  # past the last end: what is open then closes at its last start
        modules = self.modules
        ranges: list[BackwardRange] = []
        # (key, start), outermost first. Starts come in order, and a pass's end closes what is
        # open before the next start past it: a range never ends before it starts.
        stack: list[tuple[int, float]] = []
        done, end = 0, ends[0]
        for ts, keys in self._timeline(starts):  # hundreds a window, in the stop-to-disk budget
            while end <= ts:  # a backward pass (or step) ended: everything open closes there
                self._close_all(stack, end, ranges)
                done += 1
                end = ends[done]
            for key in keys:  # outermost first; a range closes where one outside it starts
                ancestors = modules[key].ancestors
                while stack and stack[-1][0] not in ancestors:
                    closed, start = stack.pop()
                    name = modules[closed].backward_name
                    ranges.append(BackwardRange(name, start, ts, len(stack)))
                stack.append((key, ts))
        if stack:
            self._close_all(stack, end if end != math.inf else stack[-1][1], ranges)
        return ranges

    def _timeline(self, starts: Mapping[int, float]) -> list[tuple[float, list[int]]]:
        """(start, the modules whose backward starts there, outermost first) for each node the
        engine started on first of some forward's nodes, by start (stable: nodes started at one
        instant keep their order). Nested modules that share that node share the start."""
        numbers = sorted(starts)
        nodes: dict[int, list[int]] = {}  # a node's modules, innermost (first to return) first
        for first, end, key in self.outputs:
            low = bisect_left(numbers, first)
            high = bisect_left(numbers, end, low)
            if low < high:  # the engine ran some of this forward's nodes: the first it ran
                sequence = (
                    numbers[low]  # most forwards made one node
                    if high - low == 1
                    else min(numbers[low:high], key=starts.__getitem__)
                )
                keys = nodes.get(sequence)
                if keys is None:
                    nodes[sequence] = [key]
                else:
                    keys.append(key)
        timeline = [(starts[sequence], keys[::-1]) for sequence, keys in nodes.items()]
        timeline.sort(key=itemgetter(0))
        return timeline

    def _close_all(
        self, stack: list[tuple[int, float]], end: float, ranges: list[BackwardRange]
    ) -> None:
        """Close every range on ``stack`` at ``end``, innermost first, into ``ranges``."""
        modules = self.modules
        while stack:
            key, start = stack.pop()
            ranges.append(BackwardRange(modules[key].backward_name, start, end, len(stack)))


def _unreported(*calls: Callable[[], int], when: bool) -> tuple[Callable[[], int], ...]:
    """``calls`` as they go unreported under ``with_stack`` (through ``partial``, see
    ``_enter``), or as they are when ``when`` is false: a plain call is cheaper."""
    return tuple(functools.partial(call) for call in calls) if when else calls


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
    """Attach forward ranges, backward timing and memory counters to every submodule.

    Args:
        models: the root modules.
        memory: the probe read at module boundaries.
        now_ns: our clock.
        memory_per_module: read memory at every module's boundaries (False: the roots' only).
        user_ranges: record forward ranges as ``user_annotation`` (needed for Kineto's GPU
            projection) rather than the cheaper way.
        with_stack: Kineto records Python frames: make the wrapper's calls of built-ins
            unreported (see ``_enter``), so that ranges recorded as ops contain whole frames.
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        memory: MemoryProbe,
        now_ns: Callable[[], int],
        *,
        memory_per_module: bool = True,
        user_ranges: bool = False,
        with_stack: bool = False,
    ):
        self._with_stack = with_stack
        self._read = memory.reader()
        self._forward_as_ops = not user_ranges and ranges_are_ops()
        fast = _Fast if self._forward_as_ops else None
        self._range: type[Any] = UserRange if fast is None else fast
        # The key of the plain Sequential whose loop runs now, with nothing run since the last
        # memory reading (see _traced); None otherwise.
        self._quiet: int | None = None
        # When memory was last read (our clock), and how old a reading may be to be taken again.
        self._read_ns = 0
        self._reuse_ns: int = memory.reuse_ns
        self._now_ns = now_ns
        self._modules = _module_infos(models, memory_per_module=memory_per_module)
        self._info = {id(module): info for module, info in self._modules}
        self._wrapped: list[tuple[nn.Module, Any]] = []
        self._root_nodes: set[Any] = set()  # root output nodes with our pre-hook, this step
        self._end_queued = False
        self.record = self._new_record()

    @property
    def module_count(self) -> int:
        """How many modules get ranges."""
        return len(self._modules)

    @property
    def attached(self) -> bool:
        """Whether the modules are traced now."""
        return bool(self._wrapped)

    def attach(self) -> None:
        """Trace every module's forward (idempotent).

        Through an instance-level ``forward``, not forward hooks: any hook sends
        ``nn.Module.__call__`` down its slow path (~2 us a call), and one wrapper does in one frame
        what a pre- and a post-hook did in two, its ``finally`` closing the range if forward
        raises. Always-on step metrics wrap the roots' forward the same way, earlier: detaching
        here first restores theirs.
        """
        if self._wrapped:
            return
        for module, info in self._modules:
            previous = module.__dict__.get("forward")
            module.__dict__["forward"] = self._traced(module, id(module), info)
            self._wrapped.append((module, previous))

    def detach(self) -> None:
        """Restore every module's forward and end the step in progress."""
        for module, previous in reversed(self._wrapped):
            if previous is None:
                module.__dict__.pop("forward", None)
            else:
                module.__dict__["forward"] = previous
        self._wrapped.clear()
        self.end_step()

    def end_step(self) -> None:
        """No module's backward of this step goes on past now."""
        self._quiet = None
        self._end_backward(self._now_ns())

    def take(self) -> WindowRecord:
        """Hand over what was recorded so far and start a fresh record."""
        record, self.record = self.record, self._new_record()
        return record

    def _new_record(self) -> WindowRecord:
        return WindowRecord(modules=self._info, forward_as_ops=self._forward_as_ops)

    def _traced(self, module: nn.Module, key: int, info: _ModuleInfo) -> Callable[..., Any]:
        """``module``'s forward in a range, with memory samples at its boundaries and the
        sequence numbers of the autograd nodes it made noted.

        Memory is read only where it can have changed. ``self._quiet`` holds a plain
        Sequential's key from the reading at its start, and again from each reading at the end of
        a child its loop called, until the next module starts: nothing runs in between (the
        loop, no hook: see :func:`only_forward_runs`). A child that starts then, and the
        Sequential's end, take the last reading again. A child called from anywhere else (its
        parent's key is not in ``_quiet``) reads, and so does everything after an exception.
        Any boundary within ``reuse_ns`` of the last system call takes that reading again
        (RSS only: see :data:`profiler.capture.memory.RSS_FRESH_NS`).
        """
        inner, opened, read, reuse_ns = module.forward, self._range, self._read, self._reuse_ns
        name, sampled, root = info.forward_name, info.sampled, not info.ancestors
        parent, sequential = info.loop_parent, info.sequential
        unreported, tensor = self._with_stack, torch.Tensor
        enter = _enter if unreported else opened.__enter__
        leave, exit_ = _leave, opened.__exit__
        now_ns, sequence_nr = _unreported(self._now_ns, _next_sequence_nr, when=unreported)
        # The hooks nn.Module.__call__ would run, looked up once a window (a module's attribute
        # read goes through nn.Module's __getattr__ slot).
        (
            own_backward,
            own_backward_pre,
            own_forward,
            own_forward_pre,
            global_backward_pre,
            global_backward,
            global_forward,
            global_forward_pre,
        ) = _call_hooks(module)

        @functools.wraps(inner)
        def traced_forward(*args: Any, **kwargs: Any) -> Any:
            # Called from its parent's loop with nothing run since (its own hooks run in
            # nn.Module.__call__, before this and after it): only_forward_runs, inlined (a call
            # is a frame of ours in the user's stacks).
            from_loop = (
                parent is not None
                and self._quiet == parent
                and not (
                    own_backward
                    or own_backward_pre
                    or own_forward
                    or own_forward_pre
                    or global_backward_pre
                    or global_backward
                    or global_forward
                    or global_forward_pre
                )
            )
            if sampled:
                samples, now = self.record.samples, now_ns()
                if samples and (from_loop or now - self._read_ns < reuse_ns):
                    samples += (now, samples[-1])
                else:
                    samples += (now, read())
                    self._read_ns = now
            self._quiet = key if sequential else None
            first = sequence_nr()
            handle = opened(name)
            enter(handle)
            try:
                output = inner(*args, **kwargs)
            except BaseException:
                self._quiet = None
                raise
            finally:
                if unreported:
                    leave(handle)
                else:
                    exit_(handle, None, None, None)
            if sampled:
                samples, now = self.record.samples, now_ns()
                quiet = sequential and self._quiet == key
                if samples and (quiet or now - self._read_ns < reuse_ns):
                    samples += (now, samples[-1])
                else:
                    samples += (now, read())
                    self._read_ns = now
            self._quiet = parent if from_loop else None
            end = sequence_nr()
            if end != first:  # the forward made autograd nodes: the backward will run them
                self.record.forwards += (first, end, key)
                # A pre-hook on a root's output node marks each backward pass's start.
                if (
                    root
                    and (
                        node := output.grad_fn if type(output) is tensor else first_grad_fn(output)
                    )
                    is not None
                    and node not in self._root_nodes
                ):
                    self._root_nodes.add(node)
                    node.register_prehook(self._backward_start)
            return output

        return traced_forward

    def _backward_start(self, grad_outputs: Any) -> None:
        self._read_ns = now = self._now_ns()
        self.record.samples += (now, self._read())
        if not self._end_queued:
            torch.autograd.Variable._execution_engine.queue_callback(self._backward_end)
            self._end_queued = True

    def _backward_end(self) -> None:
        self._read_ns = now = self._now_ns()
        self.record.samples += (now, self._read())
        self._end_backward(now)

    def _end_backward(self, now: int) -> None:
        self.record.backward_ends.append(now)
        self._end_queued = False
        self._root_nodes.clear()


def _module_infos(
    models: Sequence[nn.Module], *, memory_per_module: bool
) -> list[tuple[nn.Module, _ModuleInfo]]:
    """Every module with its range names, its ancestors and how memory is sampled around it."""
    parent: dict[int, int] = {}
    plain: dict[int, bool] = {}
    for model in models:
        for module in model.modules():
            plain[id(module)] = memory_per_module and plain_sequential(module)
            for child in module.children():
                parent.setdefault(id(child), id(module))
    infos = []
    for path, module in qualified_modules(models):
        ancestors, node = set(), id(module)
        while node in parent:
            node = parent[node]
            ancestors.add(node)
        cls = type(module).__name__
        up = parent.get(id(module))
        info = _ModuleInfo(
            forward_name=module_range_name(path, cls),
            backward_name=module_range_name(path, cls, backward=True),
            ancestors=frozenset(ancestors),
            sampled=memory_per_module or not ancestors,
            loop_parent=up if up is not None and plain[up] else None,
            sequential=plain[id(module)],
        )
        infos.append((module, info))
    return infos

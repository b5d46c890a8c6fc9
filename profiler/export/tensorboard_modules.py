"""trainprof's module ranges in the form the PyTorch TensorBoard plugin's Module view reads.

What torch-tb-profiler 0.4.3 needs (read from its source, ``torch_tb_profiler/profiler/``):

* ``trace.py`` (``create_trace_event``): a complete event of category ``python_function`` whose
  args hold ``"Python module id"`` is a module event. A ``user_annotation`` that is not a
  ``ProfilerStep#N`` or a collective is dropped at load, so our ranges as capture writes them
  never reach the Module view.
* ``event_parser.py``, ``op_tree.py``: module events join each thread's operator tree (keyed by
  tid) by time containment: under ``ProfilerStep#N``, over the operators they contain. Of two
  nodes that overlap without nesting, the later one is dropped ("ranges on the same thread
  should not intersect").
* ``module_op.py``: the module hierarchy comes from ``"Python id"`` and ``"Python parent id"``
  (walked up from every leaf through all ``python_function`` events, keeping the module ones);
  the figures come from the tree, keyed by (name, ``"Python module id"``): occurrences, host
  time (end - start), operators, device time. A module of the hierarchy missing from the tree
  is a KeyError there, and the plugin then drops the whole worker.
* No schema version, ``record_shapes`` or ``with_modules`` key is looked at; only a top-level
  ``"Framework": "pytorch-lightning"`` switches to Lightning's own module events. The view shows
  the name less ``"nn.Module: "``.

torch writes such events itself only with ``with_stack=True`` (its Python tracer, names like
``nn.Module: Linear_0``); capture records our ranges with RecordFunction whatever the options.
So the export rewrites each forward range of ours: category ``python_function``, and args
``"Python id"`` (unique in the trace), ``"Python parent id"`` (the id of our range it nests in
on its thread, None at a root) and ``"Python module id"`` (the module's index among the modules
of its class, in the order they first ran, as torch counts). Names, times and other args stay.

Left as they are: backward ranges (the plugin builds backward modules only from
``forward_backward`` flows, which torch 2.x no longer writes; a lane of ranges would read as
modules of their own), the GPU copies (``gpu_user_annotation``), a range that overlaps another
node of the plugin's tree on its thread without nesting (the plugin would drop it, or drop an
operator from its other views, and a module dropped at every call fails the whole worker), and
every range of a trace that already has module events (torch's, ``with_stack=True``): the view
shows those already, and two sets would overlap in one tree.
"""

from __future__ import annotations

import bisect
import math
from array import array
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import orjson

from profiler.events import (
    MODULE_PREFIX,
    PHASE_COMPLETE,
    PROFILER_STEP_PREFIX,
    Category,
    parse_module_range_name,
)
from profiler.export.tensorboard_trace import TracePart, event_starts
from profiler.store.chrome_trace import find_all

PYTHON_ID_KEY = "Python id"
PYTHON_PARENT_ID_KEY = "Python parent id"
PYTHON_MODULE_ID_KEY = "Python module id"
PLUGIN_MODULE_CATEGORY = Category.PYTHON_FUNCTION.value
_RANGE_CATEGORY = Category.USER_ANNOTATION.value
# What the plugin puts in its operator tree (profiler/trace.py, EventTypeMap and
# create_trace_event; event_parser.py, _parse_node): operators and "python" events whatever
# their name; annotations only when they are steps or collectives. Categories compared lower-case.
_NODE_CATEGORIES = frozenset({"cpu_op", "operator", "python"})
_ANNOTATION_CATEGORIES = frozenset({"user_annotation", "gpu_user_annotation"})
_COLLECTIVES = frozenset(
    f"{library}:{op}"
    for library in ("nccl", "gloo")
    for op in ("broadcast", "reduce", "all_reduce", "all_gather", "reduce_scatter")
)
_PYTHON_NEEDLES = tuple(f'"{key}"'.encode() for key in (PYTHON_ID_KEY, PYTHON_MODULE_ID_KEY))

Tid = int | str | None
#: Ordinal (number in ``traceEvents``) -> the args that make that event a module event.
ModuleArgs = Mapping[int, Mapping[str, Any]]


@dataclass
class ThreadNodes:
    """The nodes of the plugin's tree on one thread, our forward ranges among them.

    Attributes:
        ts_us: each node's start.
        end_us: its ``ts + dur``, as the plugin adds them.
        ordinal: its number in ``traceEvents``.
    """

    ts_us: array[float] = field(default_factory=lambda: array("d"))
    end_us: array[float] = field(default_factory=lambda: array("d"))
    ordinal: array[int] = field(default_factory=lambda: array("q"))

    def add(self, ordinal: int, ts_us: float, end_us: float) -> None:
        """Note one node."""
        self.ts_us.append(ts_us)
        self.end_us.append(end_us)
        self.ordinal.append(ordinal)

    def in_tree_order(self) -> Iterator[tuple[float, float, int]]:
        """``(start, end, ordinal)`` by start, the longer first, then file order: the plugin's
        order (its sort is stable over events in file order)."""
        ts, end = np.frombuffer(self.ts_us), np.frombuffer(self.end_us)
        ordinal = np.frombuffer(self.ordinal, dtype=np.int64)
        order = np.lexsort((ordinal, -end, ts))
        return zip(ts[order].tolist(), end[order].tolist(), ordinal[order].tolist(), strict=True)


class _Envelope(msgspec.Struct, gc=False):
    ph: str = ""
    cat: str = ""
    name: str = ""
    tid: int | str | None = -1
    ts: float = math.nan
    dur: float = math.nan


class _PythonArgs(msgspec.Struct, gc=False):
    python_id: Any = msgspec.field(name=PYTHON_ID_KEY, default=None)
    module_id: Any = msgspec.field(name=PYTHON_MODULE_ID_KEY, default=None)


class _PythonEvent(msgspec.Struct, gc=False):
    cat: str = ""
    args: _PythonArgs = msgspec.field(default_factory=_PythonArgs)


_ENVELOPES = msgspec.json.Decoder(list[_Envelope])
_PYTHON_EVENT = msgspec.json.Decoder(_PythonEvent)


def module_args(
    threads: Mapping[Tid, ThreadNodes],
    modules: Mapping[int, tuple[str, str]],
    *,
    first_id: int = 1,
) -> dict[int, dict[str, Any]]:
    """The args that make forward ranges module events of the plugin.

    Ranges are nested as the plugin builds its tree, per tid, among every node there. A range
    that overlaps another node without nesting gets nothing, and the ranges inside it hang
    from the next module out.

    Args:
        threads: every node of the plugin's tree per tid, our forward ranges among them.
        modules: ordinal -> ``(qualified name, class name)`` of each forward range of ours.
        first_id: the first ``"Python id"`` to give (above any the trace holds).

    Returns:
        Ordinal -> ``{"Python id", "Python parent id", "Python module id"}``.
    """
    added: dict[int, dict[str, Any]] = {}
    for nodes in threads.values():
        if not any(o in modules for o in nodes.ordinal):
            continue
        crossing = _crossing(nodes, modules)
        stack: list[tuple[float, int | None]] = []  # (end, innermost module's Python id)
        for start, end, ordinal in nodes.in_tree_order():
            if ordinal in crossing:
                continue
            while stack and stack[-1][0] <= start:
                stack.pop()
            if stack and end > stack[-1][0]:
                continue  # crosses a node of the trace's own: the plugin drops it too
            parent = stack[-1][1] if stack else None
            if ordinal in modules:
                added[ordinal] = {
                    PYTHON_ID_KEY: first_id + len(added),
                    PYTHON_PARENT_ID_KEY: parent,
                }
                parent = added[ordinal][PYTHON_ID_KEY]
            stack.append((end, parent))
    _number_modules(added, modules)
    return added


def _crossing(nodes: ThreadNodes, modules: Mapping[int, tuple[str, str]]) -> set[int]:
    """The forward ranges that overlap another node of the thread without nesting in it or
    holding it, as the plugin's tree builder meets them."""
    crossing: set[int] = set()
    stack: list[tuple[float, int]] = []  # (end, ordinal)
    for start, end, ordinal in nodes.in_tree_order():
        while True:
            while stack and stack[-1][0] <= start:
                stack.pop()
            if not stack or end <= stack[-1][0]:
                stack.append((end, ordinal))
            elif ordinal in modules:
                crossing.add(ordinal)
            elif stack[-1][1] in modules:  # a node ends past a range it starts in
                crossing.add(stack.pop()[1])
                continue  # and nests in what held that range, or crosses it too
            break
    return crossing


def _number_modules(
    added: dict[int, dict[str, Any]], modules: Mapping[int, tuple[str, str]]
) -> None:
    """Each module's index among the modules of its class, in the order they first ran (the
    order Python ids were given in)."""
    ids: dict[str, int] = {}
    per_class: dict[str, int] = {}
    for ordinal, args in sorted(added.items(), key=lambda item: item[1][PYTHON_ID_KEY]):
        path, class_name = modules[ordinal]
        if path not in ids:
            ids[path] = per_class.get(class_name, 0)
            per_class[class_name] = ids[path] + 1
        args[PYTHON_MODULE_ID_KEY] = ids[path]


def plan_module_events(parts: Iterable[TracePart]) -> dict[int, dict[str, Any]]:
    """What to add to which event of a trace (see :func:`module_args`).

    Args:
        parts: the trace's text (:func:`profiler.export.tensorboard_trace.trace_parts`).

    Returns:
        Ordinal -> args; empty when the trace has no forward range of ours, or has module
        events already.
    """
    threads: dict[Tid, ThreadNodes] = {}
    modules: dict[int, tuple[str, str]] = {}
    top_id = 0
    for part in parts:
        if part.events is None:
            continue
        for python in _python_events(part):
            if python.args.module_id is not None:
                return {}  # torch's own module events
            if type(python.args.python_id) is int:
                top_id = max(top_id, python.args.python_id)
        for ordinal, event in enumerate(_ENVELOPES.decode(b"[" + part.text + b"]"), part.first):
            if event.ph != PHASE_COMPLETE or math.isnan(event.ts) or math.isnan(event.dur):
                continue
            module = _forward_module(event)
            if module is not None:
                modules[ordinal] = module
            elif not _tree_node(event):
                continue
            threads.setdefault(event.tid, ThreadNodes()).add(
                ordinal, event.ts, event.ts + event.dur
            )
    return module_args(threads, modules, first_id=top_id + 1) if modules else {}


def _python_events(part: TracePart) -> Iterator[_PythonEvent]:
    """The part's ``python_function`` events with a Python or module id; looked for in its
    text, so a part without one costs a search."""
    text, events = part.text, part.events or []
    hits = [at for needle in _PYTHON_NEEDLES for at in find_all(text, needle)]
    if not hits:
        return
    starts = event_starts(part)
    for index in sorted({bisect.bisect_right(starts, at) - 1 for at in hits}):
        start = starts[index]
        event = _PYTHON_EVENT.decode(text[start : start + len(events[index])])
        if event.cat == PLUGIN_MODULE_CATEGORY:
            yield event


def _forward_module(event: _Envelope) -> tuple[str, str] | None:
    """``(qualified name, class name)`` of a forward range of ours, else None."""
    if event.cat != _RANGE_CATEGORY or not event.name.startswith(MODULE_PREFIX):
        return None
    parsed = parse_module_range_name(event.name)
    if parsed is None or parsed[2]:  # not ours, or a backward range
        return None
    return parsed[0], parsed[1]


def _tree_node(event: _Envelope) -> bool:
    """Whether the plugin puts this complete event in its operator tree."""
    category = event.cat.lower()
    if category in _NODE_CATEGORIES:
        return True
    return category in _ANNOTATION_CATEGORIES and (
        event.name.startswith(PROFILER_STEP_PREFIX) or event.name in _COLLECTIVES
    )


def as_module_event(event: Mapping[str, Any], added: Mapping[str, Any]) -> dict[str, Any]:
    """One range as the plugin's module event: its category, and its args with ``added``."""
    args = event.get("args")
    return {
        **event,
        "cat": PLUGIN_MODULE_CATEGORY,
        "args": {**(args if isinstance(args, dict) else {}), **added},
    }


def rewrite_module_events(parts: Iterable[TracePart], added: ModuleArgs) -> Iterator[bytes]:
    """The trace's text with the events in ``added`` made module events (:func:`as_module_event`);
    the rest of it byte for byte as it was."""
    for part in parts:
        events, first, text = part.events or [], part.first, part.text
        mine = [o for o in range(first, first + len(events)) if o in added]
        if not mine:
            yield text
            continue
        starts, done = event_starts(part), 0
        for ordinal in mine:
            start, raw = starts[ordinal - first], events[ordinal - first]
            yield text[done:start]
            yield _rewritten(raw, added[ordinal])
            done = start + len(raw)
        yield text[done:]


def _rewritten(raw: msgspec.Raw, added: Mapping[str, Any]) -> bytes:
    return orjson.dumps(as_module_event(orjson.loads(bytes(raw)), added))

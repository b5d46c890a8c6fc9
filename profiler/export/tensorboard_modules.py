"""trainprof's module ranges in the form the PyTorch TensorBoard plugin's Module view reads.

What torch-tb-profiler 0.4.3 needs (read from its source, ``torch_tb_profiler/profiler/``):

* ``trace.py`` (``create_trace_event``): a complete event of category ``python_function`` whose
  args hold ``"Python module id"`` is a module event. A ``user_annotation`` that is not a
  ``ProfilerStep#N`` or a collective is dropped at load, so our ranges as capture writes them
  never reach the Module view.
* ``event_parser.py``, ``op_tree.py``: module events join each thread's operator tree by time
  containment (under ``ProfilerStep#N``, over the operators they contain).
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
modules of their own), the GPU copies (``gpu_user_annotation``), a range crossing another of
ours on its thread without nesting in it (the plugin would keep only one of them in its tree),
and every range of a trace that already has module events (torch's, ``with_stack=True``): the
view shows those already, and two sets would overlap in one tree.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

import msgspec
import orjson

from profiler.events import MODULE_PREFIX, PHASE_COMPLETE, Category, parse_module_range_name
from profiler.export.tensorboard_trace import TracePart, event_starts
from profiler.store.chrome_trace import find_all

PYTHON_ID_KEY = "Python id"
PYTHON_PARENT_ID_KEY = "Python parent id"
PYTHON_MODULE_ID_KEY = "Python module id"
PLUGIN_MODULE_CATEGORY = Category.PYTHON_FUNCTION.value
_RANGE_CATEGORY = Category.USER_ANNOTATION.value
# Only pieces of text holding one of these are decoded.
_NEEDLES = (f'"{MODULE_PREFIX}'.encode(), f'"{PYTHON_ID_KEY}"'.encode())

#: Ordinal (number in ``traceEvents``) -> the args that make that event a module event.
ModuleArgs = Mapping[int, Mapping[str, Any]]


class ForwardRange(NamedTuple):
    """One forward module range of ours.

    Attributes:
        ordinal: its number in ``traceEvents``.
        thread: ``(pid, tid)``.
        ts_us: its start.
        end_us: ``ts + dur``, as the plugin adds them.
        path: the module's qualified name.
        class_name: the module's class.
    """

    ordinal: int
    thread: tuple[int | str, int | str | None]
    ts_us: float
    end_us: float
    path: str
    class_name: str


class _Envelope(msgspec.Struct, gc=False):
    ph: str = ""
    cat: str = ""
    name: str = ""
    pid: int | str = -1
    tid: int | str | None = -1
    ts: float = math.nan
    dur: float = 0.0
    args: msgspec.Raw = msgspec.Raw(b"{}")


class _PythonArgs(msgspec.Struct, gc=False):
    python_id: Any = msgspec.field(name=PYTHON_ID_KEY, default=None)
    module_id: Any = msgspec.field(name=PYTHON_MODULE_ID_KEY, default=None)


_ENVELOPE = msgspec.json.Decoder(_Envelope)
_PYTHON_ARGS = msgspec.json.Decoder(_PythonArgs)


def module_args(ranges: Iterable[ForwardRange], *, first_id: int = 1) -> dict[int, dict[str, Any]]:
    """The args that make each forward range a module event of the plugin.

    Ranges are nested per thread as the plugin nests its tree (by start, the longer first, then
    file order); one that crosses the range it starts in gets nothing.

    Args:
        ranges: the trace's forward ranges.
        first_id: the first ``"Python id"`` to give (above any the trace holds).

    Returns:
        Ordinal -> ``{"Python id", "Python parent id", "Python module id"}``.
    """
    ordered = sorted(ranges, key=lambda r: (r.ts_us, -r.end_us, r.ordinal))
    module_ids = _module_ids(ordered)
    added: dict[int, dict[str, Any]] = {}
    stacks: dict[tuple[int | str, int | str | None], list[tuple[float, int]]] = {}
    for span in ordered:
        stack = stacks.setdefault(span.thread, [])
        while stack and stack[-1][0] <= span.ts_us:  # the plugin's test: start < parent's end
            stack.pop()
        if stack and span.end_us > stack[-1][0]:
            continue  # crosses its parent's end
        python_id = first_id + len(added)
        added[span.ordinal] = {
            PYTHON_ID_KEY: python_id,
            PYTHON_PARENT_ID_KEY: stack[-1][1] if stack else None,
            PYTHON_MODULE_ID_KEY: module_ids[span.path],
        }
        stack.append((span.end_us, python_id))
    return added


def _module_ids(ordered: Iterable[ForwardRange]) -> dict[str, int]:
    """Each module's index among the modules of its class, in the order they first ran."""
    ids: dict[str, int] = {}
    per_class: dict[str, int] = {}
    for span in ordered:
        if span.path not in ids:
            ids[span.path] = per_class.get(span.class_name, 0)
            per_class[span.class_name] = ids[span.path] + 1
    return ids


def plan_module_events(parts: Iterable[TracePart]) -> dict[int, dict[str, Any]]:
    """What to add to which event of a trace (see :func:`module_args`).

    Args:
        parts: the trace's text (:func:`profiler.export.tensorboard_trace.trace_parts`).

    Returns:
        Ordinal -> args; empty when the trace has no forward range of ours, or has module
        events already.
    """
    ranges: list[ForwardRange] = []
    top_id = 0
    for part in parts:
        for ordinal, text in _candidates(part):
            event = _ENVELOPE.decode(text)
            if event.cat == PLUGIN_MODULE_CATEGORY:
                found = _PYTHON_ARGS.decode(event.args)
                if found.module_id is not None:
                    return {}
                if type(found.python_id) is int:
                    top_id = max(top_id, found.python_id)
            elif (span := _forward_range(ordinal, event)) is not None:
                ranges.append(span)
    return module_args(ranges, first_id=top_id + 1)


def _candidates(part: TracePart) -> Iterator[tuple[int, bytes]]:
    """(ordinal, text) of each event of the part whose text holds a needle: found in the
    part's text, so the other events are never looked at one by one."""
    text = part.text
    hits = [at for needle in _NEEDLES for at in find_all(text, needle)]
    if not hits or part.events is None:
        return
    starts = event_starts(part)
    for index in sorted({bisect.bisect_right(starts, at) - 1 for at in hits}):
        start = starts[index]
        yield part.first + index, text[start : start + len(part.events[index])]


def _forward_range(ordinal: int, event: _Envelope) -> ForwardRange | None:
    if event.ph != PHASE_COMPLETE or event.cat != _RANGE_CATEGORY:
        return None
    if not event.name.startswith(MODULE_PREFIX) or math.isnan(event.ts):
        return None
    parsed = parse_module_range_name(event.name)
    if parsed is None or parsed[2]:  # not ours, or a backward range
        return None
    path, class_name, _ = parsed
    return ForwardRange(ordinal, (event.pid, event.tid), event.ts, event.ts + event.dur, path,
                        class_name)  # fmt: skip


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

"""Hypothesis strategies for trace files that are not what they claim to be.

Most examples start from a small, well-formed Kineto trace (a step, ops, a launch, a kernel, a
copy, flows, counters, allocator events, thread names) and break a few things in it: a field
of the wrong JSON type, a number beyond 64 bits, a missing field, deep nesting, an event that
is not an object. Others break the text itself: cut short, a NaN, stray bytes, a bad gzip.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

from hypothesis import strategies as st

HUGE_INTS = st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**30, -(10**30), 2**200, 10**400])
ODD_NUMBERS = st.sampled_from([1e308, -1e308, 5e-324, -0.0, 0.5, 1e18, -1])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    HUGE_INTS,
    ODD_NUMBERS,
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(["", "X", "stream 7", "stream 99999999999999999999", "[memory]", "},{", "\\"]),
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)

ODD_TOKENS = [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"\xff", b'"\\ud800"', b"[" * 5000,
              b"]", b"}", b",", b"  "]  # fmt: skip
# A deep value is written as text: json.dumps itself would recurse too deep.
DEEP = "\x00deep\x00"

STEP = {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#1", "pid": 1, "tid": 1,
        "ts": 0, "dur": 1000}  # fmt: skip
TEMPLATES: list[dict[str, Any]] = [
    STEP,
    {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 1, "ts": 10, "dur": 300,
     "args": {"External id": 5, "Sequence number": 3, "Fwd thread id": 1,
              "Input Dims": [[2, 3], [3, 4]], "Input type": ["float", "float"]}},
    {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1, "ts": 20,
     "dur": 10, "args": {"External id": 5, "correlation": 9}},
    {"ph": "X", "cat": "kernel", "name": "sgemm", "pid": 0, "tid": 7, "ts": 40, "dur": 200,
     "args": {"External id": 5, "correlation": 9, "device": 0, "stream": 7, "grid": [4, 1, 1],
              "block": [128, 1, 1], "est. achieved occupancy %": 50, "registers per thread": 32,
              "shared memory": 0, "blocks per SM": 1.5, "warps per SM": 4.0}},
    {"ph": "X", "cat": "gpu_memcpy", "name": "Memcpy HtoD", "pid": 0, "tid": 7, "ts": 300,
     "dur": 20, "args": {"device": 0, "stream": 7, "bytes": 4096,
                         "memory bandwidth (GB/s)": 12.5, "correlation": 10}},
    {"ph": "X", "cat": "cpu_op", "name": "nccl:all_reduce", "pid": 1, "tid": 1, "ts": 400,
     "dur": 50, "args": {"Collective name": "allreduce", "In msg nelems": 10,
                         "Out msg nelems": 10, "Group size": 2, "dtype": "Float",
                         "Process Group Name": "0"}},
    {"ph": "X", "cat": "cuda_sync", "name": "cudaDeviceSynchronize", "pid": 1, "tid": 1,
     "ts": 500, "dur": 5, "args": {"cuda_sync_kind": "device"}},
    {"ph": "X", "cat": "user_annotation", "name": "enumerate(DataLoader)#_Iter.__next__",
     "pid": 1, "tid": 1, "ts": 1, "dur": 5},
    {"ph": "s", "id": 9, "pid": 1, "tid": 1, "ts": 20, "cat": "ac2g", "name": "ac2g"},
    {"ph": "f", "id": 9, "pid": 0, "tid": 7, "ts": 40, "cat": "ac2g", "name": "ac2g", "bp": "e"},
    {"ph": "C", "name": "trainprof.memory", "pid": 1, "tid": 1, "ts": 30,
     "args": {"rss_bytes": 1000}},
    {"ph": "i", "s": "t", "name": "[memory]", "pid": 1, "tid": 1, "ts": 15,
     "args": {"Bytes": 512, "Total Allocated": 512, "Total Reserved": 2048,
              "Device Type": 1, "Device Id": 0}},
    {"ph": "M", "name": "thread_name", "pid": 1, "tid": 1, "args": {"name": "main"}},
    {"ph": "M", "name": "process_name", "pid": 0, "args": {"name": "GPU 0"}},
]  # fmt: skip
ENVELOPE_KEYS = ["ph", "cat", "name", "pid", "tid", "ts", "dur", "id", "bp", "args", "s"]
META = {"schemaVersion": 1, "distributedInfo": {"rank": 0}, "deviceProperties": [{"id": 0}],
        "displayTimeUnit": "ms", "baseTimeNanoseconds": 1_700_000_000_000_000_000}  # fmt: skip


@st.composite
def broken_event(draw: st.DrawFn) -> Any:
    """A template event with one of its fields (or one of its args) changed or removed."""
    event = json.loads(json.dumps(draw(st.sampled_from(TEMPLATES))))
    action = draw(st.sampled_from(["field", "arg", "drop", "deep", "replace"]))
    if action == "replace":  # the event itself is not an object
        return draw(st.one_of(SCALARS, st.lists(SCALARS, max_size=2)))
    args = event.get("args")
    if action == "arg" and isinstance(args, dict) and args:
        args[draw(st.sampled_from(sorted(args)))] = draw(JSON_VALUES)
    elif action == "drop":
        event.pop(draw(st.sampled_from(sorted(event))), None)
    elif action == "deep":
        event[draw(st.sampled_from(ENVELOPE_KEYS))] = DEEP
    else:
        event[draw(st.sampled_from(ENVELOPE_KEYS))] = draw(JSON_VALUES)
    return event


def _among_templates(draw: st.DrawFn, event: st.SearchStrategy[Any], *, most: int) -> list[Any]:
    """Fresh copies of the sound template events with 1 to ``most`` drawn events put among them."""
    events: list[Any] = [json.loads(json.dumps(e)) for e in TEMPLATES]
    for _ in range(draw(st.integers(1, most))):
        events.insert(draw(st.integers(0, len(events))), draw(event))
    return events


@st.composite
def broken_document(draw: st.DrawFn) -> bytes:
    """A trace's JSON text: sound events and a few broken ones, meta keys maybe broken too."""
    events = _among_templates(draw, broken_event(), most=3)
    meta = dict(META)
    if draw(st.booleans()):
        meta[draw(st.sampled_from([*META, "traceName", "trainprof"]))] = draw(
            st.one_of(JSON_VALUES, st.just(DEEP), st.fixed_dictionaries({"rank": HUGE_INTS}))
        )
    layout = draw(st.sampled_from(["object", "object", "bare", "events_last"]))
    if layout == "bare":
        document: Any = events
    elif layout == "events_last":
        document = {**meta, "traceEvents": events}
    else:
        document = {"traceEvents": events, **meta}
    return to_text(document, depth=draw(st.sampled_from([70, 3000, 200_000])))


def to_text(document: Any, depth: int) -> bytes:
    """JSON text of ``document``, each :data:`DEEP` value written as ``depth`` nested lists."""
    text = json.dumps(document, allow_nan=True)
    deep = "[" * depth + "]" * depth
    return text.replace(json.dumps(DEEP), deep).encode()


@st.composite
def mangled_text(draw: st.DrawFn) -> bytes:
    """A file's bytes: a document's text cut, spliced or garbled, gzip or not (maybe broken)."""
    text = draw(broken_document())
    how = draw(st.sampled_from(["cut", "splice", "token", "bytes", "none"]))
    at = draw(st.integers(0, len(text)))
    if how == "cut":
        text = text[:at]
    elif how == "splice":
        text = text[:at] + draw(st.binary(min_size=1, max_size=8)) + text[at:]
    elif how == "token":
        token = draw(st.sampled_from(ODD_TOKENS))
        text = text[:at] + token + text[at:]
    elif how == "bytes":
        text = draw(st.binary(max_size=64))
    if draw(st.booleans()):
        data = gzip.compress(text)
        return data[: draw(st.integers(0, len(data)))] if draw(st.booleans()) else data
    return text


ODD_TIMES = st.sampled_from([0, -1, -1000, 1e15, 1e308, -1e308, 5e-324, 2**64, 10**30, 0.5])
ODD_NAMES = st.sampled_from(
    ["", "ProfilerStep#", "ProfilerStep#x", "ProfilerStep#99999999999999999999", "[red]x[/]",
     "Optimizer.step#SGD.step", "nn.Module: a (A)", "enumerate(DataLoader)#", "\u0000",
     "cudaStreamSynchronize"]
)  # fmt: skip
ODD_CATEGORIES = st.sampled_from(["kernel", "gpu_memcpy", "cuda_runtime", "cpu_op", "Kernel",
                                  "user_annotation", "gpu_user_annotation", "cuda_sync", "",
                                  "python_function", "weird"])  # fmt: skip


@st.composite
def odd_event(draw: st.DrawFn) -> dict[str, Any]:
    """A template event whose values keep their JSON types but not their sense: times out of
    order, negative, astronomical or beyond 64 bits, names and categories mixed up."""
    event = json.loads(json.dumps(draw(st.sampled_from(TEMPLATES))))
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(["ts", "dur", "name", "cat", "pid", "tid", "arg", "id"]))
        if key in ("ts", "dur"):
            event[key] = draw(ODD_TIMES)
        elif key == "name":
            event[key] = draw(ODD_NAMES)
        elif key == "cat":
            event[key] = draw(ODD_CATEGORIES)
        elif key in ("pid", "tid", "id"):
            event[key] = draw(st.one_of(HUGE_INTS, st.integers(-3, 3), st.sampled_from(["x"])))
        elif isinstance(event.get("args"), dict) and event["args"]:
            arg = draw(st.sampled_from(sorted(event["args"])))
            value = event["args"][arg]
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            event["args"][arg] = draw(st.one_of(HUGE_INTS, st.integers(-(2**63), 2**63 - 1)))
    return event


@st.composite
def odd_document(draw: st.DrawFn) -> bytes:
    """A trace that loads, with a few events of odd content among sound ones."""
    events = _among_templates(draw, odd_event(), most=6)
    meta = dict(META)
    memory = draw(st.sampled_from([1, 0, -5, 2**63, 10**30, 16 * 1024**3]))
    major = draw(st.integers(-1, 12))
    meta["deviceProperties"] = [{"id": 0, "totalGlobalMem": memory, "computeMajor": major}]
    return json.dumps({"traceEvents": events, **meta}).encode()

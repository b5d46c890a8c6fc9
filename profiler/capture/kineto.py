"""The adapter to torch.profiler (Kineto) and the writer that turns one window into a trace file."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import torch
import torch.profiler as tp

from profiler.capture.clock import Clock, ClockMarker
from profiler.capture.memory import MemoryProbe, Reading
from profiler.capture.module_hooks import BackwardRange, WindowRecord
from profiler.capture.schedule import Schedule
from profiler.events import (
    BACKWARD_LANE_NAME,
    COUNTER_MEMORY,
    COUNTER_SYSTEM,
    DATALOADER_PREFIX,
    MODULE_PREFIX,
    PHASE_COMPLETE,
    PHASE_COUNTER,
    PHASE_METADATA,
    TRAINPROF_KEY,
    Category,
)
from profiler.store import RunStore
from profiler.store.chrome_trace import (
    Splice,
    backward_starts,
    base_time_ns,
    clock_sync_ts_us,
    read_text,
)
from profiler.store.trace_store import DeflateAhead, remove_soon

# Backward ranges get a lane of their own (see module_hooks). Linux pids and tids stay below
# 2**22, so this tid never collides with a real thread's.
BACKWARD_LANE_TID = 2_000_000_000
# A parent's backward and its last child's end at the same instant, and a sibling starts there.
# At trace magnitudes (~4.6e12 us) a double holds ts only to ~1 ns, so a reader can see the child
# end 1 ns after its parent, which Perfetto treats as an overlap and drops. Ending each range
# 2 ns per nesting level early keeps them nested under that error.
BACKWARD_END_TRIM_NS = 2
_RECORDING = (tp.ProfilerAction.RECORD, tp.ProfilerAction.RECORD_AND_SAVE)

# torch warns at each new window that events() only returns the current one; we never call
# events(), each window is exported whole, so the warning would only alarm users.
warnings.filterwarnings(
    "ignore", message="Warning: Profiler clears events at the end of each cycle"
)


class KinetoSession:
    """A ``torch.profiler.profile`` driven by our schedule; CUDA activities when there is a GPU."""

    def __init__(
        self,
        *,
        schedule: Schedule,
        record_shapes: bool,
        profile_memory: bool,
        with_stack: bool,
        on_trace_ready: Any,
    ) -> None:
        activities = [tp.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(tp.ProfilerActivity.CUDA)
        self.activities = activities
        self._prof = tp.profile(
            activities=activities,
            schedule=schedule,
            on_trace_ready=on_trace_ready,
            record_shapes=record_shapes,
            profile_memory=profile_memory,
            with_stack=with_stack,
        )

    @property
    def recording(self) -> bool:
        """Whether the current step is an active (recorded) step of a window."""
        return self._prof.current_action in _RECORDING

    def start(self, step: int = 0) -> None:
        """Start the session at the run's step ``step`` (Kineto is only enabled in warmup and
        active steps). torch numbers its ``ProfilerStep#N`` ranges from there, so a window
        opened mid-run names the run's steps; the schedule must say NONE at 0 and at ``step``
        (torch asked it about step 0 when the profiler was built)."""
        self._prof.step_num = step
        self._prof.start()

    def step(self) -> None:
        """Advance the schedule; may end a window and call ``on_trace_ready``."""
        self._prof.step()

    def stop(self) -> None:
        """Stop; a window still recording is written through ``on_trace_ready``."""
        self._prof.stop()


def window_events(
    record: WindowRecord,
    backward: Sequence[BackwardRange],
    system: Iterable[tuple[int, Mapping[str, float]]],
    to_ts: Callable[[int], float],
    *,
    pid: int,
) -> bytes:
    """Our events for one window, as JSON between commas: memory and system counters, and the
    module-backward lane.

    Hundreds of events a window, in the stop-to-disk budget: each kind's fixed fields are
    encoded once (:func:`_head`), the numbers of all its events in one orjson call
    (:func:`_numbers`), and each event is their concatenation, the bytes orjson would write
    for the event's dict.
    """
    events = _memory_counters(record.memory, to_ts, pid)
    events += [
        orjson.dumps(_counter(COUNTER_SYSTEM, to_ts(ns), values, pid)) for ns, values in system
    ]
    if backward:
        events.append(orjson.dumps(_lane_name(pid)))
        events += _backward_lane(backward, pid)
    return b",".join(events)


def _lane_name(pid: int) -> dict[str, Any]:
    return {
        "ph": PHASE_METADATA,
        "name": "thread_name",
        "pid": pid,
        "tid": BACKWARD_LANE_TID,
        "args": {"name": BACKWARD_LANE_NAME},
    }


def _backward_lane(backward: Sequence[BackwardRange], pid: int) -> list[bytes]:
    """A complete event per backward range, on the lane's thread (a module's fields encoded
    once, however many times its backward ran in the window)."""
    heads: dict[str, bytes] = {}
    for name in {span.name for span in backward}:
        event = {"ph": PHASE_COMPLETE, "cat": Category.USER_ANNOTATION.value, "name": name}
        heads[name] = _head({**event, "pid": pid, "tid": BACKWARD_LANE_TID}) + b',"ts":'
    starts = _numbers([span.start_us for span in backward])
    durations = _numbers(  # whole nanoseconds, trimmed; int / int is correctly rounded
        [
            max(round((end - start) * 1000) - BACKWARD_END_TRIM_NS * (depth + 1), 0) / 1000
            for _, start, end, depth in backward
        ]
    )
    tail = b',"args":' + orjson.dumps({TRAINPROF_KEY: "module_backward"}) + b"}"
    return [
        b'%b%b,"dur":%b%b' % (heads[span.name], start, duration, tail)
        for span, start, duration in zip(backward, starts, durations, strict=True)
    ]


def _memory_counters(
    memory: Sequence[tuple[int, Reading]], to_ts: Callable[[int], float], pid: int
) -> list[bytes]:
    """A counter event per memory sample: hundreds a window, in the stop-to-disk budget.

    A reading is decoded and encoded once, its values shared by the samples that took it again.
    ``ts`` comes from one ``to_ts`` call and exact integer nanoseconds: int / int is correctly
    rounded, the value ``round(ts, 3)`` gives, at a fraction of its cost.
    """
    if not memory:
        return []
    first_ns = memory[0][0]
    offset_ns = round(to_ts(first_ns) * 1000) - first_ns  # trace ns minus our clock's
    encoded: dict[Reading, bytes] = {}
    for _, reading in memory:
        if reading not in encoded:
            encoded[reading] = b',"args":' + orjson.dumps(MemoryProbe.values(reading)) + b"}"
    head = _head({"ph": PHASE_COUNTER, "cat": TRAINPROF_KEY, "name": COUNTER_MEMORY, "pid": pid})
    head += b',"ts":'
    stamps = _numbers([(ns + offset_ns) / 1000 for ns, _ in memory])
    return [head + ts + encoded[reading] for ts, (_, reading) in zip(stamps, memory, strict=True)]


def _head(event: Mapping[str, Any]) -> bytes:
    """``event`` as orjson encodes it, less the closing brace: the fields that follow go after."""
    return orjson.dumps(event)[:-1]


def _numbers(values: Sequence[float]) -> list[bytes]:
    """Each number as orjson encodes it, from one call."""
    return orjson.dumps(values)[1:-1].split(b",") if values else []


def _counter(name: str, ts: float, values: Mapping[str, float], pid: int) -> dict[str, Any]:
    return {
        "ph": PHASE_COUNTER,
        "cat": TRAINPROF_KEY,
        "name": name,
        "pid": pid,
        "ts": ts,
        "args": dict(values),
    }


def _crossed(record: WindowRecord) -> tuple[str, ...]:
    """The name prefixes of the ranges that Python frames may cross in a window with stacks.

    Module ranges recorded as ops and the clock-sync markers are opened and closed by built-ins
    that CPython does not report (``module_hooks._enter``, ``Clock.mark``): they contain whole
    frames only, and the writer leaves them be (finding the frames is most of a window's
    ``nest_ranges``). DataLoader waits are opened through Python calls (torch's
    ``record_function``), and so are ``user_annotation`` module ranges (CUDA).
    """
    return (DATALOADER_PREFIX,) if record.forward_as_ops else (DATALOADER_PREFIX, MODULE_PREFIX)


def write_window(
    prof: tp.profile,
    store: RunStore,
    clock: Clock,
    *,
    marker: ClockMarker | None,
    record: WindowRecord,
    system: Iterable[tuple[int, Mapping[str, float]]],
    metadata: Mapping[str, Any],
    distributed_info: Mapping[str, Any],
    pid: int,
    with_stack: bool = False,
) -> Path:
    """Export one window with Kineto's writer, add our events and metadata, store it atomically.

    With ``with_stack`` Kineto records Python frames that cross the ranges Python code opens
    and closes through Python calls (DataLoader waits, module ranges recorded as
    ``user_annotation``); those ranges are widened to nest (see
    :func:`profiler.store.chrome_trace.nest_ranges`, :func:`_crossed`). The clock mapping reads
    the marker's ``ts`` before that, from Kineto's own text.
    """
    path = store.trace_path()
    kineto_file = store.scratch_path(path)
    tail: DeflateAhead | None = None
    try:
        prof.export_chrome_trace(str(kineto_file))
        raw = read_text(kineto_file)
        marker_ts = clock_sync_ts_us(raw, marker.name) if marker is not None else None
        to_ts = clock.to_trace(base_ns=base_time_ns(raw), marker=marker, marker_ts_us=marker_ts)
        cut = Splice(
            raw,
            top_level={TRAINPROF_KEY: dict(metadata)},
            distributed_info=distributed_info,
            trace_name=path.name,
            source=kineto_file,
            annotations=(MODULE_PREFIX,) if record.forward_as_ops else (),
            nest=_crossed(record) if with_stack else (),
        )
        tail = DeflateAhead(cut.after)  # Kineto's events, deflated while ours are worked out
    finally:  # read back: removed after the deflate ahead, off this path where a CPU is spare
        remove_soon(kineto_file, spare=None if tail is None else tail.ahead)
    backward = record.backward_ranges(backward_starts(raw, record.output_sequences()), to_ts)
    ours = window_events(record, backward, system, to_ts, pid=pid)
    if ours and cut.comma:  # Kineto's events follow
        ours += b","
    store.write_trace(path, [*cut.before, ours], tail=tail)
    return path

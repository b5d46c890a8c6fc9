"""Complete events nest on every thread: the validator's rules, and traces captured with stacks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import torch
from torch import nn

import profiler
from profiler.events import CLOCK_SYNC_NAME, DATALOADER_PREFIX, MODULE_PREFIX
from profiler.store.chrome_trace import nest_ranges
from tests.capture.nesting import format_violations, nesting_violations
from tests.conftest import read_trace


def x(name: str, ts: float, dur: float, tid: int = 1, **extra: Any) -> dict[str, Any]:
    return {"ph": "X", "name": name, "pid": 1, "tid": tid, "ts": ts, "dur": dur, **extra}


def pairs(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(v.first.name, v.second.name) for v in nesting_violations({"traceEvents": events})]


def test_nested_touching_and_disjoint_ranges_pass() -> None:
    events = [
        x("parent", 10.0, 10.0),
        x("same start", 10.0, 4.0),  # shorter of two at one start: the child
        x("same end", 16.0, 4.0),
        x("touching", 20.0, 1.0),  # starts where the parent ends
        x("empty at edge", 20.0, 0.0),
        x("same span", 10.0, 10.0),
    ]
    assert pairs(events) == []


def test_crossing_ranges_are_reported_once_each() -> None:
    events = [x("a", 10.0, 10.0), x("b", 15.0, 10.0), x("c", 22.0, 1.0), x("d", 11.0, 3.0)]
    assert pairs(events) == [("a", "b")]
    (violation,) = nesting_violations({"traceEvents": events})
    assert not violation.ours and "ts=15.000 dur=10.000" in format_violations([violation])


def test_threads_are_separate_and_other_phases_ignored() -> None:
    events = [
        x("a", 10.0, 10.0, tid=1),
        x("b", 15.0, 10.0, tid=2),
        {"ph": "C", "name": "counter", "pid": 1, "ts": 12.0, "args": {}},
        {"ph": "X", "name": "no dur", "pid": 1, "tid": 1, "ts": 15.0},
    ]
    assert pairs(events) == []


def test_times_compare_in_whole_nanoseconds() -> None:
    # Kineto's 3-decimal floats: 0.1 + 0.2 != 0.3 as doubles, but the ranges meet exactly.
    big = 5_765_643_356_334.856
    events = [x("a", big, 0.1), x("b", big + 0.1, 0.2), x("parent", big, 0.3)]
    assert pairs(events) == []
    assert pairs([x("a", 0.001, 0.002), x("b", 0.002, 0.002)]) == [("a", "b")]


def test_ours_is_any_pair_with_a_trainprof_event() -> None:
    module = x(f"{MODULE_PREFIX}fc (Linear)", 10.0, 10.0)
    frame = x("torch/nn/modules/module.py(1): __call__", 15.0, 10.0)
    (violation,) = nesting_violations({"traceEvents": [module, frame]})
    assert violation.ours


def frame(name: str, ts: float, dur: float, tid: int = 1) -> dict[str, Any]:
    """A Python frame as Kineto writes it (its keys in Kineto's order)."""
    return {"ph": "X", "cat": "python_function", **x(name, ts, dur, tid)}


@pytest.mark.parametrize("spelling", ["one template", "mixed"])
def test_nest_ranges_widens_to_the_crossing_frames(spelling: str) -> None:
    raw = orjson.dumps(
        {
            "traceEvents": [
                frame("caller", 0.0, 100.0),
                frame("enter", 10.0, 5.0),
                frame("enter.inner", 11.0, 3.0),
                x(f"{MODULE_PREFIX}m (M)", 12.5, 40.0),
                frame("forward", 20.0, 10.0),
                frame("exit", 50.0, 8.0),
                frame("other thread", 40.0, 30.0, tid=2),
                x(f"{DATALOADER_PREFIX}It.__next__", 60.0, 5.0),  # crosses nothing: untouched
            ]
        }
    )
    if spelling == "mixed":  # frames spelled two ways: the pattern taken from the first misses one
        raw = raw.replace(b'"name":"exit"', b'"name" : "exit"')
    before = orjson.loads(raw)["traceEvents"]
    assert len(nesting_violations(before)) == 3
    after = orjson.loads(nest_ranges(raw, (MODULE_PREFIX, DATALOADER_PREFIX)))["traceEvents"]
    assert nesting_violations(after) == []
    assert (after[3]["ts"], after[3]["dur"]) == (10.0, 48.0)
    assert after[:3] + after[4:] == before[:3] + before[4:]
    assert nest_ranges(raw, ()) is raw


def test_nest_ranges_leaves_ranges_no_frame_crosses() -> None:
    """Frames that only contain a range, or lie inside it, or on another thread, and a frame
    named like our ranges (Kineto names module calls so) that crosses one: no change."""
    raw = orjson.dumps(
        {
            "traceEvents": [
                frame("caller", 0.0, 100.0),
                x(f"{MODULE_PREFIX}m (M)", 10.0, 40.0),
                frame("forward", 20.0, 10.0),
                frame("exit", 45.0, 8.0, tid=2),
                frame(f"{MODULE_PREFIX}Linear_0", 30.0, 30.0),
            ]
        }
    )
    assert nest_ranges(raw, (MODULE_PREFIX,)) is raw


class Residual(nn.Module):
    """A forward of its own that calls its children out of order and adds."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(8, 8), nn.ReLU())
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.inner(x) + x)


OPTIONS = {
    "defaults": {},
    "with_stack": {"with_stack": True},
    "record_shapes": {"record_shapes": True},
    "profile_memory": {"profile_memory": True},
    "all": {"with_stack": True, "record_shapes": True, "profile_memory": True},
}


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
@pytest.mark.parametrize("make", [lambda: nn.Sequential(nn.Linear(8, 8), nn.ReLU()), Residual])
def test_captured_ranges_nest(tmp_path: Path, options: dict[str, bool], make: Any) -> None:
    torch.manual_seed(0)
    model = make()
    data = torch.utils.data.TensorDataset(torch.randn(16, 8))
    schedule = profiler.schedule(wait=1, warmup=1, active=2)
    with profiler.profile(
        model, out_dir=tmp_path, system_metrics=False, schedule=schedule, **options
    ) as prof:
        for (batch,) in prof.loader(torch.utils.data.DataLoader(data, batch_size=4)):
            model(batch).sum().backward()
            prof.step()
    (path,) = prof.trace_files
    trace = read_trace(path)
    ours = [v for v in nesting_violations(trace) if v.ours]
    assert not ours, format_violations(ours)
    names = [e["name"] for e in trace["traceEvents"] if e.get("ph") == "X"]
    assert any(name.startswith(MODULE_PREFIX) for name in names)
    assert any(name.startswith(DATALOADER_PREFIX) for name in names)
    assert any(name.startswith(CLOCK_SYNC_NAME) for name in names)
    if options.get("with_stack"):  # the frames that opened the ranges are there, now inside
        assert any(e.get("cat") == "python_function" for e in trace["traceEvents"])


def test_stacks_hold_no_frames_of_the_tracers_calls(tmp_path: Path) -> None:
    """With stacks, the module ranges contain whole frames as recorded (nothing to widen), and
    the tracer's calls (the range's exit, the clock, the sequence numbers) leave no frames in the
    user's stacks; the model's own frames are there."""
    torch.manual_seed(0)
    model = Residual()
    schedule = profiler.schedule(wait=1, warmup=1, active=2)
    with profiler.profile(
        model, out_dir=tmp_path, system_metrics=False, schedule=schedule, with_stack=True
    ) as prof:
        for _ in range(4):
            model(torch.randn(4, 8)).sum().backward()
            prof.step()
    (path,) = prof.trace_files
    events = read_trace(path)["traceEvents"]
    frames = [e["name"] for e in events if e.get("cat") == "python_function"]
    assert any("forward" in name for name in frames)
    tracer_calls = ("RecordFunctionFast", "_sequence_nr", ": now_ns")
    assert not [name for name in frames if any(call in name for call in tracer_calls)]
    ours = [v for v in nesting_violations(events) if v.ours]
    assert not ours, format_violations(ours)

"""The module-backward lane, built from when the engine started on the nodes each forward made."""

from __future__ import annotations

from pathlib import Path

import orjson
import torch
from torch import nn

import profiler
from profiler.capture.kineto import BACKWARD_LANE_TID
from profiler.capture.memory import MemoryProbe
from profiler.capture.module_hooks import ModuleTracer, WindowRecord
from profiler.events import PHASE_COMPLETE
from tests.conftest import read_trace


def _tracer() -> tuple[ModuleTracer, dict[str, int]]:
    model = nn.Sequential(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), nn.Linear(2, 2))
    tracer = ModuleTracer([model], MemoryProbe("cpu"), lambda: 0)
    keys = {name: id(module) for name, module in model.named_modules()}
    return tracer, keys


def _lane(record: WindowRecord, starts: dict[int, float]) -> list[tuple[str, float, float, int]]:
    ranges = record.backward_ranges(starts, to_ts=float)
    return sorted((r.name.split(": ")[1], r.start_us, r.end_us, r.depth) for r in ranges)


def _forwards(record: WindowRecord, *outputs: tuple[int, int, int]) -> None:
    """Note forwards as the tracer does: (first, end, the module's key) each."""
    for output in outputs:
        record.forwards += output


def test_ranges_nest_close_at_outer_starts_and_end_with_the_pass() -> None:
    tracer, key = _tracer()
    record = tracer.take()
    # Forwards return innermost first, each with the sequence numbers of the nodes it made:
    # "0.0" (Linear) node 1, "0.1" (ReLU) node 2, their parent "0" both, "1" node 3, the root all.
    # The engine runs 3, 2, 1: "0" starts with its node 2, the root with its node 3.
    _forwards(
        record,
        (1, 2, key["0.0"]),
        (2, 3, key["0.1"]),
        (1, 3, key["0"]),
        (3, 4, key["1"]),
        (1, 4, key[""]),
    )
    record.backward_ends.append(100)
    lane = _lane(record, {3: 10.0, 2: 40.0, 1: 60.0})
    assert lane == [
        ("0 (Sequential).backward", 40.0, 100.0, 1),
        ("0.0 (Linear).backward", 60.0, 100.0, 2),
        ("0.1 (ReLU).backward", 40.0, 60.0, 2),
        ("1 (Linear).backward", 10.0, 40.0, 1),
        ("model (Sequential).backward", 10.0, 100.0, 0),
    ]


def test_each_backward_pass_closes_its_ranges() -> None:
    tracer, key = _tracer()
    record = tracer.take()
    for first in (1, 11):  # two micro-batches in one step: two forwards, two backward passes
        _forwards(record, (first, first + 1, key["0.0"]), (first, first + 2, key[""]))
    record.backward_ends += [50, 200]
    lane = _lane(record, {2: 10.0, 1: 20.0, 12: 110.0, 11: 120.0})
    assert lane == [
        ("0.0 (Linear).backward", 20.0, 50.0, 1),
        ("0.0 (Linear).backward", 120.0, 200.0, 1),
        ("model (Sequential).backward", 10.0, 50.0, 0),
        ("model (Sequential).backward", 110.0, 200.0, 0),
    ]


def test_nodes_the_engine_never_ran_get_no_range() -> None:
    tracer, key = _tracer()
    record = tracer.take()
    _forwards(record, (1, 2, key["0.0"]), (1, 3, key[""]))
    record.backward_ends.append(30)
    assert _lane(record, {2: 10.0}) == [("model (Sequential).backward", 10.0, 30.0, 0)]
    assert _lane(record, {}) == []


def test_a_backward_starts_at_the_first_of_its_nodes_the_engine_ran() -> None:
    tracer, key = _tracer()
    record = tracer.take()
    # "0.0" made nodes 1 and 2 and returned node 1's tensor; the engine ran node 2 first.
    _forwards(record, (1, 3, key["0.0"]), (1, 3, key["0"]), (1, 4, key[""]))
    record.backward_ends.append(100)
    lane = _lane(record, {3: 10.0, 2: 30.0, 1: 50.0})
    assert lane == [
        ("0 (Sequential).backward", 30.0, 100.0, 1),
        ("0.0 (Linear).backward", 30.0, 100.0, 2),
        ("model (Sequential).backward", 10.0, 100.0, 0),
    ]


def test_the_wanted_numbers_are_every_forwards_nodes_once() -> None:
    # Children return first; a parent's numbers hold theirs; two steps.
    record = WindowRecord()
    _forwards(record, (3, 5, 1), (5, 6, 2), (3, 6, 0), (10, 12, 1), (10, 14, 0))
    assert record.output_sequences() == {3, 4, 5, 10, 11, 12, 13}
    assert WindowRecord().output_sequences() == set()


class TwoHeads(nn.Module):
    """Returns two tensors; the loss's use of the second runs its node first."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.first(x), self.second(x)


def test_a_module_whose_first_output_runs_last_still_contains_its_children(
    tmp_path: Path,
) -> None:
    """Its backward starts with the node the engine ran first (the second head's), so both
    heads' backward ranges nest in it on the lane."""
    model = nn.Sequential(TwoHeads())
    schedule = profiler.schedule(wait=0, warmup=1, active=1)
    with profiler.profile(
        model, out_dir=tmp_path, run_name="heads", schedule=schedule, system_metrics=False
    ) as prof:
        for _ in range(2):
            first, second = model(torch.randn(2, 4))
            (first.sum() + second.sum()).backward()
            prof.step()
    events = read_trace(prof.trace_files[0])["traceEvents"]
    lane = {
        e["name"].split(": ")[1]: e
        for e in events
        if e.get("tid") == BACKWARD_LANE_TID and e.get("ph") == PHASE_COMPLETE
    }
    heads = lane["0 (TwoHeads).backward"]
    for child in ("0.first (Linear).backward", "0.second (Linear).backward"):
        assert heads["ts"] <= lane[child]["ts"]
        assert lane[child]["ts"] + lane[child]["dur"] <= heads["ts"] + heads["dur"]
    assert heads["ts"] == lane["0.second (Linear).backward"]["ts"]  # the head run first


def test_gradient_accumulation_gives_each_pass_its_ranges(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    schedule = profiler.schedule(wait=0, warmup=1, active=2)
    with profiler.profile(
        model, out_dir=tmp_path, run_name="accum", schedule=schedule, system_metrics=False
    ) as prof:
        for _ in range(3):
            for _ in range(2):  # two micro-batches a step
                model(torch.randn(4, 8)).sum().backward()
            opt.step()
            opt.zero_grad()
            prof.step()
    events = [e for e in read_trace(prof.trace_files[0])["traceEvents"] if e.get("name")]
    lane = [e for e in events if e.get("tid") == BACKWARD_LANE_TID and e["ph"] == PHASE_COMPLETE]
    roots = sorted((e for e in lane if e["name"].startswith("nn.Module: model ")), key=_ts)
    assert len(roots) == 4 and len(lane) == 4 * 4  # 2 steps x 2 passes x (root + 3 children)
    forwards = sorted(
        (e for e in events if e["name"] == "nn.Module: model (Sequential)" and e["ph"] == "X"),
        key=_ts,
    )
    # Each pass's backward lies between its forward and the next micro-batch's forward.
    for index, root in enumerate(roots):
        assert root["ts"] >= forwards[index]["ts"] + forwards[index]["dur"]
        if index + 1 < len(forwards):
            assert root["ts"] + root["dur"] <= forwards[index + 1]["ts"] + 1.0  # clock mapping
    engine = [e for e in events if e["name"].startswith("autograd::engine::evaluate_function: ")]
    assert {r["ts"] for r in roots} <= {e["ts"] for e in engine}  # starts: the engine's own


def _ts(event: dict[str, float]) -> float:
    return float(event["ts"])


def test_window_events_are_the_json_of_each_event() -> None:
    """Events encoded from templates read back as the events they stand for, names escaped."""
    from profiler.capture.kineto import BACKWARD_END_TRIM_NS, window_events
    from profiler.capture.module_hooks import BackwardRange
    from profiler.events import COUNTER_MEMORY, COUNTER_SYSTEM, PHASE_COUNTER

    record = WindowRecord(samples=[1_000, 4096, 3_500, 8192, 7_001, 4096])
    name = 'nn.Module: "odd" \u00e9 (Linear).backward'
    spans = [BackwardRange(name, 10.5, 12.25, 0), BackwardRange("b", 11.0, 11.0, 3)]
    encoded = window_events(
        record, spans, [(2_000, {"cpu_percent": 50.0})], lambda ns: ns / 1000, pid=7
    )
    events = orjson.loads(b"[" + encoded + b"]")
    memory = [e for e in events if e["ph"] == PHASE_COUNTER and e["name"] == COUNTER_MEMORY]
    assert [(e["ts"], e["args"]) for e in memory] == [
        (1.0, {"rss_bytes": 4096}),
        (3.5, {"rss_bytes": 8192}),
        (7.001, {"rss_bytes": 4096}),
    ]
    (system,) = [e for e in events if e.get("name") == COUNTER_SYSTEM]
    assert system["ts"] == 2.0 and system["args"] == {"cpu_percent": 50.0}
    lane = [e for e in events if e["ph"] == PHASE_COMPLETE]
    assert [(e["name"], e["ts"], e["dur"], e["tid"], e["pid"]) for e in lane] == [
        (name, 10.5, round(1.75 - BACKWARD_END_TRIM_NS / 1000, 3), BACKWARD_LANE_TID, 7),
        ("b", 11.0, 0.0, BACKWARD_LANE_TID, 7),  # never negative
    ]
    assert window_events(WindowRecord(), [], [], float, pid=7) == b""

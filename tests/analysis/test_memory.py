"""profiler.analysis.memory: the timeline, the peak and what ran then, memory per module."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from profiler.analysis.memory import (
    MODULE_MEMORY_COLUMNS,
    TIMELINE_COLUMNS,
    MemoryPeak,
    memory_peak,
    memory_timeline,
    module_memory,
)
from profiler.analysis.table import TraceTable, load_trace
from profiler.events import BACKWARD_LANE_NAME, module_range_name

LANE = 2_000_000_000
CAPACITY_BYTES = 1_000_000


def write_trace(path: Path, events: list[dict[str, Any]], **top: Any) -> TraceTable:
    path.write_text(json.dumps({"schemaVersion": 1, **top, "traceEvents": events}))
    return load_trace(path)


def span(name: str, ts: float, dur: float, tid: int = 1, cat: str = "cpu_op") -> dict:
    return {"ph": "X", "cat": cat, "name": name, "pid": 1, "tid": tid, "ts": ts, "dur": dur}


def module(path: str, cls: str, ts: float, dur: float, *, backward: bool = False) -> dict:
    name = module_range_name(path, cls, backward=backward)
    return span(name, ts, dur, tid=LANE if backward else 1, cat="user_annotation")


def alloc(ts: float, nbytes: int, total: int, reserved: int, device: int = 0, tid: int = 1) -> dict:
    device_type = 1 if device >= 0 else 0  # c10::DeviceType: CUDA, CPU
    args = {"Bytes": nbytes, "Total Allocated": total, "Total Reserved": reserved,
            "Device Type": device_type, "Device Id": device, "Addr": 1}  # fmt: skip
    return {"ph": "i", "s": "t", "name": "[memory]", "pid": 1, "tid": tid, "ts": ts, "args": args}


def counter(ts: float, allocated: int, reserved: int = 2000) -> dict:
    return {"ph": "C", "cat": "trainprof", "name": "trainprof.memory", "pid": 1, "ts": ts,
            "args": {"allocated_bytes": allocated, "reserved_bytes": reserved}}  # fmt: skip


RANGES = [
    {"ph": "M", "name": "thread_name", "pid": 1, "tid": LANE, "args": {"name": BACKWARD_LANE_NAME}},
    module("model", "Net", 10, 30),
    module("fc", "Linear", 20, 10),
    span("aten::addmm", 21, 8),
    span("aten::empty", 22, 1),
    module("model", "Net", 50, 40, backward=True),
    module("fc", "Linear", 55, 15, backward=True),
    # CUDA backward runs on the autograd engine's own thread.
    span("autograd::engine::evaluate_function: AddmmBackward0", 55, 14, tid=3),
    span("aten::mm", 56, 4, tid=3),
    {
        "ph": "X",
        "cat": "kernel",
        "name": "sgemm",
        "pid": 0,
        "tid": 7,
        "ts": 24,
        "dur": 3,
        "args": {"device": 0, "stream": 7},
    },  # fmt: skip
]
KINETO = [
    alloc(5, 100, 100, 2000),
    alloc(22.5, 300, 400, 2000),  # in aten::empty, in fc's forward
    alloc(35, -100, 300, 2000),
    alloc(57, 600, 900, 4000, tid=3),  # the peak: in aten::mm, in fc's backward
    alloc(80, -500, 400, 4000),
    alloc(15, 50, 50, 0, device=-1),  # CPU: more bytes than the GPU's peak, but not the default
    alloc(25, 5000, 5050, 0, device=-1),
]
# What trainprof's hooks record around the same forward: just before each range opens and just
# after it closes.
COUNTERS = [counter(9.9, 100), counter(19.9, 100), counter(30.1, 400), counter(40.1, 300)]
PROPERTIES = [{"id": 0, "name": "Test GPU", "totalGlobalMem": CAPACITY_BYTES}]


@pytest.fixture
def gpu_trace(tmp_path: Path) -> TraceTable:
    events = RANGES + KINETO + COUNTERS
    return write_trace(tmp_path / "gpu.json", events, deviceProperties=PROPERTIES)


@pytest.fixture
def counters_only(tmp_path: Path) -> TraceTable:
    return write_trace(tmp_path / "c.json", RANGES + COUNTERS, deviceProperties=PROPERTIES)


def test_timeline_from_both_sources(gpu_trace: TraceTable) -> None:
    timeline = memory_timeline(gpu_trace)
    assert list(timeline.columns) == TIMELINE_COLUMNS
    assert timeline["ts_us"].is_monotonic_increasing
    sources = timeline.groupby(["device", "source"]).size().to_dict()
    assert sources == {("cuda:0", "kineto"): 5, ("cuda:0", "trainprof"): 4, ("cpu", "kineto"): 2}
    kineto = timeline[(timeline["device"] == "cuda:0") & (timeline["source"] == "kineto")]
    assert kineto["allocated_bytes"].tolist() == [100, 400, 300, 900, 400]
    assert kineto["reserved_bytes"].tolist() == [2000, 2000, 2000, 4000, 4000]
    assert kineto["tid"].tolist() == [1, 1, 1, 3, 1]
    # The CPU allocator reserves nothing: unknown, not zero.
    assert timeline.loc[timeline["device"] == "cpu", "reserved_bytes"].isna().all()
    counters = timeline[timeline["source"] == "trainprof"]
    assert counters["allocated_bytes"].tolist() == [100, 100, 400, 300]
    assert (counters["tid"] == -1).all()


def test_peak_attributed_to_module_and_op(gpu_trace: TraceTable) -> None:
    assert memory_peak(gpu_trace) == MemoryPeak(
        device="cuda:0",  # the accelerator by default, though the CPU holds more bytes
        ts_us=57.0,
        allocated_bytes=900,
        reserved_bytes=4000,
        source="kineto",
        module="fc",
        module_class="Linear",
        module_phase="backward",
        op="aten::mm",  # on the allocating thread (3), not the training thread
        capacity_bytes=CAPACITY_BYTES,
    )
    assert memory_peak(gpu_trace).capacity_pct == pytest.approx(0.09)  # type: ignore[union-attr]
    cpu = memory_peak(gpu_trace, device="cpu")
    assert cpu is not None
    assert (cpu.ts_us, cpu.allocated_bytes, cpu.reserved_bytes) == (25.0, 5050, None)
    assert (cpu.module, cpu.module_phase, cpu.op) == ("fc", "forward", "aten::addmm")
    assert cpu.capacity_bytes is None and cpu.capacity_pct is None
    assert memory_peak(gpu_trace, device="cuda:1") is None


def test_peak_from_counters_alone(counters_only: TraceTable) -> None:
    """Sampled at module boundaries: the peak lands between ranges, in the parent."""
    peak = memory_peak(counters_only)
    assert peak is not None
    assert (peak.device, peak.source, peak.ts_us, peak.allocated_bytes) == (
        "cuda:0",  # the one device the trace's kernels ran on
        "trainprof",
        30.1,
        400,
    )
    assert (peak.reserved_bytes, peak.module, peak.module_phase) == (2000, "model", "forward")
    assert peak.op is None  # counters name no thread, and no op covers 30.1 on any
    assert peak.capacity_bytes == CAPACITY_BYTES


def test_older_files_and_unnamed_counter_devices(tmp_path: Path) -> None:
    """Without "Total Allocated", allocated is the running sum of "Bytes" from the window's
    start; trainprof's CUDA counters take the one GPU the trace names (here through Kineto's
    allocations on cuda:1, with no kernels at all)."""
    events = [alloc(1, 100, 0, 0, device=1), alloc(2, 50, 0, 0, device=1), alloc(3, -30, 0, 0, 1)]
    for event in events:
        del event["args"]["Total Allocated"], event["args"]["Total Reserved"]
    trace = write_trace(tmp_path / "old.json", [*events, counter(4, 7)])
    timeline = memory_timeline(trace)
    assert timeline[["device", "allocated_bytes", "source"]].values.tolist() == [
        ["cuda:1", 100, "kineto"],
        ["cuda:1", 150, "kineto"],
        ["cuda:1", 120, "kineto"],
        ["cuda:1", 7, "trainprof"],
    ]
    assert timeline["reserved_bytes"].iloc[:3].isna().all()
    assert timeline["reserved_bytes"].iloc[3] == 2000


def test_module_memory_agrees_across_sources(
    gpu_trace: TraceTable, counters_only: TraceTable
) -> None:
    """Kineto's samples sit inside the ranges, the hooks' just outside: same answer forward.
    Backward only Kineto's samples measure (the hooks read none at module boundaries there)."""
    for trace in (gpu_trace, counters_only):
        table = module_memory(trace)
        assert list(table.columns) == MODULE_MEMORY_COLUMNS
        forward = ["path", "class_name", "calls", "delta_bytes", "peak_bytes", "peak_delta_bytes"]
        assert table[forward].values.tolist() == [
            ["model", "Net", 1, 200.0, 400.0, 300.0],
            ["fc", "Linear", 1, 300.0, 400.0, 300.0],
        ]
        assert set(table["device"]) == {"cuda:0"}
    backward = ["backward_delta_bytes", "backward_peak_bytes", "backward_peak_delta_bytes"]
    # model's backward 50-90: 300 before it, 900 at 57 (fc's backward, 55-70), 400 at 80.
    assert module_memory(gpu_trace)[backward].values.tolist() == [
        [100.0, 900.0, 600.0],
        [600.0, 900.0, 600.0],
    ]
    assert module_memory(counters_only)[backward].isna().all().all()


def test_traces_without_memory_samples(reference_traces: Path) -> None:
    for name in ("alexnet", "nccl", "cpu_only"):
        trace = load_trace(reference_traces / "hta" / f"{name}.json.gz")
        timeline = memory_timeline(trace)
        assert timeline.empty and list(timeline.columns) == TIMELINE_COLUMNS
        assert memory_peak(trace) is None
        assert module_memory(trace).empty


def test_cpu_run_without_profile_memory_has_rss_only(train: Any, tmp_path: Path) -> None:
    trace = load_trace(train(out_dir=tmp_path).trace_files[0])
    timeline = memory_timeline(trace)
    assert set(timeline["source"]) == {"trainprof.rss"} and set(timeline["device"]) == {"cpu"}
    # Two samples per module call (before and after): 6 modules, 2 steps; plus backward samples.
    assert len(timeline) >= 2 * 6 * 2
    peak = memory_peak(trace)
    assert peak is not None and peak.source == "trainprof.rss"
    assert peak.allocated_bytes == timeline["allocated_bytes"].max()


def test_cpu_run_with_profile_memory(train: Any, tmp_path: Path) -> None:
    """Kineto's CPU allocator totals, checked against the TensorBoard plugin's memory view."""
    from tests.peers import tb_plugin_load_run

    prof = train(profile_memory=True, out_dir=tmp_path)
    trace = load_trace(prof.trace_files[0])
    timeline = memory_timeline(trace)
    assert set(timeline.groupby(["device", "source"]).groups) == {
        ("cpu", "kineto"),
        ("cpu", "trainprof.rss"),
    }
    peak = memory_peak(trace)
    assert peak is not None and peak.source == "kineto"  # allocator bytes beat RSS

    profile = next(iter(tb_plugin_load_run(prof.run_dir).profiles.values()))
    curve = profile.get_memory_curve(time_metric="us", memory_metric="B", patch_for_step_plot=False)
    plugin_peak = re.search(r"([\d.]+)B", curve["metadata"]["peaks"]["CPU"])
    assert plugin_peak is not None
    assert peak.allocated_bytes == float(plugin_peak.group(1))
    first_at_peak = next(row for row in curve["rows"]["CPU"] if row[1] == peak.allocated_bytes)
    assert peak.ts_us == pytest.approx(curve["metadata"]["first_ts"] + first_at_peak[0], abs=0.01)

    # The first convolution's backward: every parameter's gradient is allocated by then
    # (zero_grad() frees them each step) while its own grad_input and grad_weight are made.
    assert (peak.module, peak.module_class, peak.module_phase) == ("0", "Conv2d", "backward")
    assert peak.op == "aten::convolution_backward"

    # Each forward keeps exactly its outputs alive (float32): conv 4x4x6x6; batch norm the same
    # plus its saved mean and inverse std (4 channels each); in-place ReLU and Flatten's view
    # nothing; the linear layer 4x5; the root the sum of its children.
    table = module_memory(trace).set_index("path")
    conv, norm, linear = 4 * 4 * 6 * 6 * 4, 4 * 4 * 6 * 6 * 4 + 2 * 4 * 4, 4 * 5 * 4
    assert table["delta_bytes"].to_dict() == {
        "model": conv + norm + linear,
        "0": conv,
        "1": norm,
        "2": 0,
        "3": 0,
        "4": linear,
    }
    assert (table["calls"] == 2).all() and set(table["device"]) == {"cpu"}


def test_module_backward_memory_in_a_real_run(tmp_path: Path) -> None:
    """Two modules with the same forward, whose backwards keep 64 KiB and 256 KiB: each
    backward range holds exactly its own allocation, the root's all of its children's."""
    import torch
    from torch import nn

    import profiler

    kept: list[torch.Tensor] = []

    class Keep(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: torch.Tensor, nbytes: int) -> torch.Tensor:
            ctx.nbytes = nbytes
            return x.clone()

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
            kept.append(torch.empty(ctx.nbytes, dtype=torch.uint8))
            return grad, None  # passed on as it is: no allocation of its own

    class Allocating(nn.Module):
        def __init__(self, nbytes: int) -> None:
            super().__init__()
            self.nbytes = nbytes

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return Keep.apply(x, self.nbytes)

    class Scale(nn.Module):  # a parameter to give the input its gradient
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(8))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.weight

    small, large = 1 << 16, 1 << 18
    model = nn.Sequential(Scale(), Allocating(small), Allocating(large))
    schedule = profiler.schedule(wait=0, warmup=1, active=2)
    with profiler.profile(
        model, out_dir=tmp_path, profile_memory=True, system_metrics=False, schedule=schedule
    ) as prof:
        for _ in range(3):
            model(torch.randn(8)).sum().backward()
            prof.step()
    table = module_memory(load_trace(prof.trace_files[0])).set_index("path")
    assert table.loc["1", "delta_bytes"] == table.loc["2", "delta_bytes"]  # the same forward
    backward = table["backward_delta_bytes"]
    assert (backward["1"], backward["2"]) == (small, large)
    # Scale's backward frees what the Python side lets go of then, so only its share is known:
    # the root's range holds its children's and nothing else.
    assert backward["model"] == small + large + backward["0"]
    assert table.loc["2", "backward_peak_delta_bytes"] == large
    assert (table["calls"] == 2).all()

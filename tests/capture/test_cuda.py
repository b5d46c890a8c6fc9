"""The CUDA path: kernels, copies, flows and CUDA memory counters. Runs wherever a GPU is."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import profiler
from profiler.capture.kineto import BACKWARD_LANE_TID
from profiler.events import COUNTER_MEMORY, PHASE_COMPLETE, PHASE_COUNTER
from tests.conftest import read_steps, read_trace

pytestmark = pytest.mark.cuda


def run_on_cuda(tmp_path: Path, steps: int = 6) -> profiler.Profile:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(inplace=True), nn.Linear(512, 10)).cuda()
    opt = torch.optim.Adam(model.parameters())
    host_batches = [
        (torch.randn(64, 256).pin_memory(), torch.randint(0, 10, (64,))) for _ in range(steps)
    ]
    with profiler.profile(
        model,
        out_dir=tmp_path,
        run_name="gpu",
        system_metrics=True,
        schedule=profiler.schedule(wait=1, warmup=1, active=2),
    ) as prof:
        for x, y in prof.loader(host_batches):
            x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            prof.step()
    return prof


def test_kernels_copies_flows_and_cuda_memory(tmp_path: Path) -> None:
    prof = run_on_cuda(tmp_path)
    trace = read_trace(prof.trace_files[0])
    events = trace["traceEvents"]
    cats = {e.get("cat") for e in events if e.get("ph") == PHASE_COMPLETE}
    assert {"kernel", "gpu_memcpy", "cuda_runtime"} <= cats
    assert any(e.get("cat") == "ac2g" for e in events), "no CPU->GPU flow events"
    assert trace["trainprof"]["device"] == "cuda"
    assert trace["deviceProperties"], "Kineto wrote no device properties"
    # Module ranges are projected onto the GPU stream by Kineto.
    gpu_ranges = [
        e
        for e in events
        if e.get("cat") == "gpu_user_annotation" and e["name"].startswith("nn.Module: ")
    ]
    assert gpu_ranges
    # The backward lane: on CUDA the engine runs on a device thread of its own; each module's
    # backward still starts at the engine's event for its output node (2 steps, 4 modules).
    lane = [e for e in events if e.get("tid") == BACKWARD_LANE_TID and e.get("ph") == "X"]
    assert sorted(e["name"] for e in lane) == sorted(
        f"nn.Module: {path} ({cls}).backward"
        for path, cls in [("model", "Sequential"), ("0", "Linear"), ("1", "ReLU"), ("2", "Linear")]
        for _ in range(2)
    )
    engine_op = "autograd::engine::evaluate_function: "
    engine = {e["ts"] for e in events if e.get("name", "").startswith(engine_op)}
    assert {e["ts"] for e in lane} <= engine
    counters = [e for e in events if e.get("ph") == PHASE_COUNTER and e["name"] == COUNTER_MEMORY]
    assert counters and all(e["args"]["allocated_bytes"] > 0 for e in counters)
    assert all(e["args"]["reserved_bytes"] >= e["args"]["allocated_bytes"] for e in counters)


def test_step_metrics_from_cuda_events(every_step_timed, tmp_path: Path) -> None:
    prof = run_on_cuda(tmp_path, steps=8)
    steps = read_steps(prof.store.steps_path)
    assert [s["step"] for s in steps] == list(range(8))
    for s in steps:
        assert s["forward_us"] > 0 and s["backward_us"] > 0 and s["optimizer_us"] > 0
        assert s["memory_bytes"] > 0 and s["peak_memory_bytes"] >= s["memory_bytes"]


def test_peak_memory_is_each_steps_own(tmp_path: Path) -> None:
    """The allocator's peak is reset at every step: one step's large buffer is its peak alone."""
    buffer_bytes, big_step, steps = 256 * 1024**2, 3, 7
    model = nn.Linear(256, 10).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with profiler.profile(model, out_dir=tmp_path, run_name="peak", schedule=None) as prof:
        for step in range(steps):
            model(torch.randn(64, 256, device="cuda")).sum().backward()
            opt.step()
            opt.zero_grad()
            if step == big_step:
                buffer = torch.empty(buffer_bytes, dtype=torch.uint8, device="cuda")
                del buffer
            prof.step()
    peaks = [s["peak_memory_bytes"] for s in read_steps(prof.store.steps_path)]
    others = peaks[:big_step] + peaks[big_step + 1 :]
    # The buffer comes on top of the parameters; the other steps' peaks hold a few KB of
    # activations and gradients more than that.
    assert peaks[big_step] - max(others) > 0.9 * buffer_bytes, peaks
    assert max(others) < buffer_bytes, peaks  # the steps after it did not keep the process peak

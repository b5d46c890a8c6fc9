"""Every rule on real traces: one where it fires, one where it stays quiet, and its saving per step
checked against a figure computed here from the trace by other means.

Real traces are the reference traces (tests/data/hta, GPU jobs from other projects) and runs
captured here on CPU with ``profiler.profile``. Two rules show on no reference trace and cannot
be captured without a GPU; their tests use a trace derived from a real one and say why.
"""

from __future__ import annotations

import functools
import gzip
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from profiler.analysis.facts import HOST_BLOCKING_SYNC_RECORDS
from profiler.analysis.kernels import analysis_window, classify_kernels
from profiler.analysis.report import TraceSummary
from profiler.analysis.rules import (
    DATALOADER_PCT,
    MEMORY_CAPACITY_SHARE,
    SYNC_PCT,
    Recommendation,
)
from profiler.analysis.steps import step_breakdown, step_table
from profiler.analysis.summary import trace_report
from profiler.analysis.table import TraceTable, load_trace
from profiler.analysis.temporal import HOST_WAIT, idle_time_breakdown
from tests.conftest import REFERENCE_TRACES

HTA = REFERENCE_TRACES / "hta"
DEVICE_WORK = ("kernel", "memcpy", "memset", "communication")

# Which rules fire on each reference trace: the tabulation this file's choices come from.
FIRED_ON_REFERENCE = {
    "alexnet": {"low_gpu_utilization", "amp_eligible"},
    "amd_mi250": {"low_gpu_utilization", "launch_bound"},
    "cpu_only": {"comm_heavy"},
    "diff_control": {"comm_heavy"},
    "diff_test": {"comm_heavy", "memcpy_heavy", "amp_eligible"},
    "mtia_inference": set(),
    "nccl": {"low_gpu_utilization"},
    "triton": {"low_gpu_utilization"},
    "two_ranks_rank-0": {"low_gpu_utilization", "comm_heavy", "optimizer_heavy"},
    "two_ranks_rank-1": {"low_gpu_utilization", "comm_heavy", "optimizer_heavy"},
}

# A reference trace where each rule stays quiet, and why that is the right answer there.
QUIET_ON = [
    ("dataloader_bound", "diff_control"),  # 0.1% of the step waits for data
    ("low_gpu_utilization", "diff_control"),  # kernels run 79% of the steps
    ("launch_bound", "nccl"),  # the device waits on the host, but its kernels are long
    ("launch_bound", "mtia_inference"),  # one stream waits 51%; the device idles 4%
    ("sync_heavy", "mtia_inference"),  # 94% of the step in sync calls on a 94%-busy device
    ("memcpy_heavy", "diff_control"),  # copies 4% of the step
    ("amp_eligible", "diff_control"),  # tensor cores already run 15% of kernel time
    ("comm_heavy", "nccl"),  # NCCL job, but communication is 7% of the step
    ("optimizer_heavy", "diff_control"),  # optimizer.step 3% of the step
    ("small_batch", "two_ranks_rank-0"),  # ops average 266 us of their own time
    ("small_batch", "cpu_only"),  # 4 ops of ~5 us, but no device that short ops could starve
]


@functools.cache
def report_of(path: Path) -> tuple[TraceTable, TraceSummary]:
    """A trace and its summary, loaded once per test session (the reference traces are read by
    several tests; captured and derived ones have paths of their own)."""
    trace = load_trace(path, cache=False)
    return trace, trace_report(trace)


def finding(report: TraceSummary, rule_id: str) -> Recommendation | None:
    return next((r for r in report.recommendations if r.id == rule_id), None)


def fired(path: Path, rule_id: str) -> tuple[TraceTable, Recommendation]:
    trace, report = report_of(path)
    rec = finding(report, rule_id)
    assert rec is not None, f"{rule_id} does not fire on {path.name}"
    return trace, rec


# Interval arithmetic written out plainly, apart from the analysis' vectorised version.
def union(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def length(intervals: list[tuple[float, float]]) -> float:
    return sum(end - start for start, end in intervals)


def minus(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    """Time in the union of ``a`` outside the union of ``b``."""
    a, b = union(a), union(b)
    both, j = 0.0, 0
    for start, end in a:
        while j < len(b) and b[j][1] <= start:
            j += 1
        k = j
        while k < len(b) and b[k][0] < end:
            both += min(end, b[k][1]) - max(start, b[k][0])
            k += 1
    return length(a) - both


def rows(trace: TraceTable, mask: Any) -> list[tuple[float, float]]:
    frame = trace.events[mask]
    return list(zip(frame["ts_us"].tolist(), frame["end_us"].tolist(), strict=True))


def clip(intervals: list[tuple[float, float]], lo: float, hi: float) -> list[tuple[float, float]]:
    return [(max(s, lo), min(e, hi)) for s, e in intervals if min(e, hi) > max(s, lo)]


def steps_span(trace: TraceTable) -> tuple[float, float, int]:
    steps = step_table(trace)
    return float(steps["ts_us"].min()), float(steps["end_us"].max()), len(steps)


# --- the tabulation ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FIRED_ON_REFERENCE))
def test_which_rules_fire_on_each_reference_trace(name: str) -> None:
    _, report = report_of(HTA / f"{name}.json.gz")
    assert {r.id for r in report.recommendations} == FIRED_ON_REFERENCE[name]


@pytest.mark.parametrize(("rule_id", "name"), QUIET_ON, ids=[f"{r}-{n}" for r, n in QUIET_ON])
def test_quiet_on_a_real_trace(rule_id: str, name: str) -> None:
    _, report = report_of(HTA / f"{name}.json.gz")
    assert finding(report, rule_id) is None


# --- fires, with its saving --------------------------------------------------------------------


class SlowItems:
    """A dataset whose items take a while to make (decoding, augmenting...)."""

    def __init__(self, count: int, delay_s: float) -> None:
        import torch

        self.items = [(torch.randn(4, 3, 8, 8), torch.randint(0, 5, (4,))) for _ in range(count)]
        self.delay_s = delay_s

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        time.sleep(self.delay_s)
        return self.items[index]


def test_dataloader_bound_on_a_captured_slow_loader(train: Callable[..., Any]) -> None:
    """No reference trace waits on its data (their DataLoader shares are 0-0.1%), so the firing
    case is a real capture: a DataLoader whose items take 30 ms each to make."""
    from torch.utils.data import DataLoader

    loader = DataLoader(SlowItems(6, 0.03), batch_size=None)
    prof = train(steps=6, loader=loader)
    trace, rec = fired(prof.trace_files[0], "dataloader_bound")
    breakdown = step_breakdown(trace)
    # The data wait per step, from the step breakdown's DataLoader time.
    assert rec.saving_us_per_step == pytest.approx(breakdown["dataloader_us"].mean(), abs=0.1)
    assert rec.evidence["dataloader_pct"] > DATALOADER_PCT
    waits = trace.events[trace.events["name"].astype(str).str.startswith("enumerate(DataLoader)")]
    assert len(waits) >= len(breakdown)  # torch's own ranges, one per batch


def test_low_gpu_utilization_on_nccl() -> None:
    trace, rec = fired(HTA / "nccl.json.gz", "low_gpu_utilization")
    lo, hi, count = steps_span(trace)
    kernels = clip(rows(trace, trace.events["kind"] == "kernel"), lo, hi)
    idle_per_step = ((hi - lo) - length(union(kernels))) / count
    assert rec.saving_us_per_step == pytest.approx(idle_per_step, rel=1e-4)


def test_launch_bound_on_amd_mi250() -> None:
    """One stream, so HTA's per-stream idle table gives the device's host wait."""
    trace, rec = fired(HTA / "amd_mi250.json.gz", "launch_bound")
    idle = idle_time_breakdown(trace)
    assert idle["stream"].nunique() == 1
    host_wait_us = float(idle.loc[idle["idle_category"] == HOST_WAIT, "idle_us"].sum())
    window = analysis_window(trace)
    work = window[window["kind"].isin(DEVICE_WORK)]
    span = float(work["end_us"].max() - work["ts_us"].min())
    step_us = float(step_table(trace)["dur_us"].mean())
    assert rec.saving_us_per_step == pytest.approx(step_us * host_wait_us / span, abs=0.1)


def alexnet_measured(tmp_path: Path) -> Path:
    """alexnet.json.gz from its first measured iteration (``...|measure|forward``) on, events
    unchanged. The whole file has no ProfilerStep, so its one step is the 43 s of the run, 99.98%
    of it CUDA start-up and weight loading; no share of that passes any bar."""
    doc = orjson.loads(gzip.decompress((HTA / "alexnet.json.gz").read_bytes()))
    events = doc["traceEvents"]
    start = min(e["ts"] for e in events if "|measure|forward" in str(e.get("name", "")))
    doc["traceEvents"] = [e for e in events if e.get("ph") != "X" or e["ts"] >= start]
    path = tmp_path / "alexnet_measured.json.gz"
    path.write_bytes(gzip.compress(orjson.dumps(doc)))
    return path


def test_sync_heavy_on_alexnets_measured_iterations(tmp_path: Path) -> None:
    """No whole reference trace passes the bar: the device idles after syncs 3.7% of MTIA's
    step, 2.2% of nccl's, 2.0% of alexnet's 43 s, and syncs need a GPU to capture. Cut to its
    measured iterations, alexnet syncs the device (cudaDeviceSynchronize) around each one and
    the device then idles while the host prepares the next."""
    trace, rec = fired(alexnet_measured(tmp_path), "sync_heavy")
    lo, hi, count = steps_span(trace)
    events = trace.events
    names = events["name"].astype(str)
    work = union(clip(rows(trace, events["kind"].isin(DEVICE_WORK)), lo, hi))
    syncs = rows(trace, names.str.endswith("Synchronize") | names.isin(HOST_BLOCKING_SYNC_RECORDS))
    waits = []
    for start, end in clip(syncs, lo, hi):
        following = [w_start for w_start, _ in work if w_start >= end]
        if following:
            waits.append((start, min(following)))
    idle_per_step = minus(waits, work) / count
    assert idle_per_step > 0
    assert rec.saving_us_per_step == pytest.approx(idle_per_step, abs=0.1)
    assert rec.evidence["sync_idle_pct"] > SYNC_PCT


def test_memcpy_heavy_on_diff_test() -> None:
    trace, rec = fired(HTA / "diff_test.json.gz", "memcpy_heavy")
    events = trace.events
    steps = step_table(trace)
    exposed = 0.0
    for lo, hi in zip(steps["ts_us"], steps["end_us"], strict=True):
        copies = clip(rows(trace, events["kind"] == "memcpy"), lo, hi)
        kernels = clip(rows(trace, events["kind"] == "kernel"), lo, hi)
        exposed += minus(copies, kernels)
    # Copies not overlapped by kernels, per step; the step breakdown says the same.
    assert rec.saving_us_per_step == pytest.approx(exposed / len(steps), abs=0.1)
    assert rec.saving_us_per_step == pytest.approx(
        step_breakdown(trace)["memcpy_us"].mean(), abs=0.1
    )


def test_comm_heavy_on_two_ranks() -> None:
    trace, rec = fired(HTA / "two_ranks_rank-0.json.gz", "comm_heavy")
    lo, hi, count = steps_span(trace)
    kernels = trace.events[trace.events["kind"] == "kernel"]
    comm = (classify_kernels(kernels["name"]) == "COMMUNICATION").to_numpy()
    assert kernels["name"][comm].astype(str).str.startswith("nccl").all()
    spans = list(zip(kernels["ts_us"].tolist(), kernels["end_us"].tolist(), strict=True))
    comm_spans = clip([s for s, c in zip(spans, comm, strict=True) if c], lo, hi)
    compute = clip([s for s, c in zip(spans, comm, strict=True) if not c], lo, hi)
    exposed_per_step = minus(comm_spans, compute) / count
    assert rec.saving_us_per_step == pytest.approx(exposed_per_step, abs=0.1)
    assert rec.evidence["exposed_communication_pct"] < rec.evidence["communication_pct"]


@pytest.mark.parametrize(
    ("rule_id", "name"),
    [
        ("amp_eligible", "alexnet"),
        ("optimizer_heavy", "two_ranks_rank-0"),
    ],
)
def test_rules_without_an_honest_estimate(rule_id: str, name: str) -> None:
    """They fire on real traces; what their advice saves is not in the trace (see each rule's
    docstring), so the estimate is None rather than a guess."""
    _, rec = fired(HTA / f"{name}.json.gz", rule_id)
    assert rec.saving_us_per_step is None


def with_device_memory(path: Path, capacity: Callable[[int], int], out: Path) -> Path:
    """A captured CPU trace with its allocator's samples relabelled as device 0's, and that
    device's ``totalGlobalMem`` set from the peak."""
    doc = orjson.loads(gzip.decompress(path.read_bytes()))
    samples = [e for e in doc["traceEvents"] if e.get("name") == "[memory]"]
    for event in samples:
        event["args"]["Device Type"], event["args"]["Device Id"] = 1, 0
    peak = max(int(e["args"]["Total Allocated"]) for e in samples)
    doc["deviceProperties"] = [{"id": 0, "name": "derived", "totalGlobalMem": capacity(peak)}]
    out.write_bytes(gzip.compress(orjson.dumps(doc)))
    return out


@pytest.mark.parametrize(
    ("capacity", "fires"),
    [(lambda peak: int(peak / 0.95), True), (lambda peak: 42_297_524_224, False)],
    ids=["peak-95pct-of-capacity", "a100-40gb"],
)
def test_memory_near_capacity_on_a_captured_allocation_trace(
    train: Callable[..., Any], tmp_path: Path, capacity: Callable[[int], int], fires: bool
) -> None:
    """No reference trace records memory (none was captured with profile_memory=True), and a
    CPU has no capacity to be near. So: a real capture's allocator samples (profile_memory=True)
    read as a device's, on a device as large as 1/0.95 of the peak (fires) or an A100's 40 GB
    (quiet). The saving is None: memory costs no time (see the rule)."""
    prof = train(steps=5, profile_memory=True)
    path = with_device_memory(prof.trace_files[0], capacity, tmp_path / "derived.json.gz")
    _, report = report_of(path)
    rec = finding(report, "memory_near_capacity")
    assert (rec is not None) is fires
    if rec is not None:
        share = rec.evidence["peak_memory_bytes"] / rec.evidence["capacity_bytes"]
        assert share > MEMORY_CAPACITY_SHARE
        assert rec.saving_us_per_step is None


def test_every_saving_reaches_the_summary_json() -> None:
    _, report = report_of(HTA / "two_ranks_rank-0.json.gz")
    entries = report.to_dict()["recommendations"]
    by_id = {r.id: r.saving_us_per_step for r in report.recommendations}
    assert {e["id"]: e["saving_us_per_step"] for e in entries} == by_id
    assert all(np.isfinite(s) for s in by_id.values() if s is not None)


def test_the_terminal_report_prints_each_saving() -> None:
    from rich.console import Console

    from profiler.export.terminal import render_summary

    _, report = report_of(HTA / "two_ranks_rank-0.json.gz")
    console = Console(width=400, record=True)
    for panel in render_summary({"schema": "trainprof.summary/1", "traces": [report.to_dict()]}):
        console.print(panel)
    text = console.export_text()
    comm = finding(report, "comm_heavy")
    assert comm is not None and comm.saving_us_per_step is not None
    assert f"saves up to {comm.saving_us_per_step / 1000:,.2f} ms per step" in text
    optimizer = next(line for line in text.splitlines() if "optimizer_heavy" in line)
    assert "saves up to" not in optimizer  # no estimate, no figure
